"""Product quantization of rows as a compressor: weighted k-means per block of columns."""

from numbers import Integral

import torch
from sklearn.base import _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .._engine.backend import (
    float32_rows,
    inference_device,
    resolve_device,
    torch_generator,
)
from .._engine.numerics import unit_rows
from .._engine.progress import progress_bar
from ..codecs import NormScaledCodec, ProductCodec, ProjectionCodec
from ..codecs.product import MAX_CENTROIDS, decode_blocks, encode_blocks, n_blocks
from ._base import BaseCompressor
from ._float16 import check_float16_magnitudes


class ProductQuantizer(BaseCompressor):
    """Product quantization: each block of columns of a row is one of 256 learned vectors.

    The columns are cut into blocks of ``block_size`` values. For every block a codebook
    of ``n_centroids`` vectors is learned by k-means over the rows (weighted by
    ``sample_weight``), and each row stores, per block, the one-byte index of its
    nearest codebook vector: ``8 / block_size`` bits a value, plus the codebooks once.
    With ``keep_norms`` (the default) the codebooks quantize the rows' unit directions
    and each row's norm is stored apart in float16 (Banaei et al., 2023), so the codes
    only have to get directions right.

    Unlike scalar codes, a codebook follows the joint distribution of its columns
    (outlier columns, correlated pairs), which is what pays at 2 bits a value and below.

    Parameters
    ----------
    block_size : int, default=4
        Columns a code covers: 2 gives 4 bits a value, 4 gives 2, 8 gives 1. A last
        block with fewer columns is padded with zeros.
    n_components : int or None, default=None
        When given, the (unit) rows are first projected on their ``n_components``
        weighted principal directions, ordered so that every block carries a like
        share of the variance (OPQ's eigenvalue allocation, Ge et al. [4]_), and the
        projections are quantized: ``n_components / block_size`` codes a row, plus the
        basis in float16 once. At high ratios this beats wider blocks over every
        column (see Notes).
    n_centroids : int, default=256
        Codebook vectors a block (at most 256: codes are one byte). Fewer are used when
        there are fewer rows.
    keep_norms : bool, default=True
        Quantize unit directions and store each row's norm in float16 (tables with
        norms above 65504, or all below ``2**-17``, are refused).
    max_iter : int, default=6
        Most iterations of Lloyd's algorithm. Every step but the last moves a centroid
        twice the way to the weighted mean of its rows (see Notes).
    codebook_dtype : {"float16", "float32"}, default="float16"
        Precision of the stored codebooks; codes are chosen against the rounded ones.
        Without ``keep_norms``, float16 refuses tables whose values exceed 65504 or
        all lie below ``2**-17`` in magnitude.
    device : str, default="auto"
        Torch device of the k-means: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    random_state : int, RandomState instance or None, default=None
        Seeds the draw of the starting centroids.
    verbose : int, default=0
        Show a progress bar over the k-means iterations.

    Attributes
    ----------
    codebooks_ : ndarray of shape (n_blocks_, n_centroids_, block_size)
        Codebook vectors of every block.
    components_ : ndarray of shape (n_components, n_features) or None
        The basis the rows are projected on (with ``n_components``), in the order of
        the blocks, in float32; the table stores it, and decodes through it, in
        float16.
    n_blocks_ : int
        Blocks (codes) a row.
    n_centroids_ : int
        Vectors a codebook.
    n_iter_ : int
        Iterations of Lloyd's algorithm run (fewer than ``max_iter`` once no code
        changes).
    bits_per_value_ : float
        Stored bits a value of a row (codes and norm), codebooks excluded.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    ScalarQuantizer : One integer code a value.
    FrequencyMixedCompressor : Per-row choice among codecs, by frequency.

    Notes
    -----
    ``transform`` returns, for every row, its ``n_blocks_`` codes (as floats) and, with
    ``keep_norms``, its stored norm last. :meth:`compress` stores the codes as uint8.

    On spaCy's ``en_core_web_md`` vectors (``benchmarks/bench_neighbours.py``), 112
    components in blocks of 4 keep a 10-NN overlap of 0.64 at 33x fewer bytes, where
    blocks of 12 over all 300 columns keep 0.53 at 35x and faiss's OPQ 0.57 at 33x.

    On SmolLM2-135M's input embedding (``benchmarks/bench_quality.py``), blocks of 4
    (2 bits a value, 15.2x fewer bytes than float32) multiply the perplexity by 1.18,
    and by 1.078 with token counts' square root as ``sample_weight``, where scalar
    2-bit codes per row (15.6x) give 1.70.

    The k-means learns from faiss's [3]_: distances through one matrix product with
    the norms folded in, and at most 256 rows a centroid (drawn in proportion to
    ``sample_weight`` on larger tables). Its steps are over-relaxed, so that 6 reach a
    lower weighted error on SmolLM2's unit rows than faiss's 10 plain ones, in less
    time (``benchmarks/bench_speed.py``).

    References
    ----------
    .. [1] H. Jégou, M. Douze, C. Schmid. "Product quantization for nearest neighbor
       search", IEEE TPAMI 33(1), 2011.
    .. [2] M. Banaei et al. "Revisiting offline compression: going beyond
       factorization-based methods for transformer language models", Findings of EACL
       2023.
    .. [3] J. Johnson, M. Douze, H. Jégou. "Billion-scale similarity search with GPUs",
       IEEE Transactions on Big Data, 2019.
    .. [4] T. Ge, K. He, Q. Ke, J. Sun. "Optimized product quantization", IEEE TPAMI
       36(4), 2014.

    Examples
    --------
    >>> import numpy as np
    >>> from skdirection import ProductQuantizer
    >>> X = np.random.RandomState(0).normal(size=(1000, 64)).astype(np.float32)
    >>> pq = ProductQuantizer(block_size=4, random_state=0).fit(X)
    >>> pq.transform(X).shape  # 16 codes and the norm
    (1000, 17)
    >>> table = pq.compress(X)
    >>> table.n_bytes  # 16 one-byte codes and a float16 norm a row, plus codebooks
    50768
    >>> round(pq.score(X), 2)
    0.9...
    """

    _parameter_constraints = {
        "block_size": [Interval(Integral, 1, None, closed="left")],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "n_centroids": [Interval(Integral, 2, MAX_CENTROIDS, closed="both")],
        "keep_norms": ["boolean"],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "codebook_dtype": [StrOptions({"float16", "float32"})],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        block_size=4,
        *,
        n_components=None,
        n_centroids=256,
        keep_norms=True,
        max_iter=6,
        codebook_dtype="float16",
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.block_size = block_size
        self.n_components = n_components
        self.n_centroids = n_centroids
        self.keep_norms = keep_norms
        self.max_iter = max_iter
        self.codebook_dtype = codebook_dtype
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    _fitted_marker = "codebooks_"

    @property
    def _n_features_out(self):
        return self.n_blocks_ + int(self.keep_norms)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Learn the codebooks of every block.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights in the k-means (e.g. token counts): heavier rows pull codebook
            vectors towards themselves. Rows of weight zero do not shape the codebooks.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        device = resolve_device(self.device)
        X = self._validate_rows(X, reset=True)
        self._check_magnitudes(X, fitting=True)
        weight = self._check_sample_weight(sample_weight, X)
        d = X.shape[1]
        if self.n_components is not None and self.n_components > d:
            raise ValueError(
                f"n_components={self.n_components} must not exceed the {d} features."
            )
        rows = float32_rows(X, device)
        generator = torch_generator(check_random_state(self.random_state), "cpu")
        codec = self._codec()
        weight = None if weight is None else torch.from_numpy(weight)
        name = type(self).__name__
        with progress_bar(total=self.max_iter, desc=name, verbose=self.verbose) as bar:
            codec.fit(rows, weight, generator, progress=bar)
        projection = codec.inner if self.keep_norms else codec
        product = projection if self.n_components is None else projection.latent
        self.codebooks_ = product.codebooks.cpu().numpy()
        self.components_ = (
            None if self.n_components is None else projection.components.cpu().numpy()
        )
        self.n_iter_ = product.n_iter_
        self.n_blocks_ = n_blocks(self.n_components or d, self.block_size)
        self.n_centroids_ = self.codebooks_.shape[1]
        self.bits_per_value_ = 8 * codec.row_size(d).n_bytes / d
        return self

    def _codec(self, codebooks=None, components=None):
        """The codec (projected with ``n_components``, norm-scaled with
        ``keep_norms``), with ``codebooks`` and ``components`` when given."""
        codec = ProductCodec(
            self.block_size,
            self.n_centroids,
            getattr(torch, self.codebook_dtype),
            self.max_iter,
        )
        codec.codebooks = codebooks
        if self.n_components is not None:
            codec = ProjectionCodec(self.n_components, codec, torch.float16)
            codec.components = components
        return NormScaledCodec(codec) if self.keep_norms else codec

    def _check_magnitudes(self, X, *, fitting=False):
        """Whether float16 stores the norms of ``X`` (and, when ``fitting``, its
        codebooks)."""
        if self.keep_norms:
            check_float16_magnitudes(X, "norms", "", kind="norms")
        elif fitting and self.codebook_dtype == "float16":
            check_float16_magnitudes(
                X, "codebooks", "use codebook_dtype='float32'", kind="values"
            )

    def _codes_and_norms(self, X):
        self._check_magnitudes(X)
        device = inference_device(self.device)
        rows = float32_rows(X, device)
        rows, norms = unit_rows(rows) if self.keep_norms else (rows, None)
        if self.components_ is not None:
            rows = rows @ torch.from_numpy(self.components_).to(device).T
        codes = encode_blocks(rows, torch.from_numpy(self.codebooks_).to(device))
        return codes.cpu(), None if norms is None else norms.half().cpu()

    def _encode(self, source):
        pieces = []
        for _, rows in source.chunks():
            codes, norms = self._codes_and_norms(rows)
            columns = [codes.float()]
            if norms is not None:
                columns.append(norms.float()[:, None])
            pieces.append(torch.cat(columns, dim=1))
        encoded = torch.cat(pieces) if pieces else torch.empty(0, self._n_features_out)
        return encoded.numpy().astype(source.dtype, copy=False)

    def _decode(self, codes):
        values = float32_rows(codes)
        block_codes = values[:, : self.n_blocks_]
        if block_codes.numel() and (
            block_codes.min() < 0
            or block_codes.max() >= self.n_centroids_
            or not torch.equal(block_codes, block_codes.round())
        ):
            raise ValueError(
                f"codes must be integers in [0, {self.n_centroids_ - 1}] (what transform "
                "returns)."
            )
        rows = decode_blocks(
            block_codes.long(),
            torch.from_numpy(self.codebooks_),
            self.n_components or self.n_features_in_,
        )
        if self.components_ is not None:  # decoded through the stored float16 basis
            rows = rows @ torch.from_numpy(self.components_).half().float()
        if self.keep_norms:
            if values.numel() and values[:, -1].min() < 0:
                raise ValueError("the last column (each row's norm) must not be negative.")
            rows = unit_rows(rows)[0] * values[:, -1:]
        return rows.numpy().astype(codes.dtype, copy=False)

    def compress(self, X):
        """The stored form of ``X``: uint8 codes and codebooks, and float16 norms.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)

        Returns
        -------
        table : ProductQuantizedTable, or LinearDecodedTable around one with
            ``n_components``; NormScaledTable around either with ``keep_norms``
        """
        check_is_fitted(self)
        X = self._validate_rows(X, reset=False)
        self._check_magnitudes(X)
        rows = float32_rows(X)
        components = (
            None if self.components_ is None else torch.from_numpy(self.components_)
        )
        return self._codec(torch.from_numpy(self.codebooks_), components).encode(rows)
