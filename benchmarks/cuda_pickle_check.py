"""Cross-machine check: fit on CUDA and pickle (``dump``), then unpickle on a CPU-only
machine and compare transforms (``load``).

    python benchmarks/cuda_pickle_check.py dump OUT_DIR   # on the GPU machine
    python benchmarks/cuda_pickle_check.py load OUT_DIR   # on a machine without CUDA
"""

import pickle
import sys
from pathlib import Path

import numpy as np

from skdirection import DirectionAutoEncoder, TruncatedSVDCompressor


def data():
    return np.random.RandomState(0).normal(size=(2000, 32)).astype(np.float32)


def main(mode, folder):
    folder = Path(folder)
    X = data()
    if mode == "dump":
        models = {
            "autoencoder": DirectionAutoEncoder(
                8, max_iter=3, device="cuda", random_state=0
            ),
            "svd": TruncatedSVDCompressor(8, device="cuda", random_state=0),
        }
        for name, model in models.items():
            model.fit(X)
            (folder / f"{name}.pkl").write_bytes(pickle.dumps(model))
            np.save(folder / f"{name}_codes.npy", model.transform(X))
            print(name, "fitted on", model.device_)
    else:
        import torch

        assert not torch.cuda.is_available(), "run 'load' on a machine without CUDA"
        for name in ["autoencoder", "svd"]:
            model = pickle.loads((folder / f"{name}.pkl").read_bytes())
            expected = np.load(folder / f"{name}_codes.npy")
            gap = np.abs(model.transform(X) - expected).max()
            print(
                f"{name}: fitted on {model.device_}, CPU transform max |diff| = {gap:.2e}"
            )
            assert gap < 1e-4


if __name__ == "__main__":
    main(*sys.argv[1:])
