"""Reproduce Balazy et al. (2021) on models that install by name: SVD vs the direction loss.

1. SmolLM2-135M (causal LM): compress the input embedding (the paper's protocol: the
   output head keeps the original matrix) at ratios 10, 5 and 2.5 and measure perplexity
   on the English Wikipedia articles gensim ships.
2. all-MiniLM-L6-v2 (sentence encoder): same compressors and ratios; measure how well the
   cosine similarities of sentence pairs are preserved (Spearman correlation between the
   original and the compressed model's similarities, all pairs of sentences from gensim's
   Lee news corpus).

The autoencoder uses the paper's exact settings (linear, Adam 1e-3, batch 32, 30 epochs,
StepLR 4 / 0.5, seed 1, no token weights). Run::

    python benchmarks/reproduce_paper.py [--max-tokens 8192] [--epochs 30] [--out DIR]
"""

import argparse
import json
import time
from pathlib import Path

import torch

from skdirection import datasets
from skdirection.adapters.transformers import evaluate
from skdirection.report import format_rows, machine_description, plot_rows

RATIOS = [10.0, 5.0, 2.5]
METHODS = ["svd", "direction"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=8192)
    parser.add_argument("--sentences", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--skip-minilm", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    options = {"device": args.device, "seed": 1, "epochs": args.epochs, "batch_size": 32}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"machine: {machine_description(device)}", flush=True)

    def log(message):
        print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)

    results = {}
    if not args.skip_smollm2:
        model, tokenizer = datasets.load_smollm2()
        rows = evaluate(
            model,
            tokenizer,
            METHODS,
            RATIOS,
            target="input",
            eval_texts=datasets.load_wikipedia_text(),
            max_tokens=args.max_tokens,
            options=options,
            progress=False,
            log=log,
        )
        results["smollm2"] = rows
        print(
            f"\nSmolLM2-135M, input embedding, perplexity on gensim's Wikipedia "
            f"(first {args.max_tokens} tokens):"
        )
        print(format_rows(rows, "table"), flush=True)
        plot_rows(rows, args.out / "smollm2.png", "SmolLM2-135M, input target")
        del model
    if not args.skip_minilm:
        model, tokenizer = datasets.load_minilm()
        rows = evaluate(
            model,
            tokenizer,
            METHODS,
            RATIOS,
            target="input",
            eval_texts=datasets.load_lee_text(),
            n_sentences=args.sentences,
            options=options,
            progress=False,
            log=log,
        )
        results["minilm"] = rows
        print(
            f"\nall-MiniLM-L6-v2, word embedding, Spearman of pair similarities "
            f"({args.sentences} sentences of gensim's Lee corpus):"
        )
        print(format_rows(rows, "table"), flush=True)
        plot_rows(rows, args.out / "minilm.png", "all-MiniLM-L6-v2, input target")
    results["machine"] = machine_description(device)
    (args.out / "reproduce_paper.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
