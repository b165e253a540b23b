"""``hidden @ W.T`` straight from bit-packed scalar codes: the kernels behind
``QuantizedTable.linear``.

Row ``v`` decodes to ``code[v, c] * scale[v, g] + offset[v, g]`` with ``g = c //
group_size``, so ``logits[v] = sum_g scale[v, g] (h_g . code_vg) + offset[v, g] sum(h_g)``:
scales and offsets apply to per-group dot products, never to the values. The packed
bytes of a tile of rows are split into byte-aligned *fields* (:class:`FieldLayout`), each
a run of one code's bits inside one byte times a power of two that the coefficient of
``h`` undoes; ``h . code`` is a sum over fields, so no code is ever put back together.

The dot products are taken one of two ways:

- integer (on a CPU where ``torch._int_mm`` is fast, for a few rows of ``h``, as in
  generation, and tables of :data:`INT_MIN_ROWS` rows or more): the fields are int8 and
  ``h`` is written as :data:`DIGITS` int8 digits a group under a power-of-two scale;
  ``torch._int_mm`` gives the exact int32 dot product of every group with every digit,
  and one small float matmul combines them. Besides float32 rounding the only error is
  ``h``'s last digit: ``2**-27`` of a group's largest coefficient (at most 4 times its
  largest value).
- float (prompts, other devices, or a CPU or torch without a fast working
  ``torch._int_mm``, see `_int_mm_pays`): the fields as float32, scaled per group,
  times ``h`` by ``torch.mm``.
"""

import math
import sys
import time

import torch
import torch.nn.functional as F

from . import _table
from ._table import row_tiles, weighted_group_sums

DIGITS = 4
# The integer path pays one int32 column per group, row of h and digit, and an epilogue
# over them: it is faster than the float path up to about this many columns (per-row
# codes) or groups times rows of h (grouped codes; t <= 2 for groups of 32 at d = 576).
INT_MAX_COLUMNS = 512
INT_MAX_GROUP_COLUMNS = 40
# The integer path's fixed cost (the digits of h, the buffers: about 0.2 to 0.35 ms)
# pays from about this many rows; fewer (as in a mix's small parts) take the float path.
# On SmolLM2's rows at one and two threads the two paths cross between 660 (int3 in
# groups of 32) and 4400 rows (int8 per row).
INT_MIN_ROWS = 2048
# Rows whose int32 partial sums are combined by one float matmul.
CHUNK_ROWS = 8192
# With several torch threads, each op is shared among them, and tiles this many times
# larger pay for that. On SmolLM2's table at two threads, int3 in groups of 32: 10.1 ms
# a call, against 13.6 ms with one thread's tiles and 14.5 ms with the rows shared
# among Python threads (whose many small ops wait on each other for the GIL); on the
# float path (an AVX2-only AMD EPYC), 82 ms against 114 ms, and 42 against 49 ms for
# int4 in groups of 32.
THREADED_TILE_FACTOR = 4
# Whether the integer path serves a device type: measured at first use on the CPU (see
# `_int_mm_pays`), False elsewhere, and set to False once torch._int_mm fails.
_INT_MM_WORKS = {}
# torch._int_mm pays when it is at most this many times slower than torch.mm on float
# copies of its operands: the float path converts and scales every field besides its
# product. On CPUs with an int8 dot-product instruction (VNNI) it is faster than
# torch.mm; on an AVX2-only AMD EPYC it was 15 to 18x slower, which made the integer
# path 14 to 30x slower than the float one (int4 in groups of 32 on SmolLM2's table:
# 1117 ms a call against 61 ms).
INT_MM_MAX_SLOWDOWN = 2.0
_PROBE_SHAPE = (1024, 512, 16)  # rows of fields, fields, columns of coefficients
# One row of h gathers a value a byte of code from look-up tables (see `_linear_lut`)
# where that beats the float path's product over every field: at 2, 3 and 4 bits, whose
# bytes hold 4, 3 and 2 fields. On SmolLM2's table at two threads (AVX2-only AMD EPYC),
# medians of 40 alternated calls: 30.0 against 97.3 ms at 3 bits and 36.7 against
# 49.0 ms at 4 in groups of 32, 37.4 against 39.8 ms at 4 bits a row; earlier, 19
# against 62 ms at 2 bits. At 8 bits (a field a byte) the float path converts the
# bytes as they are.
LUT_MAX_BITS = 4


