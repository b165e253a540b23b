"""Greedy generation from SmolLM2-135M with its embedding stored by each codec: tokens/s
and memory, dense against every codec the package recommends.

    python benchmarks/bench_inference.py --threads 2
    python benchmarks/bench_inference.py --device cuda --skip-mixed

The 49152 x 576 embedding is compressed by the scalar quantizers (8 bits a row; 4 bits
in groups of 32 and a row; 3 and 2 bits in groups of 32), product quantization in
blocks of 2, 4 and 8, a rank-64 truncated SVD and, unless ``--skip-mixed``, the
frequency-aware mix at ``--mixed-ratio`` fewer bytes (its fit takes minutes). Each table
is patched as the input embedding (``input``: the head keeps the dense matrix) and as
the tied input embedding and head (``both``). Every run generates ``--tokens`` new
tokens greedily from a fixed prompt; each patched run follows a dense run, and ``x
dense`` is the median over ``--repeats`` rounds of the paired ratios, robust to a load
that drifts.

Memory: ``stored MB`` is what the table stores, ``resident MB`` that plus what it
derived at first use and keeps (row maps, norm factors, field layouts);
``peak MB`` is the peak resident memory a run adds to the process (on CUDA, the peak
allocated memory), the dense row being the baseline. Fitted tables are cached under
``$SKDIRECTION_BENCH_CACHE`` (default /tmp/skdirection_bench). Prints a table and the
machine, and writes benchmarks/results/bench_inference_<device>.csv.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    CACHE,
    RESULTS,
    PeakMemory,
    cached_table,
    format_table,
    load_average,
    machine_description,
    write_csv,
)

from skdirection import (  # noqa: E402
    FrequencyMixedCompressor,
    ProductQuantizer,
    ScalarQuantizer,
    TruncatedSVDCompressor,
)
from skdirection.adapters.transformers import (  # noqa: E402
    patch_embeddings,
    token_counts,
    unpatch_embeddings,
)
from skdirection.datasets import load_smollm2, load_wikipedia_text  # noqa: E402

PROMPT = (
    "The history of the printing press begins in the fifteenth century, when Johannes "
    "Gutenberg, a goldsmith from Mainz, combined"
)
CODECS = {
    "int8": lambda: ScalarQuantizer(bits=8),
    "int4-g32": lambda: ScalarQuantizer(bits=4, group_size=32),
    "int4": lambda: ScalarQuantizer(bits=4),
    "int3-g32": lambda: ScalarQuantizer(bits=3, group_size=32),
    "int2-g32": lambda: ScalarQuantizer(bits=2, group_size=32),
    "pq2": lambda: ProductQuantizer(block_size=2, random_state=0),
    "pq4": lambda: ProductQuantizer(block_size=4, random_state=0),
    "pq8": lambda: ProductQuantizer(block_size=8, random_state=0),
    "svd64": lambda: TruncatedSVDCompressor(64),
}
COLUMNS = [
    "codec",
    "target",
    "stored_MB",
    "resident_MB",
    "tokens_per_s",
    "x_dense",
    "peak_MB",
]


def fitted_table(name, weight, tokenizer, mixed_ratio):
    """The table of codec ``name`` for ``weight``, fitted once and cached."""
    path = CACHE / "bench_inference" / f"{name}.safetensors"
    if name == "mixed":
        path = path.with_name(f"mixed{mixed_ratio:g}.safetensors")

    def make_table():
        if name == "mixed":
            counts = token_counts(tokenizer, load_wikipedia_text(), len(weight))
            compressor = FrequencyMixedCompressor(ratio=mixed_ratio, random_state=0)
            return compressor.fit(weight, sample_weight=counts).compress(weight)
        return CODECS[name]().fit(weight).compress(weight)

    return cached_table(path, make_table, name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--codecs", nargs="+", default=[*CODECS, "mixed"])
    parser.add_argument("--targets", nargs="+", default=["input", "both"])
    parser.add_argument("--skip-mixed", action="store_true")
    parser.add_argument("--mixed-ratio", type=float, default=8.0)
    parser.add_argument(
        "--warmup",
        type=float,
        default=20.0,
        help="seconds of dense generation before timing (threads settle, pages fault in)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [n for n in args.codecs if not (args.skip_mixed and n == "mixed")]

    model, tokenizer = load_smollm2()
    weight = model.get_input_embeddings().weight.detach().numpy().copy()
    tables = {
        name: fitted_table(name, weight, tokenizer, args.mixed_ratio) for name in names
    }
    model.to(device)
    inputs = tokenizer(PROMPT, return_tensors="pt").to(device)

    def generate(tokens=args.tokens):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                **inputs,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                pad_token_id=tokenizer.eos_token_id,
            )
        if device.type == "cuda":
            torch.cuda.synchronize()
        return tokens / (time.perf_counter() - start)

    configs = [(name, target) for name in names for target in args.targets]
    start = time.perf_counter()
    while time.perf_counter() - start < args.warmup:
        generate(4)
    for name, target in configs:  # warm up: what a table derives is made at first use
        patch_embeddings(model, tables[name], target=target)
        generate(4)
        unpatch_embeddings(model)
    load_before = load_average()
    dense_speeds, speeds, ratios, peaks = [], {}, {}, {}
    for repeat in range(args.repeats):
        print(f"round {repeat + 1} of {args.repeats}", file=sys.stderr, flush=True)
        for key in configs:
            with PeakMemory(device) as dense_peak:
                dense = generate()
            dense_speeds.append(dense)
            peaks.setdefault("dense", []).append(dense_peak.peak)
            patch_embeddings(model, tables[key[0]], target=key[1])
            try:
                with PeakMemory(device) as peak:
                    speed = generate()
            finally:
                unpatch_embeddings(model)
            speeds.setdefault(key, []).append(speed)
            ratios.setdefault(key, []).append(speed / dense)
            peaks.setdefault(key, []).append(peak.peak)

    def megabytes(values):
        known = [v for v in values if v is not None]
        return max(known) / 1e6 if known else None

    rows = [
        {
            "codec": "dense",
            "target": "-",
            "stored_MB": weight.nbytes / 1e6,
            "resident_MB": weight.nbytes / 1e6,
            "tokens_per_s": statistics.median(dense_speeds),
            "x_dense": 1.0,
            "peak_MB": megabytes(peaks["dense"]),
        }
    ]
    for key in configs:
        table = tables[key[0]]
        rows.append(
            {
                "codec": key[0],
                "target": key[1],
                "stored_MB": table.n_bytes / 1e6,
                "resident_MB": (table.n_bytes + table.derived_bytes) / 1e6,
                "tokens_per_s": statistics.median(speeds[key]),
                "x_dense": statistics.median(ratios[key]),
                "peak_MB": megabytes(peaks[key]),
            }
        )
    print(
        f"\nSmolLM2-135M, greedy generation of {args.tokens} tokens from a "
        f"{inputs.input_ids.shape[1]}-token prompt on {device.type}; median of "
        f"{args.repeats} rounds, each patched run paired with a dense run just before"
    )
    print(format_table(rows, COLUMNS))
    print(machine_description(args.device))
    print(f"{load_before} at the start, {load_average()} at the end")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_csv(rows, COLUMNS, RESULTS / f"bench_inference_{device.type}.csv")


if __name__ == "__main__":
    main()
