"""Directions from any codec, lengths stored apart (Banaei et al., 2023)."""

import torch

from .._engine.numerics import unit_rows
from ._codec import Codec
from ._table import (
    CompressedTable,
    StoredSize,
    describe_table,
    dtype_name,
    empty_table,
    frozen,
    register_table,
    row_tiles,
)


@register_table
class NormScaledTable(CompressedTable):
    """Directions from ``inner``, lengths from stored per-row ``norms``.

    Each decoded row of ``inner`` is scaled to unit length, then to its stored norm, as
    Banaei et al. (EACL 2023) do: the compressed part only has to get directions right.

    Parameters
    ----------
    inner : CompressedTable
    norms : tensor of shape (n_rows,)
    """

    def __init__(self, inner, norms):
        super().__init__()
        self.inner = inner
        self.norms = frozen(norms)

    def decode(self, indices=None):
        directions, _ = unit_rows(self.inner.decode(indices))
        norms = self.norms if indices is None else self.norms[indices]
        return directions * norms.float()[..., None]

    def _decode_range(self, start, stop):
        directions, _ = unit_rows(self.inner._decode_range(start, stop))
        return directions * self.norms[start:stop].float()[:, None]

    def _linear(self, h):
        return self.inner._linear(h).mul_(self._derived("row_scale", self._row_scale))

    def _row_scale(self):
        """``norm / |inner row|`` of every row (zero for a zero row), from decoded tiles
        of ``inner``: n_rows float32 values, made once."""
        lengths = torch.cat(
            [
                self.inner._decode_range(start, stop).norm(dim=-1)
                for start, stop in row_tiles(self.num_embeddings, self.embedding_dim)
            ]
        )
        norms = self.norms.float()
        return torch.where(
            lengths > 0, norms / lengths.clamp_min(torch.finfo(torch.float32).tiny), 0.0
        )

    @property
    def num_embeddings(self):
        return self.norms.shape[0]

    @property
    def embedding_dim(self):
        return self.inner.embedding_dim

    def config(self):
        return {"inner": describe_table(self.inner), "dtype": dtype_name(self.norms.dtype)}

    @classmethod
    def empty(cls, inner, dtype="float32"):
        inner = empty_table(inner)
        return cls(inner, torch.empty(inner.num_embeddings, dtype=getattr(torch, dtype)))


class NormScaledCodec(Codec):
    """``inner`` stores each row's unit direction; the row's norm is stored at
    ``norm_dtype`` beside it.

    Parameters
    ----------
    inner : Codec
    norm_dtype : torch.dtype or None, default=torch.float16
        ``None`` stores no norm: a row decodes to ``inner``'s reconstruction of its
        unit direction, for a table searched by cosine, where lengths are never read.
    """

    def __init__(self, inner, norm_dtype=torch.float16):
        self.inner = inner
        self.norm_dtype = norm_dtype
        self.name = inner.name

    def fit(self, rows, weight=None, generator=None, **kwargs):
        self.inner.fit(unit_rows(rows)[0], weight, generator, **kwargs)
        return self

    def encode(self, rows):
        directions, norms = unit_rows(rows)
        if self.norm_dtype is None:
            return self.inner.encode(directions)
        return NormScaledTable(self.inner.encode(directions), norms.to(self.norm_dtype))

    def reconstruct(self, rows):
        # Cosines are all the mix reads: the inner directions need no rescaling.
        return self.inner.reconstruct(unit_rows(rows)[0])

    def row_size(self, n_features):
        if self.norm_dtype is None:
            return self.inner.row_size(n_features)
        return self.inner.row_size(n_features) + StoredSize.of_values(1, self.norm_dtype)

    def fixed_size(self, n_rows, n_features):
        return self.inner.fixed_size(n_rows, n_features)
