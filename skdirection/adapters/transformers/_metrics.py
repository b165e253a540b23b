"""What a compressed table costs a model: perplexity, sentence-similarity agreement."""

import math

import numpy as np
import torch
from torch import nn

from ._models import check_vocabulary, language_model_kind, model_device
from ._text import batches, causal_windows, check_texts, collate, masked_blocks

# Reference log-probabilities kept for the KL divergence, at most (float32 bytes).
MAX_REFERENCE_BYTES = 4 * 2**30


class LanguageModelMeter:
    """What a language model predicts on texts, measured against a reference run.

    The texts are tokenized into windows (causal) or masked blocks (masked LMs) once.
    Each call runs the model over them and returns its perplexity; after
    :meth:`set_reference` (typically on the uncompressed model) it also returns the
    mean KL divergence ``KL(reference || model)`` of the next-token (or masked-token)
    distributions and the share of tokens whose most likely prediction agrees with the
    reference's (``top1_agreement``), over the same tokens as the perplexity: what
    llama.cpp's ``--kl-divergence`` reports, far more sensitive than perplexity to
    small losses. The reference log-probabilities are kept in float32: evaluated
    tokens x vocabulary x 4 bytes (800 MB for 4096 tokens of a 49152-token
    vocabulary), at most 4 GiB.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A ``...ForCausalLM`` or ``...ForMaskedLM``.
    tokenizer : transformers tokenizer
    texts : str or list of str
    kind, max_length, stride, max_tokens, batch_size, mlm_probability, random_state
        As in :func:`perplexity`.
    progress : bool, default=True

    Examples
    --------
    ``meter = LanguageModelMeter(model, tokenizer, texts, max_tokens=2048)``;
    ``meter.set_reference()`` on the original model; then, once the model is patched,
    ``meter()`` gives ``{"perplexity": ..., "kl_divergence": ..., "top1_agreement": ...}``.
    """

    def __init__(
        self,
        model,
        tokenizer,
        texts,
        *,
        kind="auto",
        max_length=None,
        stride=None,
        max_tokens=None,
        batch_size=2,
        mlm_probability=0.15,
        random_state=0,
        progress=True,
    ):
        texts = check_texts(texts)
        self.model = model
        self.tokenizer = tokenizer
        self.kind = language_model_kind(model, kind)
        check_vocabulary(model, tokenizer)
        if max_tokens is not None and max_tokens < 2:
            raise ValueError(f"max_tokens must be at least 2, got {max_tokens}.")
        if self.kind == "causal":
            inputs = causal_windows(model, tokenizer, texts, max_length, stride, max_tokens)
        else:
            inputs = masked_blocks(
                model,
                tokenizer,
                texts,
                max_length,
                max_tokens,
                mlm_probability,
                random_state,
            )
        self.batches = list(batches(inputs, batch_size))
        self.progress = progress
        self.reference = None

    def _scored(self):
        """Yield the float32 logits and labels of every evaluated token, batch by batch."""
        from tqdm.auto import tqdm

        model = self.model
        device = model_device(model)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for batch in tqdm(
                    self.batches, desc="perplexity", disable=not self.progress
                ):
                    ids, labels, mask = (
                        t.to(device) for t in collate(batch, self.tokenizer)
                    )
                    logits = model(input_ids=ids, attention_mask=mask).logits
                    if self.kind == "causal":
                        logits, labels = logits[:, :-1], labels[:, 1:]
                    scored = labels != -100
                    yield logits[scored].float(), labels[scored]
        finally:
            model.train(was_training)

    def set_reference(self):
        """Run the model as it is now, keep its predictions as the reference, and
        return its scores (KL divergence 0, agreement 1)."""
        n_tokens = sum(
            int((labels != -100).sum()) for batch in self.batches for _, labels in batch
        )
        head = self.model.get_output_embeddings()
        vocabulary = getattr(head, "out_features", None) or self.model.config.vocab_size
        if n_tokens * vocabulary * 4 > MAX_REFERENCE_BYTES:
            raise ValueError(
                f"the KL divergence keeps {n_tokens} x {vocabulary} reference "
                f"log-probabilities ({n_tokens * vocabulary * 4 / 2**30:.1f} GiB): measure "
                "on fewer tokens (max_tokens)."
            )
        self.reference = None
        pieces, total = [], 0.0
        for logits, labels in self._scored():
            log_probs = torch.log_softmax(logits, dim=-1)
            total -= float(log_probs.gather(1, labels[:, None]).sum())
            pieces.append(log_probs.cpu())
        self.reference = torch.cat(pieces)
        self.reference_top1 = self.reference.argmax(dim=1)
        return {
            "perplexity": math.exp(total / len(self.reference)),
            "kl_divergence": 0.0,
            "top1_agreement": 1.0,
        }

    def __call__(self):
        """Scores of the model as it is now: perplexity, and with a reference its mean
        KL divergence from it and its top-1 agreement with it."""
        total, count, divergence, agreement = 0.0, 0, 0.0, 0
        for logits, labels in self._scored():
            log_probs = torch.log_softmax(logits, dim=-1)
            total -= float(log_probs.gather(1, labels[:, None]).sum())
            if self.reference is not None:
                reference = self.reference[count : count + len(labels)].to(logits.device)
                divergence += float(
                    (reference.exp() * (reference - log_probs))
                    .sum(dim=1)
                    .clamp_min(0)
                    .sum()
                )
                top1 = self.reference_top1[count : count + len(labels)].to(logits.device)
                agreement += int((log_probs.argmax(dim=1) == top1).sum())
            count += len(labels)
        scores = {"perplexity": math.exp(total / count)}
        if self.reference is not None:
            scores["kl_divergence"] = divergence / count
            scores["top1_agreement"] = agreement / count
        return scores


