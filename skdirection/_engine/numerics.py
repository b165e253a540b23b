"""Numerics shared by the codecs and estimators, each written once.

Unit rows and row cosines follow one zero-row policy: a zero row has no direction, so it
stays zero when normalised, and its cosine with a reconstruction is 1.0 if that is zero
too, else 0.0.
"""

import torch

from .backend import as_tensor


def unit_rows(X):
    """``(X / |X|, |X|)``: rows (along the last axis) scaled to unit length, zero rows
    staying zero, and their norms."""
    norms = X.norm(dim=-1, keepdim=True)
    return X / norms.clamp_min(torch.finfo(X.dtype).tiny), norms[..., 0]


def row_cosine(X, Y):
    """Cosine between each row of ``X`` and the same row of ``Y``, in ``[-1, 1]``."""
    x_norms, y_norms = X.norm(dim=1), Y.norm(dim=1)
    norms = x_norms * y_norms
    dots = (X * Y).sum(dim=1)
    both_zero = ((x_norms == 0) & (y_norms == 0)).to(dots.dtype)
    cosine = torch.where(
        norms > 0, dots / norms.clamp_min(torch.finfo(norms.dtype).tiny), both_zero
    )
    return cosine.clamp(-1, 1)


def weighted_sums(
    source,
    weight,
    device,
    dtype=torch.float64,
    *,
    with_gram=True,
    inverse_square_norm=False,
    scale=1.0,
):
    """Total weight, weighted column sums and weighted Gram matrix of a row source.

    Rows are read chunk by chunk (a memmap streams), converted to ``dtype``, and each
    chunk's products are added to float64 totals.

    Parameters
    ----------
    source : RowSource
    weight : ndarray or tensor of shape (source.n_rows,) or None
    device : torch.device
    dtype : torch.dtype, default=torch.float64
        Precision of each chunk's products; float32 halves the work where the result
        only starts an optimisation.
    with_gram : bool, default=True
    inverse_square_norm : bool, default=False
        Multiply each row's weight by its inverse squared norm (zero rows weigh zero):
        the sums of a least-squares fit in which every row's error counts relative to
        its length.
    scale : float, default=1.0
        Divide the rows by it first (a power of two: exactly), so that float32 norms
        of rows near 1e19 or 1e-19 neither overflow nor vanish.

    Returns
    -------
    total : scalar tensor
    sums : tensor of shape (n_features,)
    gram : tensor of shape (n_features, n_features) or None
        ``sum_i w_i x_i x_i^T``, in float64.
    """
    n_features = source.n_features
    total = torch.zeros((), dtype=torch.float64, device=device)
    sums = torch.zeros(n_features, dtype=torch.float64, device=device)
    gram = None
    if with_gram:
        gram = torch.zeros(n_features, n_features, dtype=torch.float64, device=device)
    for start, rows in source.chunks():
        rows = as_tensor(rows, device, dtype)
        if scale != 1:
            rows = rows * (1 / scale)
        if inverse_square_norm:
            # sum_i w_i x_i / |x_i|^2 as sum_i (w_i / |x_i|) u_i over the unit rows u_i,
            # with the coefficients in float64 (those of tiny rows overflow float32)
            # and scaled by their largest for the float32 product.
            norms = torch.linalg.vector_norm(rows, dim=1, dtype=torch.float64)
            w = torch.ones_like(norms)
            if weight is not None:
                w = as_tensor(weight[start : start + rows.shape[0]], device).double()
            coefs = torch.where(norms > 0, w / norms, 0.0)
            total += torch.where(norms > 0, coefs / norms, 0.0).sum()
            units = unit_rows(rows)[0]
            largest = coefs.max() if len(coefs) else coefs.new_zeros(())
            if largest > 0:
                sums += largest * ((coefs / largest).to(dtype) @ units).double()
            if with_gram:
                units *= w.sqrt().to(dtype)[:, None]
                gram += (units.T @ units).double()
            continue
        if weight is None:
            total += rows.shape[0]
            sums += rows.sum(dim=0).double()
            if with_gram:
                gram += (rows.T @ rows).double()
            continue
        w = as_tensor(weight[start : start + rows.shape[0]], device, dtype)
        total += w.double().sum()
        sums += (w @ rows).double()
        if with_gram:
            scaled = rows * w.sqrt()[:, None]
            gram += (scaled.T @ scaled).double()
    return total, sums, gram


def top_eigenvectors(gram, k):
    """The ``k`` largest eigenvalues of a symmetric matrix, and their eigenvectors as
    rows ``(k, n_features)``."""
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)
    order = torch.argsort(eigenvalues, descending=True)[:k]
    return eigenvalues[order], eigenvectors[:, order].T


def randomized_range_svd(rows, k, n_oversamples, n_iter, generator):
    """Top ``k`` singular values and right singular vectors of ``rows`` by Halko et
    al.'s randomized SVD with ``n_iter`` QR-stabilised power iterations."""
    sketch = torch.randn(
        rows.shape[1], k + n_oversamples, generator=generator, device=rows.device
    ).to(rows.dtype)
    basis = rows @ sketch
    for _ in range(n_iter):
        basis, _ = torch.linalg.qr(basis)
        basis, _ = torch.linalg.qr(rows.T @ basis)
        basis = rows @ basis
    basis, _ = torch.linalg.qr(basis)
    _, singular_values, vt = torch.linalg.svd(basis.T @ rows, full_matrices=False)
    return singular_values[:k], vt[:k]


def flip_signs(components):
    """Make the largest-magnitude entry of each component positive (a deterministic
    sign)."""
    largest = components.abs().argmax(dim=1)
    signs = torch.sign(components[torch.arange(components.shape[0]), largest])
    signs[signs == 0] = 1
    return components * signs[:, None]
