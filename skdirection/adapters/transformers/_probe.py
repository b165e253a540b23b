"""Which modules hold a table, and what each does besides looking rows up: probed,
so that a patch reproduces it or refuses."""

import torch
from torch import nn

from ...nn import CompressedEmbedding, CompressedLMHead


def parameter_names(model, parameter):
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
    for name in parameter_names(model, weight):
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
                f"{module.max_norm}); skdirection cannot reproduce that and refuses to "
                "patch."
            )
        if type(module).forward is nn.Embedding.forward:
            return None
    n_rows = weight.shape[0]
    ids = torch.linspace(
        0, n_rows - 1, min(_PROBE_ROWS, n_rows), device=weight.device
    ).long()
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
    if not torch.allclose(
        out,
        expected,
        rtol=tolerance,
        atol=tolerance * float(expected.abs().max().clamp_min(1e-30)),
    ):
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
    if (
        not isinstance(out, torch.Tensor)
        or out.shape != expected.shape
        or not torch.allclose(
            out.double(), expected.double(), rtol=tolerance, atol=tolerance
        )
    ):
        raise ValueError(f"{refusal}.")


def replacements(model, weight, head, table, target):
    """``(parent, name, old, new)`` for every module that the patch replaces."""
    holders = _holders(model, weight)
    is_head = [child is head for _, _, child in holders]
    new_modules = {}  # one replacement per module, however many places hold it
    plan = []
    for (parent, name, child), head_role in zip(holders, is_head, strict=True):
        if head_role and target in ("output", "both"):
            if id(child) not in new_modules:
                _check_linear_head(child, weight)
                new_modules[id(child)] = CompressedLMHead(
                    table, getattr(child, "bias", None)
                )
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


def _probe_inputs(model, weight):
    """A few token ids (and decoder ids for an encoder-decoder) to run the model on."""
    ids = torch.arange(1, 5, device=weight.device) % weight.shape[0]
    inputs = {"input_ids": ids[None]}
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        vocab = getattr(config, "decoder_vocab_size", None) or weight.shape[0]
        inputs["decoder_input_ids"] = (torch.arange(1, 3, device=weight.device) % vocab)[
            None
        ]
    return inputs


def _probe_output(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    for name in ("logits", "last_hidden_state"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    return out[0] if isinstance(out, tuple) else out


def reference_output(model, weight):
    """``(inputs, output)`` of the unpatched model on a few tokens, or a clear error
    when the model cannot run on token ids alone."""
    inputs = _probe_inputs(model, weight)
    try:
        return inputs, _probe_output(model, inputs)
    except Exception as exc:  # noqa: BLE001 - the model's own failure, reported
        raise ValueError(
            f"{type(model).__name__} cannot run on token ids alone ({exc}); skdirection "
            "checks every patch by running the model and refuses what it cannot check."
        ) from None


def check_patched(model, plan, inputs, reference):
    """Run the patched model on the probe tokens and refuse a patch it does not use.

    The new input embeddings are made to return zeros: if the output stays the same,
    the forward never reads them (an encoder-decoder whose encoder and decoder keep
    their own matrices); a replaced head must produce the logits' last dimension.
    """
    embeddings = [new for *_, new in plan if isinstance(new, CompressedEmbedding)]
    heads = [new for *_, new in plan if isinstance(new, CompressedLMHead)]
    hooks = [
        module.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
        for module in embeddings
    ]
    try:
        output = _probe_output(model, inputs)
    except Exception as exc:  # noqa: BLE001 - any failure means a use we cannot replace
        raise ValueError(
            f"the patched {type(model).__name__} fails to run ({type(exc).__name__}: "
            f"{exc}): it uses the embedding matrix in a way skdirection cannot replace, "
            "so it refuses to patch it."
        ) from None
    finally:
        for hook in hooks:
            hook.remove()
    if embeddings and torch.equal(output, reference):
        raise ValueError(
            f"{type(model).__name__} does not read the input embedding that "
            "get_input_embeddings() returns (its encoder and decoder may keep matrices "
            "of their own): patching it would change nothing, so skdirection refuses."
        )
    for head in heads:
        if output.shape[-1] != head.out_features:
            raise ValueError(
                f"get_output_embeddings() of {type(model).__name__} has "
                f"{head.out_features} rows but the model gives {output.shape[-1]} "
                "logits: it is not the vocabulary head, so skdirection refuses to "
                "patch it."
            )
