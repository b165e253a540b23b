"""The ``skdirection evaluate`` command on a tiny model saved to a folder."""

import json
import subprocess
import sys

import pytest

from skdirection.cli import main
from skdirection.presets import build_compressor, low_rank_components

from .conftest import TEXT

pytestmark = pytest.mark.transformers


@pytest.fixture
def model_folder(tiny_llama, tiny_tokenizer, tmp_path):
    folder = tmp_path / "tiny"
    tiny_llama.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    text = tmp_path / "eval.txt"
    text.write_text(TEXT)
    return folder, text


def test_evaluate_json(model_folder, tmp_path, capsys):
    folder, text = model_folder
    plot = tmp_path / "plot.png"
    main(
        [
            "evaluate",
            "--model",
            str(folder),
            "--method",
            "svd",
            "--method",
            "direction",
            "--ratio",
            "4",
            "--ratio",
            "2.5",
            "--eval-text",
            str(text),
            "--counts-text",
            str(text),
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--format",
            "json",
            "--quiet",
            "--plot",
            str(plot),
        ]
    )
    rows = json.loads(capsys.readouterr().out)
    assert [(r["method"], r["n_components"]) for r in rows] == [
        ("none", None),
        ("svd", 4),
        ("svd", 7),
        ("direction", 4),
        ("direction", 7),
    ]
    required = {
        "method",
        "target",
        "ratio",
        "bytes_ratio",
        "n_components",
        "embedding_params",
        "model_params",
        "perplexity",
        "baseline_perplexity",
        "mean_cosine",
        "fit_seconds",
    }
    for row in rows:
        assert required <= row.keys()
        assert row["baseline_perplexity"] == rows[0]["perplexity"]
    assert all(
        r["ratio"] >= requested
        for r, requested in zip(rows[1:], [4, 2.5, 4, 2.5], strict=True)
    )
    assert rows[1]["embedding_params"] == 51 * 4 + 4 * 32
    assert rows[3]["embedding_params"] == 51 * 4 + 4 * 32 + 32
    assert rows[0]["bytes_ratio"] == 1.0
    # Low-rank tables store float32: 4 bytes a parameter.
    assert all(r["bytes_ratio"] == pytest.approx(r["ratio"]) for r in rows)
    assert plot.stat().st_size > 0


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_evaluate_formats(model_folder, capsys, fmt):
    folder, text = model_folder
    main(
        [
            "evaluate",
            "--model",
            str(folder),
            "--method",
            "svd",
            "--ratio",
            "4",
            "--eval-text",
            str(text),
            "--format",
            fmt,
            "--quiet",
            "--target",
            "both",
        ]
    )
    out = capsys.readouterr().out.splitlines()
    assert len(out) == (4 if fmt == "table" else 3)
    assert "perplexity" in out[0] and "bytes_ratio" in out[0]
    if fmt == "csv":
        import csv

        rows = list(csv.DictReader(out))
        assert [row["method"] for row in rows] == ["none", "svd"]
        assert float(rows[0]["bytes_ratio"]) == 1.0
        assert float(rows[1]["bytes_ratio"]) >= 4
        assert float(rows[0]["mean_cosine"]) == 1.0 > float(rows[1]["mean_cosine"]) > 0.5
        assert float(rows[1]["perplexity"]) != float(rows[0]["perplexity"])
        assert min(float(row["perplexity"]) for row in rows) > 1


def test_evaluate_errors(model_folder, tmp_path):
    folder, text = model_folder
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(SystemExit, match="empty"):
        main(["evaluate", "--model", str(folder), "--eval-text", str(empty)])
    with pytest.raises(SystemExit, match="neither"):
        main(["evaluate", "--model", str(tmp_path / "nope"), "--eval-text", str(text)])


def test_a_pair_that_cannot_be_met_is_a_row_and_the_others_run(model_folder, capsys):
    folder, text = model_folder
    rows = _evaluate_json(
        folder,
        text,
        capsys,
        "--method",
        "svd",
        "--method",
        "scalar",
        "--ratio",
        "1000",
        "--ratio",
        "4",
        "--ratio-unit",
        "bytes",
    )
    by_pair = {(r["method"], r["requested_ratio"]): r for r in rows[1:]}
    assert set(by_pair) == {("svd", 1000), ("svd", 4), ("scalar", 1000), ("scalar", 4)}
    for method in ("svd", "scalar"):
        impossible, possible = by_pair[method, 1000], by_pair[method, 4]
        assert "too high" in impossible["note"]
        assert impossible["perplexity"] is None and impossible["ratio"] is None
        assert possible["note"] is None and possible["perplexity"] > 1
        assert possible["bytes_ratio"] >= 4


