"""Product quantization: weighted k-means codebooks per block of columns, and the table.

The columns are cut into blocks of ``block_size``; each block of every row is stored as
the index (one byte) of its nearest entry in that block's codebook of at most 256
vectors. A row of ``d`` values costs ``ceil(d / block_size)`` bytes plus what the
codebooks cost once for the whole table.
"""

import math

import torch
from torch import nn

from ._table import CompressedTable, register_table

MAX_CENTROIDS = 256  # one uint8 code a block
# Rows a distance matrix is computed for at once: (rows x centroids) floats that stay in
# cache, which matters more than the matrix product itself for blocks of 2 to 8 values.
_ASSIGN_CHUNK = 2048


def n_blocks(n_features, block_size):
    return math.ceil(n_features / block_size)


def blocked(X, block_size):
    """``X`` as ``(n_blocks, n, block_size)``, the last block padded with zeros."""
    n, d = X.shape
    pad = n_blocks(d, block_size) * block_size - d
    if pad:
        X = torch.cat([X, X.new_zeros(n, pad)], dim=1)
    return X.reshape(n, -1, block_size).permute(1, 0, 2).contiguous()


def nearest_centroids(blocks, codebooks):
    """Index of the nearest codebook entry of every block: ``(n, n_blocks)`` int64."""
    m, n, _ = blocks.shape
    codes = torch.empty(n, m, dtype=torch.long, device=blocks.device)
    squared_norms = (codebooks**2).sum(dim=2)
    for j in range(m):
        minus_twice = codebooks[j].T * -2
        for start in range(0, n, _ASSIGN_CHUNK):
            part = blocks[j, start : start + _ASSIGN_CHUNK]
            distances = torch.addmm(squared_norms[j], part, minus_twice)
            codes[start : start + _ASSIGN_CHUNK, j] = distances.argmin(dim=1)
    return codes


def encode_blocks(rows, codebooks):
    """Codes ``(n, n_blocks)`` of the rows: each block's nearest codebook vector."""
    return nearest_centroids(blocked(rows, codebooks.shape[2]), codebooks.float())


def weighted_kmeans(blocks, weight, n_centroids, n_iter, generator, init=None):
    """Lloyd's algorithm on every block at once, rows weighted by ``weight``.

    Starts from ``init`` codebooks when given, else from ``n_centroids`` distinct rows
    drawn with probability proportional to their weight; a centroid that loses all its
    (weighted) rows keeps its place. Stops early once no code changes.

    Returns
    -------
    codebooks : tensor of shape (n_blocks, n_centroids, block_size)
    n_iter : int
        Iterations run.
    """
    m, n, s = blocks.shape
    if init is not None:
        codebooks = init.to(blocks)
    else:
        start = torch.multinomial(
            weight.cpu(), n_centroids, replacement=False, generator=generator
        )
        codebooks = blocks[:, start.to(blocks.device), :].clone()
    previous = None
    for iteration in range(n_iter):
        codes = nearest_centroids(blocks, codebooks).T  # (m, n)
        if previous is not None and torch.equal(codes, previous):
            return codebooks, iteration
        previous = codes
        sums = torch.zeros_like(codebooks)
        index = codes[..., None].expand(m, n, s)
        sums.scatter_add_(1, index, blocks * weight[None, :, None])
        mass = torch.zeros(m, n_centroids, dtype=blocks.dtype, device=blocks.device)
        mass.scatter_add_(1, codes, weight[None, :].expand(m, n))
        moved = sums / mass.clamp_min(torch.finfo(blocks.dtype).tiny)[..., None]
        codebooks = torch.where(mass[..., None] > 0, moved, codebooks)
    return codebooks, n_iter


def decode_blocks(codes, codebooks, n_features):
    """Rows from ``(n, n_blocks)`` codes and ``(n_blocks, n_centroids, block_size)``
    codebooks."""
    m = codebooks.shape[0]
    picked = codebooks.float()[torch.arange(m, device=codes.device), codes.long()]
    return picked.reshape(codes.shape[0], -1)[:, :n_features]


def _frozen(tensor):
    return nn.Parameter(torch.as_tensor(tensor).contiguous(), requires_grad=False)


@register_table
class ProductQuantizedTable(CompressedTable):
    """Rows stored as one byte per block of columns, indices into per-block codebooks.

    Row ``i`` is the concatenation over blocks ``j`` of ``codebooks[j, codes[i, j]]``,
    cut to ``n_features`` columns. ``n_bytes`` counts the uint8 codes and the codebooks
    at their dtype; ``n_parameters`` counts one value a code and a codebook entry.

    Parameters
    ----------
    codes : uint8 tensor of shape (n_rows, n_blocks)
    codebooks : float tensor of shape (n_blocks, n_centroids, block_size)
    n_features : int
    """

    def __init__(self, codes, codebooks, n_features):
        super().__init__()
        if codebooks.shape[1] > MAX_CENTROIDS:
            raise ValueError(
                f"at most {MAX_CENTROIDS} centroids fit a one-byte code, got "
                f"{codebooks.shape[1]}."
            )
        self.n_features = int(n_features)
        self.codes = _frozen(torch.as_tensor(codes).to(torch.uint8))
        self.codebooks = _frozen(codebooks)

    def decode(self, indices=None):
        codes = self.codes if indices is None else self.codes[indices]
        shape = codes.shape[:-1]
        flat = codes.reshape(-1, codes.shape[-1])
        rows = decode_blocks(flat, self.codebooks, self.n_features)
        return rows.reshape(*shape, self.n_features)

    @property
    def num_embeddings(self):
        return self.codes.shape[0]

    @property
    def embedding_dim(self):
        return self.n_features

    def config(self):
        m, k, s = self.codebooks.shape
        return {
            "n_rows": self.num_embeddings,
            "n_features": self.n_features,
            "block_size": s,
            "n_centroids": k,
            "dtype": str(self.codebooks.dtype).removeprefix("torch."),
        }

    @classmethod
    def empty(cls, n_rows, n_features, block_size, n_centroids, dtype="float16"):
        m = n_blocks(n_features, block_size)
        return cls(
            torch.empty(n_rows, m, dtype=torch.uint8),
            torch.empty(m, n_centroids, block_size, dtype=getattr(torch, dtype)),
            n_features,
        )
