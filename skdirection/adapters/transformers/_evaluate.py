"""Fit compressors at several ratios, patch a model, measure what each costs.

Used by the ``skdirection evaluate`` command and the benchmarks.
"""

import time

from ...metrics import mean_cosine_similarity
from ...nn import count_parameters
from ...presets import build_compressor
from ._metrics import perplexity, sentence_embeddings, similarity_spearman
from ._models import is_language_model
from ._patch import patch_embeddings, unpatch_embeddings
from ._text import split_sentences, token_counts

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
    measure = _meter(model, tokenizer, eval_texts, max_tokens, n_sentences, progress)
    baseline = measure()
    log(f"baseline: {baseline:.4f}")
    rows = [
        _row(
            measure,
            "none",
            target,
            baseline,
            baseline,
            ratio=1.0,
            bytes_ratio=1.0,
            n_components=None,
            embedding_params=int(matrix.size),
            model_params=count_parameters(model),
            mean_cosine=1.0,
            fit_seconds=0.0,
        )
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
            log(f"{method} ratio {ratio}: {score:.4f} (fit {fit_seconds:.1f} s)")
            rows.append(
                _row(
                    measure,
                    method,
                    target,
                    score,
                    baseline,
                    ratio=report.embedding_ratio,
                    bytes_ratio=matrix.nbytes / table.n_bytes,
                    n_components=getattr(compressor, "n_components", None),
                    embedding_params=report.embedding_params_after,
                    model_params=report.model_params_after,
                    mean_cosine=cosine,
                    fit_seconds=fit_seconds,
                )
            )
    return rows


def _meter(model, tokenizer, eval_texts, max_tokens, n_sentences, progress):
    """``measure()``: the model's perplexity on the texts (a language model), or how well
    it keeps the similarities of their sentences (an encoder); ``measure.language_model``
    says which."""
    if is_language_model(model):

        def measure():
            return perplexity(
                model, tokenizer, eval_texts, max_tokens=max_tokens, progress=progress
            )

        measure.language_model = True
        return measure

    sentences = split_sentences(eval_texts, max_sentences=n_sentences)
    if len(sentences) < 3:
        raise ValueError("the evaluation text holds fewer than 3 sentences.")
    reference = sentence_embeddings(model, tokenizer, sentences)

    def measure():
        return similarity_spearman(
            reference, sentence_embeddings(model, tokenizer, sentences)
        )

    measure.language_model = False
    return measure


def _row(measure, method, target, score, baseline, **columns):
    language_model = measure.language_model
    row = {
        "method": method,
        "target": target,
        "perplexity": score if language_model else None,
        "baseline_perplexity": baseline if language_model else None,
        "similarity_spearman": None if language_model else score,
        **columns,
    }
    return {column: row[column] for column in COLUMNS}
