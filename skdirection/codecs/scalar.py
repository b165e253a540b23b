"""Bit-packed scalar quantization: the maths, the stored table and the codec.

Codes of ``bits`` bits are packed row by row into ``uint8`` storage, so a table's
``n_bytes`` is what it really costs: half a byte per value at 4 bits, three eighths at 3,
a quarter at 2. Each group of ``group_size`` columns of a row has a scale and an offset,
``x ~= code * scale + offset``.
"""

import math

import torch

from .._engine.backend import rows_per_chunk
from ._codec import Codec
from ._scalar_linear import quantized_linear
from ._table import CompressedTable, StoredSize, dtype_name, frozen, register_table

SUPPORTED_BITS = (2, 3, 4, 8)
# Shrink factors of a group's [min, max] range tried by the clipping search: clipping a
# few outliers buys finer steps for every other value of the group.
CLIP_RATIOS = tuple(1.0 - 0.05 * i for i in range(11))
# The search minimises the sum of |error| ** CLIP_ERROR_POWER, not squared error: a
# language model suffers from a clipped outlier more than the squared error says. On
# SmolLM2-135M (perplexity on Hamlet) powers 2, 4 and 8 gave x1.069, x1.031, x1.023
# for int4 per row and x1.267, x1.170, x1.162 for int2 in groups of 32.
CLIP_ERROR_POWER = 8
# Values quantized at once: the clipping search works on two float copies of them,
# which on the CPU then stay in cache. On SmolLM2's table (int3, 1 and 2 threads),
# 2**18 values quantize 1.15x faster than 2**17 and 1.2x faster than 2**20, where the
# copies no longer fit a core's L2 cache; on a GPU, larger chunks launch fewer kernels.
_CPU_QUANTIZE_VALUES = 1 << 18
_DEVICE_QUANTIZE_VALUES = 1 << 24


def n_groups(n_features, group_size):
    return math.ceil(n_features / group_size)


def packed_row_bytes(n_features, bits):
    return math.ceil(n_features * bits / 8)


def quantized_row_size(n_features, bits, group_size, scale_dtype=torch.float16):
    """:class:`StoredSize` of one row: its packed codes (one value each) and a scale and
    an offset a group."""
    codes = StoredSize(n_features, packed_row_bytes(n_features, bits))
    return codes + StoredSize.of_values(2 * n_groups(n_features, group_size), scale_dtype)


def _grouped(X, group_size):
    """``X`` as ``(n, n_groups, group_size)``, a ragged last group padded with its edge."""
    n, d = X.shape
    pad = n_groups(d, group_size) * group_size - d
    if pad:
        X = torch.cat([X, X[:, -1:].expand(n, pad)], dim=1)
    return X.reshape(n, -1, group_size)


def quantize(X, bits, group_size, scale_dtype=torch.float16, clip_search=True):
    """Per-group asymmetric quantization of the rows of a float tensor.

    For every group the clipping range ``ratio * [min, max]`` with the lowest sum of
    ``|error| ** CLIP_ERROR_POWER`` is kept (``ratio`` over :data:`CLIP_RATIOS`, or 1
    without search). Scales and offsets are rounded to ``scale_dtype`` before the codes
    are computed, so decoding with the stored values reproduces exactly what was
    measured.

    Rows are quantized a chunk at a time, so the search's working copies stay small
    whatever the table's size.

    Returns
    -------
    codes : uint8 tensor of shape (n, n_features)
    scales, offsets : tensors of dtype ``scale_dtype``, shape (n, n_groups)
    """
    chunk = rows_per_chunk(
        X.shape[1], X.device, _CPU_QUANTIZE_VALUES, _DEVICE_QUANTIZE_VALUES
    )
    pieces = [
        _quantize_rows(X[start : start + chunk], bits, group_size, scale_dtype, clip_search)
        for start in range(0, X.shape[0], chunk)
    ]
    if not pieces:
        return _quantize_rows(X, bits, group_size, scale_dtype, clip_search)
    return tuple(torch.cat(parts) for parts in zip(*pieces, strict=True))


