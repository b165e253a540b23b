"""Hardening: zero rows, safe loading, reproducibility, CPU-only unpickling, interrupts.

Complements test_table.py (truncated file, tampered metadata), test_autoencoder.py
(interrupt in the first and a later epoch) and test_sklearn_integration.py (a CUDA fit
transforming on a CPU-only machine).
"""

import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from skdirection import DirectionAutoEncoder, TruncatedSVDCompressor, load_table, save_table
from skdirection._engine.training import Trainer, train
from skdirection.metrics import row_cosine_similarity

from .conftest import names

FAST = dict(max_iter=3, learning_rate=1e-2, device="cpu", random_state=0)


@pytest.fixture
def with_zero_rows(embeddings):
    X = embeddings.copy()
    X[[0, 7, 42]] = 0
    return X


# Zero rows ------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["covariance_eigh", "randomized", "exact"])
def test_uncentred_svd_reconstructs_zero_rows_as_zero(with_zero_rows, algorithm):
    X = with_zero_rows
    svd = TruncatedSVDCompressor(4, algorithm=algorithm, device="cpu", random_state=0)
    svd.fit(X)
    X_hat = svd.inverse_transform(svd.transform(X))
    assert np.all(X_hat[[0, 7, 42]] == 0)
    assert np.all(svd.compress(X).decode(torch.tensor([0, 7, 42])).numpy() == 0)
    np.testing.assert_array_equal(row_cosine_similarity(X, X_hat)[[0, 7, 42]], 1.0)


@pytest.mark.parametrize("latent_activation", [None, "elu"])
def test_autoencoder_decodes_a_zero_row_to_its_bias_path(with_zero_rows, latent_activation):
    """Documented in docs/method.rst: a zero row decodes to ``dec(enc(0))``, not zero."""
    X = with_zero_rows
    autoencoder = DirectionAutoEncoder(4, latent_activation=latent_activation, **FAST)
    autoencoder.fit(X)
    latent = autoencoder.encoder_intercepts_[0]
    if latent_activation == "elu":
        latent = torch.nn.functional.elu(torch.from_numpy(latent)).numpy()
    expected = latent @ autoencoder.decoder_coefs_[0] + autoencoder.decoder_intercepts_[0]
    X_hat = autoencoder.inverse_transform(autoencoder.transform(X))
    for row in (0, 7, 42):
        np.testing.assert_allclose(X_hat[row], expected, rtol=1e-5, atol=1e-6)
    table = autoencoder.compress(X)
    np.testing.assert_allclose(
        table.decode(torch.tensor([0])).numpy()[0], expected, rtol=1e-5, atol=1e-6
    )
    # Non-zero reconstruction of a zero row: defined as cosine 0, never NaN.
    np.testing.assert_array_equal(row_cosine_similarity(X, X_hat)[[0, 7, 42]], 0.0)
    assert np.isfinite(autoencoder.score(X))


def test_zero_rows_do_not_disturb_training(embeddings, with_zero_rows):
    plain = DirectionAutoEncoder(4, **FAST).fit(embeddings)
    zeros = DirectionAutoEncoder(4, **FAST).fit(with_zero_rows)
    assert np.all(np.isfinite(zeros.loss_curve_))
    nonzero = np.linalg.norm(with_zero_rows, axis=1) > 0
    assert zeros.score(with_zero_rows[nonzero]) > plain.score(embeddings) - 0.05


# Safe loading -----------------------------------------------------------------------------


