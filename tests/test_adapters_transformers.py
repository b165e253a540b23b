"""The transformers adapter: patching, exact undo, saving, perplexity, token counts."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from skdirection import DirectionAutoEncoder, TruncatedSVDCompressor
from skdirection.adapters.transformers import (
    CompressedEmbedding,
    CompressedLMHead,
    count_parameters,
    load_compressed,
    patch_embeddings,
    patch_report,
    perplexity,
    save_compressed,
    token_counts,
    unpatch_embeddings,
)

from .conftest import TEXT

pytestmark = pytest.mark.transformers

K = 4


def _matrix(model):
    return model.get_input_embeddings().weight.detach().numpy()


def _svd(model, k=K):
    return TruncatedSVDCompressor(n_components=k, device="cpu", random_state=0).fit(
        _matrix(model)
    )


def _ids(tokenizer):
    return torch.as_tensor([tokenizer(TEXT)["input_ids"][:40]])


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_import_skdirection_does_not_import_transformers():
    code = "import sys, skdirection; assert 'transformers' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("target", ["input", "output", "both"])
def test_patch_then_unpatch_is_bit_exact_and_keeps_the_tie(
    tiny_llama, tiny_tokenizer, target
):
    model, ids = tiny_llama, _ids(tiny_tokenizer)
    embedding = model.get_input_embeddings()
    weight = embedding.weight
    head = model.get_output_embeddings()
    before = _logits(model, ids)
    keys = dict(model.all_tied_weights_keys)

    patch_embeddings(model, _svd(model), target=target)
    patched = _logits(model, ids)
    assert not torch.equal(patched, before)
    if target == "input":
        assert isinstance(model.get_input_embeddings(), CompressedEmbedding)
        assert model.get_output_embeddings().weight is weight  # head keeps the original
        # The config's flag stays: some models' forward reads it (T5Gemma, Switch).
        assert model.config.tie_word_embeddings is True
        assert not any("lm_head" in key for key in model.all_tied_weights_keys)
    if target == "output":
        assert isinstance(model.get_output_embeddings(), CompressedLMHead)
        assert model.get_input_embeddings().weight is weight
    if target == "both":
        assert model.get_output_embeddings().table is model.get_input_embeddings().table

    unpatch_embeddings(model)
    assert model.get_input_embeddings() is embedding
    assert model.get_output_embeddings() is head
    assert model.lm_head.weight is model.get_input_embeddings().weight is weight
    assert model.config.tie_word_embeddings is True
    assert model.all_tied_weights_keys == keys
    assert torch.equal(_logits(model, ids), before)


def test_input_patch_changes_only_the_input_side(tiny_llama, tiny_tokenizer):
    model, ids = tiny_llama, _ids(tiny_tokenizer)
    svd = _svd(model)
    table = svd.compress(_matrix(model))
    with torch.no_grad():
        hidden = model.model(inputs_embeds=table(ids)).last_hidden_state
        expected = hidden @ model.lm_head.weight.T
    patch_embeddings(model, svd, target="input")
    torch.testing.assert_close(_logits(model, ids), expected)


def test_report_counts_unique_parameters(tiny_llama):
    model = tiny_llama
    V, d = model.get_input_embeddings().weight.shape
    total = count_parameters(model)
    assert total == model.num_parameters()
    stored = V * K + K * d  # SVD: latent table and components, no bias

    report = patch_embeddings(model, _svd(model), target="input")
    assert report.embedding_params_before == V * d
    assert report.embedding_params_after == stored
    assert report.embedding_ratio == pytest.approx(V * d / stored)
    assert report.model_params_before == total
    # The untied head keeps the original matrix: the model grows by the table.
    assert report.model_params_after == total + stored
    assert report.model_params_after == model.num_parameters()
    assert report.untied_head
    unpatch_embeddings(model)

    report = patch_embeddings(model, _svd(model), target="both")
    assert report.model_params_after == total - V * d + stored
    assert report.model_ratio == pytest.approx(total / (total - V * d + stored))
    assert not report.untied_head


def test_autoencoder_table_counts_the_decoder_bias(tiny_llama):
    model = tiny_llama
    V, d = model.get_input_embeddings().weight.shape
    ae = DirectionAutoEncoder(
        n_components=K, max_iter=1, batch_size=64, device="cpu", random_state=0
    ).fit(_matrix(model))
    report = patch_embeddings(model, ae, target="both")
    assert report.embedding_params_after == V * K + K * d + d


def test_untied_model_targets(tiny_llama_untied, tiny_tokenizer):
    model, ids = tiny_llama_untied, _ids(tiny_tokenizer)
    before = _logits(model, ids)
    with pytest.raises(ValueError, match="tied"):
        patch_embeddings(model, _svd(model), target="both")
    head_svd = TruncatedSVDCompressor(n_components=K, device="cpu").fit(
        model.lm_head.weight.detach().numpy()
    )
    report = patch_embeddings(model, head_svd, target="output")
    assert not report.untied_head
    assert report.model_params_after < report.model_params_before
    unpatch_embeddings(model)
    assert torch.equal(_logits(model, ids), before)


@pytest.mark.parametrize("target", ["input", "output", "both"])
def test_a_saved_folder_loads_alone_and_holds_no_original_matrix(
    tiny_llama, tiny_tokenizer, tmp_path, target
):
    from safetensors import safe_open

    model, ids = tiny_llama, _ids(tiny_tokenizer)
    weight = model.get_input_embeddings().weight.detach().clone()
    patch_embeddings(model, _svd(model), target=target)
    expected = _logits(model, ids)
    save_compressed(model, tmp_path, tokenizer=tiny_tokenizer)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "table.safetensors", "patch.json"} <= names
    assert "tokenizer.json" in names
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as handle:
        kept = {name: handle.get_tensor(name) for name in handle.keys()}
    holds_original = [n for n, t in kept.items() if t.shape == weight.shape]
    # Only an untied head (input target) or input embedding (output target) keeps it.
    assert (
        holds_original
        == {
            "input": ["lm_head.weight"],
            "both": [],
            "output": ["model.embed_tokens.weight"],
        }[target]
    )

    loaded = load_compressed(tmp_path)
    assert torch.equal(_logits(loaded, ids), expected)
    assert patch_report(loaded).target == target
    with pytest.raises(ValueError, match="no original embedding"):
        unpatch_embeddings(loaded)


def test_a_saved_folder_patches_a_base_model_in_memory(
    tiny_llama, tiny_tokenizer, tmp_path
):
    from .conftest import _tiny_llama

    model, ids = tiny_llama, _ids(tiny_tokenizer)
    patch_embeddings(model, _svd(model), target="both")
    expected = _logits(model, ids)
    save_compressed(model, tmp_path)
    fresh = _tiny_llama(len(tiny_tokenizer))  # same seed: the same base model
    assert load_compressed(tmp_path, model=fresh) is fresh
    assert torch.equal(_logits(fresh, ids), expected)
    unpatch_embeddings(fresh)  # an in-memory base model can be restored
    with pytest.warns(FutureWarning, match="deprecated"):
        report = load_compressed(fresh, tmp_path)  # the earlier argument order
    assert report.target == "both"


@pytest.mark.parametrize(
    "missing", ["config.json", "model.safetensors", "table.safetensors"]
)
def test_a_folder_missing_a_file_is_named(tiny_llama, tmp_path, missing):
    from .conftest import names

    patch_embeddings(tiny_llama, _svd(tiny_llama))
    save_compressed(tiny_llama, tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(ValueError, match=names(tmp_path, f"lacks {missing}")):
        load_compressed(tmp_path)
    patch = tmp_path / "patch.json"
    patch.write_text("{not json")
    with pytest.raises(ValueError, match=names(patch, "cannot be read")):
        load_compressed(tmp_path)


def test_load_never_unpickles(tiny_llama, tiny_tokenizer, tmp_path, monkeypatch):
    import pickle

    ids = _ids(tiny_tokenizer)
    patch_embeddings(tiny_llama, _svd(tiny_llama))
    patched = _logits(tiny_llama, ids)
    save_compressed(tiny_llama, tmp_path)
    unpatch_embeddings(tiny_llama)

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling during load")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    # Loaded without unpickling, into the model given and into a fresh one alike.
    torch.testing.assert_close(
        _logits(load_compressed(tmp_path, model=tiny_llama), ids), patched
    )
    unpatch_embeddings(tiny_llama)
    torch.testing.assert_close(_logits(load_compressed(tmp_path), ids), patched)


def test_load_errors_name_the_file(tiny_llama, tmp_path):
    from .conftest import names

    with pytest.raises(ValueError, match=names(tmp_path, "holds no readable patch.json")):
        load_compressed(tmp_path, model=tiny_llama)
    patch_embeddings(tiny_llama, _svd(tiny_llama))
    save_compressed(tiny_llama, tmp_path)
    unpatch_embeddings(tiny_llama)
    table = tmp_path / "table.safetensors"
    table.write_bytes(table.read_bytes()[:100])
    with pytest.raises(ValueError, match=names(table, "not a readable safetensors file")):
        load_compressed(tmp_path, model=tiny_llama)
    patch = tmp_path / "patch.json"
    patch.write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match=names(patch, "is not an skdirection patch")):
        load_compressed(tmp_path, model=tiny_llama)
    patch.write_text('{"format": "skdirection-patch", "version": 2, "target": "nowhere"}')
    with pytest.raises(ValueError, match=names(patch, "names no valid target")):
        load_compressed(tmp_path, model=tiny_llama)
    with pytest.raises(ValueError, match=names(tmp_path, "holds no readable patch.json")):
        load_compressed(tmp_path / "missing")
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match=names(patch, "")):
        load_compressed(tiny_llama, tmp_path)  # the earlier order, same checks
    assert getattr(tiny_llama, "_skdirection_patch", None) is None


def test_bad_inputs(tiny_llama, tiny_tokenizer):
    model = tiny_llama
    svd = _svd(model)
    with pytest.raises(ValueError, match="not fitted"):
        patch_embeddings(model, TruncatedSVDCompressor(n_components=K))
    rows = np.random.default_rng(0).random((50, 7))
    other = TruncatedSVDCompressor(n_components=K).fit(rows)
    with pytest.raises(ValueError, match="fitted on rows of 7 values"):
        patch_embeddings(model, other)
    wrong_rows = other.compress(rows)
    with pytest.raises(ValueError, match="50 x 7"):
        patch_embeddings(model, wrong_rows)
    with pytest.raises(ValueError, match="target"):
        patch_embeddings(model, _svd(model), target="head")
    with pytest.raises(ValueError, match="not patched"):
        unpatch_embeddings(model)
    patch_embeddings(model, svd)
    with pytest.raises(ValueError, match="already patched"):
        patch_embeddings(model, svd)
    with pytest.raises(ValueError, match="empty"):
        perplexity(model, tiny_tokenizer, ["", "  "], progress=False)
    with pytest.raises(ValueError, match="empty"):
        token_counts(tiny_tokenizer, [])


def test_model_without_input_embedding():
    class NoEmbedding(torch.nn.Module):
        def get_input_embeddings(self):
            return None

    with pytest.raises(ValueError, match="no input embedding"):
        patch_embeddings(NoEmbedding(), TruncatedSVDCompressor())


def test_vocabulary_mismatch(tiny_tokenizer):
    from .conftest import _tiny_llama

    small = _tiny_llama(len(tiny_tokenizer) - 3)
    with pytest.raises(ValueError, match="tokenizer has"):
        perplexity(small, tiny_tokenizer, TEXT, progress=False)


def test_causal_perplexity_is_deterministic_and_matches_the_model_loss(
    tiny_llama, tiny_tokenizer
):
    model = tiny_llama
    ids = torch.as_tensor([tiny_tokenizer(TEXT)["input_ids"][:100]])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    whole = perplexity(model, tiny_tokenizer, [TEXT], max_tokens=100, progress=False)
    assert whole == pytest.approx(float(torch.exp(loss)), rel=1e-5)
    # Sliding windows: batched or not, same result; shorter context, different one.
    a = perplexity(
        model,
        tiny_tokenizer,
        [TEXT],
        max_length=32,
        stride=16,
        max_tokens=100,
        progress=False,
    )
    b = perplexity(
        model,
        tiny_tokenizer,
        [TEXT],
        max_length=32,
        stride=16,
        max_tokens=100,
        batch_size=1,
        progress=False,
    )
    assert a == pytest.approx(b, rel=1e-5)
    assert a != pytest.approx(whole, rel=1e-6)
    longer = perplexity(model, tiny_tokenizer, [TEXT], progress=False)
    assert longer != pytest.approx(whole, rel=1e-6)


def test_masked_perplexity_is_seeded(tiny_bert, tiny_tokenizer):
    model = tiny_bert
    texts = [TEXT, TEXT[:200]]
    a = perplexity(
        model, tiny_tokenizer, texts, random_state=3, max_length=32, progress=False
    )
    b = perplexity(
        model, tiny_tokenizer, texts, random_state=3, max_length=32, progress=False
    )
    c = perplexity(
        model, tiny_tokenizer, texts, random_state=4, max_length=32, progress=False
    )
    assert a == b
    assert a != c
    assert 1 < a < 10 * len(tiny_tokenizer)


def test_masked_lm_patch_roundtrip(tiny_bert, tiny_tokenizer):
    model = tiny_bert
    ids = _ids(tiny_tokenizer)[:, :30]
    before = _logits(model, ids)
    svd = _svd(model)
    weight = model.bert.embeddings.word_embeddings.weight
    baseline = perplexity(model, tiny_tokenizer, TEXT, max_length=32, progress=False)
    patch_embeddings(model, svd, target="input")
    assert model.cls.predictions.decoder.weight is weight
    input_only = _logits(model, ids)
    assert not torch.allclose(input_only, before)
    compressed = perplexity(model, tiny_tokenizer, TEXT, max_length=32, progress=False)
    assert np.isfinite(compressed) and compressed != baseline
    unpatch_embeddings(model)
    patch_embeddings(model, svd, target="both")
    assert isinstance(model.get_output_embeddings(), CompressedLMHead)
    assert not torch.allclose(_logits(model, ids), input_only)  # the head reads it too
    unpatch_embeddings(model)
    assert (
        model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    )
    assert torch.equal(_logits(model, ids), before)


def test_perplexity_needs_a_language_model_head(tiny_tokenizer):
    from transformers import BertConfig, BertModel

    encoder = BertModel(
        BertConfig(
            vocab_size=len(tiny_tokenizer),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
        )
    )
    with pytest.raises(TypeError, match="language model"):
        perplexity(encoder, tiny_tokenizer, TEXT, progress=False)


def test_token_counts(tiny_tokenizer):
    counts = token_counts(tiny_tokenizer, [TEXT, "fox fox"])
    assert counts.shape == (len(tiny_tokenizer),)
    assert (
        counts[tiny_tokenizer.convert_tokens_to_ids("fox")] == TEXT.split().count("fox") + 2
    )
    assert counts.sum() == len(TEXT.split()) + 2
    assert token_counts(tiny_tokenizer, TEXT, n_rows=len(tiny_tokenizer) + 5).shape == (
        len(tiny_tokenizer) + 5,
    )
    # Ready as sample_weight: a row counted c times weighs as c copies of it.
    X = np.random.default_rng(0).random((len(counts), 5))
    weighted = TruncatedSVDCompressor(n_components=2, algorithm="covariance_eigh")
    weighted.fit(X, sample_weight=counts)
    repeated = TruncatedSVDCompressor(n_components=2, algorithm="covariance_eigh")
    repeated.fit(np.repeat(X, counts.astype(int), axis=0))
    np.testing.assert_allclose(
        np.abs(weighted.components_), np.abs(repeated.components_), atol=1e-5
    )


def _scaled_families():
    """Tiny models whose input embedding multiplies its rows by sqrt(hidden size)."""
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        GemmaConfig,
        GemmaForCausalLM,
        M2M100Config,
        M2M100ForConditionalGeneration,
    )

    seq2seq = dict(
        vocab_size=120,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return {
        "gemma": GemmaForCausalLM(
            GemmaConfig(
                vocab_size=120,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=16,
            )
        ),
        "bart": BartForConditionalGeneration(BartConfig(scale_embedding=True, **seq2seq)),
        "m2m100": M2M100ForConditionalGeneration(M2M100Config(**seq2seq)),
    }


def _family_logits(model, ids):
    extra = {"decoder_input_ids": ids[:, :7]} if model.config.is_encoder_decoder else {}
    with torch.no_grad():
        return model(input_ids=ids, **extra).logits


@pytest.mark.parametrize("family", ["gemma", "bart", "m2m100"])
@pytest.mark.parametrize("target", ["input", "output", "both"])
def test_scaled_embeddings_keep_their_scale(family, target):
    from skdirection import DenseTable

    model = _scaled_families()[family].eval()
    ids = torch.arange(5, 25)[None]
    before = _family_logits(model, ids)
    source = (
        model.get_output_embeddings()
        if target == "output"
        else model.get_input_embeddings()
    )
    lossless = DenseTable(source.weight.detach().clone())
    patch_embeddings(model, lossless, target=target)
    patched = _family_logits(model, ids)
    assert (patched - before).abs().max() <= 1e-5
    if target != "output":
        assert model.get_input_embeddings().scale == pytest.approx(32**0.5)
    unpatch_embeddings(model)
    assert torch.equal(_family_logits(model, ids), before)


def test_encoder_decoder_patch_reaches_every_holder_of_the_table():
    model = _scaled_families()["bart"]
    weight = model.get_input_embeddings().weight
    patch_embeddings(model, _svd(model), target="both")
    holders = [m for m in model.modules() if getattr(m, "weight", None) is weight]
    assert holders == []
    new = model.get_input_embeddings()
    assert model.model.encoder.embed_tokens.table is new.table
    assert model.model.decoder.embed_tokens.table is new.table
    assert model.lm_head.table is new.table
    unpatch_embeddings(model)
    assert model.model.encoder.embed_tokens.weight is weight


class _ClippedEmbedding(torch.nn.Embedding):
    def forward(self, input_ids):
        return super().forward(input_ids).clamp(-0.01, 0.01)


def test_an_embedding_that_is_not_a_scaled_lookup_is_refused(tiny_llama, tiny_tokenizer):
    model, ids = tiny_llama, _ids(tiny_tokenizer)
    before = _logits(model, ids)
    old = model.model.embed_tokens
    clipped = _ClippedEmbedding(old.num_embeddings, old.embedding_dim)
    clipped.weight = old.weight
    model.model.embed_tokens = clipped
    with pytest.raises(ValueError, match="_ClippedEmbedding does more than look rows up"):
        patch_embeddings(model, _svd(model), target="input")
    assert model.model.embed_tokens is clipped  # nothing was changed
    model.model.embed_tokens = old
    old.max_norm = 1.0
    with pytest.raises(ValueError, match="max_norm"):
        patch_embeddings(model, _svd(model), target="both")
    old.max_norm = None
    assert torch.equal(_logits(model, ids), before)


def test_a_table_used_outside_an_embedding_or_head_is_refused(tiny_llama):
    model = tiny_llama
    model.extra = torch.nn.Module()
    model.extra.table = model.model.embed_tokens.weight  # read by some custom forward
    with pytest.raises(ValueError, match="extra.table"):
        patch_embeddings(model, _svd(model), target="input")
    assert getattr(model, "_skdirection_patch", None) is None


class _ScaledHead(torch.nn.Linear):
    def forward(self, hidden):
        return 2 * super().forward(hidden)


def test_a_head_that_is_not_linear_is_refused(tiny_llama_untied):
    model = tiny_llama_untied
    old = model.lm_head
    head = _ScaledHead(old.in_features, old.out_features, bias=False)
    head.weight = old.weight
    model.lm_head = head
    with pytest.raises(ValueError, match="_ScaledHead does more than multiply"):
        patch_embeddings(model, _dense_table(head.weight), target="output")
    assert model.lm_head is head


def _dense_table(weight):
    from skdirection import DenseTable

    return DenseTable(weight.detach().clone())


def test_meter_kl_divergence_and_top1_against_a_reference(tiny_llama, tiny_tokenizer):
    from skdirection.adapters.transformers import LanguageModelMeter

    model = tiny_llama
    meter = LanguageModelMeter(
        model, tiny_tokenizer, TEXT, max_length=32, stride=16, max_tokens=80, progress=False
    )
    assert "kl_divergence" not in meter()
    baseline = meter.set_reference()
    assert baseline["perplexity"] == pytest.approx(
        perplexity(
            model,
            tiny_tokenizer,
            TEXT,
            max_length=32,
            stride=16,
            max_tokens=80,
            progress=False,
        ),
        rel=1e-6,
    )
    same = meter()
    assert same["kl_divergence"] == 0 and same["top1_agreement"] == 1
    assert same["perplexity"] == pytest.approx(baseline["perplexity"], rel=1e-6)

    ids = torch.as_tensor([tiny_tokenizer(TEXT)["input_ids"][:32]])
    reference = torch.log_softmax(_logits(model, ids)[0, :-1], dim=-1)
    patch_embeddings(model, _svd(model, k=2), target="both")
    scores = meter()
    changed = torch.log_softmax(_logits(model, ids)[0, :-1], dim=-1)
    unpatch_embeddings(model)
    assert scores["kl_divergence"] > 0 and scores["top1_agreement"] < 1
    # The first window (tokens 1..31 scored with all their context) by brute force,
    # against the meter's first 31 tokens.
    direct = (reference.exp() * (reference - changed)).sum(dim=1)
    first = LanguageModelMeter(
        model, tiny_tokenizer, TEXT, max_length=32, stride=16, max_tokens=32, progress=False
    )
    first.set_reference()
    patch_embeddings(model, _svd(model, k=2), target="both")
    measured = first()
    unpatch_embeddings(model)
    assert measured["kl_divergence"] == pytest.approx(float(direct.mean()), rel=1e-4)
    agreement = (reference.argmax(1) == changed.argmax(1)).float().mean()
    assert measured["top1_agreement"] == pytest.approx(float(agreement))


def test_a_stride_of_a_whole_window_is_refused(tiny_llama, tiny_tokenizer):
    # A window's first token is context only: windows that do not overlap would leave
    # one token in each unscored.
    from skdirection.adapters.transformers._text import causal_windows

    windows = causal_windows(tiny_llama, tiny_tokenizer, [TEXT], 8, 7, None)
    scored = sum(int((labels[1:] != -100).sum()) for _, labels in windows)
    n_tokens = len(tiny_tokenizer("\n\n".join([TEXT]))["input_ids"])
    assert scored == n_tokens - 1  # every token but the first, once
    with pytest.raises(ValueError, match="stride must be below max_length=8"):
        causal_windows(tiny_llama, tiny_tokenizer, [TEXT], 8, 8, None)


def test_sentence_embeddings_of_a_bfloat16_encoder(tiny_bert, tiny_tokenizer):
    from skdirection.adapters.transformers import sentence_embeddings

    encoder = tiny_bert.bert.to(torch.bfloat16)  # a BertModel: last_hidden_state
    vectors = sentence_embeddings(encoder, tiny_tokenizer, ["a fox", "the quick dog"])
    assert vectors.dtype == np.float32 and vectors.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-5)