def _signed64(x):
    return x - (1 << 64) if x >= 1 << 63 else x


class FieldLayout:
    """Where every field of a packed row lies, and the ops that cut a tile into them.

    Codes are packed most significant bit first, row by row. A field is a run of one
    code's bits inside one byte: at 2, 4 and 8 bits one field a code; at 3 bits, 3 codes
    in 8 straddle two bytes and have two fields. ``n_planes`` fields at most share a
    byte, so a tile of ``R`` rows cuts into ``(R, n_planes * n_bytes)`` fields.

    A field need not be moved to its place in the code: it may hold its bits times a
    power of two, ``2**e`` with ``e`` in :attr:`weight` as ``2**-e``, which the
    coefficients of ``h`` then undo. That lets whole rows of little-endian 64-bit
    words be cut with one shift and one mask a plane, the mask varying per word.

    Attributes
    ----------
    column : int64 tensor of shape (n_planes * n_bytes,)
        The column each field belongs to.
    used : bool tensor of the same shape
        False for slots that hold no field (padding bits, bytes with fewer fields).
    weight : float32 tensor of the same shape
        What a field's value is multiplied by to give its part of the code; 0 where
        unused.
    """

    def __init__(self, n_features, bits, group_size, device):
        n_bytes = math.ceil(n_features * bits / 8)
        fields = [[] for _ in range(n_bytes)]
        for c in range(n_features):
            done = 0
            while done < bits:
                byte, first = divmod(c * bits + done, 8)
                length = min(bits - done, 8 - first)
                shift = 8 - first - length  # of the run's lowest bit inside the byte
                place = bits - done - length  # of the run's lowest bit inside the code
                fields[byte].append((c, ((1 << length) - 1) << shift, shift, place))
                done += length
        self.n_planes = max(map(len, fields))
        self.n_bytes, self.bits = n_bytes, bits
        slots = torch.zeros(4, self.n_planes, n_bytes, dtype=torch.int64)
        for j, byte_fields in enumerate(fields):
            for p, field in enumerate(byte_fields):
                slots[:, p, j] = torch.tensor(field)
        column, and_mask, shift, place = slots
        self.column = column.reshape(-1).to(device)
        self.used = (and_mask > 0).reshape(-1).to(device)
        self.n_groups = math.ceil(n_features / group_size)
        self.field_group = torch.div(self.column, group_size, rounding_mode="floor")
        # Groups that cover whole bytes let a tile's fields be scaled by a broadcast.
        self.aligned = n_features % group_size == 0 and group_size * bits % 8 == 0
        exponent = torch.zeros_like(shift)
        self.whole_words = n_bytes % 8 == 0 and sys.byteorder == "little"
        self.word_ops = self.byte_ops = None
        if self.whole_words and bits != 8:
            self.word_ops = []
            for p in range(self.n_planes):
                # (word >> s) & mask: what the shift brings in from the next byte lands
                # in the s top bits of each byte, which the mask leaves out; the first
                # field of a byte holds its top bit, so s >= 1 keeps it below 128.
                s = int(shift[p][and_mask[p] > 0].min())
                exponent[p] = shift[p] - s - place[p]
                mask = (and_mask[p] >> s).to(torch.uint8).view(torch.int64)
                if bool((mask == mask[0]).all()):
                    mask = int(mask[0])
                else:
                    mask = mask.to(device)
                self.word_ops.append((s, mask))
        elif bits != 8:
            # (byte >> shift) << place, then the field's bits kept where it landed:
            # one pass each, written straight into the plane.
            rshift = (shift - place).clamp(min=0)
            lshift = (place - shift).clamp(min=0)
            kept = (and_mask >> rshift) << lshift
            self.byte_ops = [
                tuple(
                    None
                    if bool((row == identity).all())
                    else row[None].to(device, torch.uint8)
                    for row, identity in (
                        (rshift[p], 0),
                        (lshift[p], 0),
                        (kept[p], 0xFF),
                    )
                )
                for p in range(self.n_planes)
            ]
        used = (and_mask > 0).reshape(-1).float()  # on the CPU, as the exponents are
        self.weight = torch.ldexp(used, -exponent.reshape(-1)).to(device)

    @property
    def n_fields(self):
        return self.n_planes * self.n_bytes

    def fields_of_every_byte(self):
        """Float32 ``(256, n_fields)``: row ``b`` the fields of a row whose bytes all
        hold ``b``."""
        packed = torch.arange(256, dtype=torch.uint8, device=self.column.device)
        packed = packed[:, None].expand(256, self.n_bytes).contiguous()
        raw = torch.empty(256, self.n_fields, dtype=torch.uint8, device=packed.device)
        return self.uint8_fields(packed, raw).float()

    def uint8_fields(self, packed, out):
        """The fields of a tile of packed rows ``(R, n_bytes)`` written to ``out``."""
        planes = out.view(out.shape[0], self.n_planes, self.n_bytes)
        if self.word_ops is not None:
            words = packed.view(torch.int64)
            for p, (shift, mask) in enumerate(self.word_ops):
                plane = planes[:, p].view(torch.int64)
                if shift:
                    torch.bitwise_right_shift(words, shift, out=plane)
                    plane.bitwise_and_(mask)
                else:
                    torch.bitwise_and(words, mask, out=plane)
            return out
        for p, (rshift, lshift, kept) in enumerate(self.byte_ops):
            plane = planes[:, p]
            if rshift is None:
                plane.copy_(packed)
            else:
                torch.bitwise_right_shift(packed, rshift, out=plane)
            if lshift is not None:
                plane.bitwise_left_shift_(lshift)
            if kept is not None:
                plane.bitwise_and_(kept)
        return out

    def int8_fields(self, packed, out):
        """Fields as int8; 8-bit codes come as ``code - 128``."""
        if self.bits == 8:
            if self.whole_words:
                torch.bitwise_xor(
                    packed.view(torch.int64),
                    _signed64(0x8080808080808080),
                    out=out.view(torch.int64),
                )
            else:
                torch.bitwise_xor(packed, 0x80, out=out)
            return out.view(torch.int8)
        return self.uint8_fields(packed, out).view(torch.int8)


