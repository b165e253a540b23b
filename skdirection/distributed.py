"""Data-parallel training of one :class:`DirectionAutoEncoder` with ``torch.distributed``.

Each process reads its own shard of rows from a ``.npy`` file (as a memmap, streamed in
chunks) and holds a copy of the small model; ``DistributedDataParallel`` averages the
gradients of every mini-batch over the processes, the start sums their weighted sums
and Gram matrices, and the epoch losses are summed so that every process takes the same
stopping decision. Launch one process per GPU (NCCL) or per CPU socket (gloo) with
``torchrun``::

    torchrun --nproc_per_node=2 -m skdirection.distributed table.npy model.joblib \\
        --n-components 64 --set batch_size=4096 --set max_iter=5

Process 0 writes the fitted estimator with :func:`joblib.dump`; it holds only numpy
arrays, so it loads anywhere with :func:`joblib.load`.

Each step averages over the processes the gradients of their mini-batch means, each
batch drawn from the process's own shard. The rows are split into ``P`` contiguous
shards of ``ceil(n_rows / P)`` rows; the last is padded with zero-weight rows so that
every process runs the same number of steps, and the table's rows weigh more by as much
(weights average one over the padded shards), so that the padding biases neither a
step's gradient nor ``loss_curve_``, the mean loss over the table's rows weighted as on
one process. What holds, for the cosine and element terms of the loss:

- With full batches (``batch_size`` at least the shard size), ``P`` processes compute
  the gradient of one process's batch of the whole table, so both fits agree up to the
  order of floating-point sums.
- With mini-batches, ``P`` processes at ``batch_size=b`` take the same expected
  gradient at every step as one process at ``P * b``, not the same numbers: ``b`` rows
  from each shard are other rows than ``P * b`` drawn from the whole table, so loss
  curves agree within the noise of mini-batch training (about 1.5% on the small table
  of ``tests/test_distributed.py``), not to rounding.

The optional RMSE term is the root of a batch mean, which no split of a batch
preserves.
"""

import argparse
import ast
import gc
import os

import numpy as np
import torch
import torch.distributed as dist

from ._engine.backend import resolve_device
from .estimators import DirectionAutoEncoder


def _sum_over_processes(tensor):
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def fit_distributed(path, estimator, sample_weight=None):
    """Fit ``estimator`` on the rows of the ``.npy`` file ``path``, data-parallel.

    Call it in every process of an initialised ``torch.distributed`` process group (or
    under ``torchrun``, which this function initialises: NCCL when the estimator's
    device is CUDA, else gloo). Every process gets the same fitted estimator.

    Parameters
    ----------
    path : str or path-like
        A 2-D ``.npy`` file; each process reads only its own shard of rows.
    estimator : DirectionAutoEncoder
        Unfitted; ``batch_size`` is per process.
    sample_weight : array-like of shape (n_rows,), default=None
        Row weights, normalised to mean one over the padded shards (see above).

    Returns
    -------
    estimator : DirectionAutoEncoder
        The fitted estimator.
    """
    owns_group = not dist.is_initialized()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1)) if owns_group else dist.get_world_size()
    device = resolve_device(estimator.device)
    if device.type == "cuda" and device.index not in (None, local_rank) and world > 1:
        raise ValueError(
            f"device={estimator.device!r} would put every process on one GPU; under "
            "torchrun each process trains on its own (its LOCAL_RANK): use "
            "device='cuda' or device='auto'."
        )
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    if owns_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:

        def wrap(net):
            ids = [torch.cuda.current_device()] if device.type == "cuda" else None
            return torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)

        estimator._fit_shard(
            np.load(path, mmap_mode="r"),
            dist.get_rank(),
            dist.get_world_size(),
            sample_weight,
            reduce=_sum_over_processes,
            wrap=wrap,
        )
    finally:
        # DistributedDataParallel sits in reference cycles: free it while its process
        # group lives, not at a later collection or at exit, where gloo aborts.
        gc.collect()
        if owns_group:
            dist.destroy_process_group()
    return estimator


def _parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="torchrun --nproc_per_node=N -m skdirection.distributed",
        description="Train one DirectionAutoEncoder data-parallel on a .npy table.",
    )
    parser.add_argument("table", help="2-D .npy file (float32 or float64)")
    parser.add_argument(
        "output", help="where process 0 writes the fitted estimator (joblib)"
    )
    parser.add_argument("--n-components", type=int, required=True)
    parser.add_argument("--sample-weight", help="optional 1-D .npy of row weights")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any DirectionAutoEncoder parameter, e.g. --set batch_size=4096",
    )
    args = parser.parse_args(argv)
    params = dict(item.split("=", 1) for item in args.set)
    params = {name: _parse_value(value) for name, value in params.items()}
    estimator = DirectionAutoEncoder(args.n_components, **params)
    weight = None if args.sample_weight is None else np.load(args.sample_weight)
    estimator = fit_distributed(args.table, estimator, sample_weight=weight)
    if int(os.environ.get("RANK", 0)) == 0:
        import joblib

        joblib.dump(estimator, args.output)


if __name__ == "__main__":
    main()
