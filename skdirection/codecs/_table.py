"""The stored form of a compressed table, what it costs, and how it is saved.

Every compressor's ``compress(X)`` returns a :class:`CompressedTable`: a torch module that
decodes rows by index and counts its stored parameters and bytes. The adapters, the CLI
and the benchmarks only use this interface, never the estimator that made the table.
Tables save to and load from safetensors, so loading never runs pickled code.
"""

import json
from dataclasses import dataclass

import torch
from torch import nn

_METADATA_KEY = "skdirection_table"
_TABLE_CLASSES = {}


def register_table(cls):
    """Make a table class loadable by :func:`load_table` under its class name.

    Use it as a class decorator on every :class:`CompressedTable` subclass that should
    survive :func:`save_table`.
    """
    _TABLE_CLASSES[cls.__name__] = cls
    return cls


def frozen(values):
    """A tensor as a frozen parameter with contiguous storage.

    A stored table keeps everything as parameters, so that a model's parameter count
    includes them; contiguous storage makes decoding bit-identical before and after a
    save and load.
    """
    return nn.Parameter(torch.as_tensor(values).contiguous(), requires_grad=False)


def dtype_name(dtype):
    """``torch.float16`` as ``"float16"``: how tables write dtypes into their config."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class StoredSize:
    """What a table stores, counted two ways: values (parameters) and bytes.

    Sizes add up, and multiply by a number of rows, so a codec states the size of one
    row and of what it shares across rows, and anyone can total them.
    """

    n_parameters: int
    n_bytes: int

    @classmethod
    def of_values(cls, n_values, dtype):
        """``n_values`` values stored at ``dtype``."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return cls(n_values, n_values * itemsize)

    def in_unit(self, unit):
        """``n_bytes`` for ``"bytes"``, ``n_parameters`` for ``"params"``."""
        if unit == "bytes":
            return self.n_bytes
        if unit == "params":
            return self.n_parameters
        raise ValueError(f"unit must be 'bytes' or 'params', got {unit!r}.")

    def __add__(self, other):
        return StoredSize(
            self.n_parameters + other.n_parameters, self.n_bytes + other.n_bytes
        )

    def __mul__(self, n_rows):
        return StoredSize(self.n_parameters * n_rows, self.n_bytes * n_rows)

    __rmul__ = __mul__


NOTHING = StoredSize(0, 0)


class CompressedTable(nn.Module):
    """Base class of stored tables: decode rows, count parameters and bytes.

    Subclasses keep everything they store as frozen ``nn.Parameter`` objects (see
    :func:`frozen`), so that a model's parameter count includes them, implement
    :meth:`decode`, :meth:`config` and :meth:`empty`, and register with
    :func:`register_table` to be loadable.
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

    @property
    def stored_size(self):
        """:class:`StoredSize` of the table."""
        return StoredSize(self.n_parameters, self.n_bytes)


def describe_table(table):
    """JSON description of a table (class and config), nested tables included."""
    return {"class": type(table).__name__, "config": table.config()}


def empty_table(description):
    """An empty table of the class and shapes ``description`` gives."""
    return _TABLE_CLASSES[description["class"]].empty(**description["config"])


def save_table(table, path):
    """Write a table to a safetensors file (tensors plus a JSON description)."""
    from safetensors.torch import save_file

    metadata = {_METADATA_KEY: json.dumps(describe_table(table))}
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
        raise ValueError(
            f"{path} holds no skdirection table (no {_METADATA_KEY!r} metadata)."
        )
    try:
        table = empty_table(json.loads(metadata[_METADATA_KEY]))
        table.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} holds a damaged skdirection table: {exc}") from None
    return table
