"""Save a patched model's table, and load it back."""

import json
from pathlib import Path

from ...codecs import load_table, save_table
from ._patch import patch_embeddings, patch_state

_PATCH_FILE = "patch.json"
_TABLE_FILE = "table.safetensors"
_PATCH_FORMAT = "skdirection-patch"


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
    state = patch_state(model)
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
