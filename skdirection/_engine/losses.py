"""The direction loss of Balazy et al. (2021) and its parts, per row."""

import torch

COSINE_EPS = 1e-6
ELEMENT_EPS = 1e-10


class _CosineDistance(torch.autograd.Function):
    """``1 - cos`` per row with a hand-written backward: the same values and gradients
    as ``F.cosine_similarity`` (each norm clamped at ``COSINE_EPS``), in fewer passes
    over the batch, which matters because the loss is a large part of a training step."""

    @staticmethod
    def forward(ctx, X_hat, X):
        hat_norms = X_hat.norm(dim=1).clamp_min(COSINE_EPS)
        norms = X.norm(dim=1).clamp_min(COSINE_EPS)
        cosine = (X_hat * X).sum(dim=1) / (hat_norms * norms)
        ctx.save_for_backward(X_hat, X, hat_norms, norms, cosine)
        return 1.0 - cosine

    @staticmethod
    def backward(ctx, grad_output):
        X_hat, X, hat_norms, norms, cosine = ctx.saved_tensors
        scale = -grad_output / (hat_norms * norms)
        grads = []
        for this, other, this_norms in ((X_hat, X, hat_norms), (X, X_hat, norms)):
            if not ctx.needs_input_grad[len(grads)]:
                grads.append(None)
                continue
            # A clamped norm is a constant: only the dot product's gradient remains.
            radial = torch.where(this_norms > COSINE_EPS, cosine / this_norms**2, 0.0)
            grad = other * scale[:, None]
            grads.append(grad.addcmul_(this, (radial * grad_output)[:, None]))
        return tuple(grads)


def cosine_distance(X_hat, X):
    """``1 - cos(x_hat, x)`` for every row (each norm clamped at ``COSINE_EPS``)."""
    return _CosineDistance.apply(X_hat, X)


class _ElementError(torch.autograd.Function):
    """Row mean of ``(|d| + 1e-10) ** power`` with a backward pass that reuses the
    forward power: autograd's own ``pow`` backward computes a second one. The power is
    taken as ``exp(power * log)``, within 1e-6 of ``pow`` and about three times faster
    on a CPU, where torch's ``pow`` with a fractional exponent is not vectorised as
    well; it was a tenth of a default fit's time."""

    @staticmethod
    def forward(ctx, difference, power):
        shifted = difference.abs().add_(ELEMENT_EPS)
        powered = shifted if power == 1.0 else shifted.log().mul_(power).exp_()
        ctx.save_for_backward(difference, shifted, powered)
        ctx.power = power
        return powered.mean(dim=1)

    @staticmethod
    def backward(ctx, grad_output):
        difference, shifted, powered = ctx.saved_tensors
        scale = ctx.power / difference.shape[1]
        grad = powered / shifted
        grad.mul_(difference.sign()).mul_(grad_output[:, None] * scale)
        return grad, None


def element_error(X_hat, X, power):
    """Row mean of ``(|x_hat - x| + 1e-10) ** power``."""
    return _ElementError.apply(X_hat - X, float(power))


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
        loss = (
            loss + element_weight * (weight * element_error(X_hat, X, element_power)).mean()
        )
    if rmse_weight:
        mse = (weight * squared_error(X_hat, X)).mean()
        loss = loss + rmse_weight * torch.sqrt(mse + ELEMENT_EPS)
    return loss
