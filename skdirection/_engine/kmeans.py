"""Weighted k-means over many independent blocks of columns at once, the training step of
product quantization.

What makes it fast follows faiss's k-means [1]_: squared distances come from one matrix
product a chunk of rows, with the norms folded in; training uses at most a few hundred
rows a centroid; few iterations suffice. On top of that, for the 2 to 16 values of a
block, finding the nearest centroid costs more than the product itself, so it is one
integer minimum (see `_nearest`); on the CPU the blocks go to worker threads; and the
centroids take over-relaxed Lloyd steps, which reach in 6 iterations a lower error than
10 plain ones on embedding tables.

References
----------
.. [1] J. Johnson, M. Douze and H. Jégou, "Billion-scale similarity search with GPUs",
   IEEE Transactions on Big Data, 2019.
"""

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch

from .backend import rows_per_chunk

# float32 distances computed at once by one CPU thread: 1 MiB stays in a core's L2 cache.
_CPU_CHUNK_ENTRIES = 1 << 18
_DEVICE_CHUNK_ENTRIES = 1 << 26
# Centroid indices up to this many bits are packed into the low bits of the distances;
# beyond, too few mantissa bits would be left to rank them.
_MAX_INDEX_BITS = 12
# Rows from which a search spreads its blocks over worker threads (see nearest_centroids).
_POOLED_SEARCH_ROWS = 8192
# Relative distance between the two halves of a split cluster, as in faiss.
_SPLIT_EPS = 1.0 / 1024


def nearest_centroids(blocks, codebooks, *, return_errors=False):
    """Index of the nearest codebook entry of every block.

    Parameters
    ----------
    blocks : float tensor of shape (n_blocks, n, block_size)
    codebooks : float tensor of shape (n_blocks, n_centroids, block_size)
    return_errors : bool, default=False
        Also return each row's squared distance to its nearest entries, summed over
        the blocks.

    Returns
    -------
    codes : int64 tensor of shape (n, n_blocks)
    errors : float64 tensor of shape (n,)
        Only with ``return_errors``.

    Notes
    -----
    Squared distances within a relative ``2 ** (ceil(log2(n_centroids)) - 23)`` of each
    other (3e-5 for 256 centroids) count as ties, broken towards the lower index; the
    errors are the distances rounded down to that precision.
    """
    m, n, s = blocks.shape
    device = blocks.device
    codes = torch.empty(m, n, dtype=torch.long, device=device)
    errors = torch.empty(m, n, device=device) if return_errors else None
    centroids = _augmented_codebooks(codebooks.to(device))
    scratch = _Scratch()

    def search(j):
        rows = _augmented_rows(blocks[j], scratch.get("rows", (n, s + 2), device))
        distances = _nearest(rows, centroids[j], codes[j], scratch)
        if errors is not None:
            errors[j] = distances

    # Few rows: one block after the other, each operation on all of torch's threads;
    # a block's search is then too short to pay for a worker's share of the
    # interpreter lock. Many rows: the blocks go to worker threads (2 threads, blocks
    # of 4 on SmolLM2's table: 1.1x slower than one block after the other on 3640
    # rows, 1.3x faster on 16384).
    with _full_precision_matmul(device):
        if n < _POOLED_SEARCH_ROWS:
            for j in range(m):
                search(j)
        else:
            with _block_mapper(device) as map_blocks:
                map_blocks(search, m)
    codes = codes.T.contiguous()
    return (codes, errors.sum(dim=0, dtype=torch.float64)) if return_errors else codes