def group_sums(h, n_groups, group_size):
    """``(t, n_groups)`` sums of each group of columns of ``h``."""
    t, d = h.shape
    return F.pad(h, (0, n_groups * group_size - d)).view(t, n_groups, group_size).sum(-1)


def _digits(h, layout):
    """``h`` as :data:`DIGITS` int8 digits a group, placed on the fields.

    A field's coefficient is ``h[column] * weight`` (see :class:`FieldLayout`). Each
    group of each row of ``h`` gets a power-of-two scale putting its largest
    coefficient in [32, 64); the digits lie in [-64, 64], so a group's int32 dot product
    with fields below 128 cannot overflow, and a coefficient is ``scale * sum_i digit_i
    * 128**-i`` up to ``2**-27`` of the group's largest coefficient.

    Returns the int8 ``(n_fields, n_groups * t * DIGITS)`` coefficients (columns ordered
    group, row of ``h``, digit) and the float ``(n_groups * t * DIGITS, n_groups * t)``
    block-diagonal matrix that weighs each digit's dot products and sums a group's.
    """
    t = h.shape[0]
    G, n_fields = layout.n_groups, layout.n_fields
    values = h[:, layout.column] * layout.weight  # (t, n_fields)
    group = layout.field_group.expand(t, n_fields)
    largest = values.new_zeros(t, G).scatter_reduce_(1, group, values.abs(), "amax")
    _, exponent = torch.frexp(largest)
    scale = torch.ldexp(torch.ones_like(largest), exponent - 6)  # (t, G)
    x = values / scale.gather(1, group)
    digits = []
    for _ in range(DIGITS):
        q = torch.round(x)
        digits.append(q)
        x = (x - q) * 128
    coef = h.new_zeros(n_fields, G, t, DIGITS)
    fields = torch.arange(n_fields, device=h.device)
    coef[fields, layout.field_group] = torch.stack(digits, -1).transpose(0, 1)
    steps = 128.0 ** -torch.arange(DIGITS, device=h.device, dtype=h.dtype)
    weights = (scale.T[:, :, None] * steps).reshape(G * t, DIGITS)
    combine = torch.block_diag(*weights[:, :, None])
    # column-major: torch._int_mm reads it faster
    coef = coef.reshape(n_fields, -1).to(torch.int8).T.contiguous().T
    return coef, combine


