"""Text for the measurements: token windows and masked blocks, token counts, sentences."""

import re

import numpy as np
import torch

from ._models import max_positions


def check_texts(texts):
    if isinstance(texts, str):
        texts = [texts]
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError("texts is empty: give at least one non-blank string.")
    return texts


def batches(items, batch_size):
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def collate(batch, tokenizer):
    length = max(len(ids) for ids, _ in batch)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(batch), length), pad, dtype=torch.long)
    labels = torch.full((len(batch), length), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    for row, (tokens, targets) in enumerate(batch):
        ids[row, : len(tokens)] = tokens
        labels[row, : len(tokens)] = targets
        mask[row, : len(tokens)] = 1
    return ids, labels, mask


def causal_windows(
    model, tokenizer, texts, max_length, stride, max_tokens, *, every_token=True
):
    """``(window, labels)`` pairs of the texts joined by blank lines. With
    ``every_token`` (measuring), each window starts inside the one before, so that every
    token but the first is scored once; without (training windows), they may tile."""
    ids = torch.as_tensor(_leading_token_ids(tokenizer, "\n\n".join(texts), max_tokens))
    if len(ids) < 2:
        raise ValueError("the texts hold fewer than 2 tokens: nothing to predict.")
    max_length = max_length or max_positions(model, 1024)
    stride = stride or max(1, max_length // 2)
    if not 0 < stride <= max_length:
        raise ValueError(f"stride must be in [1, max_length={max_length}], got {stride}.")
    if every_token and stride == max_length > 1:
        # A window's first token is only context: each later window must start inside
        # the one before, or that token is never scored.
        raise ValueError(
            f"stride must be below max_length={max_length} so that every token is "
            f"scored, got {stride}."
        )
    windows, previous_end = [], 0
    for begin in range(0, len(ids), stride):
        end = min(begin + max_length, len(ids))
        window = ids[begin:end]
        labels = window.clone()
        labels[: len(window) - (end - previous_end)] = -100
        windows.append((window, labels))
        previous_end = end
        if end == len(ids):
            break
    return windows


def _leading_token_ids(tokenizer, text, max_tokens, margin=256):
    """The first ``max_tokens`` token ids of ``text`` (all of them when ``None``).

    Tokenizes a growing prefix rather than the whole text: a long corpus measured on its
    first few thousand tokens would otherwise be tokenized in full on every call. The
    prefix always runs ``margin`` tokens past what is kept, so where it was cut cannot
    change the kept tokens.
    """
    if max_tokens is None:
        return tokenizer(text)["input_ids"]
    length = 16 * (max_tokens + margin)
    while True:
        ids = tokenizer(text[:length])["input_ids"]
        if length >= len(text) or len(ids) >= max_tokens + margin:
            return ids[:max_tokens]
        length *= 2


def masked_blocks(model, tokenizer, texts, max_length, max_tokens, probability, seed):
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no mask token: it is not a masked LM's.")
    encoding = tokenizer(texts, add_special_tokens=False)
    specials = [
        t for t in (tokenizer.cls_token_id, tokenizer.sep_token_id) if t is not None
    ]
    block = (max_length or max_positions(model, 512)) - len(specials)
    generator = torch.Generator().manual_seed(seed)
    n_vocabulary = len(tokenizer)
    blocks, budget = [], max_tokens
    for index, ids in enumerate(encoding["input_ids"]):
        try:
            words = encoding.word_ids(index)
        except ValueError:
            raise ValueError(
                "masked-LM perplexity masks whole words and needs a fast tokenizer "
                "(one that reports word_ids)."
            ) from None
        if budget is not None:
            ids, words, budget = (
                ids[:budget],
                words[:budget],
                budget - min(budget, len(ids)),
            )
        for start in range(0, len(ids), block):
            chunk = torch.as_tensor(ids[start : start + block], dtype=torch.long)
            chunk_words = words[start : start + block]
            labels = _mask_whole_words(chunk, chunk_words, probability, generator)
            masked = labels != -100
            roll = torch.rand(len(chunk), generator=generator)
            random_tokens = torch.randint(n_vocabulary, (len(chunk),), generator=generator)
            inputs = chunk.clone()
            inputs[masked & (roll < 0.8)] = tokenizer.mask_token_id
            swap = masked & (roll >= 0.8) & (roll < 0.9)
            inputs[swap] = random_tokens[swap]
            if len(specials) == 2:
                cls, sep = torch.tensor(specials[:1]), torch.tensor(specials[1:])
                ignore = torch.tensor([-100])
                inputs = torch.cat([cls, inputs, sep])
                labels = torch.cat([ignore, labels, ignore])
            blocks.append((inputs, labels))
        if budget == 0:
            break
    return blocks


def _mask_whole_words(chunk, words, probability, generator):
    groups, previous = [], object()
    for position, word in enumerate(words):
        if word is None or word != previous:
            groups.append([position])
        else:
            groups[-1].append(position)
        previous = word
    chosen = torch.rand(len(groups), generator=generator) < probability
    if not chosen.any():
        chosen[torch.randint(len(groups), (1,), generator=generator)] = True
    labels = torch.full_like(chunk, -100)
    for group, keep in zip(groups, chosen.tolist(), strict=True):
        if keep:
            labels[group] = chunk[group]
    return labels


def token_counts(tokenizer, texts, n_rows=None):
    """How often each token occurs in texts: a ``sample_weight`` for a compressor's fit.

    Parameters
    ----------
    tokenizer : transformers tokenizer
    texts : str or list of str
    n_rows : int, default=None
        Length of the result when the model's embedding has more rows than the tokenizer
        has tokens; ``None`` gives ``len(tokenizer)``.

    Returns
    -------
    counts : ndarray of shape (n_rows,), dtype float64
    """
    texts = check_texts(texts)
    n_rows = len(tokenizer) if n_rows is None else n_rows
    if n_rows < len(tokenizer):
        raise ValueError(
            f"n_rows={n_rows} is smaller than the tokenizer's {len(tokenizer)} tokens."
        )
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    flat = np.fromiter((i for row in ids for i in row), dtype=np.int64)
    return np.bincount(flat, minlength=n_rows).astype(np.float64)


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
