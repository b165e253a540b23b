"""The adapter on the real Gemma 3 270M: a 262144 x 640 embedding, 63% of the model,
tied to the head, that multiplies its rows by sqrt(640). Marked ``model``."""

import pytest
import torch

from skdirection import DenseTable
from skdirection.adapters.transformers import (
    LanguageModelMeter,
    patch_embeddings,
    unpatch_embeddings,
)
from skdirection.datasets import load_wikipedia_text

pytestmark = pytest.mark.model


def _logits(model, tokenizer):
    ids = torch.as_tensor([tokenizer(load_wikipedia_text()[0])["input_ids"][:24]])
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("target", ["input", "both"])
def test_a_lossless_table_keeps_gemma3_exactly(gemma3, target):
    model, tokenizer = gemma3
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    before = _logits(model, tokenizer)
    weight = model.get_input_embeddings().weight.detach().clone()
    patch_embeddings(model, DenseTable(weight), target=target)
    try:
        assert model.get_input_embeddings().scale == pytest.approx(640**0.5)
        patched = _logits(model, tokenizer)
    finally:
        unpatch_embeddings(model)
    assert (patched - before).abs().max() <= 1e-4 * before.abs().max()
    assert torch.equal(_logits(model, tokenizer), before)


def test_gemma3_perplexity_and_divergence_of_a_half_precision_table(gemma3):
    model, tokenizer = gemma3
    meter = LanguageModelMeter(
        model, tokenizer, load_wikipedia_text()[:3], max_tokens=256, progress=False
    )
    baseline = meter.set_reference()
    assert 5 < baseline["perplexity"] < 80
    half = DenseTable(model.get_input_embeddings().weight.detach().half())
    patch_embeddings(model, half, target="both")
    try:
        scores = meter()
    finally:
        unpatch_embeddings(model)
    assert 0 < scores["kl_divergence"] < 1e-3
    assert scores["top1_agreement"] > 0.97
    assert scores["perplexity"] == pytest.approx(baseline["perplexity"], rel=0.01)
