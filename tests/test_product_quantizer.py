import numpy as np
import pytest
import torch

from skdirection import (
    LinearDecodedTable,
    NormScaledTable,
    ProductQuantizedTable,
    ProductQuantizer,
    ScalarQuantizer,
    load_table,
    save_table,
)
from skdirection._engine.kmeans import nearest_centroids
from skdirection.codecs.low_rank import balanced_order
from skdirection.presets import pq_components, pq_stored_size


@pytest.fixture
def X():
    rng = np.random.RandomState(0)
    # Correlated columns and rows of different lengths, as in embedding tables.
    mixing = rng.normal(size=(24, 24))
    lengths = rng.uniform(0.5, 2, size=(600, 1))
    return (rng.normal(size=(600, 24)) @ mixing * lengths).astype(np.float32)


def test_nearest_centroids_matches_brute_force():
    rng = torch.Generator().manual_seed(0)
    blocks = torch.randn(3, 5000, 4, generator=rng)
    codebooks = torch.randn(3, 17, 4, generator=rng)
    codes = nearest_centroids(blocks, codebooks)
    brute = torch.cdist(blocks, codebooks).argmin(dim=2).T
    assert torch.equal(codes, brute)


@pytest.mark.parametrize("block_size", [4, 5])  # 5 leaves a ragged last block
def test_cosine_distances_are_those_of_the_decoded_rows(X, block_size):
    from skdirection._engine.numerics import row_cosine
    from skdirection.codecs import ProductCodec

    rows = torch.from_numpy(X)
    rows[:3] = 0  # zero rows: cosine distance 1 to a non-zero decoding
    codec = ProductCodec(block_size, 64, torch.float16, 4)
    codec.fit(rows, generator=torch.Generator().manual_seed(0))
    codec.codebooks[-1, :, 4:] = 3  # padding columns the decoded rows drop
    distances, codes = codec.cosine_distances(rows)
    assert torch.equal(codes, codec.encode(rows).codes)
    expected = 1 - row_cosine(rows.double(), codec.reconstruct(rows).double())
    # The search's float32 distances |x|^2 - 2 x.c + |c|^2 round more than a decoding.
    torch.testing.assert_close(distances, expected, rtol=0, atol=1e-5)
    assert bool((distances[:3] == 1).all())


