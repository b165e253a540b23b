"""Weighted k-means over many independent groups of columns at once (Lloyd's algorithm),
the training step of product quantization."""

import torch

# Rows a distance matrix is computed for at once: (rows x centroids) floats that stay in
# cache, which matters more than the matrix product itself for blocks of 2 to 8 values.
_ASSIGN_CHUNK = 2048


def nearest_centroids(blocks, codebooks):
    """Index of the nearest codebook entry of every block.

    Parameters
    ----------
    blocks : tensor of shape (n_blocks, n, block_size)
    codebooks : tensor of shape (n_blocks, n_centroids, block_size)

    Returns
    -------
    codes : int64 tensor of shape (n, n_blocks)
    """
    m, n, _ = blocks.shape
    codes = torch.empty(n, m, dtype=torch.long, device=blocks.device)
    squared_norms = (codebooks**2).sum(dim=2)
    for j in range(m):
        minus_twice = codebooks[j].T * -2
        for start in range(0, n, _ASSIGN_CHUNK):
            part = blocks[j, start : start + _ASSIGN_CHUNK]
            distances = torch.addmm(squared_norms[j], part, minus_twice)
            codes[start : start + _ASSIGN_CHUNK, j] = distances.argmin(dim=1)
    return codes


def weighted_kmeans(blocks, weight, n_centroids, n_iter, generator, init=None):
    """Lloyd's algorithm on every block at once, rows weighted by ``weight``.

    Starts from ``init`` codebooks when given, else from ``n_centroids`` distinct rows
    drawn with probability proportional to their weight; a centroid that loses all its
    (weighted) rows keeps its place. Stops early once no code changes.

    Parameters
    ----------
    blocks : tensor of shape (n_blocks, n, block_size)
    weight : tensor of shape (n,)
        Non-negative, with at least ``n_centroids`` positive entries.
    n_centroids, n_iter : int
    generator : torch.Generator
        On the CPU; draws the starting rows.
    init : tensor of shape (n_blocks, n_centroids, block_size) or None

    Returns
    -------
    codebooks : tensor of shape (n_blocks, n_centroids, block_size)
    n_iter : int
        Iterations run.
    """
    m, n, s = blocks.shape
    if init is not None:
        codebooks = init.to(blocks)
    else:
        start = torch.multinomial(
            weight.cpu(), n_centroids, replacement=False, generator=generator
        )
        codebooks = blocks[:, start.to(blocks.device), :].clone()
    previous = None
    for iteration in range(n_iter):
        codes = nearest_centroids(blocks, codebooks).T  # (m, n)
        if previous is not None and torch.equal(codes, previous):
            return codebooks, iteration
        previous = codes
        sums = torch.zeros_like(codebooks)
        index = codes[..., None].expand(m, n, s)
        sums.scatter_add_(1, index, blocks * weight[None, :, None])
        mass = torch.zeros(m, n_centroids, dtype=blocks.dtype, device=blocks.device)
        mass.scatter_add_(1, codes, weight[None, :].expand(m, n))
        moved = sums / mass.clamp_min(torch.finfo(blocks.dtype).tiny)[..., None]
        codebooks = torch.where(mass[..., None] > 0, moved, codebooks)
    return codebooks, n_iter
