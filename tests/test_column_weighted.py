"""Column-weighted compression: the column-scaled table, its estimator, the head moment
that weighs a tied head's columns, and the CLI's --calibration-text."""

import numpy as np
import pytest
import torch

from skdirection import (
    ColumnScaledTable,
    ColumnWeightedCompressor,
    FrequencyMixedCompressor,
    ScalarQuantizer,
    load_table,
    save_table,
)
from skdirection.metrics import mean_cosine_similarity
from skdirection.presets import build_compressor

from .conftest import TEXT


def _scaled_table(embeddings):
    inner = ScalarQuantizer(4, group_size=8).fit(embeddings).compress(embeddings)
    scale = torch.linspace(0.5, 2.0, embeddings.shape[1])
    return inner, ColumnScaledTable(inner, scale), scale


def test_column_scaled_table_decodes_and_computes_logits_from_the_inner_table(
    embeddings, tmp_path
):
    inner, table, scale = _scaled_table(embeddings)
    with torch.no_grad():
        decoded = table.decode()
        torch.testing.assert_close(decoded, inner.decode() * scale)
        torch.testing.assert_close(table.decode([3, 1]), decoded[[3, 1]])
        h = torch.randn(5, embeddings.shape[1])
        torch.testing.assert_close(table.linear(h), h @ decoded.T, rtol=1e-5, atol=1e-4)
    assert table.n_bytes == inner.n_bytes + 4 * embeddings.shape[1]
    assert table.n_parameters == inner.n_parameters + embeddings.shape[1]
    save_table(table, tmp_path / "t.safetensors")
    loaded = load_table(tmp_path / "t.safetensors")
    assert isinstance(loaded, ColumnScaledTable)
    torch.testing.assert_close(loaded.decode(), decoded, rtol=0, atol=0)


def test_without_column_weight_the_fit_is_the_estimators_own(embeddings):
    plain = ScalarQuantizer(3, group_size=8).fit(embeddings).compress(embeddings)
    wrapped = ColumnWeightedCompressor(ScalarQuantizer(3, group_size=8)).fit(embeddings)
    table = wrapped.compress(embeddings)
    np.testing.assert_array_equal(wrapped.scale_, 1.0)
    torch.testing.assert_close(table.decode(), plain.decode(), rtol=0, atol=0)


def test_decode_is_the_original_within_the_codecs_error_and_heavy_columns_gain(
    embeddings,
):
    n_features = embeddings.shape[1]
    weight = np.ones(n_features)
    weight[:3] = 50.0
    plain = ScalarQuantizer(3, group_size=8).fit(embeddings).compress(embeddings)
    compressor = ColumnWeightedCompressor(
        ScalarQuantizer(3, group_size=8), column_weight=weight, identity_weight=0.2
    ).fit(embeddings)
    table = compressor.compress(embeddings)
    expected = np.sqrt(0.8 * weight / weight.mean() + 0.2)
    np.testing.assert_allclose(compressor.scale_, expected)
    with torch.no_grad():
        # The inner table stores X * scale; dividing its error by the scale bounds ours.
        inner = compressor.estimator_.compress(embeddings * expected).decode().numpy()
        error = table.decode().numpy() - embeddings
        plain_error = plain.decode().numpy() - embeddings
    np.testing.assert_allclose(
        error, (inner - embeddings * expected) / expected, rtol=1e-4, atol=1e-5
    )
    heavy = (error[:, :3] ** 2).mean()
    assert heavy < 0.5 * (plain_error[:, :3] ** 2).mean()
    # The weighted error, what the weights ask for, falls.
    assert (error**2 @ weight).mean() < (plain_error**2 @ weight).mean()


def test_sample_weight_reaches_the_estimator(embeddings):
    counts = np.random.RandomState(1).zipf(1.5, size=len(embeddings)).astype(float)
    weight = np.linspace(1, 5, embeddings.shape[1])
    compressor = ColumnWeightedCompressor(
        FrequencyMixedCompressor(6, ranks=(4,), random_state=0), column_weight=weight
    )
    fitted = compressor.fit(embeddings, sample_weight=counts).estimator_
    alone = FrequencyMixedCompressor(6, ranks=(4,), random_state=0).fit(
        embeddings * compressor.scale_.astype(np.float32), sample_weight=counts
    )
    np.testing.assert_array_equal(fitted.assignment_, alone.assignment_)


