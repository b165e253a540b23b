"""Fit time and quality: the fast default autoencoder vs a plain torch loop of the
paper's training (``PaperLoop``), our SVD vs scikit-learn's TruncatedSVD, and our
ProductQuantizer vs faiss's, on SmolLM2-135M's 49152 x 576 input embedding.

    python benchmarks/bench_speed.py --device cpu --threads 2
    python benchmarks/bench_speed.py --device cuda --perplexity-tokens 0
    python benchmarks/bench_speed.py --threads 2 --only-pq
    python benchmarks/bench_speed.py --threads 1 --only-mix

The product quantizers (needs ``faiss-cpu``; ``--pq-blocks`` with no value skips them)
learn 256 centroids a block of the unit rows, faiss at 10 iterations, ours at its
default and at 10, in turn within every repeat so that load from other processes hits
them alike; the table gives the median time, the 1-minute load average at the start of
those runs, and the mean squared error of the unit rows encoded with the codebooks
learned (faiss's encoder for all, every row weighted alike).

The frequency-aware mix (``--mix-ratios``; none skips it) is fitted once a ratio on the
embedding with SmolLM2's token counts over gensim's Lee corpus and Wikipedia slice as
``sample_weight`` (as ``bench_quality.py`` does), beside one faiss
``ProductQuantizer.train`` in blocks of 4 at 10 iterations on the unit rows, in the
same run; the table gives both times, their quotient and the mix's weighted cosine
distance.

Quality is the mean row cosine, the relative Frobenius error and, for the two
autoencoders, SmolLM2's perplexity on the first ``--perplexity-tokens`` tokens of
gensim's Wikipedia slice with the input embedding replaced by the stored table (the
main job's measure; ``0`` skips it). Prints a table and the machine, and writes
benchmarks/results/bench_speed_<device>.csv. ``--table`` takes any 2-D .npy instead of
the embedding (perplexity is then skipped).
"""

import argparse
import os
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

from skdirection import (  # noqa: E402
    DirectionAutoEncoder,
    FrequencyMixedCompressor,
    ProductQuantizer,
    TruncatedSVDCompressor,
)
from skdirection.metrics import mean_cosine_similarity  # noqa: E402

COLUMNS = ["method", "seconds", "epochs", "mean_cosine", "relative_error", "perplexity"]
PQ_COLUMNS = ["method", "block_size", "seconds", "iterations", "mse", "load", "runs"]
MIX_COLUMNS = ["method", "seconds", "times_faiss", "weighted_cosine_distance", "load"]


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


class PaperLoop:
    """The paper's training as a plain torch loop, the authors' settings (see
    docs/method.rst): ``Linear(d, k)`` and ``Linear(k, d)`` from torch's default
    initialisation (global seed 1), Adam at 1e-3, batches of 32 rows shuffled each
    epoch, the learning rate halved every 4 epochs, 30 epochs, the direction loss with
    the element power annealed from 1 to 0.1 over 20 epochs; it keeps the last epoch
    (the authors kept the best on their test text). It trains on the table as given."""

    def __init__(self, n_components, device="cpu"):
        self.n_components, self.device = n_components, device

    def fit(self, X):
        torch.manual_seed(1)
        X = torch.as_tensor(X, dtype=torch.float32, device=self.device)
        self.encoder = torch.nn.Linear(X.shape[1], self.n_components).to(self.device)
        self.decoder = torch.nn.Linear(self.n_components, X.shape[1]).to(self.device)
        parameters = [*self.encoder.parameters(), *self.decoder.parameters()]
        optimizer = torch.optim.Adam(parameters, lr=1e-3)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
        for epoch in range(30):
            power = max(0.1, 1 - 0.9 * epoch / 20)
            for batch in X[torch.randperm(X.shape[0], device=self.device)].split(32):
                decoded = self.decoder(self.encoder(batch))
                cosine = torch.nn.functional.cosine_similarity(decoded, batch, eps=1e-6)
                element = ((decoded - batch).abs() + 1e-10).pow(power)
                loss = 0.1995 * (1 - cosine).mean() + 0.0025 * element.mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            schedule.step()
        self.n_iter_ = 30
        return self

    @torch.no_grad()
    def transform(self, X):
        X = torch.as_tensor(X, dtype=torch.float32, device=self.device)
        return self.encoder(X).cpu().numpy()

    @torch.no_grad()
    def inverse_transform(self, Z):
        return self.decoder(torch.as_tensor(Z, device=self.device)).cpu().numpy()

    def compress(self, X):
        from skdirection import LowRankTable

        weight, bias = self.decoder.weight.detach().cpu(), self.decoder.bias.detach().cpu()
        return LowRankTable(torch.from_numpy(self.transform(X)), [weight.T], [bias])


