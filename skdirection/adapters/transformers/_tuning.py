"""Tuning a stored table against the model it is patched into.

A codec fits its table to the embedding matrix, row by row. The model reads the table
differently: some rows, columns and directions matter far more to its predictions than
others. Tuning keeps the table's codes (its integer part: which centroid, which level,
which part of a mix) and refines its float tensors (codebooks, scales and offsets,
norms, bases) so that the patched model's next-token distributions match the original
model's on calibration text, by gradient descent on their KL divergence. Held-out
calibration windows decide when to stop, and the tuned table is kept only where it
beats the table it started from on them.
"""

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ...codecs import CompressedTable
from ._models import (
    check_vocabulary,
    language_model_kind,
    max_positions,
    model_device,
    output_embedding,
)
from ._patch import TARGETS, patch_embeddings, patch_state, unpatch_embeddings
from ._text import causal_windows, check_texts, collate, masked_blocks

# The original model's log-probabilities are kept (float16) when they fit this.
REFERENCE_BYTES = 2 * 2**30


@dataclass
class TuningReport:
    """What :func:`tune_table` did.

    Attributes
    ----------
    table : CompressedTable
        The tuned table: the same class, shapes, dtypes, codes and stored bytes as the
        table given, with its float tensors refined (the table given, unchanged, when
        no step improved the held-out divergence).
    initial_kl, final_kl : float
        Mean KL divergence of the patched model's predictions from the original's on
        the held-out calibration windows, before tuning and with ``table``.
    best_step : int
        Step of the kept tensors (0: none improved on the table given).
    n_steps : int
        Steps taken; fewer than asked when the held-out divergence stopped improving.
    history : list of (int, float)
        ``(step, held-out KL divergence)`` at every evaluation.
    """

    table: object
    initial_kl: float
    final_kl: float
    best_step: int
    n_steps: int
    history: list = field(default_factory=list)