def weighted_kmeans(
    blocks,
    weight,
    n_centroids,
    n_iter,
    generator,
    init=None,
    *,
    init_codes=None,
    relax=2.0,
    max_points_per_centroid=256,
    progress=None,
):
    """Lloyd's algorithm, over-relaxed, on every block at once, rows weighted by ``weight``.

    Starts from ``init`` codebooks when given, else from ``n_centroids`` distinct rows
    drawn with probability proportional to their weight (all rows of positive weight,
    repeated, when there are fewer). Stops early once no code changes. A centroid that
    loses all its rows of positive weight is re-seeded by splitting a cluster of two
    such rows or more, drawn with probability proportional to its weight, as faiss
    does. After the last update the drawn cluster keeps its centroid: the codebooks
    returned are the weighted means of the clusters of the last assignment, and the
    centroids of those left empty are copies of drawn means, a relative ``_SPLIT_EPS``
    away, rather than wherever an over-relaxed step left them.

    Parameters
    ----------
    blocks : float tensor of shape (n_blocks, n, block_size)
    weight : float tensor of shape (n,)
        Non-negative row weights; rows of weight zero do not move the centroids.
    n_centroids : int
    n_iter : int
        Most iterations, an assignment and an update each.
    generator : torch.Generator
        On the CPU; draws the starting rows, the training sample and the clusters that
        empty ones split.
    init : float tensor of shape (n_blocks, n_centroids, block_size), default=None
    init_codes : integer tensor of shape (n, n_blocks), default=None
        The rows' nearest entries of ``init`` (from encoding them with it): the first
        assignment takes them instead of searching again.
    relax : float, default=2.0
        Every update but the last moves a centroid ``relax`` times the way to the
        weighted mean of its rows (1 is plain Lloyd). Falls back to 1 once the weighted
        error of an assignment exceeds the previous one.
    max_points_per_centroid : int or None, default=256
        When more rows have a positive weight than this many a centroid, the k-means
        runs on ``n_centroids * max_points_per_centroid`` rows drawn with replacement
        with probability proportional to their weight, each weighted by how many times
        it was drawn. None trains on every row.
    progress : tqdm or None, default=None
        Advanced by one step an iteration.

    Returns
    -------
    codebooks : tensor of shape (n_blocks, n_centroids, block_size), dtype of ``blocks``
    n_iter : int
        Iterations run.
    """
    dtype, device = blocks.dtype, blocks.device
    rows, weight = training_rows(weight, n_centroids, max_points_per_centroid, generator)
    weight = weight.to(device=device, dtype=torch.float64)
    if rows is not None:
        blocks = blocks[:, rows.to(device)]
        if init_codes is not None:
            init_codes = init_codes[rows.to(init_codes.device)]
    if init is not None:
        codebooks = init.to(device=device, dtype=torch.float32, copy=True)
    else:
        codebooks = _initial_codebooks(blocks, weight, n_centroids, generator)
    if n_iter == 0 or blocks.numel() == 0:
        return codebooks.to(dtype), 0
    clusters = _Clusters(blocks, weight, n_centroids)
    scratch = _Scratch()
    previous_error = math.inf
    n_run = n_iter
    with _block_mapper(device) as map_blocks, _full_precision_matmul(device):
        for iteration in range(n_iter):
            centroids = _augmented_codebooks(codebooks)
            if iteration == 0 and init is not None and init_codes is not None:
                given = init_codes.to(device=device, dtype=torch.int32).T
                results = map_blocks(clusters.take, blocks.shape[0], given, centroids)
            else:
                results = map_blocks(clusters.assign, blocks.shape[0], centroids, scratch)
            changed = sum(result[0] for result in results)
            error = sum(result[1] for result in results)
            means = clusters.means(codebooks)
            if progress is not None:
                progress.update()
            if changed == 0:
                n_run = iteration
                break
            if error > previous_error:
                relax = 1.0
            previous_error = error
            if iteration == n_iter - 1:
                break  # a plain step, and no split that would move a mean
            codebooks = means if relax == 1.0 else codebooks + relax * (means - codebooks)
            _split_empty(codebooks, clusters.counts, clusters.mass, generator)
    _split_empty(means, clusters.counts, clusters.mass, generator, last=True)
    return means.to(dtype), n_run


