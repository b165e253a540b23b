"""Fit compressors at several ratios, patch a model, measure what each costs.

Used by the ``skdirection evaluate`` command and the benchmarks.
"""

import time

import numpy as np
import torch

from ...metrics import mean_cosine_similarity
from ...nn import count_parameters
from ...presets import build_compressor
from ._metrics import LanguageModelMeter, sentence_embeddings, similarity_spearman
from ._models import is_language_model
from ._patch import patch_embeddings, unpatch_embeddings
from ._sensitivity import head_moment
from ._text import split_sentences, token_counts
from ._tuning import tune_table

COLUMNS = [
    "method",
    "target",
    "requested_ratio",
    "ratio",
    "bytes_ratio",
    "n_components",
    "embedding_params",
    "model_params",
    "perplexity",
    "baseline_perplexity",
    "kl_divergence",
    "top1_agreement",
    "similarity_spearman",
    "mean_cosine",
    "fit_seconds",
    "note",
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
    calibration_texts=None,
    calibration_tokens=16384,
    tune_steps=0,
    max_tokens=None,
    n_sentences=300,
    options=None,
    progress=True,
    log=None,
):
    """One row per (method, ratio) and a first row for the uncompressed model.

    Language models are measured on ``eval_texts`` by perplexity, and against the
    uncompressed model (computed once) by the mean KL divergence of their next-token
    distributions and the agreement of their top-1 predictions (see
    :class:`LanguageModelMeter`); encoders by how well the cosine similarities of
    sentence pairs from ``eval_texts`` are preserved (Spearman correlation between
    original and compressed similarities). A (method, ratio) pair that cannot be met
    (scalar codes at 16x fewer bytes, say) gives a row whose ``note`` says why, and the
    other pairs still run.

    With ``calibration_texts`` and a target that replaces the head (``"output"`` or
    ``"both"``), the second moment of the head's inputs is measured on them
    (:func:`head_moment`, first ``calibration_tokens`` tokens) and every method is
    fitted through :class:`~skdirection.ColumnWeightedCompressor` with its diagonal as
    the column weights (``options["identity_weight"]``, default 0.8, keeps part of the
    plain error): the codec's precision goes where the head's errors cost the most.
    With ``tune_steps`` (language models, ``calibration_texts`` needed), every table is
    then tuned against the model on the calibration text (:func:`tune_table`, at most
    ``tune_steps`` steps) before it is measured; ``fit_seconds`` includes the tuning.

    Returns
    -------
    rows : list of dict
        Keys listed in ``COLUMNS``; ``ratio`` is the achieved ratio with every stored
        parameter of the table counted, ``bytes_ratio`` the float32 bytes of the matrix
        over the stored bytes of the table, ``requested_ratio`` the ratio asked for.
    """
    log = log or (lambda message: None)
    options = dict(options or {})
    if tune_steps:
        if calibration_texts is None:
            raise ValueError(
                "tuning a table against the model needs calibration text "
                "(calibration_texts), other than the text it is evaluated on."
            )
        if not is_language_model(model):
            raise ValueError(
                f"tuning matches a language model's predictions, and "
                f"{type(model).__name__} makes none: evaluate it without tuning."
            )
    source = model.get_output_embeddings() if target == "output" else None
    source = source if source is not None else model.get_input_embeddings()
    matrix = source.weight.detach().float().cpu().numpy()
    n_rows, n_features = matrix.shape
    weight = None
    if counts_texts is not None:
        weight = token_counts(tokenizer, counts_texts, n_rows=n_rows)
        if weight.sum() == 0:
            raise ValueError("the counts text holds no tokens.")
    if calibration_texts is not None and target != "input":
        moment = head_moment(
            model, tokenizer, calibration_texts, max_tokens=calibration_tokens
        )
        options["column_weight"] = np.diag(moment).copy()
        log(f"head moment from {calibration_tokens} calibration tokens")
    measure, baseline = _meter(
        model, tokenizer, eval_texts, max_tokens, n_sentences, progress
    )
    log(f"baseline: {baseline}")
    first = {
        "method": "none",
        "target": target,
        "requested_ratio": 1.0,
        "ratio": 1.0,
        "bytes_ratio": 1.0,
        "embedding_params": int(matrix.size),
        "model_params": count_parameters(model),
        "mean_cosine": 1.0,
        "fit_seconds": 0.0,
    }
    rows = [_row(first, baseline, baseline)]
    tune = None
    if tune_steps:

        def tune(table, label):
            report = tune_table(
                model,
                tokenizer,
                table,
                calibration_texts,
                target=target,
                steps=tune_steps,
                random_state=options.get("seed", 0),
                progress=progress,
            )
            log(
                f"{label}: tuned {report.n_steps} steps, held-out KL "
                f"{report.initial_kl:.4g} -> {report.final_kl:.4g} (kept step "
                f"{report.best_step})"
            )
            return report.table

    for method in methods:
        for ratio in ratios:
            row = {"method": method, "target": target, "requested_ratio": ratio}
            try:
                row.update(
                    _compressed(
                        model,
                        matrix,
                        weight,
                        method,
                        ratio,
                        target,
                        options,
                        measure,
                        tune,
                    )
                )
            except ValueError as exc:
                log(f"{method} ratio {ratio}: not measured: {exc}")
                rows.append(_row({**row, "note": str(exc)}, {}, baseline))
                continue
            scores = row.pop("scores")
            log(f"{method} ratio {ratio}: {scores} (fit {row['fit_seconds']:.1f} s)")
            rows.append(_row(row, scores, baseline))
    return rows


