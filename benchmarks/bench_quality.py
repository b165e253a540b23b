"""Quality against size: a language model's perplexity, KL divergence from the original's
next-token distribution and top-1 agreement with a compressed embedding (SmolLM2-135M,
or Gemma 3 270M with ``--model gemma3``), and nearest-neighbour overlap on spaCy's word
vectors, for every method at its stored bytes.

Token counts (the ``sample_weight`` of the frequency-aware methods) come from gensim's
Lee news corpus plus its Wikipedia slice; perplexity is measured on a different source,
Shakespeare's Hamlet (``--tokens`` tokens, windows of 1024 moving by ``--stride``,
1023 by default: each window starts on the last token of the one before, so that every
token is scored. The figures published before measuring refused a stride of a whole
window took 1024, which left the first token of each window unscored: 3 of 4096).
Everything installs by name; nothing comes from a model hub.

    python benchmarks/bench_quality.py                 # input target, every method
    python benchmarks/bench_quality.py --both --spacy  # + tied input/output, word vectors
    python benchmarks/bench_quality.py --model gemma3 --tokens 2048 --only scalar-g32,pq

Prints the tables and the machine; writes ``benchmarks/results/quality_lm_<model>.csv``,
``quality_spacy.csv`` and ``quality_lm_<model>.png`` (perplexity ratio against bytes
ratio).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS,
    format_table,
    hamlet_text,
    lm_meter,
    machine_description,
    neighbour_meter,
    spacy_table,
    timed,
    write_csv,
)

from skdirection import (  # noqa: E402
    DirectionAutoEncoder,
    FrequencyMixedCompressor,
    ProductQuantizer,
    ScalarQuantizer,
    TruncatedSVDCompressor,
)
from skdirection.metrics import mean_cosine_similarity  # noqa: E402
from skdirection.presets import low_rank_components  # noqa: E402

LM_COLUMNS = [
    "method",
    "family",
    "target",
    "bytes_ratio",
    "params_ratio",
    "mean_cosine",
    "weighted_cosine",
    "perplexity",
    "perplexity_ratio",
    "kl_divergence",
    "top1_agreement",
    "fit_seconds",
]
TITLES = {"smollm2": "SmolLM2-135M", "gemma3": "Gemma 3 270M"}
SPACY_COLUMNS = [
    "target_ratio",
    "method",
    "bytes_ratio",
    "mean_cosine",
    "overlap10",
    "recall10",
]
SCALAR = ((8, None), (4, 32), (3, 32), (2, 32), (4, None), (3, None), (2, None))
# Families whose tied input/output version (--both) is measured too.
BOTH_FAMILIES = ("scalar-g32", "pq-weighted", "mixed-bytes", "mixed-params", "svd-weighted")
PQ_BLOCK_SIZES = (2, 3, 4, 8)


def lm_methods(n, d, counts, args):
    """(name, family, estimator factory, sample_weight) for SmolLM2's table."""
    methods = []
    for ratio in (10, 5, 2.5):
        k = low_rank_components(n, d, ratio)
        methods.append(
            (f"svd x{ratio}", "svd", lambda k=k: TruncatedSVDCompressor(k), None)
        )
        methods.append(
            (
                f"svd weighted x{ratio}",
                "svd-weighted",
                lambda k=k: TruncatedSVDCompressor(k),
                counts,
            )
        )
        methods.append(
            (
                f"direction x{ratio}",
                "direction",
                lambda k=k: DirectionAutoEncoder(k, random_state=1),
                None,
            )
        )
    if args.paper:
        k = low_rank_components(n, d, 5)
        methods.append(
            (
                "paper loop x5",
                "direction-paper",
                lambda k=k: DirectionAutoEncoder.paper(k, random_state=1),
                None,
            )
        )
    for bits, group in SCALAR:
        name = f"int{bits}" + (f" g{group}" if group else " row")
        family = "scalar-g32" if group else "scalar-row"
        methods.append(
            (name, family, lambda b=bits, g=group: ScalarQuantizer(b, group_size=g), None)
        )
    for block_size in PQ_BLOCK_SIZES:
        make = lambda b=block_size: ProductQuantizer(b, random_state=0)  # noqa: E731
        methods.append((f"pq{block_size}", "pq", make, None))
        # The counts' square root, as the mix tempers them (weight_power=0.5).
        methods.append((f"pq{block_size} weighted", "pq-weighted", make, np.sqrt(counts)))
    for ratio in args.bytes_ratios:
        methods.append(
            (
                f"mixed bytes x{ratio:g}",
                "mixed-bytes",
                lambda r=ratio: FrequencyMixedCompressor(r, random_state=0),
                counts,
            )
        )
    for ratio in args.params_ratios:
        methods.append(
            (
                f"mixed params x{ratio:g}",
                "mixed-params",
                lambda r=ratio: FrequencyMixedCompressor(
                    r, ratio_unit="params", random_state=0
                ),
                counts,
            )
        )
    if args.only:
        order = args.only.split(",")
        methods = sorted(
            (m for m in methods if m[1] in order), key=lambda m: order.index(m[1])
        )
    return methods


def fit_and_compress(estimator, X, weight):
    return estimator.fit(X, sample_weight=weight).compress(X)


