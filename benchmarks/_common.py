"""Helpers shared by the benchmark scripts: machine description, tables, CSV, timing."""

import csv
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"


def machine_description(device="cpu"):
    """One line naming the machine a benchmark ran on."""
    cpu = platform.processor() or platform.machine()
    text = (
        f"{platform.system()} {platform.machine()} ({cpu}), {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    if str(device).startswith("cuda") and torch.cuda.is_available():
        text += f", GPU: {torch.cuda.get_device_name()}"
    return text


def format_table(rows, columns):
    """Rows (dicts) as an aligned plain-text table; floats with 5 significant digits."""

    def cell(value):
        if isinstance(value, float):
            return f"{value:.5g}"
        return str(value)

    cells = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def write_csv(rows, columns, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def timed(function, *args, **kwargs):
    """``(result, seconds)`` of one call."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def smollm2_embedding():
    """SmolLM2-135M's 49152 x 576 input embedding as float32 numpy (cached on disk)."""
    cache = RESULTS / "smollm2_embedding.npy"
    if cache.exists():
        return np.load(cache)
    from skdirection.datasets import load_smollm2

    model, _ = load_smollm2()
    table = model.get_input_embeddings().weight.detach().numpy().copy()
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.save(cache, table)
    return table