def _quantize_rows(X, bits, group_size, scale_dtype, clip_search):
    n, d = X.shape
    grouped = _grouped(X.to(torch.float32), group_size)
    pad = grouped.shape[1] * group_size - d
    lo, hi = grouped.amin(dim=2), grouped.amax(dim=2)
    levels = 2**bits - 1
    ratios = torch.tensor(
        CLIP_RATIOS if clip_search else (1.0,), dtype=torch.float32, device=X.device
    )[:, None, None]
    # The scales and offsets of every ratio at once: per group, they are few values.
    scales, offsets = _scale_offset(lo, hi, ratios, levels, scale_dtype)
    best = torch.zeros(lo.shape, dtype=torch.long, device=X.device)
    if len(ratios) > 1:
        # The search keeps each group's best ratio only; the codes are made once, after.
        # A value's error is its scale times its rounding error in steps, ``code - (x -
        # offset) / scale``: the sum of powers is taken in steps, then scaled by the
        # group's ``(scale / range) ** power`` (relative to the range, and in float64, so
        # that the power cannot underflow).
        steps = torch.empty_like(grouped)
        work = torch.empty_like(grouped)
        errors = torch.empty(scales.shape, dtype=torch.float32, device=X.device)
        all_s, all_o = scales.float()[..., None], offsets.float()[..., None]
        all_divisors = _nonzero_scales(all_s)
        for i in range(len(ratios)):
            _steps(grouped, all_divisors[i], all_o[i], steps)
            torch.round(steps, out=work).clamp_(0, levels).sub_(steps)
            _power(work, CLIP_ERROR_POWER)
            if pad:
                work[:, -1, group_size - pad :] = 0
            torch.sum(work, dim=2, out=errors[i])
        spread = (hi - lo).double().clamp_min(torch.finfo(torch.float64).tiny)
        errors = errors.double() * (all_s[..., 0].double() / spread) ** CLIP_ERROR_POWER
        best = errors.min(dim=0).indices  # the first of equal errors: the widest range
    scale = scales.gather(0, best[None])[0]
    offset = offsets.gather(0, best[None])[0]
    s, o = scale.float()[..., None], offset.float()[..., None]
    codes = _codes(grouped, _nonzero_scales(s), o, levels, torch.empty_like(grouped))
    return codes.reshape(n, -1)[:, :d].to(torch.uint8), scale, offset


def _scale_offset(lo, hi, ratio, levels, scale_dtype):
    """Scale and offset of the groups spanning ``ratio * [lo, hi]``, at ``scale_dtype``."""
    return ((hi - lo) * ratio / levels).to(scale_dtype), (lo * ratio).to(scale_dtype)


def _steps(grouped, divisor, o, out):
    """``(grouped - o) / divisor`` into ``out``: the values in steps of the scale (see
    `_nonzero_scales`), before rounding."""
    return torch.sub(grouped, o, out=out).div_(divisor)


def _codes(grouped, divisor, o, levels, out):
    """Codes (as floats) of ``grouped`` at offsets ``o`` and scales ``divisor`` (see
    `_nonzero_scales`), into ``out``."""
    return _steps(grouped, divisor, o, out).round_().clamp_(0, levels)


def _nonzero_scales(s):
    """``s`` with its zeros (groups of one value) replaced by ones."""
    return torch.where(s > 0, s, torch.ones_like(s))


def _power(x, power):
    """``|x| ** power`` in place; a power of two by repeated squaring."""
    if power > 1 and power & (power - 1) == 0:
        while power > 1:
            x.square_()
            power //= 2
        return x
    return x.abs_().pow_(power)


