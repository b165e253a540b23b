"""How much an output head's error costs: the second moment of the head's inputs."""

import torch

from ._models import max_positions, model_device, output_embedding
from ._text import causal_windows, check_texts


def head_moment(model, tokenizer, texts, *, max_tokens=16384, max_length=None):
    """Second moment ``H = E[h h^T]`` of the hidden states the output head reads.

    A head row's error ``e`` moves that token's logit by ``h . e``, so its expected
    squared logit error over the texts is ``e^T H e``. The diagonal of ``H`` is the
    ``column_weight`` of :class:`~skdirection.ColumnWeightedCompressor` for a tied
    table (``target="both"``). Measure it on calibration text, not on the text the
    model is evaluated on.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A model with an output head (``get_output_embeddings()``).
    tokenizer : transformers tokenizer
    texts : str or list of str
        Calibration text; its first ``max_tokens`` tokens are read.
    max_tokens : int or None, default=16384
        Tokens read (``None``: all of them).
    max_length : int, default=None
        Tokens a forward pass; ``None`` is the model's context (at most 1024).

    Returns
    -------
    moment : ndarray of shape (n_features, n_features), dtype float64
        ``sum(h h^T) / n_tokens`` over every token the head saw.

    Examples
    --------
    ``H = head_moment(model, tokenizer, load_wikipedia_text(), max_tokens=8192)``, then
    ``ColumnWeightedCompressor(FrequencyMixedCompressor(16), column_weight=np.diag(H))``.
    """
    texts = check_texts(texts)
    head = output_embedding(model)
    if head is None:
        raise ValueError(
            f"{type(model).__name__} has no output head (get_output_embeddings() "
            "returned nothing): there is no head moment to measure."
        )
    # Windows that do not overlap: every token is read once.
    max_length = max_length or max_positions(model, 1024)
    windows = causal_windows(
        model, tokenizer, texts, max_length, max_length, max_tokens, every_token=False
    )
    device = model_device(model)
    totals = {"moment": None, "count": 0}

    def accumulate(module, args):
        hidden = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
        product = hidden.T @ hidden
        totals["moment"] = (
            product if totals["moment"] is None else totals["moment"] + product
        )
        totals["count"] += hidden.shape[0]

    was_training = model.training
    model.eval()
    handle = head.register_forward_pre_hook(accumulate)
    try:
        with torch.no_grad():
            for window, _ in windows:
                before = totals["count"]
                model(input_ids=window[None].to(device))
                if totals["count"] == before:
                    raise ValueError(
                        f"{type(model).__name__}'s forward did not call its output head."
                    )
    finally:
        handle.remove()
        model.train(was_training)
    return (totals["moment"] / totals["count"]).cpu().numpy()
