"""The direction loss of Balazy et al. (2021) and its parts, per row."""

import torch
import torch.nn.functional as F

COSINE_EPS = 1e-6
ELEMENT_EPS = 1e-10


def cosine_distance(X_hat, X):
    """``1 - cos(x_hat, x)`` for every row."""
    return 1.0 - F.cosine_similarity(X_hat, X, dim=1, eps=COSINE_EPS)


def element_error(X_hat, X, power):
    """Row mean of ``(|x_hat - x| + 1e-10) ** power``."""
    return ((X_hat - X).abs() + ELEMENT_EPS).pow(power).mean(dim=1)


def squared_error(X_hat, X):
    """Row mean of ``(x_hat - x) ** 2``."""
    return (X_hat - X).pow(2).mean(dim=1)


def annealed_power(epoch, start, end, n_epochs):
    """Power of the element term: linear from ``start`` to ``end`` over ``n_epochs``."""
    if n_epochs <= 0:
        return end
    fraction = min(epoch / n_epochs, 1.0)
    return start + (end - start) * fraction


def direction_loss(
    X_hat, X, weight, *, cosine_weight, element_weight, element_power, rmse_weight
):
    """Weighted sum of the cosine, element and RMSE terms over a mini-batch.

    ``weight`` holds one non-negative weight per row, normalised so that it averages
    one over the whole training set; a mini-batch mean of weighted row losses is then
    an unbiased estimate of the weighted loss over all rows.
    """
    loss = cosine_weight * (weight * cosine_distance(X_hat, X)).mean()
    if element_weight:
        loss = loss + element_weight * (weight * element_error(X_hat, X, element_power)).mean()
    if rmse_weight:
        mse = (weight * squared_error(X_hat, X)).mean()
        loss = loss + rmse_weight * torch.sqrt(mse + ELEMENT_EPS)
    return loss
