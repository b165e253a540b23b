"""Low rank: a latent code a row and a shared decoder. The tables, their size, and the
projection codec over a weighted basis of the rows."""

import math

import torch

from .._engine.backend import RowSource
from .._engine.mlp import ACTIVATIONS, activation_function, forward_layers
from .._engine.numerics import top_eigenvectors, weighted_sums
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


def low_rank_size(n_rows, n_features, n_components, *, bias=False):
    """:class:`StoredSize` of a float32 low-rank table: ``n_rows x n_components`` latent
    values, a linear ``n_components x n_features`` decoder and, with ``bias``, its
    ``n_features`` bias (as Balazy et al., 2021, count it)."""
    values = n_rows * n_components + n_components * n_features + (n_features if bias else 0)
    return StoredSize.of_values(values, torch.float32)


def largest_rank(n_rows, n_features, ratio, *, bias=False):
    """Largest rank whose float32 low-rank table is at least ``ratio`` times smaller
    than the ``n_rows x n_features`` matrix, or raise if none compresses that much.

    Examples
    --------
    >>> largest_rank(30522, 768, 10)
    74
    >>> largest_rank(49152, 576, 10, bias=True)
    56
    """
    if ratio <= 1:
        raise ValueError(f"ratio must be greater than 1, got {ratio}.")
    budget = n_rows * n_features / ratio - (n_features if bias else 0)
    k = int(budget // (n_rows + n_features))
    if k < 1:
        raise ValueError(
            f"ratio {ratio} is too high for a {n_rows} x {n_features} matrix: even rank 1 "
            "stores more."
        )
    if k >= n_features:
        raise ValueError(
            f"ratio {ratio} needs rank {k} >= {n_features}: nothing to compress."
        )
    return k


@register_table
class LowRankTable(CompressedTable):
    """A latent table and a decoder: row ``i`` is ``decoder(latent[i])``.

    Parameters
    ----------
    latent : torch.Tensor of shape (n_rows, n_components)
    coefs : list of torch.Tensor
        Decoder weight matrices, each of shape (fan_in, fan_out).
    intercepts : list of torch.Tensor or None
        Decoder biases, one per layer (``None`` entries for layers without bias).
    activation : str or None
        Applied between decoder layers, not after the last one.
    """

    def __init__(self, latent, coefs, intercepts=None, activation=None):
        super().__init__()
        if intercepts is None:
            intercepts = [None] * len(coefs)
        if activation is not None and activation not in ACTIVATIONS:
            raise ValueError(
                f"Unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}."
            )
        self.activation = activation
        self.latent = frozen(latent)
        self.coefs = torch.nn.ParameterList([frozen(c) for c in coefs])
        self.has_bias = [b is not None for b in intercepts]
        self.intercepts = torch.nn.ParameterList(
            [frozen(b) for b in intercepts if b is not None]
        )

    def decode(self, indices=None):
        rows = self.latent if indices is None else self.latent[indices]
        biases = iter(self.intercepts)
        intercepts = [next(biases) if has else None for has in self.has_bias]
        return forward_layers(rows, list(self.coefs), intercepts, self.activation)

    def _decode_range(self, start, stop):
        return self.decode(slice(start, stop)).float()

    def _linear(self, h):
        """``(h @ last.T) @ Z.T + h . bias``: ``Z`` is the latent table (one layer) or
        what the decoder's last layer reads, computed a tile of rows at a time."""
        if any(p.dtype != torch.float32 for p in self.parameters()):
            return super()._linear(h)
        biases = iter(self.intercepts)
        intercepts = [next(biases) if has else None for has in self.has_bias]
        *coefs, last = self.coefs
        projected = h @ last.T  # (t, fan_in of the last layer)
        if not coefs:
            out = projected @ self.latent.T
        else:
            activation = activation_function(self.activation)
            out = h.new_empty(h.shape[0], self.num_embeddings)
            for start, stop in row_tiles(self.num_embeddings, last.shape[0]):
                inputs = forward_layers(
                    self.latent[start:stop], coefs, intercepts[:-1], self.activation
                )
                if activation is not None:
                    inputs = activation(inputs)
                torch.mm(projected, inputs.T, out=out[:, start:stop])
        if intercepts[-1] is not None:
            out += (h @ intercepts[-1])[:, None]
        return out

    @property
    def num_embeddings(self):
        return self.latent.shape[0]

    @property
    def embedding_dim(self):
        return self.coefs[-1].shape[1]

    def config(self):
        sizes = [self.latent.shape[1]] + [c.shape[1] for c in self.coefs]
        return {
            "n_rows": self.latent.shape[0],
            "layer_sizes": sizes,
            "has_bias": self.has_bias,
            "activation": self.activation,
            "dtype": dtype_name(self.latent.dtype),
        }

    @classmethod
    def empty(cls, n_rows, layer_sizes, has_bias, activation, dtype="float32"):
        dtype = getattr(torch, dtype)
        shapes = list(zip(layer_sizes, layer_sizes[1:], strict=False))
        coefs = [torch.empty(a, b, dtype=dtype) for a, b in shapes]
        intercepts = [
            torch.empty(b, dtype=dtype) if bias else None
            for (_, b), bias in zip(shapes, has_bias, strict=True)
        ]
        latent = torch.empty(n_rows, layer_sizes[0], dtype=dtype)
        return cls(latent, coefs, intercepts, activation)


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
        self.components = frozen(components)
        self.has_bias = bias is not None
        if self.has_bias:
            self.bias = frozen(bias)

    def decode(self, indices=None):
        rows = self.inner.decode(indices) @ self.components.float()
        return rows + self.bias.float() if self.has_bias else rows

    def _decode_range(self, start, stop):
        rows = self.inner._decode_range(start, stop) @ self.components.float()
        return rows + self.bias.float() if self.has_bias else rows

    def _linear(self, h):
        """``inner``'s logits for the projected ``h @ components.T``, plus ``h . bias``."""
        out = self.inner._linear((h @ self.components.float().T).contiguous())
        if self.has_bias:
            out += (h @ self.bias.float())[:, None]
        return out

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
            "dtype": dtype_name(self.components.dtype),
        }

    @classmethod
    def empty(cls, inner, n_features, has_bias, dtype="float32"):
        inner = empty_table(inner)
        dtype = getattr(torch, dtype)
        components = torch.empty(inner.embedding_dim, n_features, dtype=dtype)
        bias = torch.empty(n_features, dtype=dtype) if has_bias else None
        return cls(inner, components, bias)


