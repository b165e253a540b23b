"""Compressed embeddings inside Hugging Face transformers models, and what they cost.

A fitted compressor stores an embedding matrix as a :class:`~skdirection.CompressedTable`
(for the autoencoder: the latent table and the decoder; the encoder is not kept).
:func:`patch_embeddings` puts that table in a model in place of its input embedding, its
output head, or both, and reports the parameters saved; :func:`unpatch_embeddings` puts
the original back exactly; :func:`perplexity` measures what the compression costs.

This module imports transformers only when a function needs it, and ``import
skdirection`` never imports this module.
"""

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._table import CompressedTable, load_table, save_table

__all__ = [
    "CompressedEmbedding",
    "CompressedLMHead",
    "PatchReport",
    "count_parameters",
    "load_compressed",
    "patch_embeddings",
    "patch_report",
    "perplexity",
    "save_compressed",
    "sentence_embeddings",
    "token_counts",
    "unpatch_embeddings",
]

TARGETS = ("input", "output", "both")
_PATCH_ATTR = "_skdirection_patch"
_PATCH_FILE = "patch.json"
_TABLE_FILE = "table.safetensors"
_PATCH_FORMAT = "skdirection-patch"


class CompressedEmbedding(nn.Module):
    """An input embedding whose rows are decoded from a compressed table.

    It holds only what the compressor stores (for a low-rank table: the ``V x k`` latent
    table and the decoder), as frozen parameters, so ``model.num_parameters()`` counts
    them.

    Parameters
    ----------
    table : CompressedTable
        The stored form of the embedding matrix.
    padding_idx : int or None, default=None
        Kept for code that reads it from the embedding it replaces.
    dtype : torch.dtype or None, default=None
        Dtype of the decoded rows (the replaced embedding's); ``None`` keeps the table's.
    scale : float or None, default=None
        Constant the replaced embedding multiplied its rows by (Gemma's and BART's
        scaled embeddings use the square root of the hidden size); ``None`` for a plain
        lookup.

    Examples
    --------
    >>> import torch
    >>> from skdirection import LowRankTable
    >>> table = LowRankTable(torch.ones(10, 2), [torch.ones(2, 4)])
    >>> CompressedEmbedding(table)(torch.tensor([[1, 2, 3]])).shape
    torch.Size([1, 3, 4])
    """

    def __init__(self, table, padding_idx=None, dtype=None, scale=None):
        super().__init__()
        self.table = table
        self.padding_idx = padding_idx
        self.dtype = dtype
        self.scale = scale

    @property
    def num_embeddings(self):
        return self.table.num_embeddings

    @property
    def embedding_dim(self):
        return self.table.embedding_dim

    @property
    def n_parameters(self):
        """Number of stored values (the table's)."""
        return self.table.n_parameters

    def forward(self, input_ids):
        rows = self.table.decode(input_ids.reshape(-1))
        rows = rows.reshape(*input_ids.shape, rows.shape[-1])
        if self.scale is not None:
            rows = rows * self.scale
        return rows if self.dtype is None else rows.to(self.dtype)

    def extra_repr(self):
        scale = "" if self.scale is None else f", scale={self.scale:g}"
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, "
            f"n_parameters={self.n_parameters}{scale}"
        )


