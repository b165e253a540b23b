import numpy as np
import pytest

from skdirection import TruncatedSVDCompressor
from skdirection.metrics import (
    compression_ratio,
    compression_ratio_scorer,
    cosine_scorer,
    mean_cosine_similarity,
    neg_rmse_scorer,
    reconstruction_rmse,
    row_cosine_similarity,
)


def test_paper_compression_ratios():
    # method.md: V=30522, d=768: k=75 -> 9.99, k=149 -> 5.03, k=299 -> 2.51
    assert compression_ratio(30522, 768, 75) == pytest.approx(9.99, abs=0.005)
    assert compression_ratio(30522, 768, 149) == pytest.approx(5.03, abs=0.005)
    assert compression_ratio(30522, 768, 299) == pytest.approx(2.51, abs=0.005)
    assert compression_ratio(10, 4, 2, bias=True) < compression_ratio(10, 4, 2)


def test_zero_rows_have_a_defined_cosine():
    X = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    X_hat = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 2.0]])
    np.testing.assert_allclose(row_cosine_similarity(X, X_hat), [1.0, 0.0, 1.0])


def test_weighted_mean_cosine():
    X = np.array([[1.0, 0.0], [1.0, 0.0]])
    X_hat = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert mean_cosine_similarity(X, X_hat) == pytest.approx(0.5)
    assert mean_cosine_similarity(X, X_hat, sample_weight=[3, 1]) == pytest.approx(0.75)


def test_rmse():
    X = np.zeros((2, 2))
    assert reconstruction_rmse(X, np.full((2, 2), 3.0)) == pytest.approx(3.0)
    assert reconstruction_rmse(X, [[0, 0], [2, 2]], sample_weight=[1, 0]) == 0.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        mean_cosine_similarity(np.ones((3, 2)), np.ones((3, 3)))


def test_scorers_agree_with_the_estimator(embeddings):
    svd = TruncatedSVDCompressor(n_components=4, device="cpu").fit(embeddings)
    assert cosine_scorer(svd, embeddings) == pytest.approx(svd.score(embeddings))
    assert neg_rmse_scorer(svd, embeddings) < 0
    n, d = embeddings.shape
    assert compression_ratio_scorer(svd, embeddings) == pytest.approx(
        compression_ratio(n, d, 4)
    )


def test_negative_weights_are_refused():
    X, Y = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [1.0, 0.0]])
    for metric in (mean_cosine_similarity, reconstruction_rmse):
        with pytest.raises(ValueError, match="Negative values"):
            metric(X, Y, sample_weight=[-1.0, 2.0])


def test_scorers_read_a_table_compressors_table(embeddings):
    # Compressors without inverse_transform (a whole-table fit) are scored on the rows
    # their table decodes to.
    from skdirection import ColumnWeightedCompressor, ScalarQuantizer

    weighted = ColumnWeightedCompressor(
        ScalarQuantizer(4), column_weight=np.linspace(0.5, 2.0, embeddings.shape[1])
    ).fit(embeddings)
    decoded = weighted.compress(embeddings).decode().numpy()
    assert cosine_scorer(weighted, embeddings) == pytest.approx(weighted.score(embeddings))
    assert neg_rmse_scorer(weighted, embeddings) == pytest.approx(
        -reconstruction_rmse(embeddings, decoded)
    )
    with pytest.raises(ValueError, match="Negative values"):
        weighted.score(embeddings, sample_weight=-np.ones(len(embeddings)))