def _augmented_codebooks(codebooks):
    """``[-2 c; |c|^2; 1]`` of shape ``(n_blocks, block_size + 2, n_centroids)``,
    float32: ``[x, 1, |x|^2]`` times it is ``|x - c|^2``."""
    codebooks = codebooks.float()
    return (
        torch.cat(
            [
                -2 * codebooks,
                (codebooks * codebooks).sum(dim=2, keepdim=True),
                torch.ones_like(codebooks[..., :1]),
            ],
            dim=2,
        )
        .transpose(1, 2)
        .contiguous()
    )


def _augmented_rows(x, out):
    """``[x, 1, |x|^2]`` written into ``out`` of shape ``(n, block_size + 2)``."""
    s = x.shape[1]
    out[:, :s] = x
    out[:, s] = 1
    torch.sum(out[:, :s] ** 2, dim=1, out=out[:, s + 1])
    return out


def _nearest(rows, centroids, codes, scratch):
    """Writes into ``codes`` the nearest of ``centroids`` (augmented, ``(s + 2, k)``) to
    each of the augmented ``rows`` ``(r, s + 2)``; returns the squared distances."""
    r, k = rows.shape[0], centroids.shape[1]
    device = rows.device
    chunk = rows_per_chunk(k, device, _CPU_CHUNK_ENTRIES, _DEVICE_CHUNK_ENTRIES)
    bits = max(1, (k - 1).bit_length())
    if bits > _MAX_INDEX_BITS:
        distances = scratch.get("distances", (r,), device)
        for start in range(0, r, chunk):
            values, index = (rows[start : start + chunk] @ centroids).min(dim=1)
            distances[start : start + chunk] = values
            codes[start : start + chunk] = index
        return distances.clamp_min_(0)
    # Non-negative floats order like their int32 bit patterns. With the centroid index
    # in the low mantissa bits, one int32 minimum gives the index and the distance at
    # once, many times faster than a float argmin over a few in-cache columns.
    low = (1 << bits) - 1
    index = torch.arange(k, dtype=torch.int32, device=device)
    products = scratch.get("products", (min(chunk, r) * k,), device)
    packed = scratch.get("packed", (r,), device, torch.int32)
    for start in range(0, r, chunk):
        stop = min(start + chunk, r)
        product = products[: (stop - start) * k].view(stop - start, k)
        torch.mm(rows[start:stop], centroids, out=product)
        keys = product.view(torch.int32).bitwise_and_(~low).bitwise_or_(index)
        torch.amin(keys, dim=1, out=packed[start:stop])
    torch.bitwise_and(packed, low, out=codes)
    return packed.bitwise_and_(~low).view(torch.float32).clamp_min_(0)


