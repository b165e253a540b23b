"""Rows that repeat, stored once: a table of the distinct rows and an index a row."""

import numpy as np
import torch

from ._table import (
    CompressedTable,
    describe_table,
    empty_table,
    frozen,
    index_bits,
    register_table,
)

# Rows hashed or compared at once: bounded working memory.
_CHUNK_ROWS = 8192
# Values packed or unpacked at once: a multiple of 8, so that every chunk but the last
# fills whole bytes, and few enough that the bits (one int64 each) stay small.
_CHUNK_VALUES = 1 << 16


def pack_integers(values, bits):
    """Non-negative integers below ``2**bits`` (``bits`` at most 62), ``bits`` each,
    most significant first, into ``ceil(n * bits / 8)`` uint8."""
    values = torch.as_tensor(values).to(torch.int64).reshape(-1)
    shifts = torch.arange(bits - 1, -1, -1, device=values.device)
    weights = (2 ** torch.arange(7, -1, -1, device=values.device)).to(torch.uint8)
    packed = []
    for chunk in values.split(_CHUNK_VALUES):
        bit_array = ((chunk[:, None] >> shifts) & 1).to(torch.uint8).reshape(-1)
        pad = -bit_array.numel() % 8
        if pad:
            bit_array = torch.cat([bit_array, bit_array.new_zeros(pad)])
        packed.append((bit_array.reshape(-1, 8) * weights).sum(dim=1, dtype=torch.uint8))
    if not packed:
        return torch.zeros(0, dtype=torch.uint8, device=values.device)
    return torch.cat(packed)


def unpack_integers(packed, bits, n):
    """The ``n`` int64 values :func:`pack_integers` packed at ``bits`` bits."""
    shifts = torch.arange(7, -1, -1, device=packed.device)
    powers = 2 ** torch.arange(bits - 1, -1, -1, device=packed.device)
    out = torch.empty(n, dtype=torch.int64, device=packed.device)
    chunk_bytes = _CHUNK_VALUES * bits // 8
    for start in range(0, n, _CHUNK_VALUES):
        count = min(_CHUNK_VALUES, n - start)
        first = start * bits // 8
        piece = packed[first : first + chunk_bytes].to(torch.int64)
        bit_array = ((piece[:, None] >> shifts) & 1).reshape(-1)
        out[start : start + count] = (
            bit_array[: count * bits].reshape(count, bits) * powers
        ).sum(dim=1)
    return out


