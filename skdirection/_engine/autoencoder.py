"""The torch side of the direction autoencoder: the network, its starting point and the
row weights of its loss."""

import math

import numpy as np
import torch

from .backend import as_tensor
from .mlp import forward_layers, init_layers
from .numerics import top_eigenvectors, weighted_sums


class AutoEncoderNet(torch.nn.Module):
    """Encoder and decoder layers; ``encoder`` and ``decoder`` are ``(coefs,
    intercepts)`` lists of tensors, trained in place as parameters."""

    def __init__(self, encoder, decoder, activation, latent_activation):
        super().__init__()
        parameters = lambda tensors: torch.nn.ParameterList(  # noqa: E731
            [torch.nn.Parameter(t.clone()) for t in tensors]
        )
        self.encoder_coefs, self.encoder_intercepts = map(parameters, encoder)
        self.decoder_coefs, self.decoder_intercepts = map(parameters, decoder)
        self.activation = activation
        self.latent_activation = latent_activation

    def forward(self, rows):
        latent = forward_layers(
            rows,
            self.encoder_coefs,
            self.encoder_intercepts,
            self.activation,
            self.latent_activation,
        )
        return forward_layers(
            latent, self.decoder_coefs, self.decoder_intercepts, self.activation
        )


def to_numpy(tensors):
    return [t.detach().cpu().numpy().astype(np.float32) for t in tensors]


# 2 ** 100 and 2 ** -100, and their products with float32 weights, stay normal floats.
_MAX_SCALE_EXPONENT = 100


def training_scale(source, row_weight, device, reduce=None):
    """The power of two at or below the weighted root-mean-square row norm of a
    :class:`RowSource` (1 for rows of zeros); ``reduce`` sums over processes.

    The autoencoder trains on the rows divided by it: rows of root-mean-square norm in
    [1, 2), as BERT-family token embeddings (MiniLM's: 1.09), for which the paper
    tuned its loss. Adam moves every weight by about the learning rate whatever the
    data's scale, and the element term's power of 0.1 grows steep on small errors, so
    on raw rows the fit depended on the table's units: SmolLM2's table times 1e-4 kept
    a mean cosine of 0.665 against 0.757 unscaled. A power of two divides exactly, so
    tables that differ by one give the same model, its weights scaled.
    """
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for start, rows in source.chunks():
        rows = as_tensor(rows, device)
        squares = torch.linalg.vector_norm(rows, dim=1, dtype=torch.float64).square()
        weight = row_weight[start : start + rows.shape[0]].double()
        totals += torch.stack([weight @ squares, weight.sum()])
    if reduce is not None:
        totals = reduce(totals)
    squares, total = totals.tolist()
    rms = math.sqrt(squares / total) if total > 0 else 0.0
    if not 0 < rms < math.inf:
        return 1.0
    exponent = math.floor(math.log2(rms))
    return 2.0 ** max(-_MAX_SCALE_EXPONENT, min(_MAX_SCALE_EXPONENT, exponent))


def direction_basis(source, weight, k, device, reduce=None, scale=1.0):
    """Top-``k`` right singular vectors of the row-normalised, row-weighted table, as
    columns ``(n_features, k)``.

    On unit rows the squared error of a projection is ``1 - cos**2`` per row, so this
    basis nearly maximises the mean cosine: a starting point that the direction loss
    only fine-tunes. ``reduce`` sums the Gram matrix over processes; the rows are
    divided by ``scale`` first (see :func:`training_scale`).
    """
    _, _, gram = weighted_sums(
        source, weight, device, torch.float32, unit=True, scale=scale
    )
    if reduce is not None:
        gram = reduce(gram)
    return top_eigenvectors(gram, k)[1].T.float()


def initial_layers(
    source, row_weight, layer_sizes, init, generator, device, reduce=None, scale=1.0
):
    """Encoder and decoder ``(coefs, intercepts)`` to start training from.

    ``"random"`` draws them as PyTorch's ``nn.Linear`` would; ``"svd"`` (a linear
    autoencoder, ``layer_sizes = [n_features, n_components]``) starts from the top
    singular vectors of the row-normalised, row-weighted table, zero biases.
    """
    n_features, n_components = layer_sizes[0], layer_sizes[-1]
    encoder = init_layers(layer_sizes, generator, device)
    decoder = init_layers(layer_sizes[::-1], generator, device)
    if init == "svd":
        basis = direction_basis(source, row_weight, n_components, device, reduce, scale)
        encoder = [[basis.contiguous()], [torch.zeros(n_components, device=device)]]
        decoder = [[basis.T.contiguous()], [torch.zeros(n_features, device=device)]]
    return encoder, decoder


def normalised_row_weight(weight, n_rows, device):
    """Row weights on ``device`` averaging one over ``n_rows`` rows (ones for ``None``).

    Rows past the table's end (the padding of a data-parallel shard) weigh zero and the
    table's rows weigh more by as much, so that a padded epoch's mean loss, and the
    expected gradient of a padded mini-batch, are those of the table's rows alone.
    """
    if weight is None:
        return torch.ones(n_rows, device=device)
    total = weight.sum()
    padded = np.zeros(n_rows)
    # Divided first: n_rows / total overflows for subnormal weights.
    padded[: len(weight)] = weight / total * n_rows if total > 0 else weight
    return as_tensor(padded, device)
