import numpy as np
import pytest
from sklearn.decomposition import PCA, TruncatedSVD

from skdirection import TruncatedSVDCompressor

ALGORITHMS = ["covariance_eigh", "randomized", "exact"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_matches_sklearn_truncated_svd(embeddings, algorithm):
    X = embeddings.astype(np.float64)
    ours = TruncatedSVDCompressor(4, algorithm=algorithm, device="cpu", random_state=0).fit(
        X
    )
    theirs = TruncatedSVD(4, algorithm="arpack").fit(X)
    np.testing.assert_allclose(ours.singular_values_, theirs.singular_values_, rtol=1e-6)
    np.testing.assert_allclose(
        ours.explained_variance_ratio_, theirs.explained_variance_ratio_, rtol=1e-5
    )
    np.testing.assert_allclose(
        np.abs(ours.components_), np.abs(theirs.components_), atol=1e-6
    )


def test_centered_matches_pca(embeddings):
    X = embeddings.astype(np.float64)
    ours = TruncatedSVDCompressor(3, center=True, device="cpu").fit(X)
    pca = PCA(3).fit(X)
    np.testing.assert_allclose(ours.mean_, pca.mean_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        ours.explained_variance_ratio_, pca.explained_variance_ratio_, rtol=1e-6
    )
    np.testing.assert_allclose(
        ours.inverse_transform(ours.transform(X)),
        pca.inverse_transform(pca.transform(X)),
        atol=1e-8,
    )
    assert ours.compress(X).n_parameters == X.shape[0] * 3 + 3 * X.shape[1] + X.shape[1]


def test_uncentered_by_default(embeddings):
    svd = TruncatedSVDCompressor(3, device="cpu").fit(embeddings)
    assert svd.mean_ is None
    n, d = embeddings.shape
    assert svd.compress(embeddings).n_parameters == n * 3 + 3 * d


@pytest.mark.parametrize("center", [False, True])
def test_integer_weights_equal_repeated_rows(embeddings, center):
    # Weights 0 to 3: a zero-weight row counts as no row at all.
    weight = np.random.RandomState(0).randint(0, 4, size=len(embeddings))
    assert (weight == 0).sum() > 50
    weighted = TruncatedSVDCompressor(3, center=center, device="cpu").fit(
        embeddings, sample_weight=weight
    )
    repeated = TruncatedSVDCompressor(3, center=center, device="cpu").fit(
        np.repeat(embeddings, weight, axis=0)
    )
    np.testing.assert_allclose(weighted.components_, repeated.components_, atol=1e-5)
    if center:
        np.testing.assert_allclose(weighted.mean_, repeated.mean_, rtol=1e-5, atol=1e-6)


def test_weights_lower_the_error_of_heavy_rows(embeddings):
    weight = np.ones(len(embeddings))
    weight[:20] = 1000
    plain = TruncatedSVDCompressor(2, device="cpu").fit(embeddings)
    weighted = TruncatedSVDCompressor(2, device="cpu").fit(embeddings, sample_weight=weight)

    def heavy_error(model):
        heavy = embeddings[:20]
        return np.square(heavy - model.inverse_transform(model.transform(heavy))).sum()

    assert heavy_error(weighted) < heavy_error(plain)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_float32_stays_float32(embeddings, algorithm):
    svd = TruncatedSVDCompressor(3, algorithm=algorithm, device="cpu", random_state=0)
    codes = svd.fit_transform(embeddings)
    assert codes.dtype == np.float32 and svd.components_.dtype == np.float32
    assert svd.inverse_transform(codes).dtype == np.float32


def test_randomized_is_seeded(embeddings):
    def fit(seed):
        return (
            TruncatedSVDCompressor(
                3, algorithm="randomized", n_iter=0, device="cpu", random_state=seed
            )
            .fit(embeddings)
            .components_
        )

    np.testing.assert_array_equal(fit(0), fit(0))
    # The seed is used: without power iterations another one draws another sketch.
    assert not np.allclose(fit(0), fit(1))


def test_auto_picks_covariance_for_tall_tables(embeddings):
    assert (
        TruncatedSVDCompressor(2, device="cpu").fit(embeddings).algorithm_
        == "covariance_eigh"
    )


def test_n_components_above_n_samples_rejected():
    X = np.random.RandomState(0).normal(size=(3, 10))
    with pytest.raises(ValueError, match="n_samples=3"):
        TruncatedSVDCompressor(5, device="cpu").fit(X)


@pytest.mark.parametrize("algorithm", ["randomized", "exact", "covariance_eigh"])
def test_tiny_weights_keep_their_rows(algorithm):
    # Found by Hypothesis: a subnormal weight (5e-324) once vanished when the rows were
    # scaled by its square root in float32, leaving a basis that missed the row.
    X = np.array([[1.0, 1.0]], dtype=np.float32)
    svd = TruncatedSVDCompressor(1, algorithm=algorithm, device="cpu", random_state=0)
    svd.fit(X, sample_weight=np.array([5e-324]))
    np.testing.assert_allclose(svd.inverse_transform(svd.transform(X)), X, atol=1e-5)
    # Scaling every weight alike changes the singular values by its square root only.
    rng = np.random.RandomState(0)
    Y = rng.normal(size=(30, 5)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, size=30)
    a = TruncatedSVDCompressor(3, algorithm=algorithm, device="cpu", random_state=0)
    b = TruncatedSVDCompressor(3, algorithm=algorithm, device="cpu", random_state=0)
    a.fit(Y, sample_weight=w)
    b.fit(Y, sample_weight=w * 1e-40)
    np.testing.assert_allclose(np.abs(b.components_), np.abs(a.components_), atol=1e-4)
    np.testing.assert_allclose(b.singular_values_ * 1e20, a.singular_values_, rtol=1e-4)
