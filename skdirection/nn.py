"""Torch modules that put a stored table inside any model: an input embedding that
decodes only the rows it looks up, and an output head. Any adapter reuses them."""

from torch import nn


class CompressedEmbedding(nn.Module):
    """An input embedding whose rows are decoded from a compressed table.

    It holds only what the compressor stores (for a low-rank table: the ``V x k`` latent
    table and the decoder), as frozen parameters, so ``model.num_parameters()`` counts
    them.

    Parameters
    ----------
    table : CompressedTable
        The stored form of the embedding matrix.
    padding_idx : int or None, default=None
        Kept for code that reads it from the embedding it replaces.
    dtype : torch.dtype or None, default=None
        Dtype of the decoded rows (the replaced embedding's); ``None`` keeps the table's.
    scale : float or None, default=None
        Constant the replaced embedding multiplied its rows by (Gemma's and BART's
        scaled embeddings use the square root of the hidden size); ``None`` for a plain
        lookup.

    Examples
    --------
    >>> import torch
    >>> from skdirection import LowRankTable
    >>> table = LowRankTable(torch.ones(10, 2), [torch.ones(2, 4)])
    >>> CompressedEmbedding(table)(torch.tensor([[1, 2, 3]])).shape
    torch.Size([1, 3, 4])
    """

    def __init__(self, table, padding_idx=None, dtype=None, scale=None):
        super().__init__()
        self.table = table
        self.padding_idx = padding_idx
        self.dtype = dtype
        self.scale = scale

    @property
    def num_embeddings(self):
        return self.table.num_embeddings

    @property
    def embedding_dim(self):
        return self.table.embedding_dim

    @property
    def n_parameters(self):
        """Number of stored values (the table's)."""
        return self.table.n_parameters

    def forward(self, input_ids):
        rows = self.table.decode(input_ids.reshape(-1))
        rows = rows.reshape(*input_ids.shape, rows.shape[-1])
        if self.scale is not None:
            rows = rows * self.scale
        return rows if self.dtype is None else rows.to(self.dtype)

    def extra_repr(self):
        scale = "" if self.scale is None else f", scale={self.scale:g}"
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, "
            f"n_parameters={self.n_parameters}{scale}"
        )


class CompressedLMHead(nn.Module):
    """An output head that computes logits from a compressed table's stored form.

    ``logits = hidden @ table.decode().T + bias``, computed by
    :meth:`~skdirection.CompressedTable.linear` without a float copy of the table:
    integer dot products on scalar codes, look-up tables for product quantization, two
    matmuls for a low-rank table, decoded tiles of rows otherwise. The logits are
    computed in float32 and returned at ``hidden``'s dtype.

    Parameters
    ----------
    table : CompressedTable
        The stored form of the head's ``V x d`` weight matrix.
    bias : torch.nn.Parameter or None, default=None
        The replaced head's bias, kept as it is.
    """

    def __init__(self, table, bias=None):
        super().__init__()
        self.table = table
        self.bias = bias

    @property
    def out_features(self):
        return self.table.num_embeddings

    @property
    def in_features(self):
        return self.table.embedding_dim

    @property
    def n_parameters(self):
        """Number of stored values (the table's and the bias)."""
        bias = 0 if self.bias is None else self.bias.numel()
        return self.table.n_parameters + bias

    def forward(self, hidden):
        logits = self.table.linear(hidden)
        if self.bias is not None:
            logits = logits + self.bias.float()
        return logits.to(hidden.dtype)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


def count_parameters(model):
    """Number of unique parameters of a module: a tensor shared by two layers counts once.

    Examples
    --------
    >>> from torch import nn
    >>> count_parameters(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in model.parameters())
