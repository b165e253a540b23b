"""Results as people read them: aligned tables, JSON and CSV, plots, and the machine a
measurement ran on. The CLI and the benchmarks print through this module."""

import csv
import io
import json
import math
import os
import platform


def machine_description(device="cpu"):
    """One line naming the machine a measurement ran on (CPU, cores, torch, GPU)."""
    import torch

    cpu = platform.processor() or platform.machine()
    text = (
        f"{platform.system()} {platform.machine()} ({cpu}), {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    if str(device).startswith("cuda") and torch.cuda.is_available():
        text += f", GPU: {torch.cuda.get_device_name()}"
    return text


def fixed_decimals(value):
    """A number as the CLI prints it: four decimals, one from 1000 up, three significant
    digits below 0.01 (a KL divergence); ``-`` for none."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if 0 < abs(value) < 0.01:
            return f"{value:.3g}"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def significant_digits(value):
    """A number as the benchmarks print it: five significant digits."""
    if isinstance(value, float):
        return f"{value:.5g}"
    return "" if value is None else str(value)


def format_table(rows, columns, cell=fixed_decimals):
    """Rows (dicts) as an aligned plain-text table of ``columns``."""
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def format_rows(rows, fmt, columns=None):
    """Rows as an aligned text table (columns that hold a value), JSON or CSV.

    ``columns`` defaults to the columns of
    :func:`skdirection.adapters.transformers.evaluate`.
    """
    if columns is None:
        from .adapters.transformers import COLUMNS as columns
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    shown = [c for c in columns if any(row.get(c) is not None for row in rows)]
    return format_table(rows, shown)


def write_csv(rows, columns, path):
    """Write rows (dicts) to a CSV file, creating its folder; return the path."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_rows(rows, path, title=None, ratio_unit="params"):
    """Perplexity (or similarity) against the ratio in ``ratio_unit``, one line per
    method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = "perplexity" if rows[0]["perplexity"] is not None else "similarity_spearman"
    ratio = "bytes_ratio" if ratio_unit == "bytes" else "ratio"
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows[1:]):
        points = sorted(
            (r[ratio], r[metric])
            for r in rows
            if r["method"] == method and r[metric] is not None
        )
        if not points:
            continue
        ax.plot(*zip(*points, strict=True), marker="o", label=method)
    ax.axhline(rows[0][metric], color="gray", linestyle="--", label="uncompressed")
    ax.set_xlabel(f"embedding compression ratio ({ratio_unit})")
    ax.set_ylabel(metric.replace("_", " "))
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