def faiss_codebooks(U, block_size, n_iter):
    """Codebooks ``(n_blocks, 256, block_size)`` of faiss's ProductQuantizer.train."""
    import faiss

    d = U.shape[1]
    pq = faiss.ProductQuantizer(d, d // block_size, 8)
    pq.cp.niter = n_iter
    pq.train(U)
    return faiss.vector_to_array(pq.centroids).reshape(
        d // block_size, -1, block_size
    ), n_iter


def our_codebooks(U, block_size, max_iter, device):
    """Codebooks of ProductQuantizer.fit, at faiss's settings (float32, no norms)."""
    model = ProductQuantizer(
        block_size,
        keep_norms=False,
        max_iter=max_iter,
        codebook_dtype="float32",
        device=device,
        random_state=0,
    )
    model.fit(U)
    return model.codebooks_, model.n_iter_


def faiss_mse(U, codebooks):
    """Mean squared error of the rows ``U`` encoded by faiss with ``codebooks``."""
    import faiss

    m, k, s = codebooks.shape
    pq = faiss.ProductQuantizer(U.shape[1], m, 8)
    faiss.copy_array_to_vector(
        np.ascontiguousarray(codebooks, "float32").ravel(), pq.centroids
    )
    decoded = pq.decode(pq.compute_codes(U))
    return float(((decoded - U) ** 2).sum(axis=1).mean())


def product_quantizer_rows(X, block_sizes, repeats, device):
    """Our ProductQuantizer.fit against faiss's ProductQuantizer.train, interleaved."""
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())
    U = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), np.finfo(np.float32).tiny)
    U = np.ascontiguousarray(U, dtype=np.float32)
    rows = []
    for s in block_sizes:
        methods = [
            ("faiss ProductQuantizer.train (niter=10)", faiss_codebooks, (U, s, 10)),
            (
                "ProductQuantizer.fit (default, max_iter=6)",
                our_codebooks,
                (U, s, 6, device),
            ),
            ("ProductQuantizer.fit (max_iter=10)", our_codebooks, (U, s, 10, device)),
        ]
        runs = {name: [] for name, _, _ in methods}
        for _ in range(repeats):
            for name, train, train_args in methods:
                load = os.getloadavg()[0]
                (codebooks, n_iter), seconds = timed(train, *train_args)
                runs[name].append((seconds, load, codebooks, n_iter))
                print(
                    f"  [{name}, block {s}: {seconds:.2f} s, load {load:.1f}]", flush=True
                )
        for name, results in runs.items():
            rows.append(
                {
                    "method": name,
                    "block_size": s,
                    "seconds": statistics.median(r[0] for r in results),
                    "iterations": results[-1][3],
                    "mse": faiss_mse(U, results[-1][2]),
                    "load": statistics.median(r[1] for r in results),
                    "runs": " ".join(f"{r[0]:.1f}" for r in results),
                }
            )
    return rows


