"""One model trained data-parallel with torchrun (gloo, 2 CPU processes on loopback)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest

from skdirection import DirectionAutoEncoder

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


def _torchrun(table, output, *args):
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
        "-m",
        "skdirection.distributed",
        str(table),
        str(output),
        *args,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("init", ["svd"])
def test_two_processes_match_one(embeddings, tmp_path, init):
    np.save(tmp_path / "table.npy", embeddings)
    sets = [f"--set={name}={value!r}" for name, value in {**PARAMS, "init": init}.items()]
    _torchrun(tmp_path / "table.npy", tmp_path / "model.joblib", "--n-components=4", *sets)
    parallel = joblib.load(tmp_path / "model.joblib")
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