def _linear_int(table, h, layout):
    coef, combine = _digits(h, layout)
    hsum = group_sums(h, layout.n_groups, table.group_size)
    t, G, V = h.shape[0], layout.n_groups, table.num_embeddings
    out = h.new_empty(t, V)
    R = max(16, _tile_bytes() // layout.n_fields)
    C = max(R, CHUNK_ROWS // R * R)
    fields = torch.empty(min(R, V), layout.n_fields, dtype=torch.uint8, device=out.device)
    acc = torch.empty(min(C, V), coef.shape[1], dtype=torch.int32, device=out.device)
    acc_float = torch.empty(acc.shape, device=out.device)
    partial = torch.empty(acc.shape[0], G * t, device=out.device)
    for c0 in range(0, V, C):
        c1 = min(c0 + C, V)
        n = c1 - c0
        for r0 in range(c0, c1, R):
            r1 = min(r0 + R, c1)
            tile = layout.int8_fields(table.packed[r0:r1], fields[: r1 - r0])
            torch._int_mm(tile, coef, out=acc[r0 - c0 : r1 - c0])
        # every group's dot product with h: (n, G * t)
        dots = torch.mm(acc_float[:n].copy_(acc[:n]), combine, out=partial[:n])
        scales = table.scales[c0:c1].float()
        offsets = table.offsets[c0:c1].float()
        if layout.bits == 8:
            offsets = offsets + 128 * scales  # the int8 fields are code - 128
        if t == 1:
            logits = dots.mul_(scales).sum(1, keepdim=True)
        else:
            logits = dots.view(n, G, t).mul_(scales[:, :, None]).sum(1)
        out[:, c0:c1] = logits.addmm_(offsets, hsum.T).T
    return out


def _tile_bytes():
    threads = torch.get_num_threads()
    return _table.TILE_BYTES * (1 if threads == 1 else THREADED_TILE_FACTOR)


def _linear_float(table, h, layout):
    t = h.shape[0]
    G, V = layout.n_groups, table.num_embeddings
    coef = h[:, layout.column] * layout.weight  # (t, n_fields)
    hsum = group_sums(h, G, table.group_size)
    tiles = row_tiles(V, layout.n_fields, tile_bytes=_tile_bytes())
    size = tiles[0][1] if tiles else 0
    raw = torch.empty(size, layout.n_fields, dtype=torch.uint8, device=h.device)
    fields = torch.empty(size, layout.n_fields, device=h.device)
    out = h.new_empty(t, V)
    for r0, r1 in tiles:
        n = r1 - r0
        packed = table.packed[r0:r1]
        tile = fields[:n].copy_(
            packed if layout.bits == 8 else layout.uint8_fields(packed, raw[:n])
        )
        scales = table.scales[r0:r1].float()
        block = out[:, r0:r1]
        if G == 1:
            torch.mm(coef, tile.T, out=block).mul_(scales.T)
        else:
            if layout.aligned:
                planes = tile.view(n, layout.n_planes, G, -1)
                planes.mul_(scales[:, None, :, None])
            else:
                tile.mul_(scales[:, layout.field_group])
            torch.mm(coef, tile.T, out=block)
        block.addmm_(hsum, table.offsets[r0:r1].float().T)
    return out


def _byte_luts(table, h, layout):
    """``lut[j * 256 + b]``: the dot product of ``h`` with the fields of byte ``j`` when
    it holds ``b``, for one float32 row ``h`` (bytes never share a field)."""
    fields = table._derived("fields_of_every_byte", layout.fields_of_every_byte)
    coef = (h[0, layout.column] * layout.weight).view(layout.n_planes, layout.n_bytes)
    lut = (fields.view(256, layout.n_planes, layout.n_bytes) * coef).sum(1)
    return lut.T.contiguous().view(-1)


def _linear_lut(table, h, layout):
    """Logits for one row of ``h`` by byte look-up tables: ``h_g . code_vg`` is a sum
    of ``lut[j, packed[v, j]]`` over the bytes ``j`` of group ``g``, one gather a byte
    of code (as :class:`ProductQuantizedTable` gathers its codebooks' dot products),
    summed a group at a time by the gather, the sums weighted by the scales."""
    G, n_bytes = layout.n_groups, layout.n_bytes
    lut = _byte_luts(table, h, layout)
    hsum = group_sums(h, G, table.group_size)[0]
    shift = torch.arange(0, 256 * n_bytes, 256, dtype=torch.int32, device=h.device)
    logits = weighted_group_sums(table.packed, lut, shift, table.scales)
    return logits.addmv_(table.offsets.float(), hsum)[None]


def quantized_linear(table, h):
    """``h @ table.decode().T`` for a :class:`QuantizedTable` and float32 ``(t, d)``
    ``h``, from the packed codes (see the module's description)."""
    layout = table._derived(
        "fields",
        lambda: FieldLayout(
            table.n_features, table.bits, table.group_size, table.packed.device
        ),
    )
    t, G = h.shape[0], layout.n_groups
    few = t * DIGITS <= INT_MAX_COLUMNS if G == 1 else G * t <= INT_MAX_GROUP_COLUMNS
    many = table.num_embeddings >= INT_MIN_ROWS
    if few and many and _int_mm_pays(h.device):
        try:
            return _linear_int(table, h, layout)
        except (RuntimeError, NotImplementedError):
            _INT_MM_WORKS[h.device.type] = False
    one = t == 1 and h.device.type == "cpu" and not h.requires_grad
    if one and layout.bits <= LUT_MAX_BITS and (G == 1 or layout.aligned):
        return _linear_lut(table, h, layout)
    return _linear_float(table, h, layout)


def _int_mm_pays(device):
    """Whether the integer path serves ``device``: on the CPU, whether
    ``torch._int_mm`` there is at most :data:`INT_MM_MAX_SLOWDOWN` times slower than
    ``torch.mm`` on float copies of its operands (the best of three timings each,
    measured once a process: a few milliseconds)."""
    kind = device.type
    if kind not in _INT_MM_WORKS:
        _INT_MM_WORKS[kind] = kind == "cpu" and _int_mm_is_fast_enough()
    return _INT_MM_WORKS[kind]


def _int_mm_is_fast_enough():
    if not hasattr(torch, "_int_mm"):
        return False
    rows, fields, columns = _PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (rows, fields), dtype=torch.int8, generator=generator)
    b = torch.randint(-64, 65, (columns, fields), dtype=torch.int8, generator=generator).T
    a_float, b_float = a.float(), b.float()
    try:
        int_seconds = _best_time(lambda: torch._int_mm(a, b))
    except (RuntimeError, NotImplementedError):
        return False
    float_seconds = _best_time(lambda: torch.mm(a_float, b_float))
    return int_seconds <= INT_MM_MAX_SLOWDOWN * float_seconds


def _best_time(operation, repeats=3):
    operation()  # the first call pays for set-up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        operation()
        best = min(best, time.perf_counter() - start)
    return best
