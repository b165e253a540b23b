"""Truncated SVD as a compressor: the paper's baseline, with weights and a GPU path."""

import math
from numbers import Integral

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from .._engine.backend import (
    as_tensor,
    inference_device,
    map_rows,
    resolve_device,
    torch_generator,
)
from .._engine.numerics import (
    flip_signs,
    randomized_range_svd,
    top_eigenvectors,
    weighted_sums,
)
from ..codecs import LowRankTable
from ._base import BaseCompressor

# Above this many features the d x d covariance is no longer the cheap route.
_MAX_COVARIANCE_FEATURES = 4096


def _covariance_eigh(total, sums, gram, center, k):
    mean = sums / total
    if center:
        gram = gram - total * torch.outer(mean, mean)
    eigenvalues, components = top_eigenvectors(gram, k)
    return eigenvalues.clamp(min=0).sqrt(), components, mean


def _scaled_rows(X, weight, mean, device, dtype):
    rows = as_tensor(X, device, dtype)
    if mean is not None:
        rows = rows - mean.to(dtype)
    if weight is not None:
        rows = rows * as_tensor(np.sqrt(weight), device, dtype)[:, None]
    return rows


class TruncatedSVDCompressor(BaseCompressor):
    """Rank-``n_components`` truncated SVD of an embedding table.

    The baseline of Balazy et al. (2021): a table is stored as ``U * S`` (the latent codes
    ``transform(X)``) and ``components_``. Like scikit-learn's ``TruncatedSVD`` it does
    not centre the data unless asked. With ``sample_weight`` the basis minimises the
    row-weighted squared reconstruction error, so frequent rows are kept better.

    Parameters
    ----------
    n_components : int, default=2
        Rank of the approximation. Must be less than ``n_features`` and at most
        ``n_samples``.
    algorithm : {"auto", "covariance_eigh", "randomized", "exact"}, default="auto"
        ``"covariance_eigh"`` eigendecomposes the ``n_features x n_features`` (weighted)
        Gram matrix accumulated in float64 over row chunks: exact and fastest for tall
        tables. ``"randomized"`` is Halko et al.'s randomized SVD; ``"exact"`` a full
        SVD. ``"auto"`` takes ``"covariance_eigh"`` up to 4096 features, else
        ``"randomized"``. Every algorithm runs in torch on ``device``.
    n_iter : int, default=5
        Power iterations of the randomized algorithm.
    n_oversamples : int, default=10
        Extra random directions of the randomized algorithm.
    center : bool, default=False
        Subtract the (weighted) column mean first and store it as a decoder bias.
    device : str, default="auto"
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    random_state : int, RandomState instance or None, default=None
        Seeds the randomized algorithm.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Right singular vectors, the rows of the decoder matrix.
    singular_values_ : ndarray of shape (n_components,)
        Singular values of the (weighted, centred) data.
    explained_variance_ : ndarray of shape (n_components,)
        Weighted variance of each latent column.
    explained_variance_ratio_ : ndarray of shape (n_components,)
        ``explained_variance_`` over the total weighted variance of ``X``.
    mean_ : ndarray of shape (n_features,) or None
        Column means removed before projecting (``None`` when ``center=False``).
    algorithm_ : str
        Algorithm used.
    device_ : str
        Device used.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    DirectionAutoEncoder : The paper's direction-loss autoencoder.
    sklearn.decomposition.TruncatedSVD : The same decomposition without weights.

    References
    ----------
    .. [1] K. Balazy, M. Banaei, R. Lebret, J. Tabor, K. Aberer. "Direction is what you
       need: Improving Word Embedding Compression in Large Language Models",
       RepL4NLP workshop at ACL 2021. arXiv:2106.08181.
    .. [2] N. Halko, P. G. Martinsson, J. A. Tropp. "Finding structure with randomness:
       Probabilistic algorithms for constructing approximate matrix decompositions",
       SIAM Review 53(2), 2011.

    Examples
    --------
    >>> import numpy as np
    >>> from skdirection import TruncatedSVDCompressor
    >>> X = np.random.RandomState(0).normal(size=(100, 10))
    >>> svd = TruncatedSVDCompressor(n_components=3, random_state=0).fit(X)
    >>> svd.components_.shape
    (3, 10)
    >>> svd.transform(X).shape
    (100, 3)
    >>> table = svd.compress(X)
    >>> table.n_parameters
    330
    """

    _fitted_marker = "components_"
    _parameter_constraints = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "algorithm": [StrOptions({"auto", "covariance_eigh", "randomized", "exact"})],
        "n_iter": [Interval(Integral, 0, None, closed="left")],
        "n_oversamples": [Interval(Integral, 0, None, closed="left")],
        "center": ["boolean"],
        "device": [str],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_components=2,
        *,
        algorithm="auto",
        n_iter=5,
        n_oversamples=10,
        center=False,
        device="auto",
        random_state=None,
    ):
        self.n_components = n_components
        self.algorithm = algorithm
        self.n_iter = n_iter
        self.n_oversamples = n_oversamples
        self.center = center
        self.device = device
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Fit the rank-``n_components`` basis of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The table to compress. Numpy arrays, memmaps and DataFrames are accepted.
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights: the basis minimises the weighted squared error.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        source = self._validate_source(X, reset=True)
        X = source.X
        weight = self._check_sample_weight(sample_weight, X)
        n_samples, n_features = X.shape
        self._validate_n_components(n_samples, n_features, max_samples=True)
        try:
            return self._fit_rows(source, weight)
        except BaseException:
            # An interrupt or error leaves the estimator unfitted, never half-written.
            self._discard_fitted_state()
            for name in ("_total", "_sums", "_gram"):
                self.__dict__.pop(name, None)
            raise

    def _fit_rows(self, source, weight):
        X = source.X
        n_features = X.shape[1]
        device = resolve_device(self.device)
        algorithm = self.algorithm
        if algorithm == "auto":
            if n_features <= _MAX_COVARIANCE_FEATURES:
                algorithm = "covariance_eigh"
            else:
                algorithm = "randomized"

        if algorithm == "covariance_eigh":
            total, sums, gram = weighted_sums(source, weight, device)
            self._solve_covariance(total, sums, gram, X.dtype, device)
            return self

        k = self.n_components
        dtype = torch.float64 if X.dtype == np.float64 else torch.float32
        mean = None
        if self.center:
            total, sums, _ = weighted_sums(source, weight, device, with_gram=False)
            mean = sums / total
        # The basis does not depend on the weights' scale: relative to the largest, tiny
        # (even subnormal) weights keep their rows in the rows' dtype.
        largest = 1.0 if weight is None else float(weight.max())
        relative = None if weight is None else weight / largest
        rows = _scaled_rows(X, relative, mean, device, dtype)
        if algorithm == "exact":
            _, singular_values, vt = torch.linalg.svd(rows, full_matrices=False)
            singular_values, components = singular_values[:k], vt[:k]
        else:
            generator = torch_generator(check_random_state(self.random_state), device)
            singular_values, components = randomized_range_svd(
                rows, k, self.n_oversamples, self.n_iter, generator
            )
        singular_values = singular_values * math.sqrt(largest)
        del rows
        for name in ("_total", "_sums", "_gram"):
            self.__dict__.pop(name, None)
        self._set_solution(singular_values, components, mean, X.dtype, algorithm, device)
        self._set_explained_variance(X, weight)
        return self

    def partial_fit(self, X, y=None, sample_weight=None):
        """Add the rows of ``X`` to the fit: the basis of all rows seen so far.

        Every call adds the chunk's weighted Gram matrix, column sums and total weight
        (float64, ``n_features x n_features``) to running totals and solves their
        eigenproblem, so after the last chunk the model equals ``fit`` on all the rows
        with ``algorithm="covariance_eigh"``, whatever the chunking.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A chunk of rows.
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights.

        Returns
        -------
        self : object
            The estimator, fitted on every row seen so far.
        """
        first = not hasattr(self, "_gram")
        if first:
            self._validate_params()
        source = self._validate_source(X, reset=first)
        weight = self._check_sample_weight(sample_weight, source.X)
        device = resolve_device(self.device)
        total, sums, gram = weighted_sums(source, weight, device)
        if not first:
            total = total + float(self._total)
            sums = sums + torch.from_numpy(self._sums).to(device)
            gram = gram + torch.from_numpy(self._gram).to(device)
        self._validate_n_components(source.n_rows, source.n_features)
        self._solve_covariance(total, sums, gram, source.dtype, device)
        return self

    def _solve_covariance(self, total, sums, gram, dtype, device):
        self._total = float(total)
        self._sums = sums.cpu().numpy()
        self._gram = gram.cpu().numpy()
        singular_values, components, mean = _covariance_eigh(
            total, sums, gram, self.center, self.n_components
        )
        self._set_solution(
            singular_values, components, mean, dtype, "covariance_eigh", device
        )
        # The weighted covariance gives every variance without another pass over X.
        mean = sums / total
        covariance = gram / total - torch.outer(mean, mean)
        basis = torch.from_numpy(self.components_).to(device, torch.float64)
        explained = ((basis @ covariance) * basis).sum(dim=1).clamp(min=0)
        total_variance = torch.trace(covariance).clamp(min=0)
        self.explained_variance_ = explained.cpu().numpy()
        if total_variance > 0:
            self.explained_variance_ratio_ = (explained / total_variance).cpu().numpy()
        else:
            self.explained_variance_ratio_ = np.zeros_like(self.explained_variance_)

    def _set_solution(self, singular_values, components, mean, dtype, algorithm, device):
        self.components_ = np.ascontiguousarray(
            flip_signs(components).cpu().numpy(), dtype=dtype
        )
        self.singular_values_ = singular_values.cpu().numpy().astype(dtype)
        self.mean_ = mean.cpu().numpy().astype(dtype) if self.center else None
        self.algorithm_ = algorithm
        self.device_ = str(device)

    def _set_explained_variance(self, X, weight):
        codes = self._encode(X).astype(np.float64)
        self.explained_variance_ = _weighted_variance(codes, weight)
        total_variance = _weighted_variance(X.astype(np.float64), weight).sum()
        if total_variance > 0:
            self.explained_variance_ratio_ = self.explained_variance_ / total_variance
        else:
            self.explained_variance_ratio_ = np.zeros_like(self.explained_variance_)

    def _torch_state(self, device, dtype):
        components = torch.from_numpy(self.components_).to(device, dtype)
        mean = (
            None if self.mean_ is None else torch.from_numpy(self.mean_).to(device, dtype)
        )
        return components, mean

    def _encode(self, X):
        device = inference_device(self.device)
        dtype = torch.float64 if X.dtype == np.float64 else torch.float32
        components, mean = self._torch_state(device, dtype)

        def project(rows):
            return (rows if mean is None else rows - mean) @ components.T

        return map_rows(project, X, device, X.dtype, dtype=dtype)

    def _decode(self, codes):
        device = inference_device(self.device)
        dtype = torch.float64 if codes.dtype == np.float64 else torch.float32
        components, mean = self._torch_state(device, dtype)

        def reconstruct(rows):
            rows = rows @ components
            return rows if mean is None else rows + mean

        return map_rows(reconstruct, codes, device, codes.dtype, dtype=dtype)

    def compress(self, X):
        """The stored form of ``X``: ``U * S`` as the latent table and ``components_``.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)

        Returns
        -------
        table : LowRankTable
            A torch module; ``table(indices)`` decodes rows, ``table.n_parameters`` and
            ``table.n_bytes`` count what it stores (the mean too, when centred).
        """
        latent = np.asarray(self.transform(X), dtype=np.float32)
        bias = (
            None if self.mean_ is None else torch.from_numpy(self.mean_.astype(np.float32))
        )
        return LowRankTable(
            torch.from_numpy(latent),
            [torch.from_numpy(self.components_.astype(np.float32))],
            [bias],
        )


def _weighted_variance(values, weight):
    mean = np.average(values, axis=0, weights=weight)
    return np.average((values - mean) ** 2, axis=0, weights=weight)
