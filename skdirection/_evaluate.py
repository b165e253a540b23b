"""Fit compressors at several ratios, patch a model, measure what each costs.

Used by the ``skdirection evaluate`` command and the benchmarks. Imports transformers
(through the adapter) only when called.
"""

import re
import time

import numpy as np

from ._methods import build_compressor
from .metrics import mean_cosine_similarity

COLUMNS = [
    "method",
    "target",
    "ratio",
    "bytes_ratio",
    "n_components",
    "embedding_params",
    "model_params",
    "perplexity",
    "baseline_perplexity",
    "similarity_spearman",
    "mean_cosine",
    "fit_seconds",
]


def split_sentences(texts, *, min_words=5, max_words=40, max_sentences=None):
    """Sentences of plain texts (split after ``.``, ``!`` or ``?``), in order."""
    sentences = []
    for text in texts:
        for sentence in re.split(r"(?<=[.!?])\s+", text.replace("\n", " ")):
            if min_words <= len(sentence.split()) <= max_words:
                sentences.append(sentence.strip())
                if max_sentences is not None and len(sentences) >= max_sentences:
                    return sentences
    return sentences


def _pair_cosines(embeddings):
    upper = np.triu_indices(len(embeddings), k=1)
    return (embeddings @ embeddings.T)[upper]


def similarity_spearman(reference, embeddings):
    """Spearman correlation of the cosine similarities of all sentence pairs, between
    reference and compressed sentence embeddings (rows L2-normalised)."""
    from scipy.stats import spearmanr

    return float(spearmanr(_pair_cosines(reference), _pair_cosines(embeddings)).statistic)


def is_language_model(model):
    name = type(model).__name__
    return any(part in name for part in ("MaskedLM", "CausalLM", "LMHead"))


def evaluate(
    model,
    tokenizer,
    methods,
    ratios,
    *,
    target="input",
    eval_texts,
    counts_texts=None,
    max_tokens=None,
    n_sentences=300,
    options=None,
    progress=True,
    log=None,
):
    """One row per (method, ratio) and a first row for the uncompressed model.

    Language models are measured by perplexity on ``eval_texts``; encoders by how well
    the cosine similarities of sentence pairs from ``eval_texts`` are preserved
    (Spearman correlation between original and compressed similarities).

    Returns
    -------
    rows : list of dict
        Keys listed in ``COLUMNS``; ``ratio`` is the achieved ratio with every stored
        parameter of the table counted, ``bytes_ratio`` the float32 bytes of the matrix
        over the stored bytes of the table.
    """
    from .adapters.transformers import (
        count_parameters,
        patch_embeddings,
        perplexity,
        sentence_embeddings,
        token_counts,
        unpatch_embeddings,
    )

    log = log or (lambda message: None)
    source = model.get_output_embeddings() if target == "output" else None
    source = source if source is not None else model.get_input_embeddings()
    matrix = source.weight.detach().float().cpu().numpy()
    n_rows, n_features = matrix.shape
    weight = None
    if counts_texts is not None:
        weight = token_counts(tokenizer, counts_texts, n_rows=n_rows)
        if weight.sum() == 0:
            raise ValueError("the counts text holds no tokens.")

    language_model = is_language_model(model)
    if language_model:

        def measure():
            return perplexity(
                model, tokenizer, eval_texts, max_tokens=max_tokens, progress=progress
            )

    else:
        sentences = split_sentences(eval_texts, max_sentences=n_sentences)
        if len(sentences) < 3:
            raise ValueError("the evaluation text holds fewer than 3 sentences.")
        reference = sentence_embeddings(model, tokenizer, sentences)

        def measure():
            return similarity_spearman(reference, sentence_embeddings(model, tokenizer, sentences))

    baseline = measure()
    log(f"baseline: {baseline:.4f}")
    rows = [
        {
            "method": "none",
            "target": target,
            "ratio": 1.0,
            "bytes_ratio": 1.0,
            "n_components": None,
            "embedding_params": int(matrix.size),
            "model_params": count_parameters(model),
            "perplexity": baseline if language_model else None,
            "baseline_perplexity": baseline if language_model else None,
            "similarity_spearman": None if language_model else baseline,
            "mean_cosine": 1.0,
            "fit_seconds": 0.0,
        }
    ]
    for method in methods:
        for ratio in ratios:
            compressor = build_compressor(method, n_rows, n_features, ratio, options)
            start = time.perf_counter()
            compressor.fit(matrix, sample_weight=weight)
            fit_seconds = time.perf_counter() - start
            table = compressor.compress(matrix)
            cosine = mean_cosine_similarity(matrix, table.decode().detach().cpu().numpy())
            report = patch_embeddings(model, table, target=target)
            try:
                score = measure()
            finally:
                unpatch_embeddings(model)
            row = {
                "method": method,
                "target": target,
                "ratio": report.embedding_ratio,
                "bytes_ratio": matrix.nbytes / table.n_bytes,
                "n_components": getattr(compressor, "n_components", None),
                "embedding_params": report.embedding_params_after,
                "model_params": report.model_params_after,
                "perplexity": score if language_model else None,
                "baseline_perplexity": baseline if language_model else None,
                "similarity_spearman": None if language_model else score,
                "mean_cosine": cosine,
                "fit_seconds": fit_seconds,
            }
            log(f"{method} ratio {ratio}: {score:.4f} (fit {fit_seconds:.1f} s)")
            rows.append(row)
    return rows
