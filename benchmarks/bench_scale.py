"""Out-of-core scaling: fit time and peak resident memory from a float32 memmap of
1M .. 10M rows x 64 columns, each fit in a fresh process.

    python benchmarks/bench_scale.py --device cpu --rows 1000000 2000000 5000000 10000000
    python benchmarks/bench_scale.py --rows 10000000 --row-slice

``--row-slice`` also fits each estimator on the memmap's rows from the fifth on
(``table[n // 5:]``, a view of the file), named ``<estimator>-slice``.

The tables (low rank plus noise, rows of varied norm) are written chunk by chunk to
``--dir`` and deleted afterwards. Peak memory is the child process's ru_maxrss, which
includes the Python interpreter and torch (measured alone as the "import" row). Prints a
table, writes benchmarks/results/bench_scale_<device>.csv and a plot (.png).
"""

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
N_FEATURES = 64
CHUNK = 1_000_000
SLICE = "-slice"


def write_table(path, n_rows, seed=0):
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(16, N_FEATURES)).astype(np.float32)
    table = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float32, shape=(n_rows, N_FEATURES)
    )
    for start in range(0, n_rows, CHUNK):
        n = min(CHUNK, n_rows - start)
        rows = rng.standard_normal((n, 16), dtype=np.float32) @ basis
        rows += 0.3 * rng.standard_normal((n, N_FEATURES), dtype=np.float32)
        rows *= rng.uniform(0.5, 2.0, size=(n, 1)).astype(np.float32)
        table[start : start + n] = rows
    table.flush()
    del table


def worker(path, estimator, device, k, max_iter, threads):
    import torch

    if threads:
        torch.set_num_threads(threads)
    from skdirection import DirectionAutoEncoder, TruncatedSVDCompressor

    if estimator == "import":
        seconds, n_iter = 0.0, ""
    else:
        table = np.load(path, mmap_mode="r")
        if estimator.endswith(SLICE):
            estimator = estimator.removesuffix(SLICE)
            table = table[len(table) // 5 :]
        if estimator == "svd":
            model = TruncatedSVDCompressor(k, device=device)
        else:
            model = DirectionAutoEncoder(
                k, max_iter=max_iter, n_iter_no_change=None, device=device, random_state=0
            )
        start = time.perf_counter()
        model.fit(table)
        seconds = time.perf_counter() - start
        n_iter = getattr(model, "n_iter_", "")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "epochs": n_iter}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[1_000_000, 2_000_000, 5_000_000, 10_000_000]
    )
    parser.add_argument("--estimators", nargs="+", default=["svd", "autoencoder"])
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--max-iter", type=int, default=2, help="autoencoder epochs")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument(
        "--row-slice",
        action="store_true",
        help="also fit on a row slice of the memmap (its rows from the fifth on)",
    )
    parser.add_argument(
        "--worker", nargs=2, metavar=("PATH", "ESTIMATOR"), help=argparse.SUPPRESS
    )
    parser.add_argument("--make", nargs=2, metavar=("PATH", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        write_table(args.make[0], int(args.make[1]))
        return
    if args.worker:
        worker(*args.worker, args.device, args.k, args.max_iter, args.threads)
        return

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    rows = []

    def run(path, n_rows, estimator):
        command = [
            sys.executable,
            __file__,
            "--worker",
            str(path),
            estimator,
            "--device",
            args.device,
            "--k",
            str(args.k),
            "--max-iter",
            str(args.max_iter),
        ]
        if args.threads:
            command += ["--threads", str(args.threads)]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"rows": n_rows, "estimator": estimator, **result})
        print(rows[-1], flush=True)

    run("", 0, "import")
    for n_rows in args.rows:
        path = Path(args.dir) / f"bench_scale_{n_rows}.npy"
        # Written by another process: Linux keeps ru_maxrss across fork and exec, so
        # pages this process touched would count in every worker's peak.
        subprocess.run(
            [sys.executable, __file__, "--make", str(path), str(n_rows)], check=True
        )
        fits = args.estimators + (
            [e + SLICE for e in args.estimators] if args.row_slice else []
        )
        try:
            for estimator in fits:
                run(path, n_rows, estimator)
        finally:
            path.unlink()

    from skdirection.report import machine_description

    machine = f"{machine_description(args.device)}, device {args.device}"
    print(
        f"\n{N_FEATURES} float32 columns from a memmap, k={args.k}, "
        f"autoencoder {args.max_iter} epochs; machine: {machine}"
    )
    print(f"{'rows':>10} {'estimator':>18} {'seconds':>9} {'peak MiB':>9}")
    for row in rows:
        print(
            f"{row['rows']:>10} {row['estimator']:>18} {row['seconds']:9.2f} "
            f"{row['peak_mib']:9.0f}"
        )
    for estimator in args.estimators:
        timing = {r["rows"]: r["seconds"] for r in rows if r["estimator"] == estimator}
        if min(timing) > 0 and len(timing) > 1:
            low, high = min(timing), max(timing)
            print(
                f"{estimator}: time ratio {high}/{low} rows = "
                f"{timing[high] / timing[low]:.2f} (rows ratio {high / low:.0f})"
            )
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"bench_scale_{args.device.replace(':', '')}"
    with open(stem.with_suffix(".csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for estimator in args.estimators:
        mine = [r for r in rows if r["estimator"] == estimator]
        left.plot(
            [r["rows"] for r in mine], [r["seconds"] for r in mine], "o-", label=estimator
        )
        right.plot(
            [r["rows"] for r in mine], [r["peak_mib"] for r in mine], "o-", label=estimator
        )
    left.set(xlabel="rows", ylabel="fit seconds", title="time")
    right.set(xlabel="rows", ylabel="peak resident MiB", title="memory")
    right.axhline(1024, color="grey", linestyle=":")
    left.legend()
    fig.suptitle(machine, fontsize=8)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=120)
    print(f"wrote {stem.with_suffix('.csv')} and {stem.with_suffix('.png')}")


if __name__ == "__main__":
    main()
