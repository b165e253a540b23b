"""Tables built from other tables: dense rows, rows rescaled to stored norms, a linear
decoder over any latent table, and a row partition across several tables.

Together with :class:`QuantizedTable` they express every mixed budget: frequent rows
exact or at more bits, rare rows at fewer bits or as quantized low-rank codes, each
direction rescaled to its stored norm. Every stored tensor is a frozen parameter, so
``n_bytes`` counts codes, scales, decoders, norms and the row-to-part map alike.
"""

import math

import torch
from torch import nn

from ._quantized_table import pack_codes, unpack_codes
from ._table import _TABLE_CLASSES, CompressedTable, register_table

_ZERO_NORM = 1e-12


def _frozen(tensor):
    return nn.Parameter(torch.as_tensor(tensor), requires_grad=False)


def describe_table(table):
    """JSON description of a table (class and config), nested tables included."""
    return {"class": type(table).__name__, "config": table.config()}


def empty_table(description):
    """An empty table of the class and shapes ``description`` gives."""
    return _TABLE_CLASSES[description["class"]].empty(**description["config"])


@register_table
class DenseTable(CompressedTable):
    """Rows stored as they are, at the dtype of ``weight`` (float16 halves the bytes).

    Parameters
    ----------
    weight : tensor of shape (n_rows, n_features)
    """

    def __init__(self, weight):
        super().__init__()
        self.weight = _frozen(weight)

    def decode(self, indices=None):
        rows = self.weight if indices is None else self.weight[indices]
        return rows.float()

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
            "dtype": str(self.weight.dtype).removeprefix("torch."),
        }

    @classmethod
    def empty(cls, n_rows, n_features, dtype="float32"):
        return cls(torch.empty(n_rows, n_features, dtype=getattr(torch, dtype)))


@register_table
class LinearDecodedTable(CompressedTable):
    """Row ``i`` is ``inner.decode(i) @ components`` (plus ``bias``): a low-rank table
    whose latent codes may themselves be quantized.

    Parameters
    ----------
    inner : CompressedTable
        The latent table, ``n_components`` columns.
    components : tensor of shape (n_components, n_features)
    bias : tensor of shape (n_features,) or None
    """

    def __init__(self, inner, components, bias=None):
        super().__init__()
        self.inner = inner
        self.components = _frozen(components)
        self.has_bias = bias is not None
        if self.has_bias:
            self.bias = _frozen(bias)

    def decode(self, indices=None):
        rows = self.inner.decode(indices) @ self.components.float()
        return rows + self.bias.float() if self.has_bias else rows

    @property
    def num_embeddings(self):
        return self.inner.num_embeddings

    @property
    def embedding_dim(self):
        return self.components.shape[1]

    def config(self):
        return {
            "inner": describe_table(self.inner),
            "n_features": self.components.shape[1],
            "has_bias": self.has_bias,
            "dtype": str(self.components.dtype).removeprefix("torch."),
        }

    @classmethod
    def empty(cls, inner, n_features, has_bias, dtype="float32"):
        inner = empty_table(inner)
        dtype = getattr(torch, dtype)
        components = torch.empty(inner.embedding_dim, n_features, dtype=dtype)
        bias = torch.empty(n_features, dtype=dtype) if has_bias else None
        return cls(inner, components, bias)


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
        self.norms = _frozen(norms)

    def decode(self, indices=None):
        rows = self.inner.decode(indices)
        norms = self.norms if indices is None else self.norms[indices]
        length = rows.norm(dim=-1, keepdim=True).clamp_min(_ZERO_NORM)
        return rows / length * norms.float()[..., None]

    @property
    def num_embeddings(self):
        return self.norms.shape[0]

    @property
    def embedding_dim(self):
        return self.inner.embedding_dim

    def config(self):
        return {
            "inner": describe_table(self.inner),
            "dtype": str(self.norms.dtype).removeprefix("torch."),
        }

    @classmethod
    def empty(cls, inner, dtype="float32"):
        inner = empty_table(inner)
        return cls(inner, torch.empty(inner.num_embeddings, dtype=getattr(torch, dtype)))


