"""One model trained data-parallel with torchrun (gloo, 2 CPU processes on loopback)."""

import gc
import os
import socket
import subprocess
import sys
import weakref
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
import torch.distributed as dist

from skdirection import DirectionAutoEncoder
from skdirection.distributed import fit_distributed

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# Full batch on each process: the 2-process step averages the gradients of the two
# 150-row halves, which is the gradient of the 300-row mean of the 1-process fit.
PARAMS = dict(
    batch_size=300,
    max_iter=6,
    n_iter_no_change=None,
    learning_rate=1e-2,
    device="cpu",
    random_state=0,
)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(*args):
    """Run ``torch.distributed.run`` with ``args`` in 2 processes."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--nnodes=1",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        *args,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


def _torchrun(table, output, *args):
    """Run the ``skdirection.distributed`` command in 2 processes; the fitted model."""
    _launch("-m", "skdirection.distributed", str(table), str(output), *args)
    return joblib.load(output)


@pytest.mark.parametrize("init", ["svd"])
def test_two_processes_match_one(embeddings, tmp_path, init):
    np.save(tmp_path / "table.npy", embeddings)
    sets = [f"--set={name}={value!r}" for name, value in {**PARAMS, "init": init}.items()]
    parallel = _torchrun(
        tmp_path / "table.npy", tmp_path / "model.joblib", "--n-components=4", *sets
    )
    single = DirectionAutoEncoder(4, init=init, **PARAMS).fit(embeddings)
    assert parallel.n_iter_ == single.n_iter_ == 6
    # Same mathematics, other float summation order: Adam's steps are at most the
    # learning rate each, so rounding cannot move a weight by more than a few 1e-4
    # in 6 steps and the reconstructions agree to that order.
    np.testing.assert_allclose(parallel.loss_curve_, single.loss_curve_, rtol=1e-4)
    np.testing.assert_allclose(
        parallel.inverse_transform(parallel.transform(embeddings)),
        single.inverse_transform(single.transform(embeddings)),
        rtol=1e-3,
        atol=1e-3,
    )
    assert parallel.score(embeddings) == pytest.approx(single.score(embeddings), abs=1e-5)


# 301 rows: shards of 151 rows, the second padded with one zero-weight row.
UNEVEN = dict(
    max_iter=6,
    n_iter_no_change=None,
    learning_rate=1e-2,
    init="random",
    device="cpu",
    random_state=0,
)


@pytest.fixture
def uneven(tmp_path):
    """A 301-row table and row weights, saved; the arrays and the two paths."""
    rng = np.random.RandomState(0)
    basis = rng.normal(size=(6, 24))
    X = rng.normal(size=(301, 6)) @ basis + 0.1 * rng.normal(size=(301, 24))
    X = (X * rng.uniform(0.5, 2.0, size=(301, 1))).astype(np.float32)
    weight = rng.uniform(0.2, 3.0, size=301)
    np.save(tmp_path / "table.npy", X)
    np.save(tmp_path / "weight.npy", weight)
    return X, weight, tmp_path / "table.npy", tmp_path / "weight.npy"


def _two_processes(uneven, batch_size):
    _, _, table, weight = uneven
    params = {**UNEVEN, "batch_size": batch_size}
    sets = [f"--set={name}={value!r}" for name, value in params.items()]
    output = table.with_name("model.joblib")
    return _torchrun(table, output, "--n-components=4", f"--sample-weight={weight}", *sets)


def _one_process(uneven, batch_size):
    X, weight, _, _ = uneven
    model = DirectionAutoEncoder(4, batch_size=batch_size, **UNEVEN)
    return model.fit(X, sample_weight=weight)


def test_uneven_weighted_shards_at_full_batch_match_one_process(uneven):
    """Each process's full batch (151 rows, one of them padding) averages to the
    301-row gradient, and ``loss_curve_`` is the mean over the 301 real rows."""
    parallel = _two_processes(uneven, batch_size=151)
    single = _one_process(uneven, batch_size=301)
    # Counting the padding row would bias every epoch's loss by 1/301.
    np.testing.assert_allclose(parallel.loss_curve_, single.loss_curve_, rtol=1e-5)
    for name in ("encoder_coefs_", "decoder_coefs_", "decoder_intercepts_"):
        for a, b in zip(getattr(parallel, name), getattr(single, name), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)


def test_mini_batches_follow_the_same_expected_update(uneven):
    """2 processes at batch 32 draw other batches than 1 process at batch 64 (32 rows
    from each shard), so the numbers differ, but each step has the same expected
    gradient: the curves agree within the noise of mini-batch training, far closer
    than those of 1 process at batch 32 (twice the steps)."""
    X, weight, _, _ = uneven
    parallel = _two_processes(uneven, batch_size=32)
    single = _one_process(uneven, batch_size=64)
    half_batch = _one_process(uneven, batch_size=32)
    assert not np.allclose(half_batch.loss_curve_, single.loss_curve_, rtol=0.2)
    np.testing.assert_allclose(parallel.loss_curve_, single.loss_curve_, rtol=0.05)
    score = single.score(X, sample_weight=weight)
    assert parallel.score(X, sample_weight=weight) == pytest.approx(score, abs=0.02)
    assert abs(half_batch.score(X, sample_weight=weight) - score) > 0.1


# Every process writes the estimator it ends with (the command writes process 0's only).
_FIT_EVERY_PROCESS = """
import ast, os, sys
import joblib, numpy as np
from skdirection import DirectionAutoEncoder
from skdirection.distributed import fit_distributed

