"""Torch backend: device resolution, tensor conversion and chunked row mapping."""

import numpy as np
import torch

_DEVICE_HELP = "expected 'auto', 'cpu', 'cuda' or 'cuda:N'"


def resolve_device(device):
    """Return the :class:`torch.device` that ``device`` names, or raise a clear error.

    ``"auto"`` means CUDA when it is available, else the CPU.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be a string ({_DEVICE_HELP}), got {device!r}.")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"Unknown device {device!r}: {_DEVICE_HELP}.") from None
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise ValueError(f"Unsupported device {device!r}: {_DEVICE_HELP}.")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this "
            "machine; use device='cpu' or device='auto'."
        )
    if resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r} does not exist: this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)."
        )
    return resolved


def inference_device(device):
    """Device for transform-time work: as asked, or the CPU where CUDA is gone.

    A model fitted on a GPU must still transform after it is unpickled on a machine
    without one, so an unavailable CUDA device falls back to the CPU here (never in fit).
    """
    try:
        return resolve_device(device)
    except ValueError:
        return torch.device("cpu")


def torch_generator(random_state, device):
    """A torch generator on ``device`` seeded from a numpy ``RandomState``."""
    seed = int(random_state.randint(np.iinfo(np.int32).max))
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def as_tensor(X, device, dtype=torch.float32):
    """Rows of a numpy array (or memmap) as a tensor on ``device``."""
    X = np.ascontiguousarray(X)
    return torch.from_numpy(X).to(device=device, dtype=dtype)


def map_rows(function, X, device, out_dtype, chunk_rows=65536, dtype=torch.float32):
    """Apply a torch function to the rows of ``X`` chunk by chunk; return numpy.

    Only one chunk at a time is on the device, so a memory-mapped ``X`` streams.
    """
    pieces = []
    with torch.no_grad():
        for start in range(0, X.shape[0], chunk_rows):
            rows = as_tensor(X[start : start + chunk_rows], device, dtype)
            pieces.append(function(rows).cpu().numpy())
    if not pieces:
        return np.empty((0, 0), dtype=out_dtype)
    return np.concatenate(pieces).astype(out_dtype, copy=False)
