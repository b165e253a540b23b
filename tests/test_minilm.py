"""The encoder path on the real all-MiniLM-L6-v2: sentence embeddings, the similarity
measure, sentence splitting and ``skdirection evaluate --model minilm``."""

import itertools
import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from skdirection import TruncatedSVDCompressor
from skdirection.adapters.transformers import (
    patch_embeddings,
    sentence_embeddings,
    similarity_spearman,
    split_sentences,
    unpatch_embeddings,
)

SENTENCES = [
    "A man is playing a guitar on the stage.",
    "Someone performs a song with a guitar in front of a crowd.",
    "The stock market fell sharply after the announcement.",
    "Shares dropped quickly once the news came out.",
    "A cat sleeps in the warm afternoon sun by the window.",
    "Heavy rain flooded the streets of the old town last night and closed the roads.",
]


@pytest.mark.model
@pytest.mark.slow
def test_load_minilm_gives_the_encoder_and_its_tokenizer(minilm):
    from transformers import BertModel

    model, tokenizer = minilm
    assert isinstance(model, BertModel) and not model.training
    assert tuple(model.get_input_embeddings().weight.shape) == (30522, 384)
    assert len(tokenizer) == 30522
    assert tokenizer("guitar")["input_ids"][0] == tokenizer.cls_token_id


@pytest.mark.model
@pytest.mark.slow
def test_sentence_embeddings_are_unit_mean_pooled_and_ignore_padding(minilm):
    model, tokenizer = minilm
    embeddings = sentence_embeddings(model, tokenizer, SENTENCES, batch_size=4)
    assert embeddings.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    # A sentence alone (no padding) gives the normalised mean of its token states, and
    # the same embedding when batched with longer, padded sentences.
    for index, sentence in enumerate(SENTENCES):
        with torch.no_grad():
            hidden = model(**tokenizer([sentence], return_tensors="pt")).last_hidden_state
        alone = torch.nn.functional.normalize(hidden.mean(1), dim=1)[0].numpy()
        np.testing.assert_allclose(embeddings[index], alone, atol=1e-5)
    # Paraphrases are closer than unrelated sentences: the recipe is the model's own.
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > 0.5 > max(similarity[0, 2], similarity[0, 4])
    assert similarity[2, 3] > 0.5 > max(similarity[2, 0], similarity[2, 5])


def _pairwise_spearman(reference, other):
    pairs = list(itertools.combinations(range(len(reference)), 2))
    cosine = lambda X, i, j: X[i] @ X[j]  # noqa: E731 - rows are unit
    return spearmanr(
        [cosine(reference, i, j) for i, j in pairs], [cosine(other, i, j) for i, j in pairs]
    ).statistic


def test_similarity_spearman_ranks_the_cosines_of_all_pairs():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(12, 8))
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    noisy = reference + 0.3 * rng.normal(size=reference.shape)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    assert similarity_spearman(reference, reference) == pytest.approx(1.0)
    expected = _pairwise_spearman(reference, noisy)
    assert 0.2 < expected < 0.99
    assert similarity_spearman(reference, noisy) == pytest.approx(expected, rel=1e-12)
    # A monotone change of every cosine keeps the ranks: Spearman, not Pearson.
    assert similarity_spearman(reference, reference * 0.5) == pytest.approx(1.0)
    flipped = np.concatenate([reference[:, :1], -reference[:, 1:]], axis=1)
    assert similarity_spearman(reference, flipped) == pytest.approx(
        _pairwise_spearman(reference, flipped), rel=1e-12
    )


def test_split_sentences():
    texts = [
        "One two three four five. Too short! Is this one long enough to count?\n"
        "It continues on the next line and ends here.",
        "  A second text with its own sentence in it.  ",
    ]
    assert split_sentences(texts) == [
        "One two three four five.",
        "Is this one long enough to count?",
        "It continues on the next line and ends here.",
        "A second text with its own sentence in it.",
    ]
    assert split_sentences(texts, max_sentences=2) == split_sentences(texts)[:2]
    assert split_sentences(texts, min_words=1, max_words=2) == ["Too short!"]
    assert split_sentences(texts, max_words=5) == ["One two three four five."]


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.transformers
def test_evaluate_minilm_from_the_command_line(minilm, tmp_path, capsys):
    from skdirection.cli import main

    text = tmp_path / "sentences.txt"
    text.write_text(" ".join(SENTENCES * 2))
    main(
        [
            "evaluate",
            "--model",
            "minilm",
            "--method",
            "svd",
            "--ratio",
            "10",
            "--eval-text",
            str(text),
            "--device",
            "cpu",
            "--format",
            "json",
            "--quiet",
        ]
    )
    rows = json.loads(capsys.readouterr().out)
    assert [row["method"] for row in rows] == ["none", "svd"]
    assert all(row["perplexity"] is None for row in rows)
    assert rows[0]["similarity_spearman"] == pytest.approx(1.0)

    # The reported agreement is that of the model patched with the SVD table.
    model, tokenizer = minilm
    sentences = split_sentences([" ".join(SENTENCES * 2)])
    reference = sentence_embeddings(model, tokenizer, sentences)
    weight = model.get_input_embeddings().weight.detach().numpy()
    svd = TruncatedSVDCompressor(rows[1]["n_components"], device="cpu").fit(weight)
    patch_embeddings(model, svd, target="input")
    try:
        expected = similarity_spearman(
            reference, sentence_embeddings(model, tokenizer, sentences)
        )
    finally:
        unpatch_embeddings(model)
    assert 0 < expected < 1
    assert rows[1]["similarity_spearman"] == pytest.approx(expected, rel=1e-6)
