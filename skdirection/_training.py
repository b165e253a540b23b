"""One mini-batch training loop for every torch-trained estimator."""

import copy
import warnings

import torch
from tqdm.auto import tqdm


def train(
    module,
    batch_loss,
    X,
    weight,
    *,
    max_iter,
    batch_size,
    learning_rate,
    lr_step_size,
    lr_decay,
    generator,
    verbose=0,
    description="fit",
):
    """Train ``module`` with Adam and a step schedule; keep the best epoch.

    Parameters
    ----------
    module : torch.nn.Module
        Trained in place. On return it holds the parameters of the epoch with the
        lowest mean training loss, which is also what a ``KeyboardInterrupt`` leaves.
    batch_loss : callable
        ``batch_loss(module, X_batch, weight_batch, epoch) -> scalar tensor``.
    X, weight : torch.Tensor
        Rows and their per-row weights, on the training device.
    generator : torch.Generator
        Drives the shuffling, so that a seed fixes the whole run.

    Returns
    -------
    loss_curve : list of float
        Mean training loss of each completed epoch.
    """
    n_rows = X.shape[0]
    optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=lr_step_size, gamma=lr_decay
    )
    loss_curve = []
    best_loss, best_state = float("inf"), copy.deepcopy(module.state_dict())
    epochs = tqdm(range(max_iter), desc=description, disable=not verbose, leave=False)
    try:
        for epoch in epochs:
            order = torch.randperm(n_rows, generator=generator, device=generator.device)
            order = order.to(X.device)
            total = torch.zeros((), device=X.device)
            for start in range(0, n_rows, batch_size):
                rows = order[start : start + batch_size]
                loss = batch_loss(module, X[rows], weight[rows], epoch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * rows.numel()
            scheduler.step()
            epoch_loss = float(total) / n_rows
            if not torch.isfinite(torch.tensor(epoch_loss)):
                raise FloatingPointError(
                    f"The training loss became {epoch_loss} at epoch {epoch}; "
                    "lower learning_rate."
                )
            loss_curve.append(epoch_loss)
            epochs.set_postfix(loss=f"{epoch_loss:.5f}")
            if epoch_loss < best_loss:
                best_loss, best_state = epoch_loss, copy.deepcopy(module.state_dict())
    except KeyboardInterrupt:
        if not loss_curve:
            raise
        warnings.warn(
            f"Training interrupted after {len(loss_curve)} epoch(s); keeping the best "
            "epoch so far.",
            RuntimeWarning,
            stacklevel=3,
        )
    module.load_state_dict(best_state)
    return loss_curve
