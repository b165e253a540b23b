"""What a model is and where its tables sit: the one place that reads a transformers
model's structure (input embedding, head, kind of language model, limits)."""

from pathlib import Path

import torch

# Models that install by name: the CLI's --model names and their loaders in
# skdirection.datasets.
MODELS = {"smollm2": "load_smollm2", "gemma3": "load_gemma3", "minilm": "load_minilm"}


def input_embedding(model):
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


def output_embedding(model):
    getter = getattr(model, "get_output_embeddings", None)
    if getter is None:
        return None
    try:
        return getter()
    except NotImplementedError:
        return None


def embedding_matrix(module, what):
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise TypeError(
            f"the model's {what} is a {type(module).__name__} with no 2-D weight matrix; "
            "only embedding/linear layers can be patched (is the model already patched?)."
        )
    return weight


def check_vocabulary(model, tokenizer):
    n_rows = input_embedding(model).num_embeddings
    if len(tokenizer) > n_rows:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding has "
            f"{n_rows} rows: they do not belong to the same model."
        )


def language_model_kind(model, kind):
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


def max_positions(model, default):
    config = model.config
    limit = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None
    )
    return default if limit is None else min(default, limit)


def model_device(model):
    return next(model.parameters()).device


def is_language_model(model):
    """Whether the model has a language-model head (causal or masked)."""
    try:
        language_model_kind(model, "auto")
    except TypeError:
        return False
    return True


def load_model(name):
    """``(model, tokenizer)`` of a model the package knows by name (see
    :data:`MODELS`) or of a local transformers model folder, in eval mode.

    A folder's model class follows its config's ``architectures``: a causal or masked
    language model with its head, else the bare model.
    """
    from ... import datasets

    if name in MODELS:
        return getattr(datasets, MODELS[name])()
    folder = Path(name)
    if not folder.is_dir():
        raise ValueError(
            f"model must be one of {sorted(MODELS)} or a model folder; {name!r} is neither."
        )
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoTokenizer,
    )

    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    architectures = " ".join(getattr(config, "architectures", None) or [])
    if "CausalLM" in architectures or "LMHead" in architectures:
        auto = AutoModelForCausalLM
    elif "MaskedLM" in architectures:
        auto = AutoModelForMaskedLM
    else:
        auto = AutoModel
    model = auto.from_pretrained(folder, local_files_only=True)
    return model.eval(), AutoTokenizer.from_pretrained(folder, local_files_only=True)


def model_class(architecture):
    """The transformers model class named ``architecture`` (e.g. ``"LlamaForCausalLM"``)."""
    import transformers

    cls = getattr(transformers, str(architecture), None)
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise ValueError(f"{architecture!r} is not a transformers model class.")
    return cls
