"""A zoo of tiny Hugging Face models for ``skdirection.adapters.transformers``.

Every family is built from a tiny random config (hidden 32, 1-2 layers, vocabulary 160,
seeded, float32, eval mode, torch on one thread), so the whole file runs in about 15 s
on a 2-core CPU and needs no download. Edge families (``deberta_v2_nonlegacy``,
``bart_untied``, ``marian_separate_vocab``) are documented where they are defined.

For each family and each target (``"input"``, ``"output"``, ``"both"``) the tests patch
the model with a *lossless* table (:class:`skdirection.DenseTable` of the very matrix
the target replaces), so whatever the model computed before it must compute after:

* patched logits equal the original ones within 1e-5 (a dropped ``embed_scale`` fails
  here);
* no module that the target covers still holds the original weight Parameter (an
  encoder's or decoder's ``embed_tokens`` left behind fails here: with a lossless table
  it would not change the logits);
* with a *perturbed* table ``W + delta``, the patched model computes what the original
  model computes with ``W + delta`` put in every place the target covers (the semantic
  form of the two checks above);
* ``save_compressed`` / ``load_compressed`` into a freshly built copy gives the patched
  logits bit for bit;
* ``unpatch_embeddings`` gives the original logits bit for bit and puts every original
  module and parameter object back, with the original tie.

``target="both"`` on a model whose head is not tied to its input embedding must raise
``ValueError`` and leave the model untouched.

Three (family, target) pairs cannot be patched correctly and must be refused, leaving
the model untouched (see ``REFUSED``).

Run ``python tests/test_zoo.py`` to print each family's anatomy and result per target
as a Markdown table; ``-v`` adds the tracebacks.
"""

import copy
import sys
import traceback

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

import transformers  # noqa: E402

from skdirection import DenseTable  # noqa: E402
from skdirection.adapters.transformers import (  # noqa: E402
    load_compressed,
    patch_embeddings,
    save_compressed,
    unpatch_embeddings,
)

TARGETS = ("input", "output", "both")
# What cannot be patched correctly, and why; patch_embeddings must refuse it.
REFUSED = {
    # The head reads word_embeddings.weight in its forward: a replaced embedding breaks it.
    ("deberta_v2_nonlegacy", "input"): "fails to run",
    # get_output_embeddings() is a hidden x hidden transform, not the vocabulary head.
    ("deberta_v2_nonlegacy", "output"): "not the vocabulary head",
    # The forward never reads model.shared: encoder and decoder keep their own matrices.
    ("bart_untied", "input"): "does not read the input embedding",
}
TOLERANCE = 1e-5
SEED = 0
VOCAB = 160

# ----------------------------------------------------------------------------------
# The zoo: family name -> (kind, model class name, config class name, config kwargs).
# kind is "causal", "masked" or "seq2seq" (only used for documentation; ``logits``
# reads ``config.is_encoder_decoder``).
# ----------------------------------------------------------------------------------

_DECODER = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
_SEQ2SEQ = dict(
    vocab_size=VOCAB,
    d_model=32,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    max_position_embeddings=64,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
    decoder_start_token_id=2,
)
_BERT = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
)
_T5 = dict(
    vocab_size=VOCAB,
    d_model=32,
    d_kv=8,
    d_ff=64,
    num_layers=1,
    num_decoder_layers=1,
    num_heads=4,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=1,
)

