"""The stored form of a compressed table, what it costs, and how it is saved.

Every compressor's ``compress(X)`` returns a :class:`CompressedTable`: a torch module that
decodes rows by index and counts its stored parameters and bytes. The adapters, the CLI
and the benchmarks only use this interface, never the estimator that made the table.
Tables save to and load from safetensors, so loading never runs pickled code.

A table also computes ``hidden @ decode().T`` (:meth:`CompressedTable.linear`, what an
output head needs) from its stored form, a tile of rows at a time by default; each table
class overrides :meth:`CompressedTable._linear` with its own exact shortcut.
"""

import functools
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_METADATA_KEY = "skdirection_table"
_TABLE_CLASSES = {}
# Float32 bytes of the rows one tile decodes: bounds what computing logits from a table
# allocates besides the logits themselves, and keeps a tile in a core's L2 cache.
TILE_BYTES = 1 << 20


def register_table(cls):
    """Make a table class loadable by :func:`load_table` under its class name.

    Use it as a class decorator on every :class:`CompressedTable` subclass that should
    survive :func:`save_table`.
    """
    _TABLE_CLASSES[cls.__name__] = cls
    return cls


def frozen(values):
    """A tensor as a frozen parameter with contiguous storage.

    A stored table keeps everything as parameters, so that a model's parameter count
    includes them; contiguous storage makes decoding bit-identical before and after a
    save and load.
    """
    return nn.Parameter(torch.as_tensor(values).contiguous(), requires_grad=False)


def dtype_name(dtype):
    """``torch.float16`` as ``"float16"``: how tables write dtypes into their config."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class StoredSize:
    """What a table stores, counted two ways: values (parameters) and bytes.

    Sizes add up, and multiply by a number of rows, so a codec states the size of one
    row and of what it shares across rows, and anyone can total them.
    """

    n_parameters: int
    n_bytes: int

    @classmethod
    def of_values(cls, n_values, dtype):
        """``n_values`` values stored at ``dtype``."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return cls(n_values, n_values * itemsize)

    def in_unit(self, unit):
        """``n_bytes`` for ``"bytes"``, ``n_parameters`` for ``"params"``."""
        if unit == "bytes":
            return self.n_bytes
        if unit == "params":
            return self.n_parameters
        raise ValueError(f"unit must be 'bytes' or 'params', got {unit!r}.")

    def __add__(self, other):
        return StoredSize(
            self.n_parameters + other.n_parameters, self.n_bytes + other.n_bytes
        )

    def __mul__(self, n_rows):
        return StoredSize(self.n_parameters * n_rows, self.n_bytes * n_rows)

    __rmul__ = __mul__


NOTHING = StoredSize(0, 0)


def index_bits(n_choices):
    """Bits of an index stored per row into ``n_choices`` things (a part, a distinct
    row): none when there is only one."""
    return math.ceil(math.log2(n_choices)) if n_choices > 1 else 0


def index_size(n_rows, n_choices):
    """:class:`StoredSize` of ``n_rows`` bit-packed indices into ``n_choices``: a byte
    counts as one stored value."""
    n_bytes = math.ceil(n_rows * index_bits(n_choices) / 8)
    return StoredSize(n_bytes, n_bytes)


