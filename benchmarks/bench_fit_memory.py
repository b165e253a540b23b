"""Peak memory of every estimator's fit, against the table's float32 size.

    python benchmarks/bench_fit_memory.py
    python benchmarks/bench_fit_memory.py --tables 262144x640 --estimators mixed16

Each fit runs in a fresh process on a table already in memory (float32): SmolLM2-135M's
49152 x 576 embedding (``smollm2``) or a synthetic ``ROWSxCOLUMNS`` one (low rank plus
noise, rows of varied norm, like an embedding). ``added MiB`` is the peak resident memory
the fit adds to the process (Linux: VmHWM after resetting it through
/proc/self/clear_refs, minus the resident memory before the fit); the bound is 4 times
the table's float32 size plus a fixed 512 MiB working buffer. Prints a table and the
machine, and writes benchmarks/results/bench_fit_memory_<device>.csv.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS,
    PeakMemory,
    format_table,
    machine_description,
    write_csv,
)

ESTIMATORS = ["svd", "autoencoder", "scalar", "pq4", "mixed16"]
BUFFER_MIB = 512


def make_estimator(name, device):
    from skdirection import (
        DirectionAutoEncoder,
        FrequencyMixedCompressor,
        ProductQuantizer,
        ScalarQuantizer,
        TruncatedSVDCompressor,
    )

    return {
        "svd": lambda: TruncatedSVDCompressor(64, device=device),
        "autoencoder": lambda: DirectionAutoEncoder(64, device=device, random_state=0),
        "scalar": lambda: ScalarQuantizer(4, group_size=32, device=device),
        "pq4": lambda: ProductQuantizer(4, device=device, random_state=0),
        "mixed16": lambda: FrequencyMixedCompressor(16, device=device, random_state=0),
    }[name]()


def load_table(spec):
    if spec == "smollm2":
        from _common import smollm2_embedding

        return np.ascontiguousarray(smollm2_embedding(), dtype=np.float32)
    n_rows, n_features = (int(v) for v in spec.split("x"))
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(32, n_features)).astype(np.float32)
    table = rng.standard_normal((n_rows, 32), dtype=np.float32) @ basis
    table += 0.3 * rng.standard_normal((n_rows, n_features), dtype=np.float32)
    table *= rng.uniform(0.5, 2.0, size=(n_rows, 1)).astype(np.float32)
    return table


def worker(spec, name, device, threads):
    import torch

    if threads:
        torch.set_num_threads(threads)
    table = load_table(spec)
    # Token-count-like weights: the mix's codec choice follows them.
    weight = np.random.default_rng(1).zipf(1.3, size=len(table)).astype(np.float64)
    estimator = make_estimator(name, device)
    start = time.perf_counter()
    with PeakMemory(torch.device("cpu")) as peak:  # host memory, whatever the device
        if name == "mixed16":
            estimator.fit(table, sample_weight=weight)
        else:
            estimator.fit(table)
    seconds = time.perf_counter() - start
    if peak.peak is None:
        raise SystemExit("peak memory is measured on Linux only (/proc/self)")
    print(json.dumps({"seconds": seconds, "added_MiB": peak.peak / 2**20}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", default=["smollm2", "262144x640"])
    parser.add_argument("--estimators", nargs="+", default=ESTIMATORS, choices=ESTIMATORS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--worker", nargs=2, metavar=("TABLE", "ESTIMATOR"))
    args = parser.parse_args()
    if args.threads:  # here only so that the machine line names them
        import torch

        torch.set_num_threads(args.threads)
    if args.worker:
        worker(*args.worker, args.device, args.threads)
        return

    rows = []
    for spec in args.tables:
        n_rows, n_features = (
            (49152, 576) if spec == "smollm2" else (int(v) for v in spec.split("x"))
        )
        table_mb = n_rows * n_features * 4 / 2**20
        for name in args.estimators:
            command = [sys.executable, __file__, "--worker", spec, name]
            command += ["--device", args.device]
            if args.threads:
                command += ["--threads", str(args.threads)]
            out = subprocess.run(command, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{name} on {spec} failed")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            bound = 4 * table_mb + BUFFER_MIB
            rows.append(
                {
                    "table": spec,
                    "table_MiB": round(table_mb, 1),
                    "estimator": name,
                    "seconds": round(result["seconds"], 2),
                    "added_MiB": round(result["added_MiB"], 1),
                    "bound_MiB": round(bound, 1),
                    "within": result["added_MiB"] <= bound,
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)

    print("\nPeak resident memory a fit adds, float32 table in memory")
    print(format_table(rows, list(rows[0])))
    print(f"machine: {machine_description(args.device)}")
    device = args.device.replace(":", "")
    write_csv(rows, list(rows[0]), RESULTS / f"bench_fit_memory_{device}.csv")


if __name__ == "__main__":
    main()
