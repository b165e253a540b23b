"""Fitted on a GPU, used on a CPU: write the test fixture on a GPU, check it on a CPU.

``dump`` (on a machine with CUDA) fits small models on the GPU, pickles them and writes
what they computed there (codes and decoded tables) beside them, with a manifest naming
the GPU and the versions. ``load`` (on a machine without CUDA) unpickles them and checks
that they transform, compress and score on the CPU to the same numbers, and refuse to
refit on the missing GPU. The default folder is the fixture that
``tests/test_hardening.py::test_gpu_fitted_fixture_works_on_a_cpu`` loads once it is
committed (until then that test skips, saying so), so the real round trip is::

    python benchmarks/cuda_pickle_check.py dump    # on the GPU machine, then commit
                                                   # tests/data/cuda_fitted/
    python benchmarks/cuda_pickle_check.py load    # on a machine without CUDA
"""

import json
import pickle
import platform
import sys
from pathlib import Path

import numpy as np

import skdirection
from skdirection import (
    DirectionAutoEncoder,
    ProductQuantizer,
    TruncatedSVDCompressor,
)

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "cuda_fitted"
# Codes and decoded rows computed on the GPU and on the CPU may differ by rounding.
TOLERANCE = 1e-4


def data():
    """The fitted table: 512 rows of 32 features, low rank plus noise, seeded."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(512, 6)) @ rng.normal(size=(6, 32)) + 0.1 * rng.normal(
        size=(512, 32)
    )
    return X.astype(np.float32)


def models():
    """Small models of every torch-trained kind, all on CUDA."""
    return {
        "autoencoder": DirectionAutoEncoder(8, max_iter=3, device="cuda", random_state=0),
        "autoencoder_hidden": DirectionAutoEncoder(
            8, hidden_layer_sizes=(16,), max_iter=3, device="cuda", random_state=0
        ),
        "svd": TruncatedSVDCompressor(8, device="cuda", random_state=0),
        "product_quantizer": ProductQuantizer(
            4, n_centroids=16, device="cuda", random_state=0
        ),
    }


def _outputs(model, X):
    return {
        "codes": model.transform(X),
        "decoded": model.compress(X).decode().detach().cpu().numpy(),
        "score": float(model.score(X)),
    }


def dump(folder):
    import torch

    assert torch.cuda.is_available(), "run 'dump' on a machine with CUDA"
    folder.mkdir(parents=True, exist_ok=True)
    X = data()
    manifest = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "skdirection": skdirection.__version__,
        "python": platform.python_version(),
        "models": {},
    }
    for name, model in models().items():
        model.fit(X)
        assert model.device_.startswith("cuda"), model.device_
        outputs = _outputs(model, X)
        (folder / f"{name}.pkl").write_bytes(pickle.dumps(model))
        np.save(folder / f"{name}_codes.npy", outputs["codes"])
        np.save(folder / f"{name}_decoded.npy", outputs["decoded"])
        manifest["models"][name] = {"device": model.device_, "score": outputs["score"]}
        print(name, "fitted on", model.device_)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def load(folder):
    """Check the fixture in ``folder`` on this CPU-only machine; raise if it fails."""
    import torch

    assert not torch.cuda.is_available(), "run 'load' on a machine without CUDA"
    manifest = json.loads((folder / "manifest.json").read_text())
    X = data()
    for name, recorded in manifest["models"].items():
        model = pickle.loads((folder / f"{name}.pkl").read_bytes())
        assert model.device_ == recorded["device"] and model.device_.startswith("cuda")
        outputs = _outputs(model, X)
        for kind in ("codes", "decoded"):
            expected = np.load(folder / f"{name}_{kind}.npy")
            gap = np.abs(outputs[kind] - expected).max()
            assert gap < TOLERANCE, f"{name} {kind}: max |diff| {gap:.2e}"
        assert abs(outputs["score"] - recorded["score"]) < TOLERANCE
        try:
            model.fit(X)
        except ValueError as exc:
            assert "CUDA is not available" in str(exc)
        else:
            raise AssertionError(f"{name} refitted on a CUDA device that is not there")
        print(f"{name}: fitted on {manifest['gpu']}, same numbers on this CPU")


def main(mode, folder=FIXTURE):
    {"dump": dump, "load": load}[mode](Path(folder))


if __name__ == "__main__":
    main(*sys.argv[1:])