def _compressed(model, matrix, weight, method, ratio, target, options, measure, tune):
    """Fit a method at a ratio (and tune its table with ``tune(table, label)`` when
    given), patch the model with its table, measure, unpatch."""
    n_rows, n_features = matrix.shape
    compressor = build_compressor(method, n_rows, n_features, ratio, options)
    start = time.perf_counter()
    compressor.fit(matrix, sample_weight=weight)
    table = compressor.compress(matrix)
    if tune is not None:
        table = tune(table, f"{method} ratio {ratio}")
    fit_seconds = time.perf_counter() - start
    with torch.no_grad():
        cosine = mean_cosine_similarity(matrix, table.decode().cpu().numpy())
    report = patch_embeddings(model, table, target=target)
    try:
        scores = measure()
    finally:
        unpatch_embeddings(model)
    return {
        "ratio": report.embedding_ratio,
        "bytes_ratio": matrix.nbytes / table.n_bytes,
        "n_components": getattr(compressor, "n_components", None),
        "embedding_params": report.embedding_params_after,
        "model_params": report.model_params_after,
        "mean_cosine": cosine,
        "fit_seconds": fit_seconds,
        "scores": scores,
    }


def _meter(model, tokenizer, eval_texts, max_tokens, n_sentences, progress):
    """``(measure, baseline)``: ``measure()`` scores the model as it is now (perplexity,
    KL divergence and top-1 agreement against the uncompressed model for a language
    model; the preserved sentence similarities for an encoder); ``baseline`` is the
    uncompressed model's scores."""
    if is_language_model(model):
        meter = LanguageModelMeter(
            model, tokenizer, eval_texts, max_tokens=max_tokens, progress=progress
        )
        return meter, meter.set_reference()
    sentences = split_sentences(eval_texts, max_sentences=n_sentences)
    if len(sentences) < 3:
        raise ValueError("the evaluation text holds fewer than 3 sentences.")
    reference = sentence_embeddings(model, tokenizer, sentences)

    def measure():
        embeddings = sentence_embeddings(model, tokenizer, sentences)
        return {"similarity_spearman": similarity_spearman(reference, embeddings)}

    return measure, measure()


def _row(columns, scores, baseline):
    row = {**columns, **scores}
    if "perplexity" in baseline:
        row["baseline_perplexity"] = baseline["perplexity"]
    return {column: row.get(column) for column in COLUMNS}
