"""Save a patched model as a folder that holds it without its embedding matrix, and
load it back from that folder alone (or onto a base model already in memory)."""

import json
import logging
import warnings
from pathlib import Path

import torch

from ...codecs import load_table, save_table
from ._models import model_class
from ._patch import _PATCH_ATTR, patch_embeddings, patch_state

_PATCH_FILE = "patch.json"
_TABLE_FILE = "table.safetensors"
_WEIGHTS_FILE = "model.safetensors"
_PATCH_FORMAT = "skdirection-patch"
_VERSION = 2


def save_compressed(model, directory, tokenizer=None):
    """Write a patched model to a folder that holds everything but the replaced matrix.

    The folder holds the model's config (``config.json``), every weight the patch did
    not replace (``model.safetensors``: an untied head that kept the original matrix
    is kept too), the stored table (``table.safetensors``, see
    :func:`skdirection.save_table`), a small ``patch.json``, and the tokenizer when
    given. :func:`load_compressed` rebuilds the patched model from it alone: the
    original embedding is never written, read or downloaded. Nothing is pickled.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A model patched by :func:`patch_embeddings`.
    directory : str or path-like
        Created if missing.
    tokenizer : transformers tokenizer, default=None
        Saved beside the model when given.

    Returns
    -------
    directory : pathlib.Path

    See Also
    --------
    load_compressed : Rebuild the patched model from the folder.
    """
    from safetensors.torch import save_file

    state = patch_state(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(directory)
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and model.can_generate():
        generation_config.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    save_table(state["table"], directory / _TABLE_FILE)
    save_file(
        _kept_weights(model, state["paths"]),
        directory / _WEIGHTS_FILE,
        metadata={"format": "pt"},
    )
    description = {
        "format": _PATCH_FORMAT,
        "version": _VERSION,
        "target": state["target"],
        "architecture": type(model).__name__,
        # Not kept in config.json, and numerics differ between implementations.
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
    }
    (directory / _PATCH_FILE).write_text(json.dumps(description, indent=2))
    return directory


def _kept_weights(model, replaced_paths):
    """Every tensor of the model's state outside the replaced modules (each storage
    once), and the biases those modules kept from the originals."""
    kept_biases = {f"{path}.bias" for path in replaced_paths}
    replaced = tuple(f"{path}." for path in replaced_paths)
    tensors, seen = {}, set()
    for name, tensor in model.state_dict().items():
        if name.startswith(replaced) and name not in kept_biases:
            continue
        storage = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
        if storage in seen:
            continue  # a tied copy: transformers ties it again on load
        seen.add(storage)
        tensors[name] = tensor.detach().contiguous().cpu()
    return tensors


def _read_description(directory):
    path = Path(directory) / _PATCH_FILE
    if not path.is_file():
        raise ValueError(
            f"{Path(directory)} holds no readable {_PATCH_FILE}: it is not a folder "
            "written by save_compressed."
        )
    try:
        description = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} cannot be read: {exc}") from None
    if not isinstance(description, dict) or description.get("format") != _PATCH_FORMAT:
        raise ValueError(f"{path} is not an skdirection patch.")
    if description.get("target") not in ("input", "output", "both"):
        raise ValueError(f"{path} names no valid target.")
    return description


def load_compressed(directory, model=None, *, dtype=None):
    """The patched model saved in ``directory`` by :func:`save_compressed`.

    Without ``model``, the model is built from the folder alone: its config, its kept
    weights and the stored table; the original embedding matrix is never read. With a
    ``model`` (the uncompressed base model, already in memory), that model is patched
    in place with the stored table instead; this also reads folders written by
    earlier versions, which hold only the table. Nothing is unpickled.

    Parameters
    ----------
    directory : str or path-like
    model : transformers.PreTrainedModel, default=None
        A base model to patch rather than one built from the folder.
    dtype : torch.dtype, default=None
        Dtype of the built model's weights; ``None`` keeps the saved config's.

    Returns
    -------
    model : transformers.PreTrainedModel
        Patched (see :func:`patch_report`); in eval mode when built here.
    """
    if isinstance(directory, torch.nn.Module):  # the earlier order (model, directory)
        warnings.warn(
            "load_compressed(model, directory) is deprecated: call "
            "load_compressed(directory, model=model); it returns the model.",
            FutureWarning,
            stacklevel=2,
        )
        directory, model = model, directory
        target = _read_description(directory)["target"]
        return patch_embeddings(model, _table(directory), target)
    description = _read_description(directory)
    if model is not None:
        patch_embeddings(model, _table(directory), description["target"])
        return model
    directory = Path(directory)
    for name in ("config.json", _WEIGHTS_FILE, _TABLE_FILE):
        if not (directory / name).is_file():
            raise ValueError(
                f"{directory} holds no {name}: it was written by an earlier "
                "save_compressed (or is incomplete) and holds only the table; pass the "
                "base model: load_compressed(directory, model=base_model)."
                if description.get("version", 1) < _VERSION
                else f"{directory} lacks {name}, which save_compressed writes."
            )
    model = _skeleton(
        directory,
        description["architecture"],
        dtype,
        description.get("attn_implementation"),
    )
    patch_embeddings(model, _table(directory), description["target"])
    getattr(model, _PATCH_ATTR)["restorable"] = False
    return model.eval()


def _table(directory):
    return load_table(Path(directory) / _TABLE_FILE)


def _skeleton(directory, architecture, dtype, attn_implementation):
    """The model built from the folder's config and kept weights; the replaced matrix,
    absent from the folder, is left as transformers initialises it."""
    from safetensors.torch import load_file

    cls = model_class(architecture)
    quiet = logging.getLogger("transformers.modeling_utils")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "weights not initialized from the checkpoint": expected
    try:
        kwargs = {} if dtype is None else {"dtype": dtype}
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        model = cls.from_pretrained(directory, local_files_only=True, **kwargs)
    finally:
        quiet.setLevel(level)
    weights = load_file(directory / _WEIGHTS_FILE)
    # transformers re-ties a tied head to the (absent) embedding on load: put back the
    # head an input-only patch kept.
    unexpected = model.load_state_dict(weights, strict=False).unexpected_keys
    if unexpected:
        raise ValueError(
            f"{directory / _WEIGHTS_FILE} holds weights a {architecture} has not: "
            f"{unexpected[:5]}"
        )
    return model
