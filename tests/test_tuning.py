"""Tuning a stored table against the model: lower divergence, same codes and bytes."""

import numpy as np
import pytest
import torch

from skdirection import (
    DeduplicatedTable,
    FrequencyMixedCompressor,
    ProductQuantizer,
    ScalarQuantizer,
)
from skdirection.adapters.transformers import (
    LanguageModelMeter,
    patch_embeddings,
    tune_table,
    unpatch_embeddings,
)

from .conftest import TEXT

TUNING = dict(max_length=16, steps=30, eval_every=10, patience=3, progress=False)


def _matrix(model):
    return model.get_input_embeddings().weight.detach().float().numpy().copy()


def _divergence(model, tokenizer, table, target):
    meter = LanguageModelMeter(
        model, tokenizer, TEXT, max_length=32, stride=16, progress=False
    )
    meter.set_reference()
    patch_embeddings(model, table, target=target)
    try:
        return meter()["kl_divergence"]
    finally:
        unpatch_embeddings(model)


def _state(module):
    return {name: t.detach().clone() for name, t in module.state_dict().items()}


def _same_state(before, module):
    after = module.state_dict()
    return before.keys() == after.keys() and all(
        before[name].dtype == after[name].dtype and torch.equal(before[name], after[name])
        for name in before
    )


class _RepeatedHalf:
    """Fits and compresses the table with its second half replaced by its first: the
    mix then stores a :class:`~skdirection.DeduplicatedTable`."""

    def __init__(self, estimator):
        self.estimator = estimator

    def fit(self, X):
        half = len(X) // 2
        self.repeated = X.copy()
        self.repeated[half : 2 * half] = X[:half]
        self.estimator.fit(self.repeated)
        return self

    def compress(self, X):
        table = self.estimator.compress(self.repeated)
        assert isinstance(table, DeduplicatedTable)
        return table


@pytest.mark.parametrize(
    "make, target",
    [
        (lambda: ScalarQuantizer(2, group_size=8), "both"),
        (lambda: ProductQuantizer(4, n_centroids=16, random_state=0), "input"),
        (lambda: FrequencyMixedCompressor(8, random_state=0), "both"),
        (lambda: _RepeatedHalf(FrequencyMixedCompressor(8, random_state=0)), "both"),
    ],
)
def test_tuning_lowers_the_divergence_and_keeps_codes_and_bytes(
    tiny_llama, tiny_tokenizer, make, target
):
    model = tiny_llama
    X = _matrix(model)
    table = make().fit(X).compress(X)
    table_before, model_before = _state(table), _state(model)
    ids = torch.as_tensor([tiny_tokenizer(TEXT)["input_ids"][:40]])
    with torch.no_grad():
        logits_before = model(input_ids=ids).logits

    report = tune_table(model, tiny_tokenizer, table, TEXT, target=target, **TUNING)

    assert report.best_step > 0
    assert report.final_kl < report.initial_kl
    assert report.history[0] == (0, report.initial_kl)
    tuned = report.table
    assert type(tuned) is type(table) and tuned.n_bytes == table.n_bytes
    for (name, old), new in zip(
        table.state_dict().items(), tuned.state_dict().values(), strict=True
    ):
        assert new.dtype == old.dtype, name
        if not old.is_floating_point():
            assert torch.equal(new, old), f"{name}: codes must not change"
    assert any(
        not torch.equal(new, old)
        for old, new in zip(
            table.state_dict().values(), tuned.state_dict().values(), strict=True
        )
        if old.is_floating_point()
    )
    # The table given and the model are left as they were, bit for bit.
    assert _same_state(table_before, table)
    assert _same_state(model_before, model)
    assert not hasattr(model, "_skdirection_patch")
    assert not any(p.requires_grad for p in tuned.parameters())
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, logits_before)
    # Measured independently, on every window of the text.
    assert _divergence(model, tiny_tokenizer, tuned, target) < _divergence(
        model, tiny_tokenizer, table, target
    )


def test_tuning_a_masked_lm(tiny_bert, tiny_tokenizer):
    X = _matrix(tiny_bert)
    table = ScalarQuantizer(2, group_size=8).fit(X).compress(X)
    report = tune_table(tiny_bert, tiny_tokenizer, table, TEXT * 3, **TUNING)
    assert report.best_step > 0 and report.final_kl < report.initial_kl


def test_no_improvement_gives_back_the_table(tiny_llama, tiny_tokenizer):
    X = _matrix(tiny_llama)
    table = ScalarQuantizer(8).fit(X).compress(X)
    # A step far too large for any tensor: every step makes things worse.
    report = tune_table(
        tiny_llama,
        tiny_tokenizer,
        table,
        TEXT,
        learning_rate=50.0,
        **{**TUNING, "patience": 1},
    )
    assert report.best_step == 0 and report.final_kl == report.initial_kl
    assert report.n_steps == 10 and len(report.history) == 2
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            table.state_dict().values(), report.table.state_dict().values(), strict=True
        )
    )


def test_tuning_stops_when_the_held_out_divergence_stops_improving(
    tiny_llama, tiny_tokenizer
):
    X = _matrix(tiny_llama)
    table = ScalarQuantizer(2, group_size=8).fit(X).compress(X)
    report = tune_table(
        tiny_llama,
        tiny_tokenizer,
        table,
        TEXT,
        **{**TUNING, "steps": 400, "eval_every": 5, "patience": 2},
    )
    kls = [kl for _, kl in report.history]
    best = int(np.argmin(kls))
    assert report.history[best][0] == report.best_step
    # Stopped early: the last `patience` measurements did not beat the best before them.
    assert report.n_steps < 400
    assert len(kls) - 1 - best == 2