def tune_table(
    model,
    tokenizer,
    table,
    texts,
    *,
    target="input",
    steps=200,
    learning_rate=3e-3,
    max_tokens=8192,
    max_length=256,
    batch_size=2,
    validation_fraction=0.25,
    eval_every=25,
    patience=2,
    random_state=0,
    progress=True,
):
    """Refine a table's float tensors so the patched model predicts like the original.

    The table's codes stay; its floating-point tensors (codebooks, scales, offsets,
    norms, bases, column scales) are trained, through float32 copies, to minimise the
    mean KL divergence ``KL(original || patched)`` of the next-token (masked LMs: masked
    token) distributions over windows of calibration text, with Adam. A quarter of the
    windows (``validation_fraction``) are held out: the divergence on them is measured
    before tuning and every ``eval_every`` steps, tuning stops after ``patience``
    measurements without improvement, and the tensors with the lowest held-out
    divergence are kept. Use calibration text other than the text the model is
    evaluated on.

    The model is patched during tuning and restored afterwards, bit for bit; the table
    given is not modified.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The original (unpatched) ``...ForCausalLM`` or ``...ForMaskedLM``.
    tokenizer : transformers tokenizer
    table : CompressedTable
        A table of the model's embedding matrix (for ``target="output"``, of its head),
        e.g. ``compressor.compress(matrix)``.
    texts : str or list of str
        Calibration text; its first ``max_tokens`` tokens are read.
    target : {"input", "output", "both"}, default="input"
        Where the table goes, as in :func:`patch_embeddings`.
    steps : int, default=200
        Most optimizer steps.
    learning_rate : float, default=3e-3
        Adam's step size, relative to each tensor's root mean square (a codebook of
        entries near 0.04 and norms near 1 move by the same share).
    max_tokens : int or None, default=8192
        Calibration tokens read (``None``: all of them).
    max_length : int, default=256
        Tokens a window; windows do not overlap.
    batch_size : int, default=2
        Windows a step.
    validation_fraction : float, default=0.25
        Share of the windows held out (at least one).
    eval_every : int, default=25
        Steps between held-out measurements.
    patience : int, default=2
        Held-out measurements without improvement before stopping.
    random_state : int, default=0
        Seed of the held-out split, of the order of the windows and of the masking
        (masked LMs).
    progress : bool, default=True
        Show a progress bar.

    Returns
    -------
    report : TuningReport
        The tuned table and the held-out divergence before and after.

    Raises
    ------
    ValueError
        If the model is not a language model, is already patched, the table does not
        fit it, the text gives fewer than two windows, or a parameter is out of range.
    TypeError
        If ``table`` is not a :class:`~skdirection.CompressedTable`.

    Examples
    --------
    ``report = tune_table(model, tokenizer, mix.compress(matrix), load_lee_text(),
    target="both")``, then ``patch_embeddings(model, report.table, target="both")``.
    """
    _check_parameters(target, steps, learning_rate, validation_fraction, eval_every)
    _check_parameters_positive(
        batch_size=batch_size, patience=patience, max_length=max_length
    )
    if max_tokens is not None and not (isinstance(max_tokens, int) and max_tokens >= 2):
        raise ValueError(f"max_tokens must be None or an integer >= 2, got {max_tokens!r}.")
    if not isinstance(table, CompressedTable):
        raise TypeError(
            "table must be a CompressedTable (a fitted compressor's compress(matrix)), "
            f"got {type(table).__name__}."
        )
    texts = check_texts(texts)
    try:
        kind = language_model_kind(model, "auto")
    except TypeError:
        raise ValueError(
            f"tuning matches next-token (or masked-token) predictions, and "
            f"{type(model).__name__} makes none: give a ...ForCausalLM or ...ForMaskedLM."
        ) from None
    check_vocabulary(model, tokenizer)
    max_length = max_positions(model, max_length)
    windows = _windows(model, tokenizer, texts, kind, max_length, max_tokens, random_state)
    if len(windows) < 2:
        raise ValueError(
            f"the calibration text gives {len(windows)} window of up to {max_length} "
            "tokens; tuning needs at least 2 (one to train on, one held out): give more "
            "text or a smaller max_length."
        )
    rng = np.random.default_rng(random_state)
    order = rng.permutation(len(windows))
    n_held_out = min(len(windows) - 1, max(1, round(validation_fraction * len(windows))))
    held_out, train = order[:n_held_out].tolist(), order[n_held_out:]

    device = model_device(model)
    stored_dtypes = {name: p.dtype for name, p in table.named_parameters()}
    working = copy.deepcopy(table).to(device).float()
    was_training = model.training
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    model.eval()
    model.requires_grad_(False)
    try:
        patch_embeddings(model, working, target=target)
        try:
            tuner = _Tuner(
                model, tokenizer, kind, working, stored_dtypes, learning_rate, windows
            )
            tuned = tuner.run(
                train, held_out, steps, batch_size, eval_every, patience, rng, progress
            )
        finally:
            unpatch_embeddings(model)
    finally:
        model.train(was_training)
        for name, p in model.named_parameters():
            p.requires_grad_(requires_grad[name])
    best_state, history, best_step, n_steps, final_kl = tuned
    if final_kl >= history[0][1]:
        # Rounding the best tensors to their stored dtypes undid what they gained.
        best_step = 0
    result = copy.deepcopy(table)
    if best_step:
        state = result.state_dict()
        result.load_state_dict(
            {
                name: best_state[name].to(value.dtype) if name in best_state else value
                for name, value in state.items()
            }
        )
    else:
        final_kl = history[0][1]
    return TuningReport(
        table=result,
        initial_kl=history[0][1],
        final_kl=final_kl,
        best_step=best_step,
        n_steps=n_steps,
        history=history,
    )


def _check_parameters(target, steps, learning_rate, validation_fraction, eval_every):
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}.")
    _check_parameters_positive(steps=steps, eval_every=eval_every)
    if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}.")
    if not 0 < validation_fraction < 1:
        raise ValueError(
            f"validation_fraction must be in (0, 1), got {validation_fraction!r}."
        )


