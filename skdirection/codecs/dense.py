"""Rows stored as they are, at a float dtype: the exact codec."""

import torch

from ._codec import Codec
from ._table import CompressedTable, StoredSize, dtype_name, frozen, register_table


@register_table
class DenseTable(CompressedTable):
    """Rows stored as they are, at the dtype of ``weight`` (float16 halves the bytes).

    Parameters
    ----------
    weight : tensor of shape (n_rows, n_features)
    """

    def __init__(self, weight):
        super().__init__()
        self.weight = frozen(weight)

    def decode(self, indices=None):
        rows = self.weight if indices is None else self.weight[indices]
        return rows.float()

    def _linear(self, h):
        if self.weight.dtype == torch.float32:
            return h @ self.weight.T
        return super()._linear(h)  # float16 rows converted a tile at a time

    def _decode_range(self, start, stop):
        return self.weight[start:stop].float()

    @property
    def num_embeddings(self):
        return self.weight.shape[0]

    @property
    def embedding_dim(self):
        return self.weight.shape[1]

    def config(self):
        return {
            "n_rows": self.weight.shape[0],
            "n_features": self.weight.shape[1],
            "dtype": dtype_name(self.weight.dtype),
        }

    @classmethod
    def empty(cls, n_rows, n_features, dtype="float32"):
        return cls(torch.empty(n_rows, n_features, dtype=getattr(torch, dtype)))


class DenseCodec(Codec):
    """Every value kept at ``dtype``: exact at float32, half the bytes at float16.

    Parameters
    ----------
    dtype : torch.dtype, default=torch.float32
    """

    def __init__(self, dtype=torch.float32):
        self.dtype = dtype
        self.name = "exact"

    def encode(self, rows):
        return DenseTable(rows.to(self.dtype))

    def reconstruct(self, rows):
        return rows.to(self.dtype).float()

    @property
    def lossless(self):
        return self.dtype == torch.float32

    def row_size(self, n_features):
        return StoredSize.of_values(n_features, self.dtype)