class CompressedLMHead(nn.Module):
    """An output head whose weight matrix is decoded from a compressed table.

    ``logits = hidden @ table.decode().T + bias``: every row is decoded at each call.

    Parameters
    ----------
    table : CompressedTable
        The stored form of the head's ``V x d`` weight matrix.
    bias : torch.nn.Parameter or None, default=None
        The replaced head's bias, kept as it is.
    """

    def __init__(self, table, bias=None):
        super().__init__()
        self.table = table
        self.bias = bias

    @property
    def out_features(self):
        return self.table.num_embeddings

    @property
    def in_features(self):
        return self.table.embedding_dim

    @property
    def n_parameters(self):
        """Number of stored values (the table's and the bias)."""
        bias = 0 if self.bias is None else self.bias.numel()
        return self.table.n_parameters + bias

    def forward(self, hidden):
        weight = self.table.decode().to(hidden.dtype)
        return nn.functional.linear(hidden, weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


@dataclass
class PatchReport:
    """What a patch saves; every count is of unique parameters (a tied weight once).

    Attributes
    ----------
    target : str
        ``"input"``, ``"output"`` or ``"both"``.
    untied_head : bool
        Whether the model's head was tied to its input embedding and the patch untied it
        (the head kept the original matrix, or the input embedding did).
    embedding_params_before, embedding_params_after : int
        Values in the replaced matrix, and in the table that replaces it.
    model_params_before, model_params_after : int
        Parameters of the whole model.
    embedding_ratio : float
        ``embedding_params_before / embedding_params_after``.
    model_ratio : float
        ``model_params_before / model_params_after``; below 1 when an untied head keeps
        the original matrix beside the table.
    """

    target: str
    untied_head: bool
    embedding_params_before: int
    embedding_params_after: int
    model_params_before: int
    model_params_after: int
    embedding_ratio: float
    model_ratio: float

    def as_dict(self):
        return asdict(self)


def count_parameters(model):
    """Number of unique parameters of a module: a tensor shared by two layers counts once.

    Examples
    --------
    >>> from torch import nn
    >>> count_parameters(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in model.parameters())


def _input_embedding(model):
    getter = getattr(model, "get_input_embeddings", None)
    embedding = None
    if getter is not None:
        try:
            embedding = getter()
        except NotImplementedError:
            embedding = None
    if embedding is None:
        raise ValueError(
            f"{type(model).__name__} has no input embedding (get_input_embeddings() "
            "returned nothing): there is no table to compress."
        )
    return embedding


def _output_embedding(model):
    getter = getattr(model, "get_output_embeddings", None)
    if getter is None:
        return None
    try:
        return getter()
    except NotImplementedError:
        return None


def _embedding_matrix(module, what):
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise TypeError(
            f"the model's {what} is a {type(module).__name__} with no 2-D weight matrix; "
            "only embedding/linear layers can be patched (is the model already patched?)."
        )
    return weight


def _as_table(compressor, weight):
    n_rows, n_features = weight.shape
    if isinstance(compressor, CompressedTable):
        table = compressor
    else:
        if not hasattr(compressor, "compress"):
            raise TypeError(
                "compressor must be a fitted skdirection compressor or a CompressedTable, "
                f"got {type(compressor).__name__}."
            )
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(compressor)
        except NotFittedError:
            raise ValueError(
                f"{type(compressor).__name__} is not fitted: fit it on the model's "
                f"embedding matrix ({n_rows} x {n_features}) before patching."
            ) from None
        fitted = getattr(compressor, "n_features_in_", n_features)
        if fitted != n_features:
            raise ValueError(
                f"{type(compressor).__name__} was fitted on rows of {fitted} values, but "
                f"the model's embedding matrix is {n_rows} x {n_features}."
            )
        table = compressor.compress(weight.detach().to("cpu", torch.float32).numpy())
    shape = (table.num_embeddings, table.embedding_dim)
    if shape != (n_rows, n_features):
        raise ValueError(
            f"the compressed table is {shape[0]} x {shape[1]}, but the model's embedding "
            f"matrix is {n_rows} x {n_features}."
        )
    return table.to(weight.device)


def _parameter_names(model, parameter):
    return {n for n, p in model.named_parameters(remove_duplicate=False) if p is parameter}


def _holders(model, weight):
    """Every ``(parent, name, module)`` where a module whose weight is ``weight`` sits.

    Encoder-decoders reach one table from several places (``shared``, the encoder's and
    the decoder's ``embed_tokens``, the head): each is found, so none keeps the original
    behind the patch's back. A parameter held any other way is refused.
    """
    seen, holders = set(), []
    for parent in model.modules():
        for name, child in parent.named_children():
            if getattr(child, "weight", None) is weight and (id(parent), name) not in seen:
                seen.add((id(parent), name))
                holders.append((parent, name, child))
    owners = {id(child) for _, _, child in holders}
    modules = dict(model.named_modules(remove_duplicate=False))
    for name in _parameter_names(model, weight):
        owner, _, attribute = name.rpartition(".")
        if attribute != "weight" or id(modules.get(owner)) not in owners:
            raise ValueError(
                f"the embedding matrix is also used as {name!r}, which is not an "
                "embedding or output layer: skdirection cannot replace it there, and "
                "patching the rest would change what the model computes."
            )
    return holders


# Rows probed to learn what an embedding module does besides the lookup.
_PROBE_ROWS = 64


def _tolerance(dtype):
    return 1e-5 if dtype in (torch.float32, torch.float64) else 2e-2


def _lookup_scale(module, weight):
    """The constant ``module`` multiplies its looked-up rows of ``weight`` by (``None``
    for none), or raise if it computes anything else."""
    name = type(module).__name__
    if isinstance(module, nn.Embedding):
        if module.max_norm is not None:
            raise ValueError(
                f"the model's {name} renormalises rows as it looks them up (max_norm="
                f"{module.max_norm}); skdirection cannot reproduce that and refuses to patch."
            )
        if type(module).forward is nn.Embedding.forward:
            return None
    n_rows = weight.shape[0]
    ids = torch.linspace(0, n_rows - 1, min(_PROBE_ROWS, n_rows), device=weight.device).long()
    refusal = (
        f"the model's input embedding {name} does more than look rows up and multiply "
        "them by a constant; skdirection cannot reproduce it and refuses to patch it"
    )
    try:
        with torch.no_grad():
            out = module(ids)
    except Exception as exc:  # noqa: BLE001 - any failure means we cannot model it
        raise ValueError(f"{refusal} (probing it failed: {exc}).") from None
    rows = weight.detach()[ids].double()
    if not isinstance(out, torch.Tensor) or out.shape != rows.shape:
        raise ValueError(f"{refusal} (it returns {getattr(out, 'shape', type(out))}).")
    out = out.detach().double()
    scale = getattr(module, "embed_scale", None)
    if isinstance(scale, torch.Tensor) and scale.numel() == 1:
        scale = float(scale)
    if not isinstance(scale, (int, float)):
        scale = float((out * rows).sum() / (rows * rows).sum().clamp_min(1e-300))
    expected = rows * scale
    tolerance = _tolerance(weight.dtype)
    if not torch.allclose(out, expected, rtol=tolerance, atol=tolerance * float(
        expected.abs().max().clamp_min(1e-30)
    )):
        raise ValueError(f"{refusal}.")
    return None if scale == 1 else float(scale)


def _check_linear_head(head, weight):
    """Refuse a head that computes anything but ``hidden @ weight.T + bias``."""
    if isinstance(head, nn.Linear) and type(head).forward is nn.Linear.forward:
        return
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, weight.shape[1], generator=generator).to(weight)
    bias = getattr(head, "bias", None)
    refusal = (
        f"the model's output head {type(head).__name__} does more than multiply hidden "
        "states by its weight matrix (and add a bias); skdirection refuses to patch it"
    )
    try:
        with torch.no_grad():
            out = head(hidden)
            expected = nn.functional.linear(hidden, weight, bias)
    except Exception as exc:  # noqa: BLE001 - any failure means we cannot model it
        raise ValueError(f"{refusal} (probing it failed: {exc}).") from None
    tolerance = _tolerance(weight.dtype)
    if not isinstance(out, torch.Tensor) or out.shape != expected.shape or not torch.allclose(
        out.double(), expected.double(), rtol=tolerance, atol=tolerance
    ):
        raise ValueError(f"{refusal}.")


def _replacements(model, weight, head, table, target):
    """``(parent, name, old, new)`` for every module that the patch replaces."""
    holders = _holders(model, weight)
    is_head = [child is head for _, _, child in holders]
    new_modules = {}  # one replacement per module, however many places hold it
    plan = []
    for (parent, name, child), head_role in zip(holders, is_head, strict=True):
        if head_role and target in ("output", "both"):
            if id(child) not in new_modules:
                _check_linear_head(child, weight)
                new_modules[id(child)] = CompressedLMHead(table, getattr(child, "bias", None))
        elif not head_role and target in ("input", "both"):
            if id(child) not in new_modules:
                scale = _lookup_scale(child, weight)
                new_modules[id(child)] = CompressedEmbedding(
                    table, getattr(child, "padding_idx", None), weight.dtype, scale
                )
        else:
            continue
        plan.append((parent, name, child, new_modules[id(child)]))
    return plan


def patch_embeddings(model, compressor, target="input"):
    """Replace a model's embedding matrix by what a fitted compressor stores.

    Every module that holds the matrix is replaced: the input embedding wherever the
    model reaches it (an encoder-decoder's shared table, its encoder's and decoder's
    ``embed_tokens``), and the output head for ``"output"`` and ``"both"``. What such a
    module does besides the lookup (a constant scale, as in Gemma's and BART's scaled
    embeddings), the replacement does too; a module that does anything else is refused
    with a ``ValueError``, never patched approximately.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        Patched in place.
    compressor : fitted compressor or CompressedTable
        A compressor fitted on the model's embedding matrix (its ``compress`` is applied
        to that matrix), or a table already made from it.
    target : {"input", "output", "both"}, default="input"
        ``"input"`` replaces the input embedding and leaves the output head with the
        original matrix (the paper's protocol); a head tied to the input embedding is
        untied first and keeps the original matrix as its own parameter. ``"output"``
        replaces the head (a tied input embedding keeps the original matrix). ``"both"``
        replaces both by one shared table; it needs a tied model.

    Returns
    -------
    report : PatchReport
        Parameters of the embedding and of the whole model before and after.

    Raises
    ------
    ValueError
        If the model is already patched, has no input embedding (or no head for
        ``"output"``/``"both"``), holds the matrix in a layer that is not a plain (or
        constant-scaled) lookup or linear head, the compressor is not fitted, or it was
        fitted on a matrix of another shape.

    See Also
    --------
    unpatch_embeddings : Restore the original embedding and tie.
    save_compressed : Write the patch to a directory with safetensors.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}.")
    if getattr(model, _PATCH_ATTR, None) is not None:
        raise ValueError(
            "the model is already patched; call unpatch_embeddings(model) before patching "
            "it again."
        )
    embedding = _input_embedding(model)
    head = _output_embedding(model)
    weight = _embedding_matrix(embedding, "input embedding")
    tied = head is not None and getattr(head, "weight", None) is weight
    if target != "input":
        if head is None:
            raise ValueError(
                f"{type(model).__name__} has no output head (get_output_embeddings() "
                f"returned nothing), so target={target!r} is impossible; use 'input'."
            )
        if target == "output":
            weight = _embedding_matrix(head, "output head")
    if target == "both" and not tied:
        raise ValueError(
            "target='both' shares one table between the input embedding and the head, "
            "which needs a model whose head is tied to its input embedding; this one has "
            "two matrices: patch 'input' or 'output'."
        )
    table = _as_table(compressor, weight)
    plan = _replacements(model, weight, head, table, target)

    params_before = count_parameters(model)
    state = {
        "target": target,
        "replaced": [(parent, name, old) for parent, name, old, _ in plan],
        "tied_keys": getattr(model, "all_tied_weights_keys", None),
    }
    if tied and state["tied_keys"] is not None:
        # Untie in the bookkeeping transformers reads when it re-ties weights; the
        # config's flag stays, since some models' forward reads it.
        names = _parameter_names(model, weight)
        model.all_tied_weights_keys = {
            key: source
            for key, source in state["tied_keys"].items()
            if key not in names and source not in names
        }
    for parent, name, _, new in plan:
        setattr(parent, name, new)
    report = PatchReport(
        target=target,
        untied_head=tied and target != "both",
        embedding_params_before=weight.numel(),
        embedding_params_after=table.n_parameters,
        embedding_ratio=weight.numel() / table.n_parameters,
        model_params_before=params_before,
        model_params_after=count_parameters(model),
        model_ratio=params_before / count_parameters(model),
    )
    state["report"] = report
    state["table"] = table
    # A plain attribute, not a submodule: the originals must not count as parameters.
    object.__setattr__(model, _PATCH_ATTR, state)
    return report


def _patch_state(model):
    state = getattr(model, _PATCH_ATTR, None)
    if state is None:
        raise ValueError("the model is not patched: there is nothing to undo or save.")
    return state


def unpatch_embeddings(model):
    """Put back the embedding and head a patch replaced, and their tie, exactly.

    The original modules (the very same parameter objects) return, so the model gives
    the same outputs as before the patch, bit for bit.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A model patched by :func:`patch_embeddings`; restored in place.

    Returns
    -------
    model : transformers.PreTrainedModel
    """
    state = _patch_state(model)
    for parent, name, old in state["replaced"]:
        setattr(parent, name, old)
    if state["tied_keys"] is not None:
        model.all_tied_weights_keys = state["tied_keys"]
    object.__delattr__(model, _PATCH_ATTR)
    return model


def patch_report(model):
    """The :class:`PatchReport` of a patched model."""
    return _patch_state(model)["report"]


def save_compressed(model, directory):
    """Write a patched model's compressed table and patch description to a directory.

    Only the table (``table.safetensors``, see :func:`skdirection.save_table`) and a small
    ``patch.json`` are written: the rest of the model is the base model, loaded as usual.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A model patched by :func:`patch_embeddings`.
    directory : str or path-like
        Created if missing.

    See Also
    --------
    load_compressed : Patch a freshly loaded base model from that directory.
    """
    state = _patch_state(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_table(state["table"], directory / _TABLE_FILE)
    description = {"format": _PATCH_FORMAT, "version": 1, "target": state["target"]}
    (directory / _PATCH_FILE).write_text(json.dumps(description, indent=2))


def load_compressed(model, directory):
    """Patch a freshly loaded base model with a table written by :func:`save_compressed`.

    Nothing is unpickled: the table is read with safetensors, the patch from JSON.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The uncompressed base model the table was made from; patched in place.
    directory : str or path-like

    Returns
    -------
    report : PatchReport
    """
    directory = Path(directory)
    try:
        description = json.loads((directory / _PATCH_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{directory} holds no readable {_PATCH_FILE}: {exc}") from None
    if not isinstance(description, dict) or description.get("format") != _PATCH_FORMAT:
        raise ValueError(f"{directory / _PATCH_FILE} is not an skdirection patch.")
    table = load_table(directory / _TABLE_FILE)
    return patch_embeddings(model, table, target=description["target"])


def _check_texts(texts):
    if isinstance(texts, str):
        texts = [texts]
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError("texts is empty: give at least one non-blank string.")
    return texts


def _check_vocabulary(model, tokenizer):
    n_rows = _input_embedding(model).num_embeddings
    if len(tokenizer) > n_rows:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding has "
            f"{n_rows} rows: they do not belong to the same model."
        )


def _language_model_kind(model, kind):
    if kind != "auto":
        if kind not in ("causal", "masked"):
            raise ValueError(f"kind must be 'auto', 'causal' or 'masked', got {kind!r}.")
        return kind
    name = type(model).__name__
    if "MaskedLM" in name:
        return "masked"
    if "CausalLM" in name or "LMHead" in name:
        return "causal"
    raise TypeError(
        f"perplexity needs a language model with its head (…ForCausalLM or …ForMaskedLM); "
        f"{name} has none (pass kind='causal' or kind='masked' if it is one)."
    )


def _max_positions(model, default):
    config = model.config
    limit = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None
    )
    return default if limit is None else min(default, limit)


def _batches(items, batch_size):
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def _model_device(model):
    return next(model.parameters()).device


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

    texts = _check_texts(texts)
    kind = _language_model_kind(model, kind)
    _check_vocabulary(model, tokenizer)
    if max_tokens is not None and max_tokens < 2:
        raise ValueError(f"max_tokens must be at least 2, got {max_tokens}.")
    if kind == "causal":
        inputs = _causal_windows(model, tokenizer, texts, max_length, stride, max_tokens)
    else:
        inputs = _masked_blocks(
            model, tokenizer, texts, max_length, max_tokens, mlm_probability, random_state
        )
    device = _model_device(model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    batches = list(_batches(inputs, batch_size))
    try:
        with torch.no_grad():
            for batch in tqdm(batches, desc="perplexity", disable=not progress):
                ids, labels, mask = (t.to(device) for t in _collate(batch, tokenizer))
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


def _collate(batch, tokenizer):
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


def _causal_windows(model, tokenizer, texts, max_length, stride, max_tokens):
    ids = torch.as_tensor(_leading_token_ids(tokenizer, "\n\n".join(texts), max_tokens))
    if len(ids) < 2:
        raise ValueError("the texts hold fewer than 2 tokens: nothing to predict.")
    max_length = max_length or _max_positions(model, 1024)
    stride = stride or max(1, max_length // 2)
    if not 0 < stride <= max_length:
        raise ValueError(f"stride must be in [1, max_length={max_length}], got {stride}.")
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


def _masked_blocks(model, tokenizer, texts, max_length, max_tokens, probability, seed):
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no mask token: it is not a masked LM's.")
    encoding = tokenizer(texts, add_special_tokens=False)
    specials = [t for t in (tokenizer.cls_token_id, tokenizer.sep_token_id) if t is not None]
    block = (max_length or _max_positions(model, 512)) - len(specials)
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
            ids, words, budget = ids[:budget], words[:budget], budget - min(budget, len(ids))
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
    for group, keep in zip(groups, chosen.tolist()):
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
    texts = _check_texts(texts)
    n_rows = len(tokenizer) if n_rows is None else n_rows
    if n_rows < len(tokenizer):
        raise ValueError(
            f"n_rows={n_rows} is smaller than the tokenizer's {len(tokenizer)} tokens."
        )
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    flat = np.fromiter((i for row in ids for i in row), dtype=np.int64)
    return np.bincount(flat, minlength=n_rows).astype(np.float64)


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
    sentences = _check_texts(sentences)
    _check_vocabulary(model, tokenizer)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for batch in _batches(sentences, batch_size):
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