def _check_parameters_positive(**values):
    for name, value in values.items():
        if not (isinstance(value, (int, np.integer)) and value >= 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _windows(model, tokenizer, texts, kind, max_length, max_tokens, random_state):
    if kind == "causal":
        return causal_windows(
            model, tokenizer, texts, max_length, max_length, max_tokens, every_token=False
        )
    return masked_blocks(
        model, tokenizer, texts, max_length, max_tokens, 0.15, random_state
    )


class _Tuner:
    """The training loop: the patched model against the original on the same windows."""

    def __init__(
        self, model, tokenizer, kind, table, stored_dtypes, learning_rate, windows
    ):
        self.model = model
        self.stored_dtypes = stored_dtypes
        self.tokenizer = tokenizer
        self.kind = kind
        self.table = table
        self.windows = windows
        self.device = model_device(model)
        # The original modules a patch replaced, and the table's modules: swapping them
        # gives the original model's predictions without a second copy of the model.
        state = patch_state(model)
        self.swaps = [
            (parent, name, old, getattr(parent, name))
            for parent, name, old in state["replaced"]
        ]
        self.tensors = {
            name: p for name, p in table.named_parameters() if p.is_floating_point()
        }
        if not self.tensors:
            raise ValueError(
                f"{type(table).__name__} stores no float tensors: there is nothing to tune."
            )
        groups = []
        for p in self.tensors.values():
            p.requires_grad_(True)
            scale = float(p.detach().pow(2).mean().sqrt()) if p.numel() else 0.0
            groups.append({"params": [p], "lr": learning_rate * (scale or 1.0)})
        self.optimizer = torch.optim.Adam(groups)
        # The original model's log-probabilities of every window, kept in float16 when
        # they fit REFERENCE_BYTES: then the original model runs once a window.
        n_scored = sum(self._n_scored(labels) for _, labels in windows)
        head = output_embedding(model)
        vocabulary = getattr(head, "out_features", None) or model.config.vocab_size
        self.cached = n_scored * vocabulary * 2 <= REFERENCE_BYTES
        self.references = {}

    def _n_scored(self, labels):
        return int((labels[1:] if self.kind == "causal" else labels).ne(-100).sum())

    def _scored(self, logits, labels):
        if self.kind == "causal":
            logits, labels = logits[:, :-1], labels[:, 1:]
        return logits[labels != -100]

    def _inputs(self, indices):
        batch = [self.windows[i] for i in indices]
        return [t.to(self.device) for t in collate(batch, self.tokenizer)]

    def _original_log_probs(self, indices):
        missing = [i for i in indices if i not in self.references]
        if missing:
            ids, labels, mask = self._inputs(missing)
            for parent, name, old, _ in self.swaps:
                setattr(parent, name, old)
            try:
                with torch.no_grad():
                    logits = self.model(input_ids=ids, attention_mask=mask).logits
                    log_probs = torch.log_softmax(
                        self._scored(logits, labels).float(), dim=-1
                    )
            finally:
                for parent, name, _, new in self.swaps:
                    setattr(parent, name, new)
            if not self.cached:
                return log_probs
            sizes = [self._n_scored(self.windows[i][1]) for i in missing]
            for i, part in zip(missing, log_probs.split(sizes), strict=True):
                self.references[i] = part.half()
        # Normalised again after rounding, so that a table equal to the original's
        # gives exactly 0.
        kept = torch.cat([self.references[i] for i in indices]).float()
        return torch.log_softmax(kept, dim=-1)

    def _divergence(self, indices):
        """``(sum of KL over the scored tokens of windows indices, number of them)``."""
        reference = self._original_log_probs(indices)
        ids, labels, mask = self._inputs(indices)
        logits = self.model(input_ids=ids, attention_mask=mask).logits
        log_probs = torch.log_softmax(self._scored(logits, labels).float(), dim=-1)
        divergence = (reference.exp() * (reference - log_probs)).sum()
        return divergence, reference.shape[0]

    def _held_out_kl(self, held_out, batch_size):
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(held_out), batch_size):
                divergence, n = self._divergence(held_out[start : start + batch_size])
                total, count = total + float(divergence), count + n
        return total / max(count, 1)

    def _snapshot(self):
        return {name: p.detach().clone() for name, p in self.tensors.items()}

    def run(self, train, held_out, steps, batch_size, eval_every, patience, rng, progress):
        """Tune on windows ``train``, measure on windows ``held_out`` (indices)."""
        from tqdm.auto import tqdm

        best_kl = self._held_out_kl(held_out, batch_size)
        history, best_state, best_step = [(0, best_kl)], None, 0
        order, position, waited, step = [], 0, 0, 0
        bar = tqdm(total=steps, desc="tuning", disable=not progress)
        while step < steps:
            if position >= len(order):
                order, position = rng.permutation(train), 0
            batch = order[position : position + batch_size].tolist()
            position += batch_size
            divergence, n = self._divergence(batch)
            if n:
                self.optimizer.zero_grad(set_to_none=True)
                (divergence / n).backward()
                self.optimizer.step()
                self.table.forget_derived()  # row scales and the like, of the old tensors
            step += 1
            bar.update()
            if step % eval_every and step < steps:
                continue
            kl = self._held_out_kl(held_out, batch_size)
            history.append((step, kl))
            bar.set_postfix(held_out_kl=f"{kl:.4g}")
            if not math.isfinite(kl):
                break
            if kl < best_kl:
                best_kl, best_state, best_step, waited = kl, self._snapshot(), step, 0
            else:
                waited += 1
                if waited >= patience:
                    break
        bar.close()
        final_kl = best_kl
        if best_step:
            # What the stored table will hold: the best tensors at their stored dtypes.
            with torch.no_grad():
                for name, p in self.tensors.items():
                    p.copy_(best_state[name].to(self.stored_dtypes[name]).float())
            self.table.forget_derived()
            final_kl = self._held_out_kl(held_out, batch_size)
        return best_state, history, best_step, step, final_kl