def run_product_quantizers(X, args):
    """Measures, prints and writes the product quantizers' rows."""
    rows = product_quantizer_rows(X, args.pq_blocks, args.pq_repeats, args.device)
    print(f"\nSmolLM2 embedding {X.shape[0]} x {X.shape[1]}, unit rows, 256 centroids")
    print(f"machine: {machine_description(args.device)}, faiss OpenMP threads alike")
    load = "/".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"load average (1/5/15 min) after the runs: {load}")
    print(format_table(rows, PQ_COLUMNS))
    faiss_rows = {r["block_size"]: r for r in rows if r["method"].startswith("faiss")}
    for r in rows:
        base = faiss_rows[r["block_size"]]
        if r is not base:
            print(
                f"block {r['block_size']}, {r['method']} / faiss: time "
                f"x{r['seconds'] / base['seconds']:.2f}, mse x{r['mse'] / base['mse']:.4f}"
            )
    name = f"bench_speed_pq_{args.device.replace(':', '')}.csv"
    print(f"wrote {write_csv(rows, PQ_COLUMNS, RESULTS / name)}")


def smollm2_token_counts(n_rows):
    """SmolLM2's token counts over gensim's Lee corpus and Wikipedia slice."""
    from skdirection.adapters.transformers import token_counts
    from skdirection.datasets import load_lee_text, load_smollm2, load_wikipedia_text

    _, tokenizer = load_smollm2()
    return token_counts(tokenizer, load_lee_text() + load_wikipedia_text(), n_rows)


def run_mix(X, args):
    """The mix's fit time at each ratio beside faiss's blocks-of-4 training, one run."""
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())
    counts = smollm2_token_counts(X.shape[0])
    U = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), np.finfo(np.float32).tiny)
    U = np.ascontiguousarray(U, dtype=np.float32)
    load = os.getloadavg()[0]
    _, faiss_seconds = timed(faiss_codebooks, U, 4, 10)
    rows = [
        {
            "method": "faiss ProductQuantizer.train (block 4, niter=10)",
            "seconds": faiss_seconds,
            "times_faiss": 1.0,
            "weighted_cosine_distance": "-",
            "load": load,
        }
    ]
    print(rows[-1], flush=True)
    for ratio in args.mix_ratios:
        load = os.getloadavg()[0]
        model = FrequencyMixedCompressor(ratio, device=args.device, random_state=0)
        _, seconds = timed(model.fit, X, sample_weight=counts)
        rows.append(
            {
                "method": f"FrequencyMixedCompressor({ratio:g}).fit",
                "seconds": seconds,
                "times_faiss": seconds / faiss_seconds,
                "weighted_cosine_distance": model.weighted_cosine_distance_,
                "load": load,
            }
        )
        print(rows[-1], flush=True)
    print(
        f"\nSmolLM2 embedding {X.shape[0]} x {X.shape[1]}; the mix weighted by token "
        "counts (gensim Lee + Wikipedia); faiss on the unit rows, 256 centroids"
    )
    print(f"machine: {machine_description(args.device)}, faiss OpenMP threads alike")
    print(format_table(rows, MIX_COLUMNS))
    name = f"bench_speed_mix_{args.device.replace(':', '')}.csv"
    print(f"wrote {write_csv(rows, MIX_COLUMNS, RESULTS / name)}")


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
    parser.add_argument("--pq-blocks", type=int, nargs="*", default=[4, 8])
    parser.add_argument("--pq-repeats", type=int, default=3)
    parser.add_argument(
        "--only-pq", action="store_true", help="only the product quantizers against faiss"
    )
    parser.add_argument("--mix-ratios", type=float, nargs="*", default=[16])
    parser.add_argument(
        "--only-mix", action="store_true", help="only the frequency-aware mix against faiss"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    X = np.load(args.table) if args.table else smollm2_embedding()
    k, device = args.k, args.device
    if args.only_pq:
        run_product_quantizers(X, args)
        return
    if args.only_mix:
        run_mix(X, args)
        return
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
            lambda: PaperLoop(k, device=device), X, args.paper_repeats, device
        )
        record("paper's loop, plain torch (batch 32, 30 epochs)", seconds, model, True)
    seconds, model = median_fit(
        lambda: DirectionAutoEncoder(k, device=device, random_state=1),
        X,
        args.repeats,
        device,
    )
    record("autoencoder, default (PCA start, batch 512, 6 epochs)", seconds, model, True)
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
    if args.pq_blocks:
        run_product_quantizers(X, args)
    if args.mix_ratios and not args.table:
        run_mix(X, args)


if __name__ == "__main__":
    main()