def distinct_rows(X):
    """Where the rows of a 2-D numpy array repeat, exactly (byte for byte).

    Rows are grouped by a 64-bit hash of their bytes, and each row is then compared
    with the first of its group, so a hash collision cannot merge two different rows
    (they are then grouped by a sort instead).

    Returns
    -------
    first : int64 ndarray of shape (n_distinct,)
        The first row of each distinct value, in increasing order.
    inverse : int64 ndarray of shape (n_rows,)
        The distinct value of every row: ``X[first[inverse]]`` equals ``X``.
    """
    X = np.ascontiguousarray(X)
    n = X.shape[0]
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    raw = X.view(np.uint8).reshape(n, -1)
    pad = -raw.shape[1] % 8
    if pad:
        raw = np.concatenate([raw, np.zeros((n, pad), np.uint8)], axis=1)
    _, first, inverse = np.unique(_row_hashes(raw), return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if not rows_repeat(raw, first[inverse]):
        keys = np.ascontiguousarray(raw).view(np.dtype((np.void, raw.shape[1])))
        _, first, inverse = np.unique(keys.ravel(), return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return first[order].astype(np.int64), rank[inverse].astype(np.int64)


def rows_repeat(X, representative):
    """Whether every row ``i`` of the 2-D array ``X`` equals row ``representative[i]``,
    compared a chunk of rows at a time (no copy of the whole table)."""
    chunks = [slice(start, start + _CHUNK_ROWS) for start in range(0, len(X), _CHUNK_ROWS)]
    return all(np.array_equal(X[chunk], X[representative[chunk]]) for chunk in chunks)


def _row_hashes(raw):
    """A uint64 hash of every row of a 2-D uint8 array whose width is a multiple of 8:
    its 8-byte words times fixed odd multipliers, summed modulo ``2**64``."""
    words = raw.view(np.uint64)
    multipliers = np.random.RandomState(0).randint(
        0, 2**63, size=words.shape[1], dtype=np.uint64
    ) * np.uint64(2) + np.uint64(1)
    hashes = np.empty(raw.shape[0], np.uint64)
    for start in range(0, raw.shape[0], _CHUNK_ROWS):
        stop = start + _CHUNK_ROWS
        hashes[start:stop] = (words[start:stop] * multipliers).sum(axis=1, dtype=np.uint64)
    return hashes


@register_table
class DeduplicatedTable(CompressedTable):
    """Row ``i`` is row ``index[i]`` of ``distinct``: rows that repeat are stored once.

    Word-vector tables often map several keys to one vector (half of spaCy's
    ``en_core_web_md`` rows repeat another), and item tables repeat the vector every
    new item starts from. The index costs ``ceil(log2(n_distinct))`` bits a row, bit
    packed and counted in ``n_bytes``; it pays when the rows it saves would have cost
    more (see :class:`~skdirection.FrequencyMixedCompressor`'s ``deduplicate``).

    Parameters
    ----------
    distinct : CompressedTable
        The distinct rows.
    row_index : int tensor of shape (n_rows,)
        The row of ``distinct`` that every row decodes to.

    Examples
    --------
    >>> import torch
    >>> from skdirection import DeduplicatedTable, DenseTable
    >>> distinct = DenseTable(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    >>> table = DeduplicatedTable(distinct, torch.tensor([0, 1, 1, 0, 1]))
    >>> table.decode(torch.tensor([2, 3]))
    tensor([[0., 2.],
            [1., 0.]])
    >>> table.n_bytes - distinct.n_bytes  # five indices of one bit
    1
    """

    def __init__(self, distinct, row_index):
        super().__init__()
        row_index = torch.as_tensor(row_index).to(torch.int64).reshape(-1)
        n_distinct = distinct.num_embeddings
        if row_index.numel() and (row_index.min() < 0 or row_index.max() >= n_distinct):
            raise ValueError(f"row_index holds rows outside [0, {n_distinct}).")
        device = next(distinct.parameters()).device
        row_index = row_index.to(device)
        self.distinct = distinct
        self.n_rows = int(row_index.numel())
        self.index_bits = index_bits(n_distinct)
        self.packed_index = frozen(
            pack_integers(row_index, self.index_bits)
            if self.index_bits
            else torch.zeros(0, dtype=torch.uint8, device=device)
        )

    def row_index(self):
        """The row of ``distinct`` of every row, as an int64 tensor (kept once derived)."""
        return self._derived("row_index", self._unpack_index)

    def _unpack_index(self):
        if self.index_bits:
            return unpack_integers(self.packed_index, self.index_bits, self.n_rows)
        return torch.zeros(self.n_rows, dtype=torch.int64, device=self.packed_index.device)

    def decode(self, indices=None):
        index = self.row_index()
        if indices is None:
            return self.distinct.decode(index)
        return self.distinct.decode(index[torch.as_tensor(indices, device=index.device)])

    def _linear(self, h):
        """The distinct rows' logits, each copied to the columns of its rows."""
        return self.distinct._linear(h).index_select(1, self.row_index())

    @property
    def num_embeddings(self):
        return self.n_rows

    @property
    def embedding_dim(self):
        return self.distinct.embedding_dim

    def config(self):
        return {"distinct": describe_table(self.distinct), "n_rows": self.n_rows}

    @classmethod
    def empty(cls, distinct, n_rows):
        distinct = empty_table(distinct)
        # Any valid index; load_state_dict overwrites it.
        return cls(distinct, torch.zeros(n_rows, dtype=torch.int64))
