import numpy as np
import pytest
import torch

from skdirection import QuantizedTable, ScalarQuantizer, load_table, save_table
from skdirection.codecs.scalar import pack_codes, unpack_codes


@pytest.fixture
def X():
    return np.random.RandomState(0).normal(size=(60, 40)).astype(np.float32)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("n_features", [1, 7, 40])
def test_pack_round_trip(bits, n_features):
    codes = torch.from_numpy(
        np.random.RandomState(1).randint(0, 2**bits, size=(5, n_features))
    )
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.shape == (5, -(-n_features * bits // 8))
    assert torch.equal(unpack_codes(packed, bits, n_features), codes.to(torch.uint8))


@pytest.mark.parametrize(
    "bits, group_size, row_bytes",
    [
        (8, None, 40 + 4),
        (4, None, 20 + 4),
        (3, None, 15 + 4),
        (2, None, 10 + 4),
        (4, 16, 20 + 3 * 4),  # 40 columns: groups of 16, 16 and a ragged 8
    ],
)
def test_table_bytes_are_packed(X, bits, group_size, row_bytes):
    table = ScalarQuantizer(bits, group_size=group_size).fit(X).compress(X)
    assert table.n_bytes == X.shape[0] * row_bytes


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [None, 16, 13])
def test_transform_matches_table_and_error_shrinks_with_bits(X, bits, group_size):
    q = ScalarQuantizer(bits, group_size=group_size).fit(X)
    codes = q.transform(X)
    assert codes.shape[1] == 40 + 2 * q.n_groups_ == len(q.get_feature_names_out())
    assert np.all(codes[:, :40] == np.round(codes[:, :40]))
    assert codes[:, :40].min() >= 0 and codes[:, :40].max() <= 2**bits - 1
    decoded = q.inverse_transform(codes)
    np.testing.assert_allclose(
        decoded, q.compress(X).decode().numpy(), rtol=1e-6, atol=1e-6
    )
    bound = {8: 0.01, 4: 0.2, 3: 0.35, 2: 0.7}[bits]  # rms, for unit-variance data
    assert np.sqrt(np.mean((decoded - X) ** 2)) < bound


def test_more_bits_score_higher(X):
    scores = [ScalarQuantizer(b).fit(X).score(X) for b in (2, 3, 4, 8)]
    assert scores == sorted(scores) and scores[-1] > 0.9999


def test_clip_search_lowers_error(X):
    X = X.copy()
    X[:, 0] *= 20  # one outlier column widens every row's range
    plain = ScalarQuantizer(2, clip_search=False).fit(X)
    searched = ScalarQuantizer(2).fit(X)
    err = [
        ((e.inverse_transform(e.transform(X)) - X) ** 2).sum() for e in (plain, searched)
    ]
    assert err[1] < err[0]


def test_clip_search_spares_outliers_more_than_squared_error_would(X, monkeypatch):
    import skdirection.codecs.scalar as quantized_table

    X = X.copy()
    X[:, 0] *= 4

    def errors():
        searched = ScalarQuantizer(3).fit(X)
        return np.abs(searched.inverse_transform(searched.transform(X)) - X)

    spared = errors()
    monkeypatch.setattr(quantized_table, "CLIP_ERROR_POWER", 2)
    squared = errors()
    assert spared.max(axis=1).mean() < squared.max(axis=1).mean()
    assert (spared**2).sum() > (squared**2).sum()  # what the squared-error search minimises


def test_constant_rows_decode_exactly():
    X = np.full((3, 8), 0.5, dtype=np.float32)
    q = ScalarQuantizer(3).fit(X)
    np.testing.assert_array_equal(q.inverse_transform(q.transform(X)), X)


def test_save_load_round_trip(X, tmp_path):
    table = ScalarQuantizer(3, group_size=16).fit(X).compress(X)
    save_table(table, tmp_path / "q.safetensors")
    loaded = load_table(tmp_path / "q.safetensors")
    assert isinstance(loaded, QuantizedTable) and loaded.n_bytes == table.n_bytes
    idx = torch.tensor([[0, 5], [59, 1]])
    assert torch.equal(loaded(idx), table(idx))
    assert loaded(idx).shape == (2, 2, 40)


def test_bad_input(X):
    with pytest.raises(ValueError, match="bits"):
        ScalarQuantizer(5).fit(X)
    with pytest.raises(ValueError, match="group_size"):
        ScalarQuantizer(4, group_size=0).fit(X)
    with pytest.raises(ValueError, match="float16"):
        ScalarQuantizer(4).fit(X * 1e5)
    ScalarQuantizer(4, scale_dtype="float32").fit(X * 1e5)
    q = ScalarQuantizer(4).fit(X)
    with pytest.raises(ValueError, match="columns"):
        q.inverse_transform(np.zeros((2, 41)))


def test_sample_weight_is_validated_but_codes_are_per_row(X):
    w = np.arange(60.0)
    q = ScalarQuantizer(3).fit(X, sample_weight=w)
    np.testing.assert_array_equal(q.transform(X), ScalarQuantizer(3).fit(X).transform(X))
    with pytest.raises(ValueError, match="Negative values .* `sample_weight`"):
        ScalarQuantizer(3).fit(X, sample_weight=-w)


@pytest.mark.parametrize("group_size", [8, 12, 40])
def test_clip_search_keeps_each_groups_best_ratio(X, group_size):
    # A reference that makes the codes of every ratio tried and keeps the best.
    from skdirection.codecs import scalar

    rows = torch.from_numpy(X)
    n, d = rows.shape
    grouped = scalar._grouped(rows, group_size)
    valid = torch.arange(grouped.shape[1] * group_size) < d
    lo, hi = grouped.amin(dim=2), grouped.amax(dim=2)
    spread = (hi - lo).clamp_min(torch.finfo(torch.float32).tiny)[..., None]
    best_err = torch.full(lo.shape, torch.inf)
    best_codes, best_scales = torch.zeros_like(grouped), torch.zeros_like(lo).half()
    for ratio in scalar.CLIP_RATIOS:
        scale, offset = ((hi - lo) * ratio / 7).half(), (lo * ratio).half()
        s, o = scale.float()[..., None], offset.float()[..., None]
        q = torch.clamp(torch.round((grouped - o) / torch.where(s > 0, s, 1)), 0, 7)
        relative = ((q * s + o) - grouped).abs() / spread
        err = (relative**8 * valid.view(1, -1, group_size)).sum(dim=2)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_codes = torch.where(better[..., None], q, best_codes)
        best_scales = torch.where(better, scale, best_scales)
    codes, scales, _ = scalar.quantize(rows, 3, group_size)
    # x ** 8 by three squarings may round a near tie the other way, rarely.
    assert (codes != best_codes.reshape(n, -1)[:, :d]).float().mean() < 1e-3
    assert (scales != best_scales).float().mean() < 1e-2


def test_rows_quantized_in_chunks_match_all_at_once(monkeypatch):
    """The clipping search runs a chunk of rows at a time (sized for the cache): a chunk
    boundary, a ragged last chunk and one row a chunk give the codes, scales and
    offsets of every row quantized at once."""
    import skdirection.codecs.scalar as scalar

    X = torch.from_numpy(np.random.RandomState(0).standard_t(3, size=(53, 40)))
    X = X.float()
    whole = scalar.quantize(X, 3, 16)
    for values in (40, 7 * 40, 10 * 40 + 1):
        monkeypatch.setattr(scalar, "_CPU_QUANTIZE_VALUES", values)
        for part, expected in zip(scalar.quantize(X, 3, 16), whole, strict=True):
            assert torch.equal(part, expected)