table, weight, output, params = sys.argv[1:]
model = DirectionAutoEncoder(4, **ast.literal_eval(params))
fit_distributed(table, model, sample_weight=np.load(weight))
joblib.dump(model, f"{output}.{os.environ['RANK']}.joblib")
"""


def test_mini_batch_steps_keep_every_process_on_the_same_model(uneven):
    """Each mini-batch step averages the gradients over the processes, so the copies of
    the model never drift apart: every process ends with the same estimator. A step
    that used only its own shard's gradient would leave two different models, and
    process 0 would write a model of half the table."""
    _, _, table, weight = uneven
    script = table.with_name("fit_every_process.py")
    script.write_text(_FIT_EVERY_PROCESS)
    output = table.with_name("model")
    params = {**UNEVEN, "batch_size": 32}
    _launch(str(script), str(table), str(weight), str(output), repr(params))
    first, second = (joblib.load(f"{output}.{rank}.joblib") for rank in (0, 1))
    assert first.n_iter_ == second.n_iter_ == 6
    np.testing.assert_array_equal(first.loss_curve_, second.loss_curve_)
    for name in ("encoder_coefs_", "decoder_coefs_", "decoder_intercepts_"):
        for a, b in zip(getattr(first, name), getattr(second, name), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=name)


def test_the_wrapped_model_is_freed_before_the_group_ends(monkeypatch, tmp_path):
    """DistributedDataParallel sits in reference cycles; left to the garbage collector
    it outlived the process group and gloo aborted the process at exit."""
    np.save(tmp_path / "table.npy", np.random.RandomState(0).normal(size=(40, 6)))
    for name, value in dict(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1"
    ).items():
        monkeypatch.setenv(name, value)
    wrappers = []

    class RecordedDDP(torch.nn.parallel.DistributedDataParallel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            wrappers.append(weakref.ref(self))

    alive_at_destroy = []
    destroy = dist.destroy_process_group

    def recording_destroy(*args, **kwargs):
        alive_at_destroy.extend(ref() is not None for ref in wrappers)
        return destroy(*args, **kwargs)

    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", RecordedDDP)
    monkeypatch.setattr(dist, "destroy_process_group", recording_destroy)
    collecting = gc.isenabled()
    gc.disable()
    try:
        model = DirectionAutoEncoder(2, max_iter=2, device="cpu", random_state=0)
        fit_distributed(tmp_path / "table.npy", model)
    finally:
        if collecting:
            gc.enable()
    assert alive_at_destroy == [False]
    assert model.n_iter_ == 2


def test_an_explicit_gpu_that_is_not_the_process_own_is_refused(monkeypatch, tmp_path):
    """Under torchrun each process trains on the GPU of its LOCAL_RANK: 'cuda:1' on
    every process would put them all on one GPU, which NCCL refuses mid-fit."""
    from skdirection import distributed

    np.save(tmp_path / "table.npy", np.ones((8, 3)))
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed, "resolve_device", lambda device: torch.device(device))
    initialised = []
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: initialised.append(a))
    model = DirectionAutoEncoder(2, device="cuda:1")
    with pytest.raises(ValueError, match="'cuda:1' would put every process on one GPU"):
        fit_distributed(tmp_path / "table.npy", model)
    assert not initialised and not hasattr(model, "n_iter_")