def weighted_basis(rows, weight, n_components, *, return_variances=False):
    """Top right singular vectors ``(n_components, n_features)`` of the row-weighted
    rows (not centred): the eigenvectors of ``X.T @ diag(weight) @ X``, in float32;
    with ``return_variances``, their eigenvalues too. Each chunk's products are float32
    (float64 totals): on SmolLM2's table the 128 leading eigenvectors are then within
    4e-8 of float64's in cosine, in half the time."""
    _, _, gram = weighted_sums(RowSource(rows), weight, rows.device, torch.float32)
    variances, components = top_eigenvectors(gram, n_components)
    return (components.float(), variances) if return_variances else components.float()


def balanced_order(variances, block_size):
    """An order of the directions whose consecutive blocks of ``block_size`` carry
    like products of variances (OPQ's eigenvalue allocation, Ge et al., 2014): the
    largest remaining variance joins the unfilled block of the smallest product, so
    the first blocks pair the largest variances with the smallest."""
    n_blocks = -(-len(variances) // block_size)
    log_products = [-math.inf] * n_blocks
    blocks = [[] for _ in range(n_blocks)]
    sizes = [block_size] * (n_blocks - 1) + [len(variances) - block_size * (n_blocks - 1)]
    for i in torch.argsort(torch.as_tensor(variances), descending=True).tolist():
        open_blocks = [j for j in range(n_blocks) if len(blocks[j]) < sizes[j]]
        j = min(open_blocks, key=lambda j: log_products[j])
        log = math.log(max(float(variances[i]), 1e-300))
        log_products[j] = log if not blocks[j] else log_products[j] + log
        blocks[j].append(i)
    return [i for block in blocks for i in block]


class ProjectionCodec(Codec):
    """Rows projected on a weighted basis of ``n_components`` directions; the latent
    codes are stored by ``latent`` (float32 values, 8-bit scalar codes, or product
    quantization, which is then fitted on the projections).

    Parameters
    ----------
    n_components : int
    latent : Codec
        Stores the ``n_rows x n_components`` latent codes.
    basis_dtype : torch.dtype, default=torch.float32
        Precision of the stored basis.

    Attributes
    ----------
    components : tensor of shape (n_components, n_features)
        Set by :meth:`fit` (float32). For a latent codec of blocks (``block_size``),
        ordered so that every block carries a like share of the variance
        (:func:`balanced_order`): the principal directions come in decreasing
        variance, and blocks of them alone would spend as many bytes on the last as
        on the first.
    """

    def __init__(self, n_components, latent, basis_dtype=torch.float32):
        self.n_components = n_components
        self.latent = latent
        self.basis_dtype = basis_dtype
        self.components = None
        self.name = f"rank{n_components}"
        block_size = getattr(latent, "block_size", None)
        if block_size is not None:
            self.name = f"rank{n_components}-{latent.name}"

    def fit(self, rows, weight=None, generator=None, **kwargs):
        """Learn the basis, then the latent codec on the projected rows (``kwargs`` go
        to its ``fit``)."""
        block_size = getattr(self.latent, "block_size", None)
        if block_size is None:
            self.components = weighted_basis(rows, weight, self.n_components)
            return self
        components, variances = weighted_basis(
            rows, weight, self.n_components, return_variances=True
        )
        self.components = components[balanced_order(variances.cpu(), block_size)]
        latent_rows = rows @ self.components.to(rows.device).T
        self.latent.fit(latent_rows, weight, generator, **kwargs)
        return self

    def encode(self, rows):
        components = self.components.to(rows.device)
        return LinearDecodedTable(
            self.latent.encode(rows @ components.T), components.to(self.basis_dtype)
        )

    def reconstruct(self, rows):
        # Encoded through the float32 basis, decoded through the stored one, as the table.
        components = self.components.to(rows.device)
        stored = components.to(self.basis_dtype).to(rows.dtype)
        return self.latent.reconstruct(rows @ components.T) @ stored

    def row_size(self, n_features):
        return self.latent.row_size(self.n_components)

    def fixed_size(self, n_rows, n_features):
        basis = StoredSize.of_values(self.n_components * n_features, self.basis_dtype)
        return basis + self.latent.fixed_size(n_rows, self.n_components)
