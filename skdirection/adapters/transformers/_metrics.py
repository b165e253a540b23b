"""What a compressed table costs a model: perplexity, sentence-similarity agreement."""

import math

import numpy as np
import torch
from torch import nn

from ._models import check_vocabulary, language_model_kind, model_device
from ._text import batches, causal_windows, check_texts, collate, masked_blocks


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
        Causal LMs only; ``None`` gives ``max_length // 2``.
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
    """
    from tqdm.auto import tqdm

    texts = check_texts(texts)
    kind = language_model_kind(model, kind)
    check_vocabulary(model, tokenizer)
    if max_tokens is not None and max_tokens < 2:
        raise ValueError(f"max_tokens must be at least 2, got {max_tokens}.")
    if kind == "causal":
        inputs = causal_windows(model, tokenizer, texts, max_length, stride, max_tokens)
    else:
        inputs = masked_blocks(
            model, tokenizer, texts, max_length, max_tokens, mlm_probability, random_state
        )
    device = model_device(model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    groups = list(batches(inputs, batch_size))
    try:
        with torch.no_grad():
            for batch in tqdm(groups, desc="perplexity", disable=not progress):
                ids, labels, mask = (t.to(device) for t in collate(batch, tokenizer))
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
                if kind == "causal":
                    logits, labels = logits[:, :-1], labels[:, 1:]
                total += nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]),
                    labels.reshape(-1),
                    ignore_index=-100,
                    reduction="sum",
                ).item()
                count += int((labels != -100).sum())
    finally:
        model.train(was_training)
    return math.exp(total / count)


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
                out.append(nn.functional.normalize(pooled, dim=1).cpu().numpy())
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