ZOO = {
    # decoder-only
    "llama_tied": (
        "causal",
        "LlamaForCausalLM",
        "LlamaConfig",
        dict(_DECODER, tie_word_embeddings=True),
    ),
    "llama_untied": (
        "causal",
        "LlamaForCausalLM",
        "LlamaConfig",
        dict(_DECODER, tie_word_embeddings=False),
    ),
    "gpt2": (
        "causal",
        "GPT2LMHeadModel",
        "GPT2Config",
        dict(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2, n_positions=64),
    ),
    "opt": (
        "causal",
        "OPTForCausalLM",
        "OPTConfig",
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            word_embed_proj_dim=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            ffn_dim=64,
            max_position_embeddings=64,
            pad_token_id=1,
        ),
    ),
    "gpt_neox": (
        "causal",
        "GPTNeoXForCausalLM",
        "GPTNeoXConfig",
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            tie_word_embeddings=False,
        ),
    ),
    "gemma": ("causal", "GemmaForCausalLM", "GemmaConfig", dict(_DECODER, head_dim=8)),
    "gemma2": (
        "causal",
        "Gemma2ForCausalLM",
        "Gemma2Config",
        dict(
            _DECODER,
            head_dim=8,
            final_logit_softcapping=30.0,
            attn_logit_softcapping=50.0,
            sliding_window=16,
            attn_implementation="eager",
        ),
    ),
    "gemma3_text": (
        "causal",
        "Gemma3ForCausalLM",
        "Gemma3TextConfig",
        dict(
            _DECODER,
            num_hidden_layers=2,
            head_dim=8,
            final_logit_softcapping=30.0,
            sliding_window=16,
            layer_types=["sliding_attention", "full_attention"],
            attn_implementation="eager",
        ),
    ),
    "qwen2": (
        "causal",
        "Qwen2ForCausalLM",
        "Qwen2Config",
        dict(_DECODER, tie_word_embeddings=True),
    ),
    "mistral": (
        "causal",
        "MistralForCausalLM",
        "MistralConfig",
        dict(_DECODER, tie_word_embeddings=False),
    ),
    "phi": (
        "causal",
        "PhiForCausalLM",
        "PhiConfig",
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            max_position_embeddings=64,
        ),
    ),
    "bloom": (
        "causal",
        "BloomForCausalLM",
        "BloomConfig",
        dict(vocab_size=VOCAB, hidden_size=32, n_layer=1, n_head=2),
    ),
    "xglm": (
        "causal",
        "XGLMForCausalLM",
        "XGLMConfig",
        dict(
            vocab_size=VOCAB,
            d_model=32,
            num_layers=1,
            attention_heads=2,
            ffn_dim=64,
            max_position_embeddings=64,
        ),
    ),
    "biogpt": (
        "causal",
        "BioGptForCausalLM",
        "BioGptConfig",
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        ),
    ),
    # masked LMs
    "bert": ("masked", "BertForMaskedLM", "BertConfig", dict(_BERT)),
    "roberta": (
        "masked",
        "RobertaForMaskedLM",
        "RobertaConfig",
        dict(_BERT, max_position_embeddings=80, pad_token_id=1),
    ),
    "distilbert": (
        "masked",
        "DistilBertForMaskedLM",
        "DistilBertConfig",
        dict(
            vocab_size=VOCAB,
            dim=32,
            n_layers=1,
            n_heads=2,
            hidden_dim=64,
            max_position_embeddings=64,
        ),
    ),
    "albert": (
        "masked",
        "AlbertForMaskedLM",
        "AlbertConfig",
        dict(_BERT, embedding_size=16),
    ),
    "electra": (
        "masked",
        "ElectraForMaskedLM",
        "ElectraConfig",
        dict(_BERT, embedding_size=16),
    ),
    "deberta_v2": (
        "masked",
        "DebertaV2ForMaskedLM",
        "DebertaV2Config",
        dict(_BERT, max_relative_positions=16, position_buckets=8),
    ),
    # DeBERTa-v2 with its non-legacy head: the head reads word_embeddings.weight in
    # forward, and get_output_embeddings() is a hidden x hidden transform, not a head.
    "deberta_v2_nonlegacy": (
        "masked",
        "DebertaV2ForMaskedLM",
        "DebertaV2Config",
        dict(_BERT, max_relative_positions=16, position_buckets=8, legacy=False),
    ),
    # encoder-decoders
    "t5": ("seq2seq", "T5ForConditionalGeneration", "T5Config", dict(_T5)),
    # T5 v1.1 style: transformers 5 forces T5Config.tie_word_embeddings=True (the flag
    # only turns off the decoder-output rescaling), so this one is tied too.
    "t5_v1_1": (
        "seq2seq",
        "T5ForConditionalGeneration",
        "T5Config",
        dict(_T5, feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    ),
    "bart_scaled": (
        "seq2seq",
        "BartForConditionalGeneration",
        "BartConfig",
        dict(_SEQ2SEQ, scale_embedding=True),
    ),
    # Untied BART: transformers 5 then ties nothing, so model.shared (what
    # get_input_embeddings() returns), encoder.embed_tokens and decoder.embed_tokens
    # are three separate matrices, and the forward never reads model.shared.
    "bart_untied": (
        "seq2seq",
        "BartForConditionalGeneration",
        "BartConfig",
        dict(_SEQ2SEQ, scale_embedding=True, tie_word_embeddings=False),
    ),
    "m2m100": ("seq2seq", "M2M100ForConditionalGeneration", "M2M100Config", dict(_SEQ2SEQ)),
    "mbart_scaled": (
        "seq2seq",
        "MBartForConditionalGeneration",
        "MBartConfig",
        dict(_SEQ2SEQ, scale_embedding=True),
    ),
    "marian_scaled": (
        "seq2seq",
        "MarianMTModel",
        "MarianConfig",
        dict(_SEQ2SEQ, scale_embedding=True, pad_token_id=1, decoder_start_token_id=1),
    ),
    "pegasus_scaled": (
        "seq2seq",
        "PegasusForConditionalGeneration",
        "PegasusConfig",
        dict(_SEQ2SEQ, scale_embedding=True),
    ),
    # Marian with separate source/target vocabularies: the head is tied to the
    # decoder's embedding, not to the input (encoder) embedding.
    "marian_separate_vocab": (
        "seq2seq",
        "MarianMTModel",
        "MarianConfig",
        dict(
            _SEQ2SEQ,
            scale_embedding=True,
            pad_token_id=1,
            decoder_start_token_id=1,
            decoder_vocab_size=120,
            share_encoder_decoder_embeddings=False,
        ),
    ),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run far faster on one thread on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(family):
    """A fresh, seeded, float32, eval-mode model of ``family``: two calls give the
    same weights."""
    _, model_name, config_name, kwargs = ZOO[family]
    config = getattr(transformers, config_name)(**kwargs)
    torch.manual_seed(SEED)
    model = getattr(transformers, model_name)(config)
    return model.float().eval()


def input_ids(model):
    """Fixed ids (2 x 9) in [4, vocab): no pad/bos/eos ids, so every family treats them
    as plain tokens."""
    generator = torch.Generator().manual_seed(1234)
    return torch.randint(4, model.config.vocab_size, (2, 9), generator=generator)


def logits(model, ids):
    """Logits of any zoo family on ``ids``: causal and masked LMs read ``input_ids``;
    encoder-decoders also get fixed ``decoder_input_ids`` (2 x 6, seeded, in
    [4, decoder vocabulary))."""
    kwargs = {"input_ids": ids}
    if getattr(model.config, "is_encoder_decoder", False):
        vocab = getattr(model.config, "decoder_vocab_size", None) or model.config.vocab_size
        generator = torch.Generator().manual_seed(4321)
        kwargs["decoder_input_ids"] = torch.randint(4, vocab, (2, 6), generator=generator)
    with torch.no_grad():
        return model(**kwargs).logits


# ----------------------------------------------------------------------------------
# Anatomy of a model: what patch_embeddings has to deal with.
# ----------------------------------------------------------------------------------


def holders(model, weight):
    """Names of every module path (duplicates included) whose ``.weight is weight``."""
    return [
        name
        for name, module in model.named_modules(remove_duplicate=False)
        if getattr(module, "weight", None) is weight
    ]


def _name_of(model, module):
    return next(n for n, m in model.named_modules(remove_duplicate=False) if m is module)


def _scale_value(value):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = float(value)
    return value if isinstance(value, (int, float)) else None


def _describe(module):
    scale = _scale_value(getattr(module, "embed_scale", None))
    return type(module).__name__ + ("" if scale in (None, 1) else f" x{scale:g}")


def anatomy(model):
    """A dict describing the model's input embedding, head and who shares the matrix."""
    embedding = model.get_input_embeddings()
    head = model.get_output_embeddings()
    weight = embedding.weight
    tied = head is not None and getattr(head, "weight", None) is weight
    embedding_name = _name_of(model, embedding)
    head_name = None if head is None else _name_of(model, head)
    modules = dict(model.named_modules(remove_duplicate=False))
    names = holders(model, weight)
    others = [f"{n} ({_describe(modules[n])})" for n in names if n != embedding_name]
    held = {id(modules[n]) for n in names}
    # Scales applied by a module around the lookup (Marian/Pegasus encoders, ...).
    outside = {}
    for name, module in model.named_modules():
        if id(module) in held:
            continue
        value = _scale_value(getattr(module, "embed_scale", None))
        if value is not None and value != 1:
            outside[name] = value
    # Token embeddings of the same width that do NOT share the matrix.
    separate = [
        f"{n} ({_describe(m)} {tuple(m.weight.shape)})"
        for n, m in model.named_modules()
        if isinstance(m, nn.Embedding)
        and id(m) not in held
        and m.embedding_dim == weight.shape[1]
        and m.num_embeddings
        in (model.config.vocab_size, getattr(model.config, "decoder_vocab_size", None))
    ]
    return {
        "class": type(model).__name__,
        "tied": tied,
        "embedding": f"{embedding_name}: {type(embedding).__name__}",
        "forward_overridden": type(embedding).forward is not nn.Embedding.forward,
        "embed_scale": _scale_value(getattr(embedding, "embed_scale", None)),
        "scale_outside": outside,
        "head": None
        if head is None
        else (f"{head_name}: {type(head).__name__} {tuple(head.weight.shape)}"),
        "other_holders": others,
        "separate_embeddings": separate,
    }


# ----------------------------------------------------------------------------------
# The check.
# ----------------------------------------------------------------------------------


def _snapshot(model):
    modules = {n: id(m) for n, m in model.named_modules(remove_duplicate=False)}
    parameters = {n: id(p) for n, p in model.named_parameters(remove_duplicate=False)}
    return modules, parameters


def _max_diff(a, b):
    return float((a.double() - b.double()).abs().max())


def _covered(model, target):
    """(matrix the target replaces, module paths that hold it and that the target
    replaces, module paths that hold it and must keep it)."""
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    weight = head.weight if target == "output" else embedding.weight
    names = holders(model, weight)
    head_names = (
        set()
        if head is None
        else {n for n, m in model.named_modules(remove_duplicate=False) if m is head}
    )
    if target == "both":
        return weight, names, []
    if target == "input":
        return (
            weight,
            [n for n in names if n not in head_names],
            [n for n in names if n in head_names],
        )
    return (
        weight,
        [n for n in names if n in head_names],
        [n for n in names if n not in head_names],
    )


def _perturbed_reference(model, target, delta):
    """Logits of a copy of the unpatched ``model`` in which the matrix the target
    covers is replaced by ``W + delta`` wherever the target reaches it (and kept
    wherever it does not): what a patch with table ``W + delta`` must compute."""
    reference = copy.deepcopy(model)
    weight, covered, _ = _covered(reference, target)
    new = nn.Parameter(weight.detach() + delta, requires_grad=False)
    modules = dict(reference.named_modules(remove_duplicate=False))
    for name in covered:
        modules[name].weight = new
    return logits(reference, input_ids(reference))


def check(family, target, directory):
    """Every assertion of the zoo for one family and target; raises on the first
    failure. ``directory`` is an empty folder for save_compressed."""
    model = build(family)
    ids = input_ids(model)
    before = logits(model, ids)
    snapshot = _snapshot(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and head.weight is embedding.weight

    if target == "both" and not tied:
        with pytest.raises(ValueError, match="tied"):
            patch_embeddings(model, DenseTable(embedding.weight.detach().clone()), "both")
        assert getattr(model, "_skdirection_patch", None) is None
        assert _snapshot(model) == snapshot
        assert torch.equal(logits(model, ids), before)
        return "raises ValueError (untied)"

    weight, covered, kept = _covered(model, target)
    if (family, target) in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[family, target]):
            patch_embeddings(model, DenseTable(weight.detach().clone().float()), target)
        assert getattr(model, "_skdirection_patch", None) is None
        assert _snapshot(model) == snapshot
        assert torch.equal(logits(model, ids), before)
        return f"refused ({REFUSED[family, target]})"

    # 1. Lossless patch: same logits within 1e-5.
    patch_embeddings(model, DenseTable(weight.detach().clone().float()), target)
    patched = logits(model, ids)
    diff_lossless = _max_diff(patched, before)
    assert diff_lossless <= TOLERANCE, (
        f"lossless patch changed the logits by {diff_lossless:.3g}"
    )

    # 2. Every holder the target covers was replaced; the others kept the matrix.
    left = holders(model, weight)
    assert sorted(left) == sorted(kept), (
        f"after patching {target!r} the original matrix is still held by {left}, "
        f"expected only {kept}"
    )

    # 3. Save, then load from the folder alone and onto a freshly built copy: the
    # patched logits, bit for bit.
    save_compressed(model, directory)
    alone = load_compressed(directory)
    reloaded = logits(alone, ids)
    assert torch.equal(reloaded, patched), (
        f"logits loaded from the folder differ by {_max_diff(reloaded, patched):.3g}"
    )
    fresh = build(family)
    fresh_state = fresh.state_dict()
    assert all(torch.equal(fresh_state[k], v) for k, v in state.items())
    load_compressed(directory, model=fresh)
    reloaded = logits(fresh, ids)
    assert torch.equal(reloaded, patched), (
        f"reloaded logits differ by {_max_diff(reloaded, patched):.3g} from the saved ones"
    )

    # 4. Unpatch: original logits, modules, parameters and tie, exactly.
    unpatch_embeddings(model)
    assert getattr(model, "_skdirection_patch", None) is None
    after = logits(model, ids)
    assert torch.equal(after, before), (
        f"unpatched logits differ by {_max_diff(after, before):.3g}"
    )
    assert _snapshot(model) == snapshot, "unpatch did not restore every module/parameter"
    assert model.get_input_embeddings() is embedding
    assert model.get_output_embeddings() is head
    assert (head is not None and head.weight is embedding.weight) == tied
    assert sorted(holders(model, weight)) == sorted(covered + kept)

    # 5. Perturbed table: the patch computes the model with W + delta where it reaches.
    generator = torch.Generator().manual_seed(7)
    delta = (
        0.5 * float(weight.detach().std()) * torch.randn(weight.shape, generator=generator)
    )
    expected = _perturbed_reference(model, target, delta)
    sensitivity = _max_diff(expected, before)
    assert sensitivity > 0, (
        f"the matrix target={target!r} replaces, held by {covered}, never reaches the "
        "logits: the forward reads other (separate) matrices, so the patch changes "
        "nothing it claims to"
    )
    # Large enough to see a holder left behind (the weakest family, an encoder-only
    # path through Marian's cross-attention at random init, moves the logits ~2e-4).
    assert sensitivity > 10 * TOLERANCE, f"perturbation too weak ({sensitivity:.2g})"
    patch_embeddings(model, DenseTable(weight.detach().clone().float() + delta), target)
    got = logits(model, ids)
    diff = _max_diff(got, expected)
    assert diff <= TOLERANCE, (
        f"with table W + delta the patched model is {diff:.3g} away from the model "
        "with W + delta put where the target reaches"
    )
    unpatch_embeddings(model)
    assert torch.equal(logits(model, ids), before)
    return "pass" if diff_lossless == 0 else f"pass (lossless diff {diff_lossless:.1g})"


# ----------------------------------------------------------------------------------
# pytest entry points.
# ----------------------------------------------------------------------------------


def test_zoo_is_big_and_scaled_enough():
    scaled = [f for f in ZOO if anatomy(build(f))["embed_scale"] not in (None, 1, 1.0)]
    assert len(ZOO) >= 14
    assert len(scaled) >= 4, scaled


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("family", list(ZOO))
def test_lossless_patch_roundtrip(family, target, tmp_path):
    check(family, target, tmp_path / "patch")


# ----------------------------------------------------------------------------------
# ``python test_zoo.py``: the report table.
# ----------------------------------------------------------------------------------


def _short(exc):
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) <= 160 else text[:157] + "..."


