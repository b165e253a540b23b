"""Fit time and quality: the fast default autoencoder vs the paper's loop, and our SVD vs
scikit-learn's TruncatedSVD, on SmolLM2-135M's 49152 x 576 input embedding.

    python benchmarks/bench_speed.py --device cpu --threads 2
    python benchmarks/bench_speed.py --device cuda --perplexity-tokens 0

Quality is the mean row cosine, the relative Frobenius error and, for the two
autoencoders, SmolLM2's perplexity on the first ``--perplexity-tokens`` tokens of
gensim's Wikipedia slice with the input embedding replaced by the stored table (the
main job's measure; ``0`` skips it). Prints a table and the machine, and writes
benchmarks/results/bench_speed_<device>.csv. ``--table`` takes any 2-D .npy instead of
the embedding (perplexity is then skipped).
"""

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS,
    format_table,
    machine_description,
    perplexity_meter,
    smollm2_embedding,
    timed,
    write_csv,
)

from skdirection import DirectionAutoEncoder, TruncatedSVDCompressor  # noqa: E402
from skdirection.metrics import mean_cosine_similarity  # noqa: E402

COLUMNS = ["method", "seconds", "epochs", "mean_cosine", "relative_error", "perplexity"]


def median_fit(make, X, repeats, device):
    """Median fit time over ``repeats`` fresh estimators, and the last one fitted."""
    times, model = [], None
    for _ in range(repeats):
        model = make()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        _, seconds = timed(model.fit, X)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(seconds)
    return statistics.median(times), model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--k", type=int, default=115)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paper-repeats", type=int, default=1)
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--perplexity-tokens", type=int, default=2048)
    parser.add_argument("--table", help="a 2-D .npy instead of SmolLM2's embedding")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    X = np.load(args.table) if args.table else smollm2_embedding()
    k, device = args.k, args.device
    measure = None
    if args.perplexity_tokens and not args.table:
        from skdirection.datasets import load_smollm2, load_wikipedia_text

        language_model, tokenizer = load_smollm2()
        measure = perplexity_meter(
            language_model, tokenizer, load_wikipedia_text(), args.perplexity_tokens
        )
    rows = []

    def record(method, seconds, model, with_perplexity=False):
        X_hat = model.inverse_transform(model.transform(X))
        rows.append(
            {
                "method": method,
                "seconds": seconds,
                "epochs": getattr(model, "n_iter_", "-"),
                "mean_cosine": mean_cosine_similarity(X, X_hat),
                "relative_error": float(np.linalg.norm(X - X_hat) / np.linalg.norm(X)),
                "perplexity": measure(model.compress(X))
                if with_perplexity and measure
                else "-",
            }
        )
        print(rows[-1], flush=True)

    if not args.skip_paper:
        seconds, model = median_fit(
            lambda: DirectionAutoEncoder.paper(k, device=device, random_state=1),
            X,
            args.paper_repeats,
            device,
        )
        record("autoencoder, paper loop (batch 32, 30 epochs)", seconds, model, True)
    seconds, model = median_fit(
        lambda: DirectionAutoEncoder(k, device=device, random_state=1),
        X,
        args.repeats,
        device,
    )
    record("autoencoder, default (SVD start, batch 512, 7 epochs)", seconds, model, True)
    seconds, model = median_fit(
        lambda: TruncatedSVDCompressor(k, device=device), X, args.repeats, device
    )
    record("TruncatedSVDCompressor (covariance_eigh)", seconds, model)

    from sklearn.decomposition import TruncatedSVD

    seconds, model = median_fit(
        lambda: TruncatedSVD(k, random_state=42), X, args.repeats, "cpu"
    )
    record("sklearn TruncatedSVD (randomized, n_iter=5)", seconds, model)

    print(f"\nSmolLM2 embedding {X.shape[0]} x {X.shape[1]}, k={k}, device={device}")
    print(f"machine: {machine_description(device)}")
    if measure:
        print(
            f"perplexity: first {args.perplexity_tokens} tokens of gensim's Wikipedia slice"
        )
    print(format_table(rows, COLUMNS))
    if not args.skip_paper:
        print(
            f"speed-up of the default over the paper loop: "
            f"{rows[0]['seconds'] / rows[1]['seconds']:.1f}x"
        )
    out = write_csv(rows, COLUMNS, RESULTS / f"bench_speed_{device.replace(':', '')}.csv")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
