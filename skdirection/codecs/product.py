"""Product quantization: the maths, the stored table and the codec.

The columns are cut into blocks of ``block_size``; each block of every row is stored as
the index (one byte) of its nearest entry in that block's codebook of at most 256
vectors, learned by weighted k-means. A row of ``d`` values costs ``ceil(d /
block_size)`` bytes plus what the codebooks cost once for the whole table.
"""

import math

import torch
import torch.nn.functional as F

from .._engine.kmeans import nearest_centroids, training_rows, weighted_kmeans
from ._codec import Codec
from ._table import (
    CompressedTable,
    StoredSize,
    dtype_name,
    frozen,
    gathered_sums,
    register_table,
    row_tiles,
)

MAX_CENTROIDS = 256  # one uint8 code a block
# Rows of hidden states up to which logits come from look-up tables: those cost
# n_rows * n_blocks additions a row of h, where decoded tiles cost a matmul at BLAS speed.
LUT_MAX_ROWS = 16


def n_blocks(n_features, block_size):
    return math.ceil(n_features / block_size)


def blocked(X, block_size):
    """``X`` as ``(n_blocks, n, block_size)``, the last block padded with zeros."""
    n, d = X.shape
    pad = n_blocks(d, block_size) * block_size - d
    if pad:
        X = torch.cat([X, X.new_zeros(n, pad)], dim=1)
    return X.reshape(n, -1, block_size).permute(1, 0, 2).contiguous()


def encode_blocks(rows, codebooks, *, return_errors=False):
    """Codes ``(n, n_blocks)`` of the rows: each block's nearest codebook vector; with
    ``return_errors``, also each row's squared distance to its decoding (float64)."""
    return nearest_centroids(
        blocked(rows, codebooks.shape[2]), codebooks.float(), return_errors=return_errors
    )


def decode_blocks(codes, codebooks, n_features):
    """Rows from ``(n, n_blocks)`` codes and ``(n_blocks, n_centroids, block_size)``
    codebooks."""
    m = codebooks.shape[0]
    picked = codebooks.float()[torch.arange(m, device=codes.device), codes.long()]
    return picked.reshape(codes.shape[0], -1)[:, :n_features]


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
        self.codes = frozen(torch.as_tensor(codes).to(torch.uint8))
        self.codebooks = frozen(codebooks)

    def decode(self, indices=None):
        codes = self.codes if indices is None else self.codes[indices]
        shape = codes.shape[:-1]
        flat = codes.reshape(-1, codes.shape[-1])
        rows = decode_blocks(flat, self.codebooks, self.n_features)
        return rows.reshape(*shape, self.n_features)

    def _decode_range(self, start, stop):
        return decode_blocks(self.codes[start:stop], self.codebooks, self.n_features)

    def _linear(self, h):
        """Look-up tables summed by code, as faiss computes inner products on codes.

        ``lut[j, c] = h_j . codebooks[j, c]`` for every block ``j`` (one batched
        matmul, ``n_blocks * n_centroids * t`` floats), then ``logits[v] = sum_j
        lut[j, codes[v, j]]`` by ``embedding_bag`` over indices ``codes + n_centroids
        * j`` made a tile at a time (kept, they would cost 4 bytes a code); for one
        hidden state on the CPU, by a gather and a sum (see `gathered_sums`).
        """
        t, d = h.shape
        if t > LUT_MAX_ROWS:
            return super()._linear(h)
        m, k, s = self.codebooks.shape
        V = self.num_embeddings
        blocks = F.pad(h, (0, m * s - d)).view(t, m, s).permute(1, 2, 0)
        lut = torch.bmm(self.codebooks.float(), blocks).view(m * k, t)
        shift = torch.arange(0, m * k, k, dtype=torch.int32, device=h.device)
        if t == 1 and h.device.type == "cpu" and not lut.requires_grad:
            return gathered_sums(self.codes, lut.view(-1), shift)[None]
        tiles = row_tiles(V, m)  # int32 indices, a tile's bytes
        index = torch.empty(
            tiles[0][1] if tiles else 0, m, dtype=torch.int32, device=h.device
        )
        out = h.new_empty(t, V)
        for start, stop in tiles:
            rows = index[: stop - start].copy_(self.codes[start:stop]).add_(shift)
            out[:, start:stop] = F.embedding_bag(rows, lut, mode="sum").T
        return out

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
            "dtype": dtype_name(self.codebooks.dtype),
        }

    @classmethod
    def empty(cls, n_rows, n_features, block_size, n_centroids, dtype="float16"):
        m = n_blocks(n_features, block_size)
        return cls(
            torch.empty(n_rows, m, dtype=torch.uint8),
            torch.empty(m, n_centroids, block_size, dtype=getattr(torch, dtype)),
            n_features,
        )


