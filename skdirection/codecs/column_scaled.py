"""Columns scaled back after any codec: what a column-weighted fit stores."""

import torch

from ._table import (
    CompressedTable,
    describe_table,
    dtype_name,
    empty_table,
    frozen,
    register_table,
)


@register_table
class ColumnScaledTable(CompressedTable):
    """Row ``i`` is ``inner.decode(i) * scale``: ``inner`` stores the table with its
    columns multiplied by ``1 / scale``.

    Scaling the columns up before compressing (and down after) spends the codec's
    precision where an error costs the most, such as the columns an output head's
    hidden states are largest on (see :class:`~skdirection.ColumnWeightedCompressor`).
    The scale costs ``n_features`` stored values.

    Parameters
    ----------
    inner : CompressedTable
    scale : tensor of shape (n_features,)

    Examples
    --------
    >>> import torch
    >>> from skdirection import ColumnScaledTable, DenseTable
    >>> inner = DenseTable(torch.ones(3, 2))
    >>> ColumnScaledTable(inner, torch.tensor([2.0, 0.5])).decode()
    tensor([[2.0000, 0.5000],
            [2.0000, 0.5000],
            [2.0000, 0.5000]])
    """

    def __init__(self, inner, scale):
        super().__init__()
        self.inner = inner
        self.scale = frozen(scale)

    def decode(self, indices=None):
        return self.inner.decode(indices) * self.scale.float()

    def _decode_range(self, start, stop):
        return self.inner._decode_range(start, stop) * self.scale.float()

    def _linear(self, h):
        """``inner``'s logits for ``h * scale``: ``h . (row * scale)``."""
        return self.inner._linear((h * self.scale.float()).contiguous())

    @property
    def num_embeddings(self):
        return self.inner.num_embeddings

    @property
    def embedding_dim(self):
        return self.scale.shape[0]

    def config(self):
        return {"inner": describe_table(self.inner), "dtype": dtype_name(self.scale.dtype)}

    @classmethod
    def empty(cls, inner, dtype="float32"):
        inner = empty_table(inner)
        return cls(inner, torch.empty(inner.embedding_dim, dtype=getattr(torch, dtype)))
