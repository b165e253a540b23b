"""A row partition across several tables: each row stored by the codec chosen for it."""

import torch
from torch import nn

from ._table import (
    CompressedTable,
    describe_table,
    empty_table,
    frozen,
    index_bits,
    index_size,
    register_table,
)
from .scalar import pack_codes, unpack_codes


def partition_size(n_rows, n_parts):
    """:class:`StoredSize` of the bit-packed part ids of ``n_rows`` rows."""
    return index_size(n_rows, n_parts)


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
        self.id_bits = index_bits(len(parts))
        counts = torch.bincount(assignment, minlength=len(parts)).tolist()
        if len(counts) > len(parts) or (assignment.numel() and assignment.min() < 0):
            raise ValueError(f"assignment holds part ids outside [0, {len(parts)}).")
        for part, count in zip(parts, counts, strict=True):
            if part.num_embeddings != count:
                raise ValueError(
                    f"a part holds {part.num_embeddings} rows but {count} rows are "
                    "assigned to it."
                )
        packed = (
            pack_codes(assignment[None].to(torch.uint8), self.id_bits)
            if self.id_bits
            else torch.zeros(1, 0, dtype=torch.uint8, device=assignment.device)
        )
        self.packed_assignment = frozen(packed)

    def _row_maps(self):
        """``(part_of, position, rows)``: each row's part and place in it, and each
        part's rows; derived from the stored ids at first use (3 x n_rows int64)."""
        return self._derived("row_maps", self._make_row_maps)

    def _make_row_maps(self):
        device = self.packed_assignment.device
        if self.id_bits:
            part_of = unpack_codes(self.packed_assignment, self.id_bits, self.n_rows)[0]
            part_of = part_of.long()
        else:
            part_of = torch.zeros(self.n_rows, dtype=torch.int64, device=device)
        position = torch.empty_like(part_of)
        rows = [torch.nonzero(part_of == k).flatten() for k in range(len(self.parts))]
        for part_rows in rows:
            position[part_rows] = torch.arange(part_rows.numel(), device=device)
        return part_of, position, rows

    def decode(self, indices=None):
        part_of, position, _ = self._row_maps()
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

    def _linear(self, h):
        """Each part's logits fill the columns of its rows."""
        out = h.new_empty(h.shape[0], self.n_rows)
        for part, rows in zip(self.parts, self._row_maps()[2], strict=True):
            if rows.numel():
                out.index_copy_(1, rows, part._linear(h))
        return out

    def part_ids(self):
        """Part id of every row, as a tensor of shape (n_rows,)."""
        return self._row_maps()[0].clone()

    @property
    def num_embeddings(self):
        return self.n_rows

    @property
    def embedding_dim(self):
        return (
            next(p.embedding_dim for p in self.parts if p.num_embeddings)
            if self.n_rows
            else (self.parts[0].embedding_dim)
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