def _evaluate_json(folder, text, capsys, *args):
    main(
        [
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
            *args,
        ]
    )
    return json.loads(capsys.readouterr().out)


def test_scalar_in_bytes(model_folder, capsys):
    folder, text = model_folder
    rows = _evaluate_json(
        folder,
        text,
        capsys,
        "--method",
        "scalar",
        "--ratio-unit",
        "bytes",
        "--ratio",
        "3",
        "--ratio",
        "6",
        "--ratio",
        "10",
    )
    n_rows, n_features = 51, 32
    # 32 features: int8, then int4 and int2 (groups of 32 are a whole row), each row with
    # a float16 scale and offset.
    row_bytes = [n_features + 4, n_features // 2 + 4, n_features // 4 + 4]
    for row, stored in zip(rows[1:], row_bytes, strict=True):
        assert row["bytes_ratio"] == pytest.approx(4 * n_features / stored)
        assert row["embedding_params"] == n_rows * (n_features + 2)
        assert row["ratio"] < 1  # quantization keeps every value, and adds scales
    assert [round(r["bytes_ratio"], 2) for r in rows[1:]] == [3.56, 6.4, 10.67]


@pytest.mark.parametrize("target", ["output", "both"])
@pytest.mark.parametrize(
    "method, unit, ratio", [("svd", "params", "4"), ("scalar", "bytes", "10")]
)
def test_output_and_both_measure_the_model_with_the_decoded_table(
    model_folder, capsys, target, method, unit, ratio
):
    """The perplexity reported for a patched head is the perplexity of the same model
    with a plain head holding the decoded table (and, for 'both', the same input)."""
    import torch

    from skdirection.adapters.transformers import load_model, perplexity

    folder, text = model_folder
    args = ["--method", method, "--ratio-unit", unit, "--ratio", ratio, "--target", target]
    rows = _evaluate_json(folder, text, capsys, *args)

    model, tokenizer = load_model(str(folder))
    weight = model.get_input_embeddings().weight.detach().numpy().copy()
    options = {"device": "cpu", "ratio_unit": unit}
    compressor = build_compressor(method, *weight.shape, float(ratio), options)
    with torch.no_grad():
        decoded = compressor.fit(weight).compress(weight).decode()
    model.get_output_embeddings().weight = torch.nn.Parameter(decoded.clone())
    if target == "both":
        model.get_input_embeddings().weight = torch.nn.Parameter(decoded.clone())
    expected = perplexity(model, tokenizer, [TEXT], progress=False)
    assert rows[1]["target"] == target
    assert rows[1]["perplexity"] == pytest.approx(expected, rel=1e-5)
    assert rows[1]["perplexity"] != pytest.approx(rows[0]["perplexity"], rel=1e-3)


def test_auto_and_mixed_meet_the_ratio(model_folder, capsys):
    folder, text = model_folder
    rows = _evaluate_json(
        folder,
        text,
        capsys,
        "--method",
        "auto",
        "--method",
        "mixed",
        "--ratio-unit",
        "bytes",
        "--ratio",
        "6",
        "--ratio",
        "9",
        "--counts-text",
        str(text),
    )
    assert [r["method"] for r in rows[1:]] == ["auto", "auto", "mixed", "mixed"]
    requested = [6, 9, 6, 9]
    assert all(r["bytes_ratio"] >= x for r, x in zip(rows[1:], requested, strict=True))
    # auto is the mix, weighted alike, at 6x as at 9x.
    for auto, mixed in ((rows[1], rows[3]), (rows[2], rows[4])):
        for key in ("bytes_ratio", "embedding_params", "perplexity"):
            assert auto[key] == mixed[key]
    assert rows[1]["bytes_ratio"] < 6.4  # not int4 in groups of 32, which overshoots


@pytest.mark.slow
def test_impossible_ratios_exit_with_one_line(model_folder, capsys):
    folder, text = model_folder
    with pytest.raises(SystemExit, match="no parameters ratio.*--ratio-unit bytes"):
        main(
            [
                "evaluate",
                "--model",
                str(folder),
                "--eval-text",
                str(text),
                "--quiet",
                "--method",
                "scalar",
                "--ratio",
                "4",
            ]
        )
    with pytest.raises(SystemExit, match="cannot be reached"):
        main(
            [
                "evaluate",
                "--model",
                str(folder),
                "--eval-text",
                str(text),
                "--quiet",
                "--method",
                "mixed",
                "--ratio",
                "4",
            ]
        )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "skdirection",
            "evaluate",
            "--model",
            str(folder),
            "--eval-text",
            str(text),
            "--quiet",
            "--method",
            "scalar",
            "--ratio-unit",
            "bytes",
            "--ratio",
            "50",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "skdirection: ratio 50.0 is too high for scalar quantization of 32 features: the "
        "largest bytes ratio it reaches is 10.67."
    )