@register_table
class PartitionedTable(CompressedTable):
    """Rows split across several tables by a stored, bit-packed part id per row.

    Part ``k`` holds, in increasing row order, the rows whose id is ``k``. The ids cost
    ``ceil(log2(n_parts))`` bits a row (nothing for one part) and are counted in
    ``n_bytes``; where each row sits inside its part is derived from them on load.

    Parameters
    ----------
    parts : list of CompressedTable
    assignment : int tensor of shape (n_rows,)
        Part id of every row.
    """

    def __init__(self, parts, assignment):
        super().__init__()
        assignment = torch.as_tensor(assignment).to(torch.int64)
        self.parts = nn.ModuleList(parts)
        self.n_rows = int(assignment.shape[0])
        self.id_bits = math.ceil(math.log2(len(parts))) if len(parts) > 1 else 0
        counts = torch.bincount(assignment, minlength=len(parts)).tolist()
        if len(counts) > len(parts) or (assignment.numel() and assignment.min() < 0):
            raise ValueError(f"assignment holds part ids outside [0, {len(parts)}).")
        for part, count in zip(parts, counts):
            if part.num_embeddings != count:
                raise ValueError(
                    f"a part holds {part.num_embeddings} rows but {count} rows are assigned to it."
                )
        packed = pack_codes(assignment[None].to(torch.uint8), self.id_bits) if self.id_bits else (
            torch.zeros(1, 0, dtype=torch.uint8)
        )
        self.packed_assignment = _frozen(packed)
        self._maps = None

    def _load_from_state_dict(self, *args, **kwargs):
        self._maps = None
        super()._load_from_state_dict(*args, **kwargs)

    def _row_maps(self):
        device = self.packed_assignment.device
        if self._maps is None or self._maps[0].device != device:
            if self.id_bits:
                part_of = unpack_codes(self.packed_assignment, self.id_bits, self.n_rows)[0].long()
            else:
                part_of = torch.zeros(self.n_rows, dtype=torch.int64, device=device)
            position = torch.empty_like(part_of)
            for k in range(len(self.parts)):
                rows = torch.nonzero(part_of == k).flatten()
                position[rows] = torch.arange(rows.numel(), device=device)
            self._maps = (part_of, position)
        return self._maps

    def decode(self, indices=None):
        part_of, position = self._row_maps()
        if indices is None:
            indices = torch.arange(self.n_rows, device=part_of.device)
        indices = torch.as_tensor(indices, device=part_of.device)
        flat = indices.reshape(-1)
        out = torch.empty(flat.shape[0], self.embedding_dim, device=part_of.device)
        parts, where = part_of[flat], position[flat]
        for k, part in enumerate(self.parts):
            mask = parts == k
            if mask.any():
                out[mask] = part.decode(where[mask]).to(out.dtype)
        return out.reshape(*indices.shape, self.embedding_dim)

    def part_ids(self):
        """Part id of every row, as a tensor of shape (n_rows,)."""
        return self._row_maps()[0].clone()

    @property
    def num_embeddings(self):
        return self.n_rows

    @property
    def embedding_dim(self):
        return next(p.embedding_dim for p in self.parts if p.num_embeddings) if self.n_rows else (
            self.parts[0].embedding_dim
        )

    def config(self):
        return {"parts": [describe_table(p) for p in self.parts], "n_rows": self.n_rows}

    @classmethod
    def empty(cls, parts, n_rows):
        parts = [empty_table(p) for p in parts]
        # Any valid assignment with the right counts; load_state_dict overwrites it.
        counts = [p.num_embeddings for p in parts]
        assignment = torch.repeat_interleave(torch.arange(len(parts)), torch.tensor(counts))
        if assignment.numel() != n_rows:
            raise ValueError(f"parts hold {assignment.numel()} rows, expected {n_rows}.")
        return cls(parts, assignment)
