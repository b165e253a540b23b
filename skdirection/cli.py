"""The ``skdirection`` command: what compressing a model's embedding costs the model.

Examples::

    skdirection evaluate --model smollm2 --method svd --method direction \\
        --ratio 10 --ratio 5 --ratio 2.5 --max-tokens 4096
    skdirection evaluate --model smollm2 --method scalar --method auto \\
        --ratio-unit bytes --ratio 8 --ratio 16
"""

import argparse
import sys
import textwrap
from pathlib import Path

from .adapters.transformers import MODELS
from .presets import DEFAULT_OPTIONS, METHODS, RATIO_UNITS
from .report import format_rows, plot_rows


def _methods_epilog(width=78, indent=18):
    lines = ["methods:"]
    for name, method in METHODS.items():
        lines.append(
            textwrap.fill(
                method.description,
                width,
                initial_indent=f"  {name}".ljust(indent),
                subsequent_indent=" " * indent,
            )
        )
    return "\n".join(lines)


# One declaration after another: splitting the parser would scatter its help text.
def _parser():
    parser = argparse.ArgumentParser(
        prog="skdirection",
        description="Direction-preserving compression of embedding matrices.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    evaluate = commands.add_parser(
        "evaluate",
        help="compress a model's embedding at several ratios and measure the cost",
        description=textwrap.fill(
            "Fit each method at each ratio on the model's embedding matrix, put the "
            "compressed table in the model, and measure perplexity, the KL divergence "
            "of the next-token distribution from the uncompressed model's and the "
            "agreement of their top-1 predictions (language models), or the "
            "preservation of sentence similarities (encoders). One row per "
            "(method, ratio), plus the uncompressed baseline; each row gives the achieved "
            "ratio in parameters ('ratio') and in bytes ('bytes_ratio'). A pair that "
            "cannot be met gives a row whose note says why; when none can, the command "
            "exits with the reasons.",
            78,
        ),
        epilog=_methods_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument(
        "--model",
        required=True,
        help=f"{', '.join(repr(m) for m in MODELS)}, or the path of a local "
        "transformers model folder",
    )
    evaluate.add_argument(
        "--method",
        action="append",
        choices=sorted(METHODS),
        dest="methods",
        help="compression method, described below (repeat for several; default: svd "
        "and direction)",
    )
    evaluate.add_argument(
        "--ratio",
        action="append",
        type=float,
        dest="ratios",
        help="compression ratio to meet: the float32 embedding's size over the stored "
        "table's, counted in --ratio-unit (repeat for several; default: 10, 5, 2.5)",
    )
    evaluate.add_argument(
        "--ratio-unit",
        choices=RATIO_UNITS,
        default=DEFAULT_OPTIONS["ratio_unit"],
        help="what --ratio counts: 'params', every stored value (the paper's metric; "
        "default), or 'bytes', every stored byte. The low-rank methods store float32 "
        "values, so both units give them the same rank; scalar needs 'bytes', as "
        "quantization keeps every value",
    )
    evaluate.add_argument("--target", choices=("input", "output", "both"), default="input")
    evaluate.add_argument(
        "--eval-text",
        help="plain-text file to measure on, or an installed corpus: 'wikipedia' "
        "(gensim's Wikipedia articles, the default) or 'lee' (gensim's news stories)",
    )
    evaluate.add_argument(
        "--counts-text",
        help="plain-text file (or 'lee', 'wikipedia') whose token counts weight the "
        "fit; count on another text than the one measured (scalar quantization cannot "
        "use them; default: every row the same weight)",
    )
    evaluate.add_argument(
        "--calibration-text",
        help="plain-text file (or 'lee', 'wikipedia') on which the model is measured "
        "before compressing: with --target output or both, each column of the table is "
        "weighted by how much the head's errors on it cost (ColumnWeightedCompressor); "
        "with --tune-steps, each table is tuned on it. Use another text than the one "
        "measured (default: no column weights, no tuning)",
    )
    evaluate.add_argument(
        "--tune-steps",
        type=int,
        default=0,
        help="tune each table against the model on --calibration-text, at most N steps: "
        "its float tensors (codebooks, scales, norms, bases) move so that the model's "
        "next-token distributions come closer to the original's, and held-out windows "
        "of the text decide when to stop (tune_table). About 10 s a step for "
        "SmolLM2 on 2 CPU cores (default: 0, no tuning)",
    )
    evaluate.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="measure on the first N tokens of the text only",
    )
    evaluate.add_argument(
        "--epochs",
        type=int,
        default=DEFAULT_OPTIONS["epochs"],
        help="autoencoder epochs (default: the paper's 30)",
    )
    evaluate.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_OPTIONS["batch_size"],
        help="autoencoder batch size (default: the paper's 32)",
    )
    evaluate.add_argument("--seed", type=int, default=DEFAULT_OPTIONS["seed"])
    evaluate.add_argument(
        "--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:N'"
    )
    evaluate.add_argument("--format", choices=("table", "json", "csv"), default="table")
    evaluate.add_argument(
        "--plot", type=Path, help="write perplexity against the ratio in --ratio-unit (PNG)"
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars or log")
    return parser


# Texts that install with the package's dependencies (see skdirection.datasets).
_CORPORA = {"wikipedia": "load_wikipedia_text", "lee": "load_lee_text"}


def _read_text(path):
    if path in _CORPORA:
        from . import datasets

        return getattr(datasets, _CORPORA[path])()
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SystemExit(f"skdirection: cannot read {path}: {exc.strerror}") from None
    if not text.strip():
        raise SystemExit(f"skdirection: {path} is empty.")
    return [part for part in text.split("\n\n") if part.strip()]


def _evaluate_command(args):
    from .adapters.transformers import evaluate, load_model

    if args.max_tokens is not None and args.max_tokens < 2:
        raise SystemExit("skdirection: --max-tokens must be at least 2.")
    eval_texts = _read_text(args.eval_text or "wikipedia")
    counts_texts = _read_text(args.counts_text) if args.counts_text else None
    calibration = args.calibration_text
    if args.tune_steps < 0:
        raise SystemExit("skdirection: --tune-steps must be 0 (no tuning) or more.")
    if args.tune_steps and not calibration:
        raise SystemExit(
            "skdirection: --tune-steps tunes on calibration text: give --calibration-text."
        )
    if calibration and args.target == "input" and not args.tune_steps:
        raise SystemExit(
            "skdirection: --calibration-text weights the output head's errors, with "
            "--target output or both, or tunes the tables, with --tune-steps; with "
            "--target input and no tuning it has no use."
        )
    calibration_texts = _read_text(calibration) if calibration else None
    try:
        model, tokenizer = load_model(args.model)
    except ValueError as exc:
        raise SystemExit(f"skdirection: --model {exc}") from None

    def log(message):
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    options = {
        "device": args.device,
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "ratio_unit": args.ratio_unit,
        "verbose": 0 if args.quiet else 1,
    }
    try:
        rows = evaluate(
            model,
            tokenizer,
            args.methods or ["svd", "direction"],
            args.ratios or [10.0, 5.0, 2.5],
            target=args.target,
            eval_texts=eval_texts,
            counts_texts=counts_texts,
            calibration_texts=calibration_texts,
            tune_steps=args.tune_steps,
            max_tokens=args.max_tokens,
            options=options,
            progress=not args.quiet,
            log=log,
        )
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"skdirection: {exc}") from None
    notes = [row["note"] for row in rows[1:]]
    if all(notes):
        # Nothing was measured: the notes are the whole answer, and the exit status says so.
        raise SystemExit("\n".join(f"skdirection: {note}" for note in dict.fromkeys(notes)))
    print(format_rows(rows, args.format))
    if args.plot:
        plot_rows(
            rows,
            args.plot,
            title=f"{args.model}, target={args.target}",
            ratio_unit=args.ratio_unit,
        )
        log(f"plot written to {args.plot}")
    return 0


def main(argv=None):
    """Entry point of the ``skdirection`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "evaluate":
        return _evaluate_command(args)
    return 1