class ProductCodec(Codec):
    """Product quantization: one byte a block of ``block_size`` columns, an index into
    that block's codebook of ``n_centroids`` vectors learned by weighted k-means.

    Parameters
    ----------
    block_size : int
    n_centroids : int, default=256
        At most 256; fewer are learned when fewer rows have a positive weight.
    codebook_dtype : torch.dtype, default=torch.float16
        Codes are chosen against the codebooks rounded to this dtype.
    n_iter : int, default=6
        Most iterations of the (over-relaxed) Lloyd's algorithm.

    Attributes
    ----------
    codebooks : tensor of shape (n_blocks, n_centroids, block_size)
        Set by :meth:`fit`, at ``codebook_dtype``.
    n_iter_ : int
        Iterations the last :meth:`fit` ran.
    """

    def __init__(
        self, block_size, n_centroids=MAX_CENTROIDS, codebook_dtype=torch.float16, n_iter=6
    ):
        if not 2 <= n_centroids <= MAX_CENTROIDS:
            raise ValueError(
                f"n_centroids must be in [2, {MAX_CENTROIDS}] (one-byte codes), got "
                f"{n_centroids}."
            )
        self.block_size = block_size
        self.n_centroids = n_centroids
        self.codebook_dtype = codebook_dtype
        self.n_iter = n_iter
        self.codebooks = None
        self.name = f"pq{block_size}"

    def fit(
        self,
        rows,
        weight=None,
        generator=None,
        *,
        init=None,
        init_codes=None,
        n_iter=None,
        max_points_per_centroid=256,
        progress=None,
    ):
        """Learn the codebooks; ``init`` (codebooks) warm-starts a refit, with
        ``init_codes`` the rows' codes under them when known (see
        :func:`weighted_kmeans`), the k-means trains on at most
        ``max_points_per_centroid`` rows a centroid (drawn in proportion to ``weight``)
        and advances ``progress`` (a tqdm bar) an iteration."""
        if weight is None:
            weight = torch.ones(rows.shape[0], dtype=torch.float64)
        weight = torch.as_tensor(weight, dtype=torch.float64)
        n_centroids = min(self.n_centroids, int(torch.count_nonzero(weight)))
        weight = (weight / weight.sum()).float()
        sample, weight = training_rows(
            weight, n_centroids, max_points_per_centroid, generator
        )
        if sample is not None:
            rows = rows[sample.to(rows.device)]
            if init_codes is not None:
                init_codes = init_codes[sample.to(init_codes.device)]
        codebooks, self.n_iter_ = weighted_kmeans(
            blocked(rows, self.block_size),
            weight.to(rows.device),
            n_centroids,
            self.n_iter if n_iter is None else n_iter,
            generator,
            None if init is None else init.float(),
            init_codes=init_codes,
            max_points_per_centroid=None,
            progress=progress,
        )
        self.codebooks = codebooks.to(self.codebook_dtype)
        return self

    def encode(self, rows):
        books = self.codebooks.to(rows.device)  # the table's codes and codebooks together
        return ProductQuantizedTable(encode_blocks(rows, books), books, rows.shape[1])

    def reconstruct(self, rows):
        books = self.codebooks.to(rows.device)
        return decode_blocks(encode_blocks(rows, books), books, rows.shape[1])

    def cosine_distances(self, rows):
        """Each row's cosine distance to its decoding, and its uint8 codes, without
        decoding it: the search finds each row's squared distance ``e`` to its
        decoding ``y``, the codebook entries' norms give ``|y|^2``, and ``x . y = (|x|^2
        + |y|^2 - e) / 2``.

        Returns
        -------
        distances : float64 tensor of shape (n,)
            ``1 - cos(x, y)`` (a zero row and a zero decoding: 0; one of them zero: 1).
        codes : uint8 tensor of shape (n, n_blocks)
        """
        books = self.codebooks.to(rows.device).float()
        codes, errors = encode_blocks(rows, books, return_errors=True)
        squares = books.square()
        decoded = squares.sum(dim=2).gather(1, codes.T).sum(dim=0, dtype=torch.float64)
        original = torch.linalg.vector_norm(rows, dim=1, dtype=torch.float64).square()
        dots = (original + decoded - errors) / 2
        # The last block's padding columns (zero in the rows) fall out of the decoding.
        width = rows.shape[1] - (books.shape[0] - 1) * self.block_size
        decoded -= squares[-1, :, width:].sum(dim=1)[codes[:, -1]]
        decoded.clamp_min_(0)
        norms = (original * decoded).sqrt()
        both_zero = ((original == 0) & (decoded == 0)).double()
        cosine = torch.where(norms > 0, dots / norms.clamp_min(1e-300), both_zero)
        return 1 - cosine.clamp(-1, 1), codes.to(torch.uint8)

    def row_size(self, n_features):
        blocks = n_blocks(n_features, self.block_size)
        return StoredSize(blocks, blocks)  # one uint8 code a block

    def fixed_size(self, n_rows, n_features):
        if self.codebooks is not None:
            return StoredSize.of_values(self.codebooks.numel(), self.codebook_dtype)
        n_centroids = min(self.n_centroids, n_rows)
        values = n_blocks(n_features, self.block_size) * n_centroids * self.block_size
        return StoredSize.of_values(values, self.codebook_dtype)