def main():
    import tempfile

    torch.set_num_threads(1)

    rows = [
        "| family | class | tied? | input embedding (path: type) | forward overridden? "
        "| embed_scale | scale applied outside | head | other holders of W "
        "| separate same-width token embeddings | input | output | both |",
        "|" + "---|" * 13,
    ]
    for family in ZOO:
        info = anatomy(build(family))
        results = []
        for target in TARGETS:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    results.append(check(family, target, f"{tmp}/patch"))
                except Exception as exc:  # reported in the table, not hidden
                    results.append("**FAIL** " + _short(exc).replace("|", "\\|"))
                    if "-v" in sys.argv:
                        traceback.print_exc()
        scale = info["embed_scale"]
        outside = ", ".join(f"{k}={v:g}" for k, v in info["scale_outside"].items())
        rows.append(
            f"| {family} | {info['class']} | {'yes' if info['tied'] else 'no'} "
            f"| {info['embedding']} | {'yes' if info['forward_overridden'] else 'no'} "
            f"| {'-' if scale is None else f'{scale:g}'} | {outside or '-'} "
            f"| {info['head']} | {', '.join(info['other_holders']) or '-'} "
            f"| {', '.join(info['separate_embeddings']) or '-'} "
            f"| {' | '.join(results)} |"
        )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