@contextmanager
def _block_mapper(device):
    """A ``map_blocks(function, n_blocks, *args)`` that returns
    ``[function(j, *args) for j in range(n_blocks)]``, on the CPU from worker threads.

    Each worker runs torch on one thread: the blocks are independent, and thousands of
    small in-cache operations a second, each split over threads, would pay a fork and a
    join apiece (ruinous when other processes share the cores).
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield lambda function, n_blocks, *args: [
            function(j, *args) for j in range(n_blocks)
        ]
        return
    pool = ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,))
    # The workers take the caller's modes: tensors made under inference mode cannot be
    # updated in place outside it.
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def in_modes(function, j, args):
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return function(j, *args)

    try:
        yield lambda function, n_blocks, *args: list(
            pool.map(lambda j: in_modes(function, j, args), range(n_blocks))
        )
    finally:
        pool.shutdown()
        torch.set_num_threads(threads)  # the setting is shared with the calling thread


@contextmanager
def _full_precision_matmul(device):
    """float32 matrix products at full precision on a GPU, whatever the caller set:
    TF32 keeps 10 bits of mantissa, and ``|x|^2 - 2 x.c + |c|^2`` from it would rank
    close centroids by rounding error."""
    if device.type != "cuda":
        yield
        return
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)


class _Scratch(threading.local):
    """Buffers of each thread, reused from block to block."""

    def get(self, name, shape, device, dtype=torch.float32):
        buffers = self.__dict__.setdefault("buffers", {})
        size = math.prod(shape)
        buffer = buffers.get(name)
        if buffer is None or buffer.numel() < size or buffer.dtype != dtype:
            buffer = buffers[name] = torch.empty(size, dtype=dtype, device=device)
        return buffer[:size].view(shape)


def training_rows(weight, n_centroids, max_points_per_centroid, generator):
    """The rows :func:`weighted_kmeans` trains on and their weights: when more rows
    have a positive weight than ``max_points_per_centroid`` a centroid, that many a
    centroid drawn with replacement with probability proportional to their weight (the
    distinct rows drawn, each weighted by how many times it was); else ``None`` (every
    row) and ``weight``. Drawing them before the rows are cut into blocks spares a copy
    of the whole table."""
    weight = weight.to(dtype=torch.float64).reshape(-1)
    if max_points_per_centroid is None:
        return None, weight
    size = n_centroids * max_points_per_centroid
    if int(torch.count_nonzero(weight)) <= size:
        return None, weight
    drawn = torch.multinomial(weight.cpu(), size, replacement=True, generator=generator)
    rows, times = torch.unique(drawn, return_counts=True)
    return rows, times.to(dtype=torch.float64)


def _initial_codebooks(blocks, weight, n_centroids, generator):
    """``n_centroids`` rows drawn without replacement with probability proportional to
    their weight; all rows of positive weight, repeated, when there are fewer."""
    weight = weight.cpu()
    if not bool((weight > 0).any()):
        weight = torch.ones_like(weight)
    available = int(torch.count_nonzero(weight))
    start = torch.multinomial(
        weight, min(n_centroids, available), replacement=False, generator=generator
    )
    start = start.repeat(math.ceil(n_centroids / start.numel()))[:n_centroids]
    return blocks[:, start.to(blocks.device)].float()


def _split_empty(codebooks, counts, mass, generator, *, last=False):
    """Re-seeds empty centroids in place, as faiss does: each becomes a copy of a
    cluster of two rows of positive weight or more, drawn with probability proportional
    to its weight, the two copies pushed apart by a relative ``_SPLIT_EPS``; with
    ``last``, the drawn centroid stays and only the copy moves.

    The splits of a block follow one another (a cluster split once may be drawn
    again, at half its weight), so they run in numpy: a torch call a step cost a few
    microseconds each, thousands of times a fit."""
    empty = counts == 0
    if not bool(empty.any()):
        return
    blocks = empty.any(dim=1).nonzero()[:, 0]
    empty = empty[blocks].cpu().numpy()
    draws = torch.rand(int(empty.sum()), dtype=torch.float64, generator=generator)
    draws = iter(draws.tolist())
    books = codebooks[blocks].cpu().numpy()
    sizes = counts[blocks].cpu().numpy()
    weights = mass[blocks].clamp_min(0).cpu().numpy()
    sign = np.ones(books.shape[2], dtype=books.dtype)
    sign[1::2] = -1
    apart = (1 + _SPLIT_EPS * sign, 1 - _SPLIT_EPS * sign)
    for book, size, weight, targets in zip(books, sizes, weights, empty, strict=True):
        for target in np.flatnonzero(targets):
            candidates = np.where(size > 1, weight, 0.0)
            drawable = np.flatnonzero(candidates > 0)
            if not drawable.size:
                break
            cumulative = np.cumsum(candidates)
            source = np.searchsorted(cumulative, next(draws) * cumulative[-1], "right")
            source = min(source, drawable[-1])
            centre = book[source].copy()
            book[target] = centre * apart[0]
            if not last:
                book[source] = centre * apart[1]
            size[target] = size[source] // 2
            size[source] -= size[target]
            weight[target] = weight[source] / 2
            weight[source] -= weight[target]
    codebooks[blocks] = torch.from_numpy(books).to(codebooks.device)


class _Clusters:
    """The code of every row of every block and, per centroid, the weighted sum and
    mass of its rows (float64) and how many rows of positive weight it holds.

    Updated block by block, so that blocks can go to different threads.
    """

    def __init__(self, blocks, weight, n_centroids):
        m, n, s = blocks.shape
        device = blocks.device
        self.blocks = blocks
        self.weight = weight
        self.weight32 = weight.float()
        self.positive = (weight > 0).long()
        self.codes = torch.full((m, n), -1, dtype=torch.int32, device=device)
        self.sums = torch.zeros(m, n_centroids, s, dtype=torch.float64, device=device)
        self.mass = torch.zeros(m, n_centroids, dtype=torch.float64, device=device)
        self.counts = torch.zeros(m, n_centroids, dtype=torch.long, device=device)

    def assign(self, j, centroids, scratch):
        """Moves every row of block ``j`` to its nearest centroid; returns how many rows
        changed cluster and the weighted error of the assignment. ``centroids`` are
        the augmented codebooks of every block."""
        x = self.blocks[j]
        n, s = x.shape
        codes = scratch.get("codes", (n,), x.device, torch.int32)
        rows = _augmented_rows(x, scratch.get("rows", (n, s + 2), x.device))
        distances = _nearest(rows, centroids[j], codes, scratch)
        error = float(torch.dot(distances, self.weight32))
        moved = (codes != self.codes[j]).nonzero()[:, 0]
        if 2 * moved.numel() > n:
            # Recounted from scratch, which also sheds the float64 drift.
            self._add(j, None, codes, 1, reset=True)
        elif moved.numel():
            self._add(j, moved, self.codes[j], -1)
            self._add(j, moved, codes, 1)
        self.codes[j].copy_(codes)
        return moved.numel(), error

    def take(self, j, codes, centroids):
        """Puts the rows of block ``j`` in the clusters ``codes[j]`` says (their nearest,
        known already); returns what :meth:`assign` returns."""
        x = self.blocks[j]
        codes = codes[j]
        rows = _augmented_rows(x, torch.empty(x.shape[0], x.shape[1] + 2, device=x.device))
        chosen = centroids[j].T.contiguous().index_select(0, codes)  # (n, block_size + 2)
        distances = (rows * chosen).sum(1).clamp_min_(0)
        moved = int((codes != self.codes[j]).sum())
        self._add(j, None, codes, 1, reset=True)
        self.codes[j].copy_(codes)
        return moved, float(torch.dot(distances, self.weight32))

    def _add(self, j, rows, codes, sign, reset=False):
        """Adds (``sign`` 1) or takes away (-1) the ``rows`` of block ``j`` (all of them
        when None) to or from the clusters ``codes`` says."""
        x, weight, positive = self.blocks[j], self.weight, self.positive
        if rows is not None:
            x, weight, positive, codes = (
                t.index_select(0, rows) for t in (x, weight, positive, codes)
            )
        sums, mass, counts = self.sums[j], self.mass[j], self.counts[j]
        if reset:
            sums.zero_(), mass.zero_(), counts.zero_()
        target = codes.long()
        weight = weight * sign
        sums.index_add_(0, target, x.double() * weight[:, None])
        mass.index_add_(0, target, weight)
        counts.index_add_(0, target, positive * sign)

    def means(self, codebooks):
        """Weighted means of the clusters, float32; an empty cluster keeps its centroid
        (and sheds the float64 drift of its sums)."""
        full = self.counts > 0
        self.sums.mul_(full[..., None])
        self.mass.mul_(full)
        means = self.sums / self.mass.clamp_min(torch.finfo(torch.float64).tiny)[..., None]
        return torch.where(full[..., None], means.float(), codebooks)
