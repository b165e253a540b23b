"""The stored form of a compressed embedding table.

Every compressor's ``compress(X)`` returns a :class:`CompressedTable`: a torch module that
decodes rows by index and counts its stored parameters and bytes. The adapter, the CLI
and the benchmarks only use this interface, never the estimator that made the table.
Tables save to and load from safetensors, so loading never runs pickled code.
"""

import json

import torch
from torch import nn

from ._mlp import ACTIVATIONS, forward_layers

_METADATA_KEY = "skdirection_table"
_TABLE_CLASSES = {}


def register_table(cls):
    """Make a table class loadable by :func:`load_table` under its class name."""
    _TABLE_CLASSES[cls.__name__] = cls
    return cls


class CompressedTable(nn.Module):
    """Base class of stored tables: decode rows, count parameters and bytes.

    Subclasses keep everything they store as (frozen) ``nn.Parameter`` objects, so that a
    model's parameter count includes them, and implement :meth:`decode` and
    :meth:`config`.
    """

    def forward(self, indices):
        return self.decode(indices)

    def decode(self, indices=None):
        """Rows ``indices`` of the table (all rows when ``None``), as float tensors."""
        raise NotImplementedError

    def config(self):
        """JSON-serialisable keyword arguments of :meth:`empty`."""
        raise NotImplementedError

    @classmethod
    def empty(cls, **config):
        """A table of the right shapes, filled by ``load_state_dict``."""
        raise NotImplementedError

    @property
    def num_embeddings(self):
        raise NotImplementedError

    @property
    def embedding_dim(self):
        raise NotImplementedError

    @property
    def n_parameters(self):
        """Number of stored values."""
        return sum(p.numel() for p in self.parameters())

    @property
    def n_bytes(self):
        """Number of stored bytes, every stored tensor counted at its dtype."""
        return sum(p.numel() * p.element_size() for p in self.parameters())


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
        self.latent = _frozen(latent)
        self.coefs = nn.ParameterList([_frozen(c) for c in coefs])
        self.has_bias = [b is not None for b in intercepts]
        self.intercepts = nn.ParameterList([_frozen(b) for b in intercepts if b is not None])

    def decode(self, indices=None):
        rows = self.latent if indices is None else self.latent[indices]
        biases = iter(self.intercepts)
        intercepts = [next(biases) if has else None for has in self.has_bias]
        return forward_layers(rows, list(self.coefs), intercepts, self.activation)

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
            "dtype": str(self.latent.dtype).removeprefix("torch."),
        }

    @classmethod
    def empty(cls, n_rows, layer_sizes, has_bias, activation, dtype="float32"):
        dtype = getattr(torch, dtype)
        coefs = [torch.empty(a, b, dtype=dtype) for a, b in zip(layer_sizes, layer_sizes[1:])]
        intercepts = [
            torch.empty(b, dtype=dtype) if bias else None
            for b, bias in zip(layer_sizes[1:], has_bias)
        ]
        latent = torch.empty(n_rows, layer_sizes[0], dtype=dtype)
        return cls(latent, coefs, intercepts, activation)


def _frozen(values):
    # Contiguous storage makes decoding bit-identical before and after a save/load.
    return nn.Parameter(torch.as_tensor(values).contiguous(), requires_grad=False)


def save_table(table, path):
    """Write a table to a safetensors file (tensors plus a JSON description)."""
    from safetensors.torch import save_file

    metadata = {_METADATA_KEY: json.dumps({"class": type(table).__name__, "config": table.config()})}
    tensors = {name: t.detach().contiguous() for name, t in table.state_dict().items()}
    save_file(tensors, str(path), metadata=metadata)


def load_table(path):
    """Read a table written by :func:`save_table`; never unpickles anything."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from None
    if _METADATA_KEY not in metadata:
        raise ValueError(f"{path} holds no skdirection table (no {_METADATA_KEY!r} metadata).")
    try:
        description = json.loads(metadata[_METADATA_KEY])
        cls = _TABLE_CLASSES[description["class"]]
        table = cls.empty(**description["config"])
        table.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} holds a damaged skdirection table: {exc}") from None
    return table
