"""Shared fixtures: tiny models built from configs, and the real models loaded once;
and the rule that in CI a test needing a real part may not skip."""

import os
import re

import numpy as np
import pytest

TEXT = (
    "The quick brown fox jumps over the lazy dog . A compressed embedding keeps the "
    "direction of each row . Words that occur often matter more than rare words . "
    "Perplexity measures how surprised a language model is by a text . "
    "The dog sleeps while the fox runs into the forest and the birds sing . "
) * 3


# A test marked with one of these needs a part CI must run: the real models (installed by
# name), dask.distributed, transformers. Locally it skips when the part is missing; in
# CI (CI=true) that skip is a failure, so CI cannot pass without running it.
REQUIRED_IN_CI = ("model", "dask", "transformers")
_MODULE_OF_MARKER = {"dask": "distributed", "transformers": "transformers"}
# Fixtures that need such a part mark every test that uses them.
_MARKER_OF_FIXTURE = {
    "smollm2": "model",
    "minilm": "model",
    "gemma3": "model",
    "tiny_tokenizer": "transformers",
}


def _in_ci():
    return os.environ.get("CI") == "true"


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, marker in _MARKER_OF_FIXTURE.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


def pytest_runtest_setup(item):
    for marker, module in _MODULE_OF_MARKER.items():
        if item.get_closest_marker(marker) is not None:
            pytest.importorskip(module)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.skipped and _in_ci() and not hasattr(report, "wasxfail"):
        needs = [m for m in REQUIRED_IN_CI if item.get_closest_marker(m) is not None]
        if needs:
            reason = report.longrepr
            reason = reason[2] if isinstance(reason, tuple) else str(reason)
            reason = reason.removeprefix("Skipped: ")
            report.outcome = "failed"
            report.longrepr = (
                f"skipped in CI (CI=true), but marked {', '.join(needs)}: CI must run "
                f"it. The skip: {reason}"
            )
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    if report.skipped and _in_ci() and isinstance(collector, pytest.Module):
        reason = report.longrepr
        reason = reason[2] if isinstance(reason, tuple) else str(reason)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = (
            f"{collector.path.name} was skipped whole in CI (CI=true): mark what it "
            f"needs ({', '.join(REQUIRED_IN_CI)}) instead. The skip: {reason}"
        )
    return report


def names(path, message):
    """A ``pytest.raises(match=...)`` pattern: ``message``, after the path it is about."""
    return re.escape(str(path)) + ".*" + re.escape(message)


@pytest.fixture
def embeddings():
    """A small embedding-like table: low-rank structure plus noise, rows of varied norm."""
    rng = np.random.RandomState(0)
    basis = rng.normal(size=(6, 24))
    X = rng.normal(size=(300, 6)) @ basis + 0.1 * rng.normal(size=(300, 24))
    return (X * rng.uniform(0.5, 2.0, size=(300, 1))).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A word-level fast tokenizer over the words of TEXT, with BERT's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted(set(TEXT.lower().split()) | set(TEXT.split()))
    vocab = {token: i for i, token in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _tiny_llama(vocab_size, tie=True):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=tie,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def tiny_llama(tiny_tokenizer):
    return _tiny_llama(len(tiny_tokenizer))


@pytest.fixture
def tiny_llama_untied(tiny_tokenizer):
    return _tiny_llama(len(tiny_tokenizer), tie=False)


@pytest.fixture
def saved_tiny_llama(tiny_llama, tiny_tokenizer, tmp_path):
    """``(folder, eval_text, calibration_text)``: the tiny model and its tokenizer saved
    for the command line, TEXT to measure on, and TEXT's words reversed to calibrate on."""
    folder = tmp_path / "tiny"
    tiny_llama.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    text = tmp_path / "eval.txt"
    text.write_text(TEXT)
    calibration = tmp_path / "calibration.txt"
    calibration.write_text(" ".join(reversed(TEXT.split())))
    return folder, text, calibration


@pytest.fixture
def tiny_bert(tiny_tokenizer):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
    )
    return BertForMaskedLM(config).eval()


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M and its tokenizer, loaded once (about 30 s)."""
    from skdirection.datasets import load_smollm2

    try:
        return load_smollm2()
    except ImportError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def gemma3():
    """Gemma 3 270M and its tokenizer, loaded once (about 65 s): a second real family,
    whose embedding scales its rows and is most of its parameters."""
    from skdirection.datasets import load_gemma3

    try:
        return load_gemma3()
    except ImportError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def minilm():
    """all-MiniLM-L6-v2 (the encoder) and its tokenizer, loaded once (a few seconds)."""
    from skdirection.datasets import load_minilm

    try:
        return load_minilm()
    except ImportError as exc:
        pytest.skip(str(exc))
