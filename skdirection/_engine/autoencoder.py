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


def direction_start(source, weight, k, device, reduce=None, scale=1.0):
    """The affine ``k``-dimensional fit of the rows that best keeps their directions.

    Each row weighs its weight over its squared norm, so that the least-squares error
    of ``x_hat = offset + (x - offset) V V^T`` is ``|x - x_hat|^2 / |x|^2`` a row,
    about ``1 - cos^2`` where the fit is close: a starting point that the direction
    loss only fine-tunes. ``reduce`` sums the totals over processes; the rows are
    divided by ``scale`` first (see :func:`training_scale`).

    Returns
    -------
    basis : tensor of shape (n_features, k)
    offset : tensor of shape (n_features,)
    kept : float
        The share of ``sum_i w_i |x_i|^2 / |x_i|^2`` that the fit keeps in
        ``sum_i w_i |x_hat_i|^2 / |x_i|^2``, in ``(0, 1]`` (1 for rows of zeros):
        its decoded rows are shorter than the rows by about its square root.
    """
    totals = weighted_sums(
        source, weight, device, torch.float32, inverse_square_norm=True, scale=scale
    )
    if reduce is not None:
        totals = [reduce(t) for t in totals]
    total, sums, gram = totals
    offset = sums / total if total > 0 else sums
    covariance = gram - total * torch.outer(offset, offset)
    eigenvalues, basis = top_eigenvectors(covariance, k)
    # With c_i = w_i / |x_i|^2, sum_i c_i (x_i - m) = 0, so sum_i c_i |x_hat_i|^2 is
    # total |m|^2 plus the kept eigenvalues, and sum_i c_i |x_i|^2 = sum_i w_i is the
    # trace of gram.
    energy = gram.trace()
    kept = (total * offset.square().sum() + eigenvalues.sum()) / energy
    return basis.T.float(), offset.float(), float(kept) if energy > 0 else 1.0


def initial_layers(
    source, row_weight, layer_sizes, init, generator, device, reduce=None, scale=1.0
):
    """Encoder and decoder ``(coefs, intercepts)`` to start training from.

    ``"random"`` draws them as PyTorch's ``nn.Linear`` would; ``"svd"`` (a linear
    autoencoder, ``layer_sizes = [n_features, n_components]``) starts from
    :func:`direction_start`: encoder ``V`` with intercept ``-offset V``, decoder
    ``V^T`` and intercept ``offset``, the decoder lengthened by ``1 / sqrt(kept)`` so
    that the decoded rows keep the rows' root-mean-square relative length.
    Lengthening changes no cosine, and the training no longer starts by growing every
    row: after 5 or 7 epochs, the mean cosine was 0.00000 to 0.00005 higher on
    SmolLM2's, spaCy's and MiniLM's tables than from the fit as it is.
    """
    n_components = layer_sizes[-1]
    encoder = init_layers(layer_sizes, generator, device)
    decoder = init_layers(layer_sizes[::-1], generator, device)
    if init == "svd":
        basis, offset, kept = direction_start(
            source, row_weight, n_components, device, reduce, scale
        )
        length = 1 / math.sqrt(kept)
        encoder = [[basis.contiguous()], [-(offset @ basis)]]
        decoder = [[basis.T.contiguous() * length], [offset * length]]
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