def perplexity(
    model,
    tokenizer,
    texts,
    *,
    kind="auto",
    max_length=None,
    stride=None,
    max_tokens=None,
    batch_size=2,
    mlm_probability=0.15,
    random_state=0,
    progress=True,
):
    """Perplexity of a language model on texts.

    Causal LMs: the texts, joined by blank lines, are read with the strided
    sliding-window method of the transformers documentation ("Perplexity of fixed-length
    models"): windows of ``max_length`` tokens moving by ``stride``, each token scored
    once with up to ``max_length - stride`` tokens of context before it.
    Masked LMs: as in Balazy et al. (2021), each text is cut into blocks of
    ``max_length`` tokens, whole words are masked with probability ``mlm_probability``
    (a masked token becomes ``[MASK]`` 80% of the time, a random token 10%, itself 10%),
    with a seeded generator so two runs agree; the loss is over masked tokens.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A ``…ForCausalLM`` or ``…ForMaskedLM``.
    tokenizer : transformers tokenizer
        The model's; a fast tokenizer for masked LMs (word boundaries are needed).
    texts : str or list of str
    kind : {"auto", "causal", "masked"}, default="auto"
        ``"auto"`` reads it from the model's class name.
    max_length : int, default=None
        Window (causal) or block (masked) length; ``None`` gives 1024 for causal and 512
        for masked models, or the model's maximum when smaller.
    stride : int, default=None
        Causal LMs only; ``None`` gives ``max_length // 2``. Below ``max_length``: a
        window's first token is context only, so windows must overlap for every token
        to be scored.
    max_tokens : int, default=None
        Use only the first ``max_tokens`` tokens of the texts.
    batch_size : int, default=2
        Windows or blocks per forward pass.
    mlm_probability : float, default=0.15
        Masked LMs only: probability of masking each word.
    random_state : int, default=0
        Masked LMs only: seed of the masking.
    progress : bool, default=True
        Show a progress bar.

    Returns
    -------
    perplexity : float

    See Also
    --------
    LanguageModelMeter : Perplexity, KL divergence and top-1 agreement against a
        reference run, on windows tokenized once.
    """
    return LanguageModelMeter(
        model,
        tokenizer,
        texts,
        kind=kind,
        max_length=max_length,
        stride=stride,
        max_tokens=max_tokens,
        batch_size=batch_size,
        mlm_probability=mlm_probability,
        random_state=random_state,
        progress=progress,
    )()["perplexity"]


def sentence_embeddings(model, tokenizer, sentences, *, batch_size=32, max_length=256):
    """Mean-pooled, L2-normalised sentence embeddings of an encoder (sentence-transformers'
    recipe for all-MiniLM-L6-v2).

    Parameters
    ----------
    model : transformers.PreTrainedModel
        An encoder returning ``last_hidden_state``.
    tokenizer : transformers tokenizer
    sentences : list of str
    batch_size : int, default=32
    max_length : int, default=256

    Returns
    -------
    embeddings : ndarray of shape (n_sentences, hidden_size)
    """
    sentences = check_texts(sentences)
    check_vocabulary(model, tokenizer)
    device = model_device(model)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for batch in batches(sentences, batch_size):
                encoded = tokenizer(
                    batch,
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                ).to(device)
                hidden = model(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                # In float32: numpy has no bfloat16.
                pooled = nn.functional.normalize(pooled.float(), dim=1)
                out.append(pooled.cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out)


def similarity_spearman(reference, embeddings):
    """Spearman correlation of the cosine similarities of all sentence pairs, between
    reference and compressed sentence embeddings (rows L2-normalised)."""
    from scipy.stats import spearmanr

    upper = np.triu_indices(len(reference), k=1)
    return float(
        spearmanr(
            (reference @ reference.T)[upper], (embeddings @ embeddings.T)[upper]
        ).statistic
    )
