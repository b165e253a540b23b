"""Reconstruction metrics and scorers for embedding compressors.

Every function accepts numpy arrays; the ``*_scorer`` functions take
``(estimator, X, y=None)`` as scikit-learn scorers do, so they can be passed to
``GridSearchCV(scoring=...)`` directly or in a dict for multi-metric search.
"""

import numpy as np
import torch
from sklearn.utils.validation import (
    _check_sample_weight,
    check_array,
    check_consistent_length,
)

from ._engine.numerics import row_cosine
from .codecs import low_rank_size

__all__ = [
    "compression_ratio",
    "compression_ratio_scorer",
    "cosine_scorer",
    "mean_cosine_similarity",
    "neg_rmse_scorer",
    "reconstruction_rmse",
    "row_cosine_similarity",
]


def _check_pair(X, X_reconstructed):
    X = check_array(X, dtype=[np.float64, np.float32])
    X_reconstructed = check_array(X_reconstructed, dtype=[np.float64, np.float32])
    if X.shape != X_reconstructed.shape:
        raise ValueError(
            f"X has shape {X.shape} but X_reconstructed has shape {X_reconstructed.shape}."
        )
    return X.astype(np.float64, copy=False), X_reconstructed.astype(np.float64, copy=False)


def row_cosine_similarity(X, X_reconstructed):
    """Cosine similarity between each row of ``X`` and the same row of ``X_reconstructed``.

    A zero row has no direction: a zero row reconstructed as zero scores 1.0, and a zero
    row paired with a non-zero one scores 0.0.

    Returns
    -------
    similarity : ndarray of shape (n_rows,)
    """
    X, X_reconstructed = _check_pair(X, X_reconstructed)
    return row_cosine(torch.from_numpy(X), torch.from_numpy(X_reconstructed)).numpy()


def mean_cosine_similarity(X, X_reconstructed, sample_weight=None):
    """(Weighted) mean over rows of the cosine similarity with the reconstruction.

    Higher is better; 1.0 is a perfect reconstruction of every direction.

    Examples
    --------
    >>> import numpy as np
    >>> from skdirection.metrics import mean_cosine_similarity
    >>> X = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> mean_cosine_similarity(X, np.array([[2.0, 0.0], [1.0, 1.0]]))
    0.853...
    """
    similarity = row_cosine_similarity(X, X_reconstructed)
    weight = _check_sample_weight(
        sample_weight, similarity[:, None], ensure_non_negative=True
    )
    return float(np.average(similarity, weights=weight))


def reconstruction_rmse(X, X_reconstructed, sample_weight=None):
    """Root mean squared element error, rows weighted by ``sample_weight``."""
    X, X_reconstructed = _check_pair(X, X_reconstructed)
    weight = _check_sample_weight(sample_weight, X, ensure_non_negative=True)
    row_mse = ((X - X_reconstructed) ** 2).mean(axis=1)
    return float(np.sqrt(np.average(row_mse, weights=weight)))


def compression_ratio(n_rows, n_features, n_components, *, bias=False):
    """Parameters of the original table over those a rank-``n_components`` form stores.

    ``V*d / (V*k + k*d [+ d])``: the latent table, the decoder matrix and, with
    ``bias=True``, the decoder bias, as counted by Balazy et al. (2021).

    Examples
    --------
    >>> from skdirection.metrics import compression_ratio
    >>> round(compression_ratio(30522, 768, 75), 2)
    9.99
    """
    if min(n_rows, n_features, n_components) < 1:
        raise ValueError("n_rows, n_features and n_components must all be positive.")
    stored = low_rank_size(n_rows, n_features, n_components, bias=bias).n_parameters
    return n_rows * n_features / stored


def _reconstruct(estimator, X):
    X = check_array(X, dtype=[np.float64, np.float32])
    if not hasattr(estimator, "inverse_transform"):  # a table compressor: its table
        with torch.no_grad():
            return X, estimator.compress(X).decode().float().numpy()
    return X, estimator.inverse_transform(np.asarray(estimator.transform(X)))


def cosine_scorer(estimator, X, y=None, sample_weight=None):
    """Scorer: mean cosine similarity between ``X`` and its reconstruction."""
    X, X_reconstructed = _reconstruct(estimator, X)
    return mean_cosine_similarity(X, X_reconstructed, sample_weight)


def neg_rmse_scorer(estimator, X, y=None, sample_weight=None):
    """Scorer: minus the reconstruction RMSE (greater is better, as scorers require)."""
    X, X_reconstructed = _reconstruct(estimator, X)
    return -reconstruction_rmse(X, X_reconstructed, sample_weight)


def compression_ratio_scorer(estimator, X, y=None):
    """Scorer: parameters of ``X`` over the parameters ``estimator.compress(X)`` stores."""
    X = check_array(X, dtype=[np.float64, np.float32])
    check_consistent_length(X)
    return X.size / estimator.compress(X).n_parameters