def test_python_dash_m_help():
    out = subprocess.run(
        [sys.executable, "-m", "skdirection", "evaluate", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--ratio" in out and "--eval-text" in out
    assert "--ratio-unit {params,bytes}" in out
    for name in ("scalar", "mixed", "auto"):
        assert f"\n  {name} " in out  # each method described below the options


def test_ratio_to_components():
    assert low_rank_components(49152, 576, 10, bias=True) == 56
    k = low_rank_components(30522, 768, 5)
    assert 30522 * 768 / (k * (30522 + 768)) >= 5 > 30522 * 768 / ((k + 1) * (30522 + 768))
    assert build_compressor("direction", 100, 20, 4).max_iter == 30
    with pytest.raises(ValueError, match="unknown method"):
        build_compressor("zip", 100, 20, 4)


def test_direction_method_trains_the_papers_way_and_fast_method_the_packages():
    from skdirection.estimators import PAPER_PARAMS
    from skdirection.presets import build_compressor

    paper = build_compressor("direction", 49152, 576, 5.0)
    assert {k: paper.get_params()[k] for k in PAPER_PARAMS} == PAPER_PARAMS
    assert paper.random_state == 1
    fast = build_compressor("direction-fast", 49152, 576, 5.0)
    assert fast.get_params()["init"] == "auto" and fast.n_components == paper.n_components


def test_the_command_and_the_python_api_give_the_same_mix_for_the_same_counts(
    model_folder, tiny_llama, tiny_tokenizer, tmp_path, capsys
):
    from skdirection import FrequencyMixedCompressor
    from skdirection.adapters.transformers import token_counts
    from skdirection.metrics import mean_cosine_similarity

    folder, text = model_folder
    counts_file = tmp_path / "counts.txt"
    counts_text = "The fox runs . The dog sleeps while the birds sing ."
    counts_file.write_text(counts_text)
    rows = _evaluate_json(
        folder,
        text,
        capsys,
        "--method",
        "mixed",
        "--ratio",
        "6",
        "--ratio-unit",
        "bytes",
        "--counts-text",
        str(counts_file),
        "--seed",
        "3",
    )
    matrix = tiny_llama.get_input_embeddings().weight.detach().numpy()
    counts = token_counts(tiny_tokenizer, [counts_text], n_rows=len(matrix))
    assert (counts == 0).any()  # rows the counting text never saw: floored in both paths
    table = (
        FrequencyMixedCompressor(6, random_state=3)
        .fit(matrix, sample_weight=counts)
        .compress(matrix)
    )
    assert rows[1]["bytes_ratio"] == pytest.approx(matrix.nbytes / table.n_bytes)
    decoded = table.decode().numpy()
    assert rows[1]["mean_cosine"] == pytest.approx(mean_cosine_similarity(matrix, decoded))


def test_installed_corpora_by_name(model_folder, capsys):
    folder, _ = model_folder
    rows = _evaluate_json(
        folder,
        "lee",
        capsys,
        "--method",
        "svd",
        "--ratio",
        "4",
        "--max-tokens",
        "64",
        "--counts-text",
        "wikipedia",
    )
    assert rows[0]["perplexity"] > 1 and rows[1]["perplexity"] > 1
    # The names pick the texts: another corpus measures another perplexity, and
    # without the counts the fit is another one.
    other = _evaluate_json(
        folder, "wikipedia", capsys, "--method", "svd", "--ratio", "4", "--max-tokens", "64"
    )
    assert other[0]["perplexity"] != rows[0]["perplexity"]
    assert other[1]["mean_cosine"] != rows[1]["mean_cosine"]