@pytest.mark.parametrize(
    "weight, message",
    [
        (np.ones(3), "one value a column"),
        (-np.ones(24), "non-negative"),
        (np.zeros(24), "not all zero"),
    ],
)
def test_bad_column_weight_is_refused(embeddings, weight, message):
    compressor = ColumnWeightedCompressor(ScalarQuantizer(4), column_weight=weight)
    with pytest.raises(ValueError, match=message):
        compressor.fit(embeddings)


@pytest.mark.parametrize("method, ratio", [("mixed", 6.0), ("scalar", 4.0), ("svd", 4)])
def test_presets_wrap_every_method_and_still_meet_the_ratio(embeddings, method, ratio):
    n_rows, n_features = embeddings.shape
    options = {
        "device": "cpu",
        "ratio_unit": "bytes",
        "column_weight": np.linspace(1, 3, n_features),
    }
    compressor = build_compressor(method, n_rows, n_features, ratio, options)
    assert isinstance(compressor, ColumnWeightedCompressor)
    table = compressor.fit(embeddings).compress(embeddings)
    assert isinstance(table, ColumnScaledTable)
    assert embeddings.nbytes / table.n_bytes >= ratio


@pytest.mark.transformers
def test_head_moment_is_the_second_moment_of_the_final_hidden_states(
    tiny_llama, tiny_tokenizer
):
    from skdirection.adapters.transformers import head_moment

    moment = head_moment(tiny_llama, tiny_tokenizer, [TEXT], max_tokens=None, max_length=16)
    ids = torch.as_tensor(tiny_tokenizer(TEXT)["input_ids"])
    hidden = []
    with torch.no_grad():
        for start in range(0, len(ids), 16):
            window = ids[None, start : start + 16]
            hidden.append(tiny_llama.model(input_ids=window).last_hidden_state[0])
    h = torch.cat(hidden).double()
    assert len(h) == len(ids)
    np.testing.assert_allclose(moment, (h.T @ h / len(h)).numpy(), rtol=1e-6, atol=1e-9)
    assert moment.shape == (32, 32)
    assert tiny_llama.training is False


@pytest.mark.transformers
def test_cli_calibration_text_fits_through_the_head_moment(saved_tiny_llama, capsys):
    import json

    from skdirection.adapters.transformers import head_moment, load_model
    from skdirection.cli import main

    folder, text, calibration = saved_tiny_llama
    common = [
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
        "both",
    ]
    main(common)
    plain = json.loads(capsys.readouterr().out)
    main([*common, "--calibration-text", str(calibration)])
    weighted = json.loads(capsys.readouterr().out)
    assert weighted[1]["bytes_ratio"] >= 7
    assert weighted[1]["perplexity"] != plain[1]["perplexity"]

    # The same table as the Python API's, from the moment on the calibration text.
    model, tokenizer = load_model(str(folder))
    moment = head_moment(model, tokenizer, [calibration.read_text()])
    weight = model.get_input_embeddings().weight.detach().numpy().copy()
    options = {"device": "cpu", "ratio_unit": "bytes", "column_weight": np.diag(moment)}
    compressor = build_compressor("scalar", *weight.shape, 7.0, options).fit(weight)
    table = compressor.compress(weight)
    assert weighted[1]["bytes_ratio"] == pytest.approx(weight.nbytes / table.n_bytes)
    # The bytes are the same whatever the moment; the decoded rows are not.
    decoded = table.decode().float().numpy()
    assert weighted[1]["mean_cosine"] == pytest.approx(
        mean_cosine_similarity(weight, decoded), rel=1e-6
    )
    assert weighted[1]["mean_cosine"] != pytest.approx(plain[1]["mean_cosine"], rel=1e-6)

    with pytest.raises(SystemExit, match="with --target input and no tuning it has no use"):
        main([*common[:-2], "--calibration-text", str(calibration)])