def row_tiles(n_rows, n_features, itemsize=4, tile_bytes=None):
    """``(start, stop)`` of consecutive ranges of rows of ``n_features`` values of
    ``itemsize`` bytes, about ``tile_bytes`` (default :data:`TILE_BYTES`) a range."""
    tile_bytes = TILE_BYTES if tile_bytes is None else tile_bytes
    step = max(16, tile_bytes // (itemsize * max(n_features, 1)))
    return [(start, min(start + step, n_rows)) for start in range(0, n_rows, step)]


_POOL, _POOL_SIZE = None, 0


def in_threads(tasks):
    """Run the callables ``tasks``: the first in this thread, the others in pool threads
    at once (torch ops release the GIL) that run torch on one thread each, in this
    thread's grad and inference modes."""
    global _POOL, _POOL_SIZE
    if len(tasks) <= 1:
        for task in tasks:
            task()
        return
    if _POOL_SIZE < len(tasks) - 1:
        if _POOL is not None:
            _POOL.shutdown(wait=False)
        # One torch thread each: a thread whose ops open an OpenMP team of their own
        # leaves the process's other threads slower for good (SmolLM2's generation on
        # two cores: 33 ms a token before one matmul ran on a pool thread, 56 after).
        _POOL = ThreadPoolExecutor(
            max_workers=len(tasks) - 1,
            initializer=torch.set_num_threads,
            initargs=(1,),
        )
        _POOL_SIZE = len(tasks) - 1
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def in_modes(task):
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            task()

    futures = [_POOL.submit(in_modes, task) for task in tasks[1:]]
    try:
        tasks[0]()
    finally:
        for future in futures:
            future.result()


def rows_in_threads(function, n_rows, tile_rows, max_threads=None):
    """``function(tiles)`` on as many threads as torch has (at most ``max_threads``),
    each running torch on one: ``tiles`` is one iterator of ``(start, stop)`` ranges of
    ``tile_rows`` rows shared by them all, so that each takes the next tile when done
    with one, and a thread slowed by other work (an OpenMP thread still spinning after
    torch's last parallel op) takes fewer. Torch's thread count is restored afterwards.
    For kernels of many small operations, which torch's own threads would slow down."""
    threads = torch.get_num_threads()
    tiles = iter(
        [(start, min(start + tile_rows, n_rows)) for start in range(0, n_rows, tile_rows)]
    )
    n_workers = max(1, min(threads, max_threads or threads, math.ceil(n_rows / tile_rows)))
    if threads > 1:
        torch.set_num_threads(1)
    try:
        in_threads([functools.partial(function, tiles)] * n_workers)
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


# Rows whose look-up table entries one hidden state gathers at a time: the indices and
# the values gathered (2 * 4 bytes a code) stay in a core's L2 cache. With the tiles
# shared among Python threads, larger ones make fewer ops, each a wait for the GIL: on
# SmolLM2's table in blocks of 2 at two threads (AVX2 AMD EPYC, 1 MiB of L2 a core),
# medians of 40 calls: 24.6 ms in tiles of 512 rows, 28.8 in 384, 30.8 in 768 and
# 35.7 in 1024 with the indices made by one mixed-type add.
_GATHER_ROWS = 256
_THREADED_GATHER_ROWS = 512
# Sums a group of codes by ``embedding_bag`` take larger tiles, at one thread and two:
# on SmolLM2's table in groups of 32 at one thread, 41.9, 32.8 and 25.1 ms a call at 4,
# 3 and 2 bits in tiles of 1024 rows, 44.5, 36.7 and 29.1 in 512.
_GROUP_GATHER_ROWS = 1024
# Fewer rows take one thread: a pool thread then costs more than it saves (in a mix, a
# part of 7699 rows in blocks of 4 took 3.8 ms at two threads just after a part of 39602
# rows in blocks of 2, 1.5 ms at one), as it waits for the GIL held by a thread that an
# OpenMP thread, still spinning after torch's last parallel op, has pushed off its core.
_THREADED_MIN_ROWS = 16384


def _gather_tiles(function, n_rows, single_rows, threaded_rows):
    """``function(tiles, tile=rows)`` over tiles of rows shared among torch's threads
    (see `rows_in_threads`), or on one thread for fewer than `_THREADED_MIN_ROWS`
    rows."""
    threaded = torch.get_num_threads() > 1 and n_rows >= _THREADED_MIN_ROWS
    tile = threaded_rows if threaded else single_rows
    rows_in_threads(
        functools.partial(function, tile=tile),
        n_rows,
        tile,
        max_threads=None if threaded else 1,
    )


def _indices(codes, shift, index):
    # uint8 + int32 in one op casts value by value: twice the time of a copy and an add
    return index.copy_(codes).add_(shift)


def gathered_sums(codes, lut, shift):
    """``out[v] = sum_j lut[codes[v, j] + shift[j]]`` for uint8 ``(V, m)`` codes on the
    CPU: a gather and a row sum a tile of rows, the tiles shared among torch's threads,
    each running on one. On SmolLM2's table in product quantization's blocks of 2 at two
    threads, 21.4 ms a call against 21.6 ms for ``embedding_bag`` over bags of a row
    (medians of 40 calls); at one thread an earlier machine gave 17 against 26 ms."""
    V, m = codes.shape
    out = lut.new_empty(V)

    def rows(tiles, tile):
        index = torch.empty(min(tile, V), m, dtype=torch.int32)
        gathered = torch.empty(index.numel(), dtype=lut.dtype)
        for first, last in tiles:
            n = last - first
            flat = _indices(codes[first:last], shift, index[:n]).view(-1)
            values = torch.index_select(lut, 0, flat, out=gathered[: n * m]).view(n, m)
            torch.sum(values, 1, out=out[first:last])

    _gather_tiles(rows, V, _GATHER_ROWS, _THREADED_GATHER_ROWS)
    return out


def weighted_group_sums(codes, lut, shift, weight):
    """``out[v] = sum_g weight[v, g] sum_j lut[codes[v, j] + shift[j]]``, ``j`` over
    the ``g``-th of ``G`` equal runs of columns, for uint8 ``(V, m)`` codes and ``(V,
    G)`` weights on the CPU: ``embedding_bag`` over bags of a run's indices, a tile of
    rows at a time, the tiles shared among torch's threads. Summed in the gather, the
    gathered values are never written: on SmolLM2's table at 3 bits in groups of 32
    (the weights their scales), 32.8 ms a call at one thread against 55.6 ms for a
    gather, a product by the scales and a row sum."""
    V, m = codes.shape
    n_groups = weight.shape[1]
    group = m // n_groups
    out = lut.new_empty(V)
    column = lut.view(-1, 1)

    def rows(tiles, tile):
        index = torch.empty(min(tile, V), m, dtype=torch.int32)
        for first, last in tiles:
            n = last - first
            bags = _indices(codes[first:last], shift, index[:n]).view(n * n_groups, group)
            sums = F.embedding_bag(bags, column, mode="sum").view(n, n_groups)
            torch.sum(sums.mul_(weight[first:last]), 1, out=out[first:last])

    _gather_tiles(rows, V, _GROUP_GATHER_ROWS, _GROUP_GATHER_ROWS)
    return out


def _tensors(value):
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    return []


class _StoredLinear(torch.autograd.Function):
    """``hidden @ W.T`` from a table, differentiable in ``hidden``: the backward pass
    decodes the table a tile at a time too, never keeping a float copy of ``W``."""

    @staticmethod
    def forward(ctx, hidden, table):
        ctx.table = table
        return table._linear(hidden)

    @staticmethod
    def backward(ctx, grad):
        table = ctx.table
        grad = grad.contiguous()
        grad_hidden = grad.new_zeros(grad.shape[0], table.embedding_dim)
        for start, stop in row_tiles(table.num_embeddings, table.embedding_dim):
            grad_hidden.addmm_(grad[:, start:stop], table._decode_range(start, stop))
        return grad_hidden, None


class CompressedTable(nn.Module):
    """Base class of stored tables: decode rows, count parameters and bytes.

    Subclasses keep everything they store as frozen ``nn.Parameter`` objects (see
    :func:`frozen`), so that a model's parameter count includes them, implement
    :meth:`decode`, :meth:`config` and :meth:`empty`, and register with
    :func:`register_table` to be loadable. :meth:`linear` works for any subclass (from
    decoded tiles of rows); a subclass that can do better from its stored form
    overrides ``_linear(h)`` (``h`` a contiguous float32 ``(t, n_features)`` tensor,
    returning float32 ``(t, n_rows)``) and ``_decode_range(start, stop)``.
    """

    def forward(self, indices):
        return self.decode(indices)

    def decode(self, indices=None):
        """Rows ``indices`` of the table (all rows when ``None``), as float tensors."""
        raise NotImplementedError

    def linear(self, hidden):
        """``hidden @ decode().T`` in float32, computed from the stored form.

        What an output head computes (:class:`~skdirection.nn.CompressedLMHead`), without
        a float copy of the table: each table class has its own exact shortcut
        (scalar codes: integer dot products on the codes; product quantization: look-up
        tables summed by code; low rank: two matmuls), and any other table decodes a tile
        of rows at a time. Beside the logits, a call allocates a bounded buffer (about
        a tile, :data:`TILE_BYTES`); values derived once from the stored tensors are
        kept (:attr:`derived_bytes`). The result equals ``F.linear(hidden.float(),
        decode())`` to float32 rounding. It is differentiable in ``hidden``, and in the
        table's float tensors when they require a gradient (the table is then decoded
        whole: what tuning a table against a model does).

        Parameters
        ----------
        hidden : tensor of shape (..., n_features)
            Any float dtype, on the table's device.

        Returns
        -------
        logits : float32 tensor of shape (..., n_rows)
        """
        shape = hidden.shape[:-1]
        h = hidden.reshape(-1, hidden.shape[-1]).to(torch.float32).contiguous()
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            # The table's own tensors are being tuned: decode it whole, so that the
            # gradient reaches them.
            out = torch.nn.functional.linear(h, self.decode().float())
        elif torch.is_grad_enabled() and h.requires_grad:
            out = _StoredLinear.apply(h, self)
        else:
            with torch.no_grad():
                out = self._linear(h)
        return out.reshape(*shape, out.shape[-1])

    def _linear(self, h):
        """``h @ decode().T`` for a contiguous float32 ``(t, n_features)`` ``h``, as a
        float32 ``(t, n_rows)`` tensor; by default from decoded tiles of rows."""
        out = h.new_empty(h.shape[0], self.num_embeddings)
        for start, stop in row_tiles(self.num_embeddings, self.embedding_dim):
            torch.mm(h, self._decode_range(start, stop).T, out=out[:, start:stop])
        return out

    def _decode_range(self, start, stop):
        """Rows ``start`` to ``stop`` decoded, as float32 (a tile of :meth:`_linear`)."""
        device = next(self.parameters()).device
        return self.decode(torch.arange(start, stop, device=device)).float()

    def _derived(self, name, build):
        """``build()``, a value derived from the stored tensors, made at first use and
        kept until the table loads a state dict or moves (``to``, ``cuda``, ``half``),
        or :meth:`forget_derived` is called."""
        cache = self.__dict__.setdefault("_derived_cache", {})
        if name not in cache:
            cache[name] = build()
        return cache[name]

    @property
    def derived_bytes(self):
        """Bytes of the values derived from the stored tensors that this table and its
        nested tables keep now (made at first use by :meth:`linear` or ``decode``)."""
        return sum(
            t.numel() * t.element_size()
            for module in self.modules()
            for value in module.__dict__.get("_derived_cache", {}).values()
            for t in _tensors(value)
        )

    def forget_derived(self):
        """Drop the values derived from the stored tensors, in this table and its nested
        ones, after changing those tensors in place (an optimiser's step): the next
        ``linear`` or ``decode`` derives them again."""
        for module in self.modules():
            module.__dict__.pop("_derived_cache", None)

    def _apply(self, fn, *args, **kwargs):
        self.__dict__.pop("_derived_cache", None)
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self.__dict__.pop("_derived_cache", None)
        super()._load_from_state_dict(*args, **kwargs)

    def config(self):
        """JSON-serialisable keyword arguments of :meth:`empty`."""
        raise NotImplementedError

    @classmethod
    def empty(cls, **config):
        """A table of the right shapes, filled by ``load_state_dict``."""
        raise NotImplementedError

    @property
    def num_embeddings(self):
        raise NotImplementedError

    @property
    def embedding_dim(self):
        raise NotImplementedError

    @property
    def n_parameters(self):
        """Number of stored values: a nested table's as it counts them (packed scalar
        codes count one value a code, not a byte)."""
        return _stored_values(self)

    @property
    def n_bytes(self):
        """Number of stored bytes, every stored tensor counted at its dtype."""
        return sum(p.numel() * p.element_size() for p in self.parameters())

    @property
    def stored_size(self):
        """:class:`StoredSize` of the table."""
        return StoredSize(self.n_parameters, self.n_bytes)


def _stored_values(module):
    """Values of ``module``'s own tensors, plus each nested table's ``n_parameters``
    (through containers such as a ``ModuleList`` of parts)."""
    total = sum(p.numel() for p in module.parameters(recurse=False))
    for child in module.children():
        if isinstance(child, CompressedTable):
            total += child.n_parameters
        else:
            total += _stored_values(child)
    return total


def describe_table(table):
    """JSON description of a table (class and config), nested tables included."""
    return {"class": type(table).__name__, "config": table.config()}


def empty_table(description):
    """An empty table of the class and shapes ``description`` gives."""
    return _TABLE_CLASSES[description["class"]].empty(**description["config"])


def save_table(table, path):
    """Write a table to a safetensors file (tensors plus a JSON description)."""
    from safetensors.torch import save_file

    metadata = {_METADATA_KEY: json.dumps(describe_table(table))}
    tensors = {name: t.detach().contiguous() for name, t in table.state_dict().items()}
    save_file(tensors, str(path), metadata=metadata)


def load_table(path):
    """Read a table written by :func:`save_table`; never unpickles anything."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from None
    if _METADATA_KEY not in metadata:
        raise ValueError(
            f"{path} holds no skdirection table (no {_METADATA_KEY!r} metadata)."
        )
    try:
        table = empty_table(json.loads(metadata[_METADATA_KEY]))
        table.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} holds a damaged skdirection table: {exc}") from None
    return table
