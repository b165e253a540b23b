"""Tuning a stored table against the model (issue 14): the frequency-aware mix on
SmolLM2-135M's embedding (or Gemma 3 270M's, ``--model gemma3``), before and after
:func:`~skdirection.adapters.transformers.tune_table`.

Token counts and the calibration text are gensim's Lee news plus its Wikipedia slice;
perplexity, KL divergence from the original model and top-1 agreement are measured on
another text, Shakespeare's Hamlet (``--tokens`` tokens). The mix can be column-weighted
by the head's inputs for the targets that replace the head (``--column-weights``, what
``--calibration-text`` does in the CLI). Beside it, int4 in groups of 32 and
product quantization at the same bytes are tuned the same way (``--peers``).

    python benchmarks/bench_tuning.py --ratios 16 --targets both input --steps 100

Prints one line a (codec, ratio, target) and a table, and the machine; writes
``benchmarks/results/tuning_<model>.csv``.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS,
    format_table,
    hamlet_text,
    lm_meter,
    machine_description,
    write_csv,
)

from skdirection import (  # noqa: E402
    ColumnWeightedCompressor,
    FrequencyMixedCompressor,
    ProductQuantizer,
    ScalarQuantizer,
)

COLUMNS = [
    "codec",
    "target",
    "bytes_ratio",
    "perplexity_ratio",
    "kl_divergence",
    "top1_agreement",
    "tuned_perplexity_ratio",
    "tuned_kl_divergence",
    "tuned_top1_agreement",
    "held_out_kl",
    "tuned_held_out_kl",
    "steps_kept",
    "steps_run",
    "tune_seconds",
]


def codecs(ratio, counts, moment, target, args):
    """(name, compressor, sample_weight) at ``ratio`` fewer bytes than float32."""
    mix = FrequencyMixedCompressor(ratio, random_state=args.seed)
    if moment is not None and target != "input":
        mix = ColumnWeightedCompressor(mix, column_weight=np.diag(moment))
    found = [(f"mix x{ratio:g}", mix, counts)]
    if args.peers and ratio == 8:
        found.append(("int4 g32", ScalarQuantizer(4, group_size=32), None))
    if args.peers and ratio == 16:
        found.append(("pq8", ProductQuantizer(8, random_state=args.seed), np.sqrt(counts)))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("smollm2", "gemma3"), default="smollm2")
    parser.add_argument("--ratios", type=float, nargs="*", default=[16])
    parser.add_argument("--targets", nargs="*", default=["both", "input"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--calibration-tokens", type=int, default=8192)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--column-weights", action="store_true")
    parser.add_argument("--peers", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from skdirection import datasets
    from skdirection.adapters.transformers import head_moment, token_counts, tune_table

    print(machine_description(), flush=True)
    model, tokenizer = getattr(datasets, f"load_{args.model}")()
    X = model.get_input_embeddings().weight.detach().float().numpy().copy()
    calibration = datasets.load_lee_text() + datasets.load_wikipedia_text()
    counts = token_counts(tokenizer, calibration, X.shape[0])
    moment = None
    if args.column_weights:
        moment = head_moment(
            model, tokenizer, calibration, max_tokens=args.calibration_tokens
        )
    measure = lm_meter(model, tokenizer, hamlet_text(), args.tokens)
    original = measure()["perplexity"]
    tuning = {"steps": args.steps, "max_tokens": args.calibration_tokens}
    if args.learning_rate is not None:
        tuning["learning_rate"] = args.learning_rate
    rows = []
    for ratio in args.ratios:
        for target in args.targets:
            for name, compressor, weight in codecs(ratio, counts, moment, target, args):
                table = compressor.fit(X, sample_weight=weight).compress(X)
                before = measure(table, target)
                start = time.perf_counter()
                report = tune_table(
                    model,
                    tokenizer,
                    table,
                    calibration,
                    target=target,
                    random_state=args.seed,
                    progress=False,
                    **tuning,
                )
                seconds = time.perf_counter() - start
                after = measure(report.table, target)
                rows.append(
                    dict(
                        codec=name,
                        target=target,
                        bytes_ratio=round(X.nbytes / table.n_bytes, 2),
                        perplexity_ratio=round(before["perplexity"] / original, 4),
                        kl_divergence=round(before["kl_divergence"], 4),
                        top1_agreement=round(before["top1_agreement"], 4),
                        tuned_perplexity_ratio=round(after["perplexity"] / original, 4),
                        tuned_kl_divergence=round(after["kl_divergence"], 4),
                        tuned_top1_agreement=round(after["top1_agreement"], 4),
                        held_out_kl=round(report.initial_kl, 4),
                        tuned_held_out_kl=round(report.final_kl, 4),
                        steps_kept=report.best_step,
                        steps_run=report.n_steps,
                        tune_seconds=round(seconds, 1),
                    )
                )
                print(rows[-1], flush=True)
                write_csv(rows, COLUMNS, RESULTS / f"tuning_{args.model}.csv")
    print(format_table(rows, COLUMNS))


if __name__ == "__main__":
    main()
