"""The fit times the GPU targets name, on a table carried as ``.npy``: default
autoencoder, SVD, ProductQuantizer in blocks of 4, and the mix at 16x fewer bytes.

    python benchmarks/bench_gpu_targets.py --device cuda --table .device/smollm2.npy \
        --weight .device/smollm2_counts.npy

Made for a GPU machine that has torch but neither the model packages nor a network:
``scripts/device_pack.sh`` writes SmolLM2's embedding (float16, to travel light; fitted
as float32) and token counts of the Wikipedia slice there. Each fit runs ``--repeats``
times after one warm-up fit; the median is printed beside the target, with the machine.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, machine_description  # noqa: E402

from skdirection import (  # noqa: E402
    DirectionAutoEncoder,
    FrequencyMixedCompressor,
    ProductQuantizer,
    TruncatedSVDCompressor,
)

# (name, make, uses weights, target seconds on a GPU or None)
FITS = [
    ("DirectionAutoEncoder(115), default", lambda d: DirectionAutoEncoder(115, device=d)),
    ("TruncatedSVDCompressor(115)", lambda d: TruncatedSVDCompressor(115, device=d)),
    ("ProductQuantizer(4)", lambda d: ProductQuantizer(4, device=d, random_state=0)),
    (
        "FrequencyMixedCompressor(16)",
        lambda d: FrequencyMixedCompressor(16, device=d, random_state=0),
    ),
]
TARGETS = {"ProductQuantizer(4)": 1.0, "FrequencyMixedCompressor(16)": 10.0}


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--table", required=True, help="a 2-D .npy (any float dtype)")
    parser.add_argument("--weight", help="a 1-D .npy of row weights (token counts)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    X = np.load(args.table).astype(np.float32)
    weight = np.load(args.weight) if args.weight else None
    rows = []
    for name, make in FITS:
        kwargs = {"sample_weight": weight} if weight is not None and "Mixed" in name else {}
        times = []
        for _ in range(args.repeats + 1):
            estimator = make(args.device)
            synchronize(args.device)
            start = time.perf_counter()
            estimator.fit(X, **kwargs)
            synchronize(args.device)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times[1:])
        target = TARGETS.get(name)
        rows.append(
            {
                "fit": name,
                "seconds": round(seconds, 3),
                "target_s": target if target is not None else "",
                "met": "" if target is None else seconds <= target,
                "score": round(float(estimator.score(X)), 5),
            }
        )
        print(rows[-1], file=sys.stderr, flush=True)
    print(f"\n{X.shape[0]} x {X.shape[1]} table, median of {args.repeats} fits after one")
    print(format_table(rows, list(rows[0])))
    print(f"machine: {machine_description(args.device)}")


if __name__ == "__main__":
    main()
