"""Out-of-core fitting: memmaps read in chunks from disk, partial_fit, early stopping."""

import pickle

import numpy as np
import pytest
import torch

import skdirection._engine.backend as backend
from skdirection import DirectionAutoEncoder, TruncatedSVDCompressor
from skdirection._engine.backend import RowSource, file_backing
from skdirection._engine.training import ShuffledBatches

AE = dict(n_components=4, batch_size=64, device="cpu", random_state=0)


@pytest.fixture
def memmapped(embeddings, tmp_path):
    path = tmp_path / "table.npy"
    np.save(path, embeddings)
    return np.load(path, mmap_mode="r")


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 70 rows (of 24 float32 features): the 300-row table streams in 5."""
    monkeypatch.setattr(backend, "CHUNK_BYTES", 70 * 24 * 4)
    monkeypatch.setattr(backend, "RESIDENT_BYTES", 70 * 24 * 4)


def test_memmap_rows_are_read_from_the_file(memmapped, embeddings):
    assert file_backing(memmapped) is not None
    assert file_backing(memmapped[:, 3:]) is None  # columns: not contiguous rows
    rows = RowSource(memmapped[250:], file_backing(memmapped[250:])).read(5, 10)
    np.testing.assert_array_equal(rows, embeddings[255:260])
    source = RowSource(memmapped, file_backing(memmapped), start=290, stop=310)
    rows = source.read(0, 20)
    np.testing.assert_array_equal(rows[:10], embeddings[290:])
    assert not rows[10:].any()  # past the end: zero padding


def test_svd_partial_fit_equals_fit(embeddings):
    full = TruncatedSVDCompressor(3, center=True, device="cpu").fit(embeddings)
    chunked = TruncatedSVDCompressor(3, center=True, device="cpu")
    for chunk in np.array_split(embeddings, 4):
        chunked.partial_fit(chunk)
    np.testing.assert_allclose(chunked.components_, full.components_, atol=1e-5)
    np.testing.assert_allclose(chunked.mean_, full.mean_, rtol=1e-5)
    np.testing.assert_allclose(
        chunked.explained_variance_ratio_, full.explained_variance_ratio_, rtol=1e-5
    )
    with pytest.raises(ValueError, match="features"):
        chunked.partial_fit(embeddings[:, :5])


def test_svd_fits_a_streamed_memmap(memmapped, embeddings, small_chunks):
    weight = np.random.RandomState(0).uniform(size=len(embeddings))
    streamed = TruncatedSVDCompressor(3, device="cpu").fit(memmapped, sample_weight=weight)
    in_memory = TruncatedSVDCompressor(3, device="cpu").fit(
        embeddings, sample_weight=weight
    )
    np.testing.assert_allclose(streamed.components_, in_memory.components_, atol=1e-5)
    np.testing.assert_allclose(
        streamed.transform(memmapped), in_memory.transform(embeddings), rtol=1e-4, atol=1e-4
    )
    assert streamed.score(memmapped) == pytest.approx(in_memory.score(embeddings), rel=1e-6)


def test_nan_in_a_streamed_memmap_is_caught(embeddings, tmp_path):
    X = embeddings.copy()
    X[200, 3] = np.nan
    np.save(tmp_path / "bad.npy", X)
    with pytest.raises(ValueError, match="NaN"):
        TruncatedSVDCompressor(2, device="cpu").fit(
            np.load(tmp_path / "bad.npy", mmap_mode="r")
        )


def test_autoencoder_streams_chunks_deterministically(memmapped, embeddings, small_chunks):
    from_file = DirectionAutoEncoder(**AE).fit(memmapped)
    from_memory = DirectionAutoEncoder(**AE).fit(embeddings)
    np.testing.assert_array_equal(
        from_file.decoder_coefs_[0], from_memory.decoder_coefs_[0]
    )
    assert from_file.score(memmapped) > 0.9


def test_streamed_batches_are_the_shuffled_chunks_read_ahead(monkeypatch):
    # Chunks are read by a background thread one ahead: the batches must still be the
    # chunks in their shuffled order, each shuffled, every epoch.
    monkeypatch.setattr(backend, "RESIDENT_BYTES", 0)
    X = np.arange(50 * 3, dtype=np.float32).reshape(50, 3)
    weight = torch.full((50,), 0.5)  # equal weights: every row once an epoch
    batches = ShuffledBatches(
        RowSource(X), weight, 4, torch.Generator().manual_seed(0), torch.device("cpu"), 8
    )
    reference = torch.Generator().manual_seed(0)
    for _ in range(2):
        expected = []
        for start in (torch.randperm(7, generator=reference) * 8).tolist():
            rows, row_weight = torch.from_numpy(X[start : start + 8]), weight[start:][:8]
            order = torch.randperm(rows.shape[0], generator=reference)
            for first in range(0, rows.shape[0], 4):
                expected.append((rows[order[first:][:4]], row_weight[order[first:][:4]]))
        got = list(batches)
        assert len(got) == len(expected) == 13
        for (rows, row_weight), (want_rows, want_weight) in zip(got, expected, strict=True):
            torch.testing.assert_close(rows, want_rows, rtol=0, atol=0)
            torch.testing.assert_close(row_weight, want_weight, rtol=0, atol=0)


@pytest.mark.parametrize("resident", [True, False])
def test_unequal_weights_draw_rows_in_proportion(monkeypatch, resident):
    # Each chunk draws as many rows as it holds, in proportion to their weights, and
    # every draw weighs the chunk's mean weight: the expected loss is the weighted one.
    if not resident:
        monkeypatch.setattr(backend, "RESIDENT_BYTES", 0)
    n = 40
    X = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    weight = torch.zeros(n)
    weight[:10], weight[10:20] = 3.0, 1.0  # rows 20 to 39 weigh nothing
    batches = ShuffledBatches(
        RowSource(X), weight, 4, torch.Generator().manual_seed(0), torch.device("cpu"), 20
    )
    drawn = torch.zeros(n)
    total_weight = 0.0
    for _ in range(300):
        for rows, row_weight in batches:
            # A streamed chunk of weight zero (a shard's padding) passes its rows
            # weighing zero, so that every process takes as many steps.
            counted = rows[row_weight > 0, 0].long()
            drawn += torch.bincount(counted, minlength=n)
            total_weight += float(row_weight.sum())
    assert drawn[20:].sum() == 0
    share = drawn[:10].sum() / drawn.sum()
    assert abs(share - 0.75) < 0.02  # 30 of the 40 units of weight
    # An epoch's weights add up to the table's, whatever is drawn.
    np.testing.assert_allclose(total_weight / 300, float(weight.sum()), rtol=1e-6)
    # Equal weights within the first 10 rows: each drawn about as often.
    assert drawn[:10].min() > 0.8 * drawn[:10].mean()


def test_a_failed_read_ahead_raises_in_the_training_loop(monkeypatch):
    monkeypatch.setattr(backend, "RESIDENT_BYTES", 0)
    X = np.ones((40, 3), dtype=np.float32)
    X[30] = np.nan
    source = RowSource(X, check_finite=True)
    batches = ShuffledBatches(
        source, torch.ones(40), 4, torch.Generator().manual_seed(0), torch.device("cpu"), 8
    )
    with pytest.raises(ValueError, match="NaN or infinity"):
        list(batches)


def test_svd_start_beats_random_start_at_equal_epochs(embeddings):
    params = {**AE, "max_iter": 3, "n_iter_no_change": None}
    svd_start = DirectionAutoEncoder(**params).fit(embeddings)
    random_start = DirectionAutoEncoder(init="random", **params).fit(embeddings)
    assert svd_start.score(embeddings) > random_start.score(embeddings)
    with pytest.raises(ValueError, match="linear autoencoder"):
        DirectionAutoEncoder(init="svd", hidden_layer_sizes=(8,), **AE).fit(embeddings)


def test_stopping_rule(embeddings):
    # A relative tolerance of 1 can never be met after the first comparable epoch.
    stopped = DirectionAutoEncoder(
        tol=1.0, n_iter_no_change=2, max_iter=10, element_power_epochs=0, **AE
    ).fit(embeddings)
    assert stopped.n_iter_ == 3
    annealing = DirectionAutoEncoder(
        tol=1.0, n_iter_no_change=2, max_iter=10, element_power_epochs=4, **AE
    ).fit(embeddings)
    assert annealing.n_iter_ == 7  # epochs 0-3 anneal, 4 is the first comparable one
    full = DirectionAutoEncoder(tol=1.0, n_iter_no_change=None, max_iter=10, **AE)
    assert full.fit(embeddings).n_iter_ == 10


def test_autoencoder_partial_fit_continues_training(embeddings):
    chunks = np.array_split(embeddings, 3)
    model = DirectionAutoEncoder(init="random", learning_rate=1e-2, **AE)
    for epoch in range(4):
        for chunk in chunks:
            model.partial_fit(chunk)
        if epoch == 0:
            first_score = model.score(embeddings)
    assert model.n_iter_ == 12 and len(model.loss_curve_) == 12
    assert model.score(embeddings) > first_score
    restored = pickle.loads(pickle.dumps(model))
    restored.partial_fit(chunks[0])
    assert restored.n_iter_ == 13
    with pytest.raises(ValueError, match="features"):
        model.partial_fit(embeddings[:, :5])


# Peak memory of a streamed fit, measured in a fresh process. The table is larger than
# the 256 MB a fit keeps resident, so both estimators must stream it; reading it whole
# (or through the mapping, whose pages stay resident) would add at least its size.
_STREAMED_FIT = """
import resource, sys
import numpy as np
from skdirection import DirectionAutoEncoder, TruncatedSVDCompressor

