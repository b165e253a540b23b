"""Torch backend: device resolution, tensor conversion and chunked row mapping."""

import functools
import mmap

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


def with_autograd(method):
    """``method`` run with gradients on, whatever the caller's ``torch.no_grad`` or
    ``torch.inference_mode``: a network trained there would have no gradients, or
    parameters that cannot be updated in place."""

    @functools.wraps(method)
    def wrapped(*args, **kwargs):
        with torch.inference_mode(False), torch.enable_grad():
            return method(*args, **kwargs)

    return wrapped


def torch_generator(random_state, device):
    """A torch generator on ``device`` seeded from a numpy ``RandomState``."""
    seed = int(random_state.randint(np.iinfo(np.int32).max))
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def as_tensor(X, device, dtype=torch.float32):
    """Rows of a numpy array (or memmap), or a tensor, as a tensor on ``device``."""
    if not isinstance(X, torch.Tensor):
        X = torch.from_numpy(np.ascontiguousarray(X))
    return X.to(device=device, dtype=dtype)


def float32_rows(X, device="cpu"):
    """Validated rows (a numpy array) as a contiguous float32 tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)


def map_rows(function, X, device, out_dtype, chunk_rows=None, dtype=torch.float32):
    """Apply a torch function to the rows of ``X`` chunk by chunk; return numpy.

    Only one chunk at a time is on the device, and the output is written in place, so
    a memory-mapped ``X`` (or a :class:`RowSource`) streams.
    """
    source = X if isinstance(X, RowSource) else RowSource(X)
    out = None
    with torch.no_grad():
        for start, rows in source.chunks(chunk_rows):
            result = function(as_tensor(rows, device, dtype)).cpu().numpy()
            if out is None:
                out = np.empty((source.n_rows, result.shape[1]), dtype=out_dtype)
            out[start : start + len(result)] = result
    if out is None:
        return np.empty((0, 0), dtype=out_dtype)
    return out


# Rows per streamed chunk are chosen so that one chunk holds about this many bytes (as
# float32): small enough that a few float64 copies stay well under 1 GB.
CHUNK_BYTES = 2**26
# Training keeps a table of up to this many bytes (as float32) on the device and
# shuffles it whole; a larger one is streamed chunk by chunk.
RESIDENT_BYTES = 2**28


def chunk_rows_for(n_features):
    """Rows in one streamed chunk of a table with ``n_features`` columns."""
    return max(1, CHUNK_BYTES // (4 * max(1, n_features)))


def rows_per_chunk(row_values, device, cpu_values, device_values):
    """Rows of ``row_values`` values each in a working chunk of about ``cpu_values``
    values on the CPU (sized for its cache) or ``device_values`` on another device
    (sized to launch few kernels); at least one."""
    values = cpu_values if torch.device(device).type == "cpu" else device_values
    return max(1, values // max(1, row_values))


def file_backing(X):
    """``(filename, offset)`` of a C-ordered 2-D ``numpy.memmap`` (a whole file, or a
    contiguous row slice of one), else ``None``."""
    if not (
        isinstance(X, np.memmap)
        and X.ndim == 2
        and X.flags.c_contiguous
        and getattr(X, "filename", None)
    ):
        return None
    # Views of a memmap are memmaps that inherit the file's offset, not their own: the
    # array made on the mapping itself knows where its first byte lies in the file.
    root = X
    while not isinstance(root.base, mmap.mmap):
        root = root.base
        if not isinstance(root, np.ndarray):
            return None
    return X.filename, root.offset + (X.ctypes.data - root.ctypes.data)


class RowSource:
    """The rows of a 2-D table, read one chunk at a time.

    Rows of a memmap (or a row slice of one) are read with ordinary file reads rather
    than through the mapping: pages touched through a mapping stay in the process's
    resident memory, so a table larger than RAM would not stream. ``n_rows`` may exceed
    the table: rows past its end read as zeros (a shard padded to equal size).

    Parameters
    ----------
    X : ndarray of shape (n_table_rows, n_features)
        The validated table.
    backing : tuple or None
        ``file_backing`` of the array the user passed; used only when ``X`` still views
        that file's data.
    start, stop : int
        The rows ``[start, stop)`` of ``X`` that this source serves.
    check_finite : bool
        Check each chunk for NaN and infinity as it is read.
    """

    def __init__(self, X, backing=None, *, start=0, stop=None, check_finite=False):
        self.X = X
        self.backing = backing
        self.start = start
        self.stop = X.shape[0] if stop is None else stop
        self.check_finite = check_finite

    @property
    def n_rows(self):
        return self.stop - self.start

    @property
    def n_features(self):
        return self.X.shape[1]

    @property
    def dtype(self):
        return self.X.dtype

    def read(self, start, stop):
        """Rows ``[start, stop)`` of this source as an in-memory array."""
        first, last = self.start + start, min(self.start + stop, self.X.shape[0])
        if self.backing is not None and last > first:
            filename, offset = self.backing
            row_bytes = self.n_features * self.X.dtype.itemsize
            with open(filename, "rb") as handle:
                handle.seek(offset + first * row_bytes)
                rows = np.fromfile(handle, self.X.dtype, (last - first) * self.n_features)
            rows = rows.reshape(last - first, self.n_features)
        elif isinstance(self.X, torch.Tensor):  # rows already on a device: sliced there
            rows = self.X[first : max(first, last)]
        else:
            rows = np.ascontiguousarray(self.X[first : max(first, last)])
        if self.check_finite and not np.all(np.isfinite(rows)):
            raise ValueError("Input X contains NaN or infinity.")
        missing = (stop - start) - rows.shape[0]
        if missing > 0:
            rows = np.concatenate([rows, np.zeros((missing, self.n_features), rows.dtype)])
        return rows

    def chunks(self, chunk_rows=None):
        """Yield ``(start, rows)`` over the whole source, in order."""
        chunk_rows = chunk_rows or chunk_rows_for(self.n_features)
        for start in range(0, self.n_rows, chunk_rows):
            yield start, self.read(start, min(start + chunk_rows, self.n_rows))


def as_source(X, original=None, **kwargs):
    """A :class:`RowSource` over validated ``X``.

    It reads from ``original``'s file when ``original`` is a memmap (or a row slice of
    one) and
    validation kept ``X`` a view of it (no dtype conversion, no copy).
    """
    backing = file_backing(original)
    if backing is not None and not (
        X.dtype == original.dtype and np.may_share_memory(X, original)
    ):
        backing = None
    return RowSource(X, backing, **kwargs)