@pytest.mark.parametrize("keep_norms", [True, False])
@pytest.mark.parametrize("block_size", [2, 5])  # 5 leaves a ragged last block
def test_transform_inverse_matches_table_and_save_load(X, tmp_path, keep_norms, block_size):
    pq = ProductQuantizer(block_size, n_centroids=64, keep_norms=keep_norms, random_state=0)
    codes = pq.fit(X).transform(X)
    n_blocks = -(-24 // block_size)
    assert codes.shape == (600, n_blocks + keep_norms)
    assert codes.shape[1] == len(pq.get_feature_names_out())
    assert np.all(codes[:, :n_blocks] == np.round(codes[:, :n_blocks]))
    assert codes[:, :n_blocks].min() >= 0 and codes[:, :n_blocks].max() < 64
    table = pq.compress(X)
    assert isinstance(table, NormScaledTable if keep_norms else ProductQuantizedTable)
    decoded = table.decode().numpy()
    np.testing.assert_allclose(pq.inverse_transform(codes), decoded, rtol=1e-5, atol=1e-5)
    save_table(table, tmp_path / "pq.safetensors")
    assert torch.equal(load_table(tmp_path / "pq.safetensors").decode(), table.decode())
    indices = torch.tensor([[3, 0], [599, 3]])
    assert torch.equal(table.decode(indices), table.decode()[indices])


def test_bytes_counted(X):
    table = ProductQuantizer(4, n_centroids=32, random_state=0).fit(X).compress(X)
    # 6 one-byte codes and a float16 norm a row; 6 codebooks of 32 x 4 float16 values.
    assert table.n_bytes == 600 * (6 + 2) + 6 * 32 * 4 * 2


def test_kmeans_lowers_error_and_smaller_blocks_are_closer(X):
    errors = {}
    for block_size, max_iter in [(4, 0), (4, 10), (2, 10)]:
        pq = ProductQuantizer(block_size, n_centroids=64, max_iter=max_iter, random_state=0)
        errors[block_size, max_iter] = 1 - pq.fit(X).score(X)
    assert errors[4, 10] < 0.8 * errors[4, 0]
    assert errors[2, 10] < errors[4, 10]


def test_beats_scalar_codes_at_two_bits_a_value(X):
    pq = ProductQuantizer(4, n_centroids=256, random_state=0).fit(X)  # 2 bits + norm
    scalar = ScalarQuantizer(2).fit(X)  # 2 bits + scale and offset
    assert pq.score(X) > scalar.score(X) + 0.02


def test_sample_weight_pulls_codebooks_towards_heavy_rows(X):
    weight = np.ones(600)
    weight[:50] = 1000.0
    plain = ProductQuantizer(4, n_centroids=32, random_state=0).fit(X)
    weighted = ProductQuantizer(4, n_centroids=32, random_state=0)
    weighted.fit(X, sample_weight=weight)
    heavy = X[:50]
    assert weighted.score(heavy) > plain.score(heavy)
    # Integer weights equal repeated rows in the objective the k-means lowers.
    assert weighted.score(X, sample_weight=weight) > plain.score(X, sample_weight=weight)


def test_zero_weight_rows_are_still_encoded(X):
    weight = np.zeros(600)
    weight[:100] = 1.0
    pq = ProductQuantizer(4, n_centroids=256, random_state=0).fit(X, sample_weight=weight)
    assert pq.n_centroids_ == 100  # no more centroids than rows that count
    assert pq.transform(X).shape[0] == 600
    with pytest.raises(ValueError, match="non-zero"):
        ProductQuantizer(4).fit(X, sample_weight=np.zeros(600))
    # The codebooks come from the rows that count only: other content in the others
    # changes nothing.
    other = X.copy()
    other[100:] = 10 * np.random.RandomState(1).normal(size=other[100:].shape)
    again = ProductQuantizer(4, n_centroids=256, random_state=0)
    again.fit(other, sample_weight=weight)
    np.testing.assert_array_equal(again.codebooks_, pq.codebooks_)


def test_fewer_rows_than_centroids_and_zero_rows():
    X = np.zeros((5, 8), dtype=np.float32)
    X[0] = 1.0
    pq = ProductQuantizer(2, random_state=0).fit(X)
    assert pq.n_centroids_ == 5
    decoded = pq.compress(X).decode().numpy()
    np.testing.assert_allclose(decoded, X, atol=1e-3)


def test_inverse_transform_rejects_codes_out_of_range(X):
    pq = ProductQuantizer(4, n_centroids=16, random_state=0).fit(X)
    codes = pq.transform(X[:3])
    codes[0, 0] = 16
    with pytest.raises(ValueError, match="integers in"):
        pq.inverse_transform(codes)
    codes[0, 0] = 0.5
    with pytest.raises(ValueError, match="integers in"):
        pq.inverse_transform(codes)
    codes[0, 0], codes[1, -1] = 0, -1.0
    with pytest.raises(ValueError, match="norm.*must not be negative"):
        pq.inverse_transform(codes)


def test_rejects_bad_parameters_and_device(X):
    with pytest.raises(ValueError, match="n_centroids"):
        ProductQuantizer(n_centroids=257).fit(X)
    with pytest.raises(ValueError, match="block_size"):
        ProductQuantizer(block_size=0).fit(X)
    with pytest.raises(ValueError, match="device"):
        ProductQuantizer(device="tpu").fit(X)


def test_same_seed_same_codes(X):
    a = ProductQuantizer(4, random_state=3).fit(X).transform(X)
    b = ProductQuantizer(4, random_state=3).fit(X).transform(X)
    assert np.array_equal(a, b)


def test_progress_bar_only_when_verbose(X, capsys):
    ProductQuantizer(4, max_iter=2, random_state=0).fit(X)
    assert capsys.readouterr().err == ""
    ProductQuantizer(4, max_iter=2, random_state=0, verbose=1).fit(X)
    assert "ProductQuantizer" in capsys.readouterr().err


@pytest.mark.parametrize(
    "variances, block_size, order",
    [
        ([8.0, 4.0, 2.0, 1.0], 2, [0, 3, 1, 2]),  # 8 * 1 and 4 * 2
        ([1.0, 16.0, 4.0, 2.0, 8.0], 2, [1, 0, 4, 3, 2]),  # 16 * 1, 8 * 2, then 4
        ([3.0, 2.0, 1.0], 3, [0, 1, 2]),
    ],
)
def test_balanced_order_evens_the_blocks_variance(variances, block_size, order):
    assert balanced_order(torch.tensor(variances), block_size) == order


@pytest.mark.parametrize("keep_norms", [True, False])
def test_projected_codes_match_the_table_and_count_the_basis(X, tmp_path, keep_norms):
    pq = ProductQuantizer(4, n_components=10, n_centroids=64, keep_norms=keep_norms)
    codes = pq.fit(X).transform(X)
    assert codes.shape == (600, 3 + keep_norms)  # 10 projections in 3 blocks
    assert pq.components_.shape == (10, 24) and pq.codebooks_.shape == (3, 64, 4)
    np.testing.assert_allclose(pq.components_ @ pq.components_.T, np.eye(10), atol=1e-5)
    table = pq.compress(X)
    inner = table.inner if keep_norms else table
    assert isinstance(inner, LinearDecodedTable)
    np.testing.assert_allclose(
        pq.inverse_transform(codes), table.decode().numpy(), rtol=1e-5, atol=1e-5
    )
    # 3 codes (and a float16 norm) a row; the float16 basis and codebooks once.
    assert table.n_bytes == 600 * (3 + 2 * keep_norms) + 2 * (10 * 24 + 3 * 64 * 4)
    save_table(table, tmp_path / "pq.safetensors")
    assert torch.equal(load_table(tmp_path / "pq.safetensors").decode(), table.decode())
    hidden = torch.randn(2, 24)
    expected = hidden @ table.decode().T  # through the basis first, then the codes:
    atol = 1e-5 * expected.abs().max().item()  # the same to rounding
    torch.testing.assert_close(table.linear(hidden), expected, rtol=1e-5, atol=atol)


def test_projection_beats_wider_blocks_on_a_low_rank_table():
    # 48 columns spanned by 8 directions (plus a little noise): the projections keep
    # 8 values of 48 for the codes to cover; both store 2 codes a row.
    rng = np.random.RandomState(0)
    X = rng.normal(size=(2000, 8)) @ rng.normal(size=(8, 48))
    X = (X + 0.05 * rng.normal(size=X.shape)).astype(np.float32)
    wide = ProductQuantizer(24, random_state=0).fit(X)
    projected = ProductQuantizer(4, n_components=8, random_state=0).fit(X)
    assert projected.n_blocks_ == wide.n_blocks_ == 2
    assert projected.score(X) > wide.score(X) + 0.02


def test_pq_components_meets_the_ratio():
    k = pq_components(20000, 300, 32, "bytes")
    assert k % 4 == 0
    assert 20000 * 300 * 4 / pq_stored_size(20000, 300, 4, "bytes", k) >= 32
    assert 20000 * 300 * 4 / pq_stored_size(20000, 300, 4, "bytes", k + 4) < 32
    assert pq_components(10, 8, 1000, "bytes") is None


def test_projection_needs_no_more_components_than_features(X):
    with pytest.raises(ValueError, match="n_components=25 must not exceed the 24"):
        ProductQuantizer(4, n_components=25).fit(X)
