"""Per-row / per-group scalar quantization as a compressor."""

from numbers import Integral

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import check_is_fitted

from .._engine.backend import float32_rows, inference_device, resolve_device
from ..codecs.scalar import SUPPORTED_BITS, ScalarCodec, dequantize, n_groups
from ._base import BaseCompressor
from ._float16 import check_float16_magnitudes


class ScalarQuantizer(BaseCompressor):
    """Scalar quantization of each row (or group of columns) to 8, 4, 3 or 2 bits.

    Each group of ``group_size`` consecutive columns of a row gets its own scale and
    offset, ``x ~= code * scale + offset`` with integer ``code`` in ``[0, 2**bits - 1]``.
    For every group a clipping range is searched (shrinking ``[min, max]`` by up to
    half), which matters at 2 and 3 bits. It minimises the sum of the errors' eighth
    powers rather than their squares: clipping an outlier costs a language model more
    than its squared error says.

    ``transform`` returns, for every row, a self-contained code: its ``n_features``
    integer codes, then its per-group scales, then its per-group offsets, as floats.
    :meth:`compress` stores the same codes bit-packed (see :class:`QuantizedTable`).

    Parameters
    ----------
    bits : {8, 4, 3, 2}, default=4
        Bits per stored value.
    group_size : int or None, default=None
        Columns sharing one scale and offset; ``None`` means one pair per row. A last
        group with fewer columns is allowed.
    scale_dtype : {"float16", "float32"}, default="float16"
        Precision of the stored scales and offsets (counted in the table's bytes).
        float16 refuses tables whose values exceed 32752 or all lie below ``2**-17``
        in magnitude.
    clip_search : bool, default=True
        Search each group's clipping range; ``False`` uses the plain ``[min, max]``.
    device : str, default="auto"
        Torch device of the quantization (the clipping search is most of its work):
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Tables and codes are
        returned on the CPU.

    Attributes
    ----------
    group_size_ : int
        Effective group size (``n_features_in_`` when ``group_size`` is ``None``).
    n_groups_ : int
        Groups per row.
    bits_per_value_ : float
        Stored bits per table value, scales and offsets included.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    TruncatedSVDCompressor : Low-rank compression of the same tables.

    Notes
    -----
    The codec of a row depends on that row alone, so nothing is learned from the other
    rows: ``fit`` records the shape, and ``sample_weight`` is validated but cannot change
    any row's codes (the per-group range minimises that row's own error, which is the
    weighted optimum for any positive weight). Frequency matters when deciding how many
    bits each row gets: see :class:`FrequencyMixedCompressor`. Zero weights leave a
    row's codes unchanged as well.

    Examples
    --------
    >>> import numpy as np
    >>> from skdirection import ScalarQuantizer
    >>> X = np.random.RandomState(0).normal(size=(100, 64)).astype(np.float32)
    >>> quantizer = ScalarQuantizer(bits=4, group_size=32).fit(X)
    >>> codes = quantizer.transform(X)
    >>> codes.shape  # 64 codes, 2 scales, 2 offsets per row
    (100, 68)
    >>> table = quantizer.compress(X)
    >>> table.n_bytes  # 32 bytes of codes + 4 float16 values per row
    4000
    >>> round(quantizer.score(X), 3)
    0.99...
    """

    _parameter_constraints = {
        "bits": [Options(Integral, set(SUPPORTED_BITS))],
        "group_size": [Interval(Integral, 1, None, closed="left"), None],
        "scale_dtype": [StrOptions({"float16", "float32"})],
        "clip_search": ["boolean"],
        "device": [str],
    }

    def __init__(
        self,
        bits=4,
        *,
        group_size=None,
        scale_dtype="float16",
        clip_search=True,
        device="auto",
    ):
        self.bits = bits
        self.group_size = group_size
        self.scale_dtype = scale_dtype
        self.clip_search = clip_search
        self.device = device

    _fitted_marker = "bits_per_value_"

    @property
    def _n_features_out(self):
        return self.n_features_in_ + 2 * self.n_groups_

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Check ``X`` and fix the group layout.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None
            Validated; it cannot change a row's codes (see Notes).

        Returns
        -------
        self : object
            The fitted estimator.
        """
        X = self._validate_rows(X, reset=True)
        self._check_sample_weight(sample_weight, X)
        self._check_range(X)
        resolve_device(self.device)  # an unavailable device fails here, not later
        n_features = X.shape[1]
        codec = self._codec()
        self.group_size_ = codec.group_size_for(n_features)
        self.n_groups_ = n_groups(n_features, self.group_size_)
        self.bits_per_value_ = 8 * codec.row_size(n_features).n_bytes / n_features
        return self

    def _codec(self):
        return ScalarCodec(
            self.bits, self.group_size, getattr(torch, self.scale_dtype), self.clip_search
        )

    def _check_range(self, X):
        if self.scale_dtype == "float16":
            check_float16_magnitudes(
                X, "scales", "use scale_dtype='float32'", kind="ranges"
            )

    def _quantize(self, X):
        self._check_range(X)
        codes, scales, offsets = self._codec().quantize(self._rows(X))
        return codes.cpu(), scales.cpu(), offsets.cpu()

    def _rows(self, X):
        return torch.from_numpy(np.ascontiguousarray(X)).to(inference_device(self.device))

    def _encode(self, source):
        pieces = []
        for _, rows in source.chunks():
            codes, scales, offsets = self._quantize(rows)
            pieces.append(
                torch.cat([codes.float(), scales.float(), offsets.float()], dim=1)
            )
        encoded = torch.cat(pieces) if pieces else torch.empty(0, self._n_features_out)
        return encoded.numpy().astype(source.dtype, copy=False)

    def _decode(self, codes):
        d, g = self.n_features_in_, self.n_groups_
        values = float32_rows(codes)
        rows = dequantize(
            values[:, :d], values[:, d : d + g], values[:, d + g :], self.group_size_
        )
        return rows.numpy().astype(codes.dtype, copy=False)

    def compress(self, X):
        """The stored form of ``X``: bit-packed codes plus float scales and offsets.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)

        Returns
        -------
        table : QuantizedTable
        """
        check_is_fitted(self)
        X = self._validate_rows(X, reset=False)
        self._check_range(X)
        return self._codec().encode(self._rows(X)).to("cpu")
