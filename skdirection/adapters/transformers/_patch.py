"""Put a stored table in a model in place of its embedding, head or both; undo it."""

from dataclasses import asdict, dataclass

import torch

from ...codecs import CompressedTable
from ...nn import count_parameters
from ._models import embedding_matrix, input_embedding, output_embedding
from ._probe import check_patched, parameter_names, reference_output, replacements

TARGETS = ("input", "output", "both")
_PATCH_ATTR = "_skdirection_patch"


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
    embedding = input_embedding(model)
    head = output_embedding(model)
    weight = embedding_matrix(embedding, "input embedding")
    tied = head is not None and getattr(head, "weight", None) is weight
    if target != "input":
        if head is None:
            raise ValueError(
                f"{type(model).__name__} has no output head (get_output_embeddings() "
                f"returned nothing), so target={target!r} is impossible; use 'input'."
            )
        if target == "output":
            weight = embedding_matrix(head, "output head")
    if target == "both" and not tied:
        raise ValueError(
            "target='both' shares one table between the input embedding and the head, "
            "which needs a model whose head is tied to its input embedding; this one has "
            "two matrices: patch 'input' or 'output'."
        )
    table = _as_table(compressor, weight)
    plan = replacements(model, weight, head, table, target)
    params_before = count_parameters(model)
    names = parameter_names(model, weight)
    _apply_checked(model, plan, weight)
    paths = {id(module): path for path, module in model.named_modules()}
    state = {
        "target": target,
        "replaced": [(parent, name, old) for parent, name, old, _ in plan],
        "paths": sorted({".".join(filter(None, (paths[id(p)], n))) for p, n, *_ in plan}),
        "restorable": True,
        "tied_keys": getattr(model, "all_tied_weights_keys", None),
    }
    if tied and state["tied_keys"] is not None:
        # Untie in the bookkeeping transformers reads when it re-ties weights; the
        # config's flag stays, since some models' forward reads it.
        model.all_tied_weights_keys = {
            key: source
            for key, source in state["tied_keys"].items()
            if key not in names and source not in names
        }
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


def _apply_checked(model, plan, weight):
    """Put the new modules in; take them out again and raise if the patched model does
    not run on a few tokens or does not use them (see ``check_patched``)."""
    was_training = model.training
    model.eval()
    try:
        inputs, reference = reference_output(model, weight)
        for parent, name, _, new in plan:
            setattr(parent, name, new)
        try:
            check_patched(model, plan, inputs, reference)
        except BaseException:
            for parent, name, old, _ in plan:
                setattr(parent, name, old)
            raise
    finally:
        model.train(was_training)


def patch_state(model):
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
    state = patch_state(model)
    if not state["restorable"]:
        raise ValueError(
            "the model was built from a compressed folder: it has no original embedding "
            "to put back."
        )
    for parent, name, old in state["replaced"]:
        setattr(parent, name, old)
    if state["tied_keys"] is not None:
        model.all_tied_weights_keys = state["tied_keys"]
    object.__delattr__(model, _PATCH_ATTR)
    return model


def patch_report(model):
    """The :class:`PatchReport` of a patched model."""
    return patch_state(model)["report"]