def test_bad_inputs_are_named(tiny_llama, tiny_llama_untied, tiny_tokenizer):
    from transformers import LlamaModel

    X = _matrix(tiny_llama)
    table = ScalarQuantizer(4).fit(X).compress(X)
    cases = [
        (dict(steps=0), "steps must be a positive integer"),
        (dict(learning_rate=-1.0), "learning_rate must be a positive number"),
        (dict(validation_fraction=1.0), "validation_fraction must be in"),
        (dict(target="head"), "target must be one of"),
        (dict(max_tokens=1), "max_tokens must be None or an integer >= 2"),
        (dict(max_tokens=16, max_length=16), "gives 1 window"),
    ]
    for keywords, message in cases:
        with pytest.raises(ValueError, match=message):
            tune_table(tiny_llama, tiny_tokenizer, table, TEXT, **keywords)
    with pytest.raises(ValueError, match="makes none"):
        tune_table(LlamaModel(tiny_llama.config), tiny_tokenizer, table, TEXT)
    with pytest.raises(ValueError, match="needs a model whose head is tied"):
        tune_table(tiny_llama_untied, tiny_tokenizer, table, TEXT, target="both")
    with pytest.raises(TypeError, match="table must be a CompressedTable"):
        tune_table(tiny_llama, tiny_tokenizer, ScalarQuantizer(4).fit(X), TEXT)
    small = ScalarQuantizer(4).fit(X[:10]).compress(X[:10])
    with pytest.raises(ValueError, match="the compressed table is 10 x"):
        tune_table(tiny_llama, tiny_tokenizer, small, TEXT)
    patch_embeddings(tiny_llama, table)
    try:
        with pytest.raises(ValueError, match="already patched"):
            tune_table(tiny_llama, tiny_tokenizer, table, TEXT)
    finally:
        unpatch_embeddings(tiny_llama)
    assert all(p.requires_grad for p in tiny_llama.parameters())


def test_the_reference_kept_or_recomputed_gives_the_same_tuning(
    tiny_llama, tiny_tokenizer, monkeypatch
):
    from skdirection.adapters.transformers import _tuning

    X = _matrix(tiny_llama)
    table = ScalarQuantizer(2, group_size=8).fit(X).compress(X)
    kept = tune_table(tiny_llama, tiny_tokenizer, table, TEXT, **TUNING)
    monkeypatch.setattr(_tuning, "REFERENCE_BYTES", 0)
    recomputed = tune_table(tiny_llama, tiny_tokenizer, table, TEXT, **TUNING)
    # Kept references are rounded to float16: the same steps, to that precision.
    assert recomputed.best_step == kept.best_step
    assert recomputed.final_kl == pytest.approx(kept.final_kl, rel=1e-2)


def test_the_command_tunes_as_the_python_api_does(saved_tiny_llama, capsys):
    import json

    from skdirection.adapters.transformers import load_model, perplexity
    from skdirection.cli import main
    from skdirection.presets import DEFAULT_OPTIONS, build_compressor

    folder, text, calibration = saved_tiny_llama
    command = [
        "evaluate",
        "--model",
        str(folder),
        "--eval-text",
        str(text),
        "--device",
        "cpu",
        "--format",
        "json",
        "--quiet",
        "--method",
        "scalar",
        "--ratio-unit",
        "bytes",
        "--ratio",
        "7",
        "--target",
        "input",
    ]
    main(command)
    plain = json.loads(capsys.readouterr().out)[1]
    main([*command, "--calibration-text", str(calibration), "--tune-steps", "6"])
    tuned = json.loads(capsys.readouterr().out)[1]
    assert tuned["bytes_ratio"] == plain["bytes_ratio"]
    assert tuned["kl_divergence"] != plain["kl_divergence"]

    model, tokenizer = load_model(str(folder))
    X = _matrix(model)
    options = {"device": "cpu", "ratio_unit": "bytes"}
    compressor = build_compressor("scalar", *X.shape, 7.0, options).fit(X)
    report = tune_table(
        model,
        tokenizer,
        compressor.compress(X),
        [calibration.read_text()],
        steps=6,
        random_state=DEFAULT_OPTIONS["seed"],
        progress=False,
    )
    patch_embeddings(model, report.table)
    expected = perplexity(model, tokenizer, [TEXT], progress=False)
    unpatch_embeddings(model)
    assert tuned["perplexity"] == pytest.approx(expected, rel=1e-6)

    with pytest.raises(SystemExit, match="give --calibration-text"):
        main([*command, "--tune-steps", "5"])
    with pytest.raises(SystemExit, match="--tune-steps must be 0"):
        main([*command, "--calibration-text", str(calibration), "--tune-steps", "-1"])


@pytest.mark.parametrize(
    "make",
    [
        lambda: ProductQuantizer(4, n_centroids=16, random_state=0),  # norms kept apart
        lambda: ScalarQuantizer(2, group_size=8),
    ],
)
def test_held_out_divergence_reads_the_tensors_as_tuned(tiny_llama, tiny_tokenizer, make):
    # A head computes its logits from values derived from the stored tensors (row
    # scales, look-up weights) and kept: every step changes those tensors, so each
    # held-out measurement must derive them again. The final divergence reported is
    # then the returned table's, measured afresh on the same held-out windows.
    X = _matrix(tiny_llama)
    table = make().fit(X).compress(X)
    report = tune_table(tiny_llama, tiny_tokenizer, table, TEXT, target="both", **TUNING)
    assert report.best_step > 0
    again = tune_table(
        tiny_llama,
        tiny_tokenizer,
        report.table,
        TEXT,
        target="both",
        **{**TUNING, "steps": 1, "learning_rate": 1e-30},
    )
    assert again.initial_kl == pytest.approx(report.final_kl, rel=1e-5)