@pytest.fixture
def saved_table(embeddings, tmp_path):
    table = TruncatedSVDCompressor(4, device="cpu").fit(embeddings).compress(embeddings)
    path = tmp_path / "table.safetensors"
    save_table(table, path)
    return table, path


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_pickle_is_refused_without_running_it(tmp_path, writer):
    marker = tmp_path / "code-ran"
    path = tmp_path / "table.safetensors"
    payload = {"latent": _RunsCodeWhenUnpickled(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(ValueError, match=names(path, "not a readable safetensors file")):
        load_table(path)
    assert not marker.exists()


def test_saved_file_holds_only_tensors(saved_table):
    from safetensors.torch import load_file

    table, path = saved_table
    tensors = load_file(str(path))
    assert set(tensors) == set(table.state_dict())
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())


def _rewrite(path, tensors=None, config_change=None):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        stored = {name: handle.get_tensor(name) for name in handle.keys()}
    description = json.loads(metadata["skdirection_table"])
    description["config"].update(config_change or {})
    metadata["skdirection_table"] = json.dumps(description)
    save_file(tensors if tensors is not None else stored, str(path), metadata=metadata)
    return stored


def test_tensor_of_the_wrong_shape_is_a_clear_error(saved_table):
    table, path = saved_table
    tensors = {k: v.clone() for k, v in table.state_dict().items()}
    tensors["latent"] = tensors["latent"][:, :3].contiguous()
    _rewrite(path, tensors)
    with pytest.raises(ValueError, match=names(path, "damaged skdirection table")):
        load_table(path)


def test_missing_tensor_is_a_clear_error(saved_table):
    table, path = saved_table
    tensors = {k: v for k, v in table.state_dict().items() if k != "coefs.0"}
    _rewrite(path, tensors)
    with pytest.raises(ValueError, match=names(path, "damaged skdirection table")):
        load_table(path)


@pytest.mark.parametrize(
    "change", [{"dtype": "load"}, {"n_rows": -5}, {"layer_sizes": [4]}]
)
def test_tampered_config_is_a_clear_error(saved_table, change):
    _, path = saved_table
    _rewrite(path, config_change=change)
    with pytest.raises(ValueError, match=names(path, "damaged skdirection table")):
        load_table(path)


def test_tampered_activation_is_refused_at_load(saved_table):
    _, path = saved_table
    _rewrite(path, config_change={"activation": "system"})
    with pytest.raises(ValueError, match=names(path, "damaged skdirection table")):
        load_table(path)


def test_corrupted_header_and_empty_file_are_clear_errors(saved_table, tmp_path):
    _, path = saved_table
    data = bytearray(path.read_bytes())
    data[10:20] = b"\xff" * 10
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=names(path, "not a readable safetensors file")):
        load_table(path)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.safetensors"):
        load_table(empty)
    with pytest.raises(ValueError, match="missing.safetensors"):
        load_table(tmp_path / "missing.safetensors")


# Reproducibility --------------------------------------------------------------------------