def peak_bytes():
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (
        1 if sys.platform == "darwin" else 1024
    )

make = {
    "svd": lambda: TruncatedSVDCompressor(8, device="cpu"),
    "autoencoder": lambda: DirectionAutoEncoder(
        8, max_iter=1, batch_size=8192, device="cpu", random_state=0
    ),
}[sys.argv[2]]
# A small fit first: what torch allocates once per process is not the table's cost.
make().fit(np.random.default_rng(0).standard_normal((2000, 64)).astype(np.float32))
before = peak_bytes()
table = np.load(sys.argv[1], mmap_mode="r")
if len(sys.argv) > 3:  # a row slice of the file: a view, streamed all the same
    table = table[int(sys.argv[3]) :]
make().fit(table)
print(peak_bytes() - before)
"""


@pytest.fixture(scope="module")
def large_table(tmp_path_factory):
    """A 2,500,000 x 64 float32 ``.npy`` file (640 MB), written block by block."""
    path = tmp_path_factory.mktemp("large") / "table.npy"
    n_rows, n_features, block = 2_500_000, 64, 50_000
    rows = np.random.default_rng(0).standard_normal((block, n_features), np.float32)
    with open(path, "wb") as handle:
        header = {"descr": "<f4", "fortran_order": False, "shape": (n_rows, n_features)}
        np.lib.format.write_array_header_1_0(handle, header)
        for start in range(0, n_rows, block):
            (rows + np.float32(start / n_rows)).tofile(handle)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "estimator, first_row", [("svd", None), ("autoencoder", None), ("svd", 500_000)]
)
def test_streamed_fit_memory_is_bounded_by_chunks_not_the_table(
    large_table, estimator, first_row
):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    done = subprocess.run(
        [sys.executable, "-c", _STREAMED_FIT, str(large_table), estimator]
        + ([str(first_row)] if first_row else []),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    growth = int(done.stdout.split()[-1])
    table_bytes = large_table.stat().st_size
    # Measured: about 220 MB (a few 64 MB chunks and their float64 sums) for either.
    assert growth < table_bytes / 2, f"the fit added {growth / 2**20:.0f} MB"
