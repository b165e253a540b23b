"""What every compressor shares: input checks, sample weights, scoring, feature names."""

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import (
    _check_sample_weight,
    check_array,
    check_is_fitted,
    validate_data,
)

from .._engine.backend import RowSource, as_source, file_backing
from ..metrics import mean_cosine_similarity, row_cosine_similarity

FLOAT_DTYPES = (np.float64, np.float32)


class TableCompressor(BaseEstimator):
    """Base class of every estimator that stores a table: ``fit``, then ``compress`` to
    a :class:`~skdirection.CompressedTable` and ``score`` as the mean cosine between the
    rows and what the table decodes.

    Subclasses implement ``fit`` and ``compress`` and name in ``_fitted_marker`` the
    attribute that exists once fitting has finished.
    """

    def __sklearn_is_fitted__(self):
        return hasattr(self, self._fitted_marker)

    def _discard_fitted_state(self):
        """Leave the estimator unfitted, never half-written, after a failed fit."""
        for name in [n for n in vars(self) if n.endswith("_") and not n.startswith("_")]:
            delattr(self, name)

    def _validate_rows(self, X, *, reset):
        _check_numeric(X)
        return validate_data(self, X, dtype=list(FLOAT_DTYPES), reset=reset)

    def _validate_source(self, X, *, reset):
        """Validated rows of ``X`` as a :class:`RowSource` that streams a memmap.

        A memmap (or a row slice of one) is neither copied nor scanned here: its rows
        are checked for NaN and infinity chunk by chunk as they are read.
        """
        _check_numeric(X)
        streamed = file_backing(X) is not None
        rows = validate_data(
            self, X, dtype=list(FLOAT_DTYPES), reset=reset, ensure_all_finite=not streamed
        )
        return as_source(rows, X if streamed else None, check_finite=streamed)

    def _check_sample_weight(self, sample_weight, X):
        if sample_weight is None:
            return None
        weight = _check_sample_weight(
            sample_weight, X, dtype=np.float64, ensure_non_negative=True
        )
        if not np.all(np.isfinite(weight)):
            raise ValueError("sample_weight contains NaN or infinity.")
        return weight

    def score(self, X, y=None, sample_weight=None):
        """(Weighted) mean cosine similarity between the rows and their stored form.

        Higher is better (at most 1.0), so model selection maximises it.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the rows in the mean.

        Returns
        -------
        score : float
        """
        table = self.compress(X)
        X = self._validate_rows(X, reset=False)
        with torch.no_grad():
            decoded = table.decode().numpy()
        return mean_cosine_similarity(X, decoded, sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class BaseCompressor(ClassNamePrefixFeaturesOutMixin, TransformerMixin, TableCompressor):
    """Base class of the compressors that code each row on its own: ``transform`` to a
    latent code, ``inverse_transform`` back, ``score`` streamed chunk by chunk.

    Subclasses implement ``fit``, ``_encode`` (a :class:`RowSource` of validated rows to
    codes), ``_decode`` (codes to rows) and ``compress``.
    """

    @property
    def _n_features_out(self):
        return self.n_components

    def _validate_n_components(self, n_samples, n_features, *, max_samples=False):
        k = self.n_components
        if k >= n_features:
            raise ValueError(
                f"n_components={k} must be strictly less than the number of features "
                f"(n_features={n_features}): a rank as large as the data compresses "
                "nothing."
            )
        if max_samples and k > n_samples:
            raise ValueError(
                f"n_components={k} must be at most the number of rows "
                f"(n_samples={n_samples})."
            )

    def transform(self, X):
        """Encode rows of ``X`` as ``n_components`` latent values each.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_components)
        """
        check_is_fitted(self)
        return self._encode(self._validate_source(X, reset=False))

    def inverse_transform(self, X):
        """Decode latent codes back to rows of the original space.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_components)

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features_in_)
        """
        check_is_fitted(self)
        _check_numeric(X)
        codes = check_array(X, dtype=list(FLOAT_DTYPES))
        if codes.shape[1] != self._n_features_out:
            raise ValueError(
                f"inverse_transform expects {self._n_features_out} columns (what transform "
                f"returns), got {codes.shape[1]}."
            )
        return self._decode(codes)

    def score(self, X, y=None, sample_weight=None):
        """Mean cosine similarity between each row and its reconstruction.

        Higher is better (at most 1.0), so model selection maximises it. A memmap is
        read chunk by chunk.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the rows in the mean.

        Returns
        -------
        score : float
        """
        check_is_fitted(self)
        source = self._validate_source(X, reset=False)
        weight = self._check_sample_weight(sample_weight, source.X)
        similarity = np.empty(source.n_rows)
        for start, rows in source.chunks():
            decoded = self._decode(self._encode(RowSource(rows)))
            similarity[start : start + len(rows)] = row_cosine_similarity(rows, decoded)
        return float(np.average(similarity, weights=weight))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _check_numeric(X):
    kind = getattr(getattr(X, "dtype", None), "kind", None)
    if kind in ("U", "S"):
        raise TypeError(f"X must hold numbers, got an array of dtype {X.dtype}.")
