"""Property tests: any small finite matrix, degenerate ones included, gives finite output
of the right shape and dtype, or a clear error."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from skdirection import DirectionAutoEncoder, TruncatedSVDCompressor
from skdirection.metrics import row_cosine_similarity

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # Tiny matrices: a second intra-op thread only adds synchronisation, which on a busy
    # 2-core CI machine makes each step orders of magnitude slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _degrade(X, kind, rng):
    """Make ``X`` degenerate in one of the ways real tables are."""
    X = X.copy()
    n_rows, n_features = X.shape
    if kind == "duplicate_rows":
        X[rng.randint(n_rows, size=n_rows // 2 + 1)] = X[0]
    elif kind == "zero_rows":
        X[rng.rand(n_rows) < 0.5] = 0
    elif kind == "rank_one":
        X = np.outer(X[:, 0], X[0]).astype(X.dtype)
    elif kind == "constant_column":
        X[:, rng.randint(n_features)] = X[0, 0]
    elif kind == "all_zero":
        X[:] = 0
    return X


@st.composite
def tables(draw, min_features=2):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n_rows = draw(st.integers(1, 12))
    n_features = draw(st.integers(min_features, 6))
    values = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)
    X = draw(arrays(dtype, (n_rows, n_features), elements=values))
    kind = draw(
        st.sampled_from(
            [
                "none",
                "duplicate_rows",
                "zero_rows",
                "rank_one",
                "constant_column",
                "all_zero",
            ]
        )
    )
    X = _degrade(X, kind, np.random.RandomState(draw(st.integers(0, 2**16))))
    weighted = draw(st.booleans())
    weight = None
    if weighted:
        weight = draw(arrays(np.float64, n_rows, elements=st.floats(0, 10)))
        if not weight.any():
            weight[0] = 1.0
    return X, weight


def _check_output(model, X, k):
    codes = model.transform(X)
    assert codes.shape == (X.shape[0], k)
    assert codes.dtype == X.dtype
    assert np.all(np.isfinite(codes))
    X_hat = model.inverse_transform(codes)
    assert X_hat.shape == X.shape
    assert X_hat.dtype == X.dtype
    assert np.all(np.isfinite(X_hat))
    score = model.score(X)
    assert np.isfinite(score) and -1.0 - 1e-9 <= score <= 1.0 + 1e-9
    table = model.compress(X)
    decoded = table.decode().numpy()
    assert decoded.shape == X.shape and np.all(np.isfinite(decoded))
    return X_hat


@SETTINGS
@given(
    data=tables(),
    algorithm=st.sampled_from(["covariance_eigh", "randomized", "exact"]),
    center=st.booleans(),
    k_fraction=st.floats(0, 1),
)
def test_svd_any_small_table(data, algorithm, center, k_fraction):
    X, weight = data
    n_rows, n_features = X.shape
    k = 1 + int(k_fraction * (min(n_rows, n_features - 1) - 1))
    svd = TruncatedSVDCompressor(
        k, algorithm=algorithm, center=center, device="cpu", random_state=0
    ).fit(X, sample_weight=weight)
    X_hat = _check_output(svd, X, k)
    assert np.all(np.isfinite(svd.explained_variance_ratio_))
    assert np.all(svd.explained_variance_ratio_ >= 0)
    # Rows whose weight is negligible next to the largest take no part in the fit: a
    # weight 1e-244 times another's vanishes in a float64 sum.
    counted = np.ones(n_rows, bool) if weight is None else weight > 1e-8 * weight.max()
    spread = np.ptp(X[counted].astype(np.float64), axis=0).max() if counted.any() else 0.0
    if spread > 1e-3 * max(1.0, float(np.abs(X).max())):
        # Tables of (numerically) identical rows: see
        # test_hardening.py::test_explained_variance_ratio_of_identical_rows_is_at_most_one
        assert svd.explained_variance_ratio_.sum() <= 1 + 1e-3
    tolerance = 1e-3 if X.dtype == np.float32 else 1e-8
    scale = max(1.0, float(np.abs(X).max()))
    if not center:
        # An orthogonal projection never lengthens a row, and keeps zero rows zero.
        norms = np.linalg.norm(X.astype(np.float64), axis=1)
        norms_hat = np.linalg.norm(X_hat.astype(np.float64), axis=1)
        assert np.all(norms_hat <= norms + tolerance * scale)
        assert np.all(X_hat[norms == 0] == 0)
    # With every row weighted, a rank-k table is reproduced; a zero weight lets a row go.
    all_weighted = bool(counted.all())
    if all_weighted and np.linalg.matrix_rank(X.astype(np.float64)) <= k and not center:
        np.testing.assert_allclose(X_hat, X, atol=tolerance * scale * n_features)


@SETTINGS
@given(
    data=tables(),
    k_fraction=st.floats(0, 1),
    batch_size=st.integers(1, 8),
    hidden=st.sampled_from([(), (3,)]),
    latent_activation=st.sampled_from([None, "elu"]),
)
def test_autoencoder_any_small_table(
    data, k_fraction, batch_size, hidden, latent_activation
):
    X, weight = data
    k = 1 + int(k_fraction * (X.shape[1] - 2))
    autoencoder = DirectionAutoEncoder(
        k,
        hidden_layer_sizes=hidden,
        latent_activation=latent_activation,
        max_iter=2,
        batch_size=batch_size,
        device="cpu",
        random_state=0,
    ).fit(X, sample_weight=weight)
    assert autoencoder.n_iter_ == 2
    assert np.all(np.isfinite(autoencoder.loss_curve_))
    # The element power still anneals: the last epoch is kept.
    assert autoencoder.best_loss_ == autoencoder.loss_curve_[-1]
    X_hat = _check_output(autoencoder, X, k)
    similarity = row_cosine_similarity(X, X_hat)
    assert np.all(np.isfinite(similarity))


@SETTINGS
@given(data=tables(), extra=st.integers(0, 2))
def test_n_components_not_below_n_features_is_a_clear_error(data, extra):
    X, _ = data
    k = X.shape[1] + extra
    for model in (
        TruncatedSVDCompressor(k, device="cpu"),
        DirectionAutoEncoder(k, max_iter=1, device="cpu"),
    ):
        with pytest.raises(ValueError, match="strictly less than the number of features"):
            model.fit(X)


# Most drawn tables have more rows than features and are filtered out by assume().
@settings(
    SETTINGS,
    suppress_health_check=[*SETTINGS.suppress_health_check, HealthCheck.filter_too_much],
)
@given(data=tables(min_features=3))
def test_svd_rank_above_n_rows_is_a_clear_error(data):
    X, _ = data
    k = X.shape[0] + 1
    assume(k < X.shape[1])
    with pytest.raises(ValueError, match=f"n_samples={X.shape[0]}"):
        TruncatedSVDCompressor(k, device="cpu").fit(X)
