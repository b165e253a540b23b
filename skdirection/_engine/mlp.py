"""Dense layers as plain tensors: initialisation and forward pass."""

import itertools
import math

import torch
from torch import nn

ACTIVATIONS = {
    "elu": nn.functional.elu,
    "relu": nn.functional.relu,
    "tanh": torch.tanh,
    "gelu": nn.functional.gelu,
}


def activation_function(name):
    """The torch function an activation name stands for (``None`` is the identity)."""
    if name is None:
        return None
    return ACTIVATIONS[name]


def init_layers(layer_sizes, generator, device):
    """Weights drawn as PyTorch's ``nn.Linear`` draws them, from a given generator.

    Both weight ``(fan_in, fan_out)`` and bias are uniform on
    ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``; using our own generator keeps a seeded fit
    reproducible without touching torch's global random state.
    """
    coefs, intercepts = [], []
    for fan_in, fan_out in itertools.pairwise(layer_sizes):
        bound = 1.0 / math.sqrt(fan_in)
        coef = torch.empty(fan_in, fan_out, device=device)
        bias = torch.empty(fan_out, device=device)
        coefs.append(coef.uniform_(-bound, bound, generator=generator))
        intercepts.append(bias.uniform_(-bound, bound, generator=generator))
    return coefs, intercepts


def forward_layers(rows, coefs, intercepts, activation=None, final_activation=None):
    """``rows`` through dense layers, ``activation`` between them.

    ``intercepts`` may hold ``None`` for layers without bias.
    """
    hidden = activation_function(activation)
    for layer, (coef, bias) in enumerate(zip(coefs, intercepts, strict=True)):
        if layer and hidden is not None:
            rows = hidden(rows)
        rows = rows @ coef
        if bias is not None:
            rows = rows + bias
    final = activation_function(final_activation)
    return rows if final is None else final(rows)