def dequantize(codes, scales, offsets, group_size):
    """Rows from codes ``(n, d)`` and per-group ``scales``/``offsets`` ``(n, n_groups)``."""
    n, d = codes.shape
    if d % group_size == 0:
        grouped = codes.float().view(n, -1, group_size)
        return (grouped * scales.float()[..., None] + offsets.float()[..., None]).view(n, d)
    group = torch.arange(d, device=codes.device) // group_size
    return codes.float() * scales.float()[:, group] + offsets.float()[:, group]


def pack_codes(codes, bits):
    """Pack ``(n, d)`` codes below ``2**bits`` into ``(n, ceil(d * bits / 8))`` uint8."""
    codes = codes.to(torch.uint8)
    if bits == 8:
        return codes.clone()
    n, d = codes.shape
    shifts = torch.arange(bits - 1, -1, -1, dtype=torch.uint8, device=codes.device)
    bit_array = ((codes[..., None] >> shifts) & 1).reshape(n, d * bits)
    n_bytes = packed_row_bytes(d, bits)
    pad = n_bytes * 8 - d * bits
    if pad:
        bit_array = torch.cat([bit_array, bit_array.new_zeros(n, pad)], dim=1)
    weights = (2 ** torch.arange(7, -1, -1, device=codes.device)).to(torch.uint8)
    return (bit_array.reshape(n, n_bytes, 8) * weights).sum(dim=2, dtype=torch.uint8)


def unpack_codes(packed, bits, n_features):
    """Inverse of :func:`pack_codes`.

    Every ``bits / gcd(bits, 8)`` bytes hold ``8 / gcd(bits, 8)`` whole codes (one byte
    one code at 8 bits, two at 4, four at 2; three bytes eight codes at 3): such a word
    is read as an integer and each code shifted out of it.
    """
    if bits == 8:
        return packed
    n = packed.shape[0]
    word_bytes, word_codes = bits // math.gcd(bits, 8), 8 // math.gcd(bits, 8)
    pad = -packed.shape[1] % word_bytes
    if pad:
        packed = torch.cat([packed, packed.new_zeros(n, pad)], dim=1)
    dtype = torch.uint8 if word_bytes == 1 else torch.int32
    words = packed.reshape(n, -1, word_bytes).to(dtype)
    word = words[..., 0]
    for i in range(1, word_bytes):
        word = (word << 8) | words[..., i]
    shifts = torch.arange(bits * (word_codes - 1), -1, -bits, device=packed.device)
    codes = (word[..., None] >> shifts.to(dtype)) & (2**bits - 1)
    return codes.reshape(n, -1)[:, :n_features].to(torch.uint8)