def run_lm(args):
    from skdirection import datasets
    from skdirection.adapters.transformers import token_counts
    from skdirection.datasets import load_lee_text, load_wikipedia_text

    model, tokenizer = getattr(datasets, f"load_{args.model}")()
    X = model.get_input_embeddings().weight.detach().numpy().copy()
    n, d = X.shape
    # Raw counts: the mix floors rows the counting text never saw (weight_floor).
    counts = token_counts(tokenizer, load_lee_text() + load_wikipedia_text(), n)
    measure = lm_meter(model, tokenizer, hamlet_text(), args.tokens, args.stride)

    base = measure()["perplexity"]
    rows = [
        dict(
            method="original",
            family="original",
            target="-",
            bytes_ratio=1.0,
            params_ratio=1.0,
            mean_cosine=1.0,
            weighted_cosine=1.0,
            perplexity=base,
            perplexity_ratio=1.0,
            kl_divergence=0.0,
            top1_agreement=1.0,
            fit_seconds=0.0,
        )
    ]
    print(f"original perplexity {base:.3f}", flush=True)
    for name, family, make, weight in lm_methods(n, d, counts, args):
        table, seconds = timed(fit_and_compress, make(), X, weight)
        with torch.no_grad():
            decoded = table.decode().float().numpy()
        targets = ("input", "both") if args.both and family in BOTH_FAMILIES else ("input",)
        for target in targets:
            scores = measure(table, target)
            value = scores["perplexity"]
            rows.append(
                dict(
                    method=name,
                    family=family,
                    target=target,
                    bytes_ratio=X.nbytes / table.n_bytes,
                    params_ratio=X.size / table.n_parameters,
                    mean_cosine=mean_cosine_similarity(X, decoded),
                    weighted_cosine=mean_cosine_similarity(X, decoded, counts),
                    perplexity=value,
                    perplexity_ratio=value / base,
                    kl_divergence=scores["kl_divergence"],
                    top1_agreement=scores["top1_agreement"],
                    fit_seconds=seconds,
                )
            )
            print(
                {
                    k: (round(v, 4) if isinstance(v, float) else v)
                    for k, v in rows[-1].items()
                },
                flush=True,
            )
            write_csv(rows, LM_COLUMNS, RESULTS / f"quality_lm_{args.model}.csv")
    return rows


def run_spacy():
    """The low-rank methods and PCA beside this package's quantizers (the methods of
    ``bench_neighbours.py``, which adds faiss's PQ and OPQ)."""
    from bench_neighbours import fit_package, package_methods
    from sklearn.decomposition import PCA

    X = spacy_table()
    n, d = X.shape
    measure = neighbour_meter(X)
    rows = []

    def record(ratio, name, Y, n_bytes):
        rows.append(
            dict(
                target_ratio=ratio,
                method=name,
                bytes_ratio=X.nbytes / n_bytes,
                mean_cosine=mean_cosine_similarity(X, Y),
                **measure(Y),
            )
        )
        print(rows[-1], flush=True)

    for ratio in (8, 16, 32):
        k = low_rank_components(n, d, ratio)
        candidates = [
            (f"svd k{k}", TruncatedSVDCompressor(k)),
            (f"direction k{k}", DirectionAutoEncoder(k, random_state=1)),
            *package_methods(n, d, ratio),
        ]
        for name, estimator in candidates:
            record(ratio, name, *fit_package(estimator, X))
        # PCA stores the latent table, the components and the mean, in float32.
        pca = PCA(k, random_state=0).fit(X)
        record(
            ratio,
            f"pca k{k}",
            pca.inverse_transform(pca.transform(X)),
            4 * (n * k + k * d + d),
        )
    return rows


def plot(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for family in dict.fromkeys(r["family"] for r in rows if r["target"] == "input"):
        points = sorted(
            (r["bytes_ratio"], r["perplexity_ratio"])
            for r in rows
            if r["family"] == family and r["target"] == "input"
        )
        ax.plot(*zip(*points, strict=True), marker="o", label=family)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bytes ratio (float32 bytes / stored bytes)")
    ax.set_ylabel("perplexity ratio")
    ax.set_title(f"{title} input embedding; counts: Lee + Wikipedia; text: Hamlet")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", action="store_true", help="add the paper's loop (slow)")
    parser.add_argument(
        "--both",
        action="store_true",
        help="also compress the tied input embedding and output head together",
    )
    parser.add_argument(
        "--spacy", action="store_true", help="also run spaCy's word vectors"
    )
    parser.add_argument("--no-lm", action="store_true", help="skip the language model")
    parser.add_argument(
        "--model",
        choices=("smollm2", "gemma3"),
        default="smollm2",
        help="the language model: SmolLM2-135M, or Gemma 3 270M (its 262144-token "
        "vocabulary makes the KL reference 1 GiB a 1000 tokens: use --tokens 2048)",
    )
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--stride", type=int, default=1023)
    parser.add_argument("--bytes-ratios", type=float, nargs="*", default=[8, 10, 16, 32])
    parser.add_argument("--params-ratios", type=float, nargs="*", default=[10, 5, 2.5])
    parser.add_argument(
        "--only", default="", help="comma-separated families, in this order"
    )
    args = parser.parse_args()

    print(f"machine: {machine_description()}", flush=True)
    if not args.no_lm:
        rows = run_lm(args)
        print(
            f"\n{TITLES[args.model]}; counts: gensim Lee + Wikipedia; perplexity: Hamlet, "
            f"{args.tokens} tokens, window 1024, stride {args.stride}"
        )
        print(format_table(rows, LM_COLUMNS))
        plot(rows, RESULTS / f"quality_lm_{args.model}.png", TITLES[args.model])
    if args.spacy:
        rows = run_spacy()
        write_csv(rows, SPACY_COLUMNS, RESULTS / "quality_spacy.csv")
        print("\nspaCy en_core_web_md vectors, 10 nearest cosine neighbours of 2000 rows")
        print(format_table(rows, SPACY_COLUMNS))


if __name__ == "__main__":
    main()