_FIT_IN_A_FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from skdirection import DirectionAutoEncoder
    X = np.load(sys.argv[1])
    model = DirectionAutoEncoder(4, hidden_layer_sizes=(8,), max_iter=3,
                                 learning_rate=1e-2, device="cpu", random_state=7)
    np.save(sys.argv[2], model.fit(X, sample_weight=np.arange(len(X)) % 5).transform(X))
    """
)


@pytest.mark.slow
def test_same_seed_same_model_in_a_fresh_process(embeddings, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = DirectionAutoEncoder(
            4,
            hidden_layer_sizes=(8,),
            max_iter=3,
            learning_rate=1e-2,
            device="cpu",
            random_state=7,
        )
        weight = np.arange(len(embeddings)) % 5
        expected = model.fit(embeddings, sample_weight=weight).transform(embeddings)
        again = model.fit(embeddings, sample_weight=weight)
        np.testing.assert_array_equal(again.transform(embeddings), expected)
    finally:
        torch.set_num_threads(threads)
    np.save(tmp_path / "X.npy", embeddings)
    subprocess.run(
        [
            sys.executable,
            "-c",
            _FIT_IN_A_FRESH_PROCESS,
            tmp_path / "X.npy",
            tmp_path / "Z.npy",
        ],
        check=True,
        timeout=120,
    )
    np.testing.assert_array_equal(np.load(tmp_path / "Z.npy"), expected)


def test_same_seed_same_tables(embeddings):
    tables = [
        DirectionAutoEncoder(3, **FAST).fit(embeddings).compress(embeddings)
        for _ in range(2)
    ]
    first, second = (t.state_dict() for t in tables)
    assert all(torch.equal(first[name], second[name]) for name in first)


@pytest.mark.parametrize("algorithm", ["randomized", "covariance_eigh"])
def test_svd_fit_leaves_global_random_state_alone(embeddings, algorithm):
    # The legacy global generator is what this test guards: NPY002 does not apply.
    np.random.seed(3)  # noqa: NPY002
    torch.manual_seed(3)
    expected = np.random.rand(), torch.rand(1)  # noqa: NPY002
    np.random.seed(3)  # noqa: NPY002
    torch.manual_seed(3)
    svd = TruncatedSVDCompressor(3, algorithm=algorithm, device="cpu", random_state=0)
    svd.fit(embeddings)
    assert np.random.rand() == expected[0]  # noqa: NPY002
    assert torch.equal(torch.rand(1), expected[1])


# A model fitted on CUDA, used on a CPU-only machine ---------------------------------------


def _torch_objects(value):
    if isinstance(value, (torch.Tensor, torch.nn.Module, torch.device, torch.Generator)):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _torch_objects(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _torch_objects(v)]
    return []


@pytest.mark.parametrize(
    "model",
    [
        DirectionAutoEncoder(3, hidden_layer_sizes=(6,), **FAST),
        TruncatedSVDCompressor(3, center=True, device="cpu"),
        TruncatedSVDCompressor(3, algorithm="randomized", device="cpu", random_state=0),
    ],
    ids=["autoencoder", "centred_svd", "randomized_svd"],
)
def test_fitted_state_holds_no_torch_objects(model, embeddings):
    """Nothing in a pickle can name a CUDA device, so it unpickles without CUDA."""
    model.fit(embeddings)
    assert _torch_objects(model.__getstate__()) == []


def test_cuda_fitted_autoencoder_compresses_and_scores_on_cpu(embeddings, monkeypatch):
    model = DirectionAutoEncoder(3, hidden_layer_sizes=(6,), **FAST).fit(embeddings)
    expected_table = model.compress(embeddings).state_dict()
    expected_score = model.score(embeddings)
    model.set_params(device="cuda")
    model.device_ = "cuda:0"
    restored = pickle.loads(pickle.dumps(model))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    table = restored.compress(embeddings).state_dict()
    assert all(torch.allclose(table[k], expected_table[k], atol=1e-6) for k in table)
    assert restored.score(embeddings) == pytest.approx(expected_score, rel=1e-6)


# Interrupted fits -------------------------------------------------------------------------


class _Scalar(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))


def test_interrupt_restores_the_best_epoch_not_the_last():
    targets = [3.0, 0.2, 50.0, 5.0]  # epoch 1 has the lowest loss; epoch 3 is interrupted
    seen = {}

    def batch_loss(module, rows, weight, epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        seen.setdefault(epoch, module.p.detach().clone())
        return ((module.p - targets[epoch]) ** 2).sum()

    module = _Scalar()
    X = torch.zeros(4, 1)
    trainer = Trainer(module, batch_loss, learning_rate=0.5, lr_step_size=100, lr_decay=1.0)
    batches = [(X[:2], torch.ones(2)), (X[2:], torch.ones(2))]
    with pytest.warns(RuntimeWarning, match="interrupted after 3 epoch"):
        loss_curve = train(trainer, batches, max_iter=10)
    assert len(loss_curve) == 3 and int(np.argmin(loss_curve)) == 1
    # The state after epoch 1 is the state epoch 2 started from.
    assert torch.equal(module.p.detach(), seen[2])
    assert not torch.equal(module.p.detach(), seen[1])


def test_epochs_of_a_changing_loss_never_beat_comparable_ones():
    # The loss of epochs 0 and 1 is a different function (an annealed term): their low
    # values must not win over the comparable epochs 2 to 4, of which 3 is the best.
    targets = [0.0, 0.0, 4.0, 1.0, 9.0]
    seen = {}

    def batch_loss(module, rows, weight, epoch):
        seen.setdefault(epoch, module.p.detach().clone())
        return ((module.p - targets[epoch]) ** 2).sum() + (100.0 if epoch >= 2 else 0.0)

    module = _Scalar()
    trainer = Trainer(module, batch_loss, learning_rate=0.5, lr_step_size=100, lr_decay=1.0)
    loss_curve = train(
        trainer, [(torch.zeros(2, 1), torch.ones(2))], max_iter=5, comparable_from=2
    )
    assert int(np.argmin(loss_curve)) in (0, 1)
    assert trainer.best_loss == min(loss_curve[2:]) == loss_curve[3]
    # The state after epoch 3 is the state epoch 4 started from.
    assert torch.equal(module.p.detach(), seen[4])


def test_annealing_autoencoder_keeps_an_epoch_with_the_final_loss(embeddings):
    model = DirectionAutoEncoder(3, element_power_epochs=3, **{**FAST, "max_iter": 6})
    model.fit(embeddings)
    assert model.best_loss_ == min(model.loss_curve_[3:])
    still_annealing = DirectionAutoEncoder(3, element_power_epochs=20, **FAST).fit(
        embeddings
    )
    assert still_annealing.best_loss_ == still_annealing.loss_curve_[-1]


def test_interrupted_refit_leaves_no_stale_fitted_state(embeddings, monkeypatch):
    model = DirectionAutoEncoder(3, **FAST).fit(embeddings)

    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.optim.Adam, "step", interrupt)
    model.set_params(n_components=2)
    with pytest.raises(KeyboardInterrupt):
        model.fit(embeddings)
    with pytest.raises(NotFittedError):
        model.transform(embeddings)
    assert not [name for name in vars(model) if name.endswith("_")]


def test_interrupted_refit_after_an_epoch_is_consistent(embeddings, monkeypatch):
    model = DirectionAutoEncoder(5, **{**FAST, "max_iter": 4, "batch_size": 32}).fit(
        embeddings
    )
    real_step, calls = torch.optim.Adam.step, {"n": 0}

    def step_then_interrupt(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 12:  # 300 rows in batches of 32: 10 steps an epoch
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step_then_interrupt)
    model.set_params(n_components=2)
    with pytest.warns(RuntimeWarning, match="interrupted after 1 epoch"):
        model.fit(embeddings)
    assert model.n_iter_ == len(model.loss_curve_) == 1
    assert [c.shape for c in model.decoder_coefs_] == [(2, embeddings.shape[1])]
    assert model.transform(embeddings).shape == (len(embeddings), 2)


@pytest.mark.parametrize("algorithm", ["covariance_eigh", "randomized"])
def test_svd_interrupted_late_in_fit_is_not_half_written(
    embeddings, monkeypatch, algorithm
):
    """An interrupt after components_ (the fitted marker) is set leaves nothing behind."""
    store = TruncatedSVDCompressor._set_solution

    def store_then_interrupt(self, *args, **kwargs):
        store(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(TruncatedSVDCompressor, "_set_solution", store_then_interrupt)
    model = TruncatedSVDCompressor(3, algorithm=algorithm, device="cpu", random_state=0)
    with pytest.raises(KeyboardInterrupt):
        model.fit(embeddings)
    assert [name for name in vars(model) if name.endswith("_")] == []
    with pytest.raises(NotFittedError):
        model.transform(embeddings)


# Known numerical edge cases ---------------------------------------------------------------


def test_explained_variance_ratio_of_identical_rows_is_at_most_one():
    X = np.full((5, 2), 7.0, dtype=np.float32)
    svd = TruncatedSVDCompressor(1, device="cpu")
    svd.fit(X, sample_weight=np.full(5, 1.56987656))
    assert svd.explained_variance_ratio_.sum() <= 1.0


def test_row_cosine_is_scale_invariant_for_tiny_rows():
    X = np.array([[1.0, 0.0]]) * 1e-31
    Y = np.array([[1.0, 1.0]]) * 1e-31
    np.testing.assert_allclose(row_cosine_similarity(X, Y), [np.sqrt(0.5)])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a CPU-only machine")
def test_gpu_fitted_fixture_works_on_a_cpu():
    """Models fitted and pickled on a GPU (``benchmarks/cuda_pickle_check.py dump``)
    transform, compress and score on this CPU to the numbers the GPU wrote."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = root / "benchmarks" / "cuda_pickle_check.py"
    spec = importlib.util.spec_from_file_location("cuda_pickle_check", script)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    if not (check.FIXTURE / "manifest.json").is_file():
        pytest.skip(
            "no GPU-fitted fixture committed yet: run `python "
            "benchmarks/cuda_pickle_check.py dump` on a machine with CUDA and commit "
            "tests/data/cuda_fitted/"
        )
    check.load(check.FIXTURE)