@register_table
class QuantizedTable(CompressedTable):
    """Rows stored as bit-packed integer codes with a scale and offset per group.

    Row ``i``, column ``j`` decodes to ``code[i, j] * scale[i, g] + offset[i, g]`` where
    ``g = j // group_size``. The codes live in ``packed`` (uint8, ``bits`` bits a value),
    so ``n_bytes`` counts ``bits / 8`` bytes a value plus the scales and offsets;
    ``n_parameters`` counts one value per code, scale and offset.

    Parameters
    ----------
    packed : uint8 tensor of shape (n_rows, ceil(n_features * bits / 8))
    scales, offsets : float tensor of shape (n_rows, n_groups)
    n_features : int
    bits : {2, 3, 4, 8}
    group_size : int
    """

    def __init__(self, packed, scales, offsets, n_features, bits, group_size):
        super().__init__()
        if bits not in SUPPORTED_BITS:
            raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}.")
        self.n_features = int(n_features)
        self.bits = int(bits)
        self.group_size = int(group_size)
        self.packed = frozen(packed)
        self.scales = frozen(scales)
        self.offsets = frozen(offsets)

    @classmethod
    def from_rows(
        cls, X, bits, group_size=None, scale_dtype=torch.float16, clip_search=None
    ):
        """Quantize the rows of a float tensor ``X`` into a table.

        ``clip_search=None`` searches clipping ranges below 8 bits only.
        """
        return ScalarCodec(bits, group_size, scale_dtype, clip_search).encode(
            torch.as_tensor(X)
        )

    def decode(self, indices=None):
        if indices is None:
            return self._rows(self.packed, self.scales, self.offsets)
        return self._rows(self.packed[indices], self.scales[indices], self.offsets[indices])

    def _decode_range(self, start, stop):
        return self._rows(
            self.packed[start:stop], self.scales[start:stop], self.offsets[start:stop]
        )

    def _linear(self, h):
        return quantized_linear(self, h)

    def _rows(self, packed, scales, offsets):
        shape = packed.shape[:-1]
        codes = unpack_codes(
            packed.reshape(-1, packed.shape[-1]), self.bits, self.n_features
        )
        rows = dequantize(
            codes,
            scales.reshape(codes.shape[0], -1),
            offsets.reshape(codes.shape[0], -1),
            self.group_size,
        )
        return rows.reshape(*shape, self.n_features)

    @property
    def num_embeddings(self):
        return self.packed.shape[0]

    @property
    def embedding_dim(self):
        return self.n_features

    @property
    def n_parameters(self):
        return (
            self.num_embeddings * self.n_features
            + self.scales.numel()
            + self.offsets.numel()
        )

    def config(self):
        return {
            "n_rows": self.num_embeddings,
            "n_features": self.n_features,
            "bits": self.bits,
            "group_size": self.group_size,
            "scale_dtype": dtype_name(self.scales.dtype),
        }

    @classmethod
    def empty(cls, n_rows, n_features, bits, group_size, scale_dtype="float16"):
        dtype = getattr(torch, scale_dtype)
        groups = n_groups(n_features, group_size)
        return cls(
            torch.empty(n_rows, packed_row_bytes(n_features, bits), dtype=torch.uint8),
            torch.empty(n_rows, groups, dtype=dtype),
            torch.empty(n_rows, groups, dtype=dtype),
            n_features,
            bits,
            group_size,
        )


class ScalarCodec(Codec):
    """Scalar quantization of every value: ``bits`` a value, a scale and an offset per
    group of ``group_size`` columns of a row (``None``: one pair per row).

    Parameters
    ----------
    bits : {2, 3, 4, 8}
    group_size : int or None, default=None
    scale_dtype : torch.dtype, default=torch.float16
    clip_search : bool or None, default=None
        Search each group's clipping range; ``None`` searches below 8 bits.
    """

    def __init__(self, bits, group_size=None, scale_dtype=torch.float16, clip_search=None):
        if bits not in SUPPORTED_BITS:
            raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}.")
        self.bits = bits
        self.group_size = group_size
        self.scale_dtype = scale_dtype
        self.clip_search = bits < 8 if clip_search is None else clip_search
        self.name = f"int{bits}" if group_size is None else f"int{bits}-g{group_size}"

    def group_size_for(self, n_features):
        """Columns a group covers in rows of ``n_features`` values."""
        return n_features if self.group_size is None else min(self.group_size, n_features)

    def quantize(self, rows):
        """``(codes, scales, offsets)`` of the rows (codes unpacked, one a value)."""
        group = self.group_size_for(rows.shape[1])
        return quantize(rows, self.bits, group, self.scale_dtype, self.clip_search)

    def encode(self, rows):
        codes, scales, offsets = self.quantize(rows)
        group = self.group_size_for(rows.shape[1])
        return QuantizedTable(
            pack_codes(codes, self.bits), scales, offsets, rows.shape[1], self.bits, group
        )

    def reconstruct(self, rows):
        codes, scales, offsets = self.quantize(rows)
        return dequantize(codes, scales, offsets, self.group_size_for(rows.shape[1]))

    def row_size(self, n_features):
        group = self.group_size_for(n_features)
        return quantized_row_size(n_features, self.bits, group, self.scale_dtype)
