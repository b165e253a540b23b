import numpy as np
import pytest
import torch

from skdirection import DirectionAutoEncoder, TruncatedSVDCompressor
from skdirection._engine.autoencoder import direction_start
from skdirection._engine.backend import RowSource
from skdirection.metrics import row_cosine_similarity

# Mini-batches of 32 without a stopping rule, as the paper trains, but fewer epochs.
FAST = dict(
    max_iter=8,
    batch_size=32,
    n_iter_no_change=None,
    learning_rate=1e-2,
    lr_step_size=100,
    device="cpu",
    random_state=0,
)


def test_paper_parameter_set():
    params = DirectionAutoEncoder.paper().get_params()
    assert params["init"] == "random" and params["n_iter_no_change"] is None
    assert DirectionAutoEncoder().get_params()["init"] == "auto"
    assert params["cosine_weight"] == pytest.approx(0.9975 / 5)
    assert params["element_weight"] == 0.0025
    assert (params["element_power_start"], params["element_power_end"]) == (1.0, 0.1)
    assert params["element_power_epochs"] == 20
    assert params["rmse_weight"] == 0.0
    assert (params["max_iter"], params["batch_size"], params["learning_rate"]) == (
        30,
        32,
        1e-3,
    )
    assert (params["lr_step_size"], params["lr_decay"]) == (4, 0.5)
    assert params["hidden_layer_sizes"] == () and params["latent_activation"] is None


def test_fit_learns_directions(embeddings):
    autoencoder = DirectionAutoEncoder(n_components=6, init="random", **FAST).fit(
        embeddings
    )
    assert autoencoder.n_iter_ == 8 and len(autoencoder.loss_curve_) == 8
    assert autoencoder.loss_curve_[-1] < autoencoder.loss_curve_[0]
    # The element power still anneals: the last epoch is kept.
    assert autoencoder.best_loss_ == autoencoder.loss_curve_[-1]
    assert autoencoder.score(embeddings) > 0.9
    assert autoencoder.device_ == "cpu"
    assert [c.shape for c in autoencoder.encoder_coefs_] == [(24, 6)]
    assert [c.shape for c in autoencoder.decoder_coefs_] == [(6, 24)]


def test_same_seed_same_model(embeddings):
    first = DirectionAutoEncoder(n_components=4, **FAST).fit(embeddings)
    second = DirectionAutoEncoder(n_components=4, **FAST).fit(embeddings)
    np.testing.assert_array_equal(first.transform(embeddings), second.transform(embeddings))
    other = DirectionAutoEncoder(n_components=4, **{**FAST, "random_state": 1}).fit(
        embeddings
    )
    assert not np.array_equal(first.transform(embeddings), other.transform(embeddings))


def test_fit_leaves_torch_global_rng_alone(embeddings):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    DirectionAutoEncoder(n_components=2, **FAST).fit(embeddings)
    assert torch.equal(torch.rand(3), expected)


def test_direction_loss_beats_svd_on_cosine_at_equal_rank(embeddings):
    # On rows of very different norms the SVD spends its rank on the long rows.
    rng = np.random.RandomState(1)
    X = embeddings * rng.lognormal(0, 1.5, size=(embeddings.shape[0], 1)).astype(np.float32)
    svd = TruncatedSVDCompressor(n_components=3, device="cpu").fit(X)
    autoencoder = DirectionAutoEncoder(n_components=3, **{**FAST, "max_iter": 30}).fit(X)
    assert autoencoder.score(X) > svd.score(X)


def test_sample_weight_favours_heavy_rows(embeddings):
    weight = np.ones(len(embeddings))
    weight[:30] = 200.0
    params = {**FAST, "max_iter": 30}
    plain = DirectionAutoEncoder(n_components=2, **params).fit(embeddings)
    weighted = DirectionAutoEncoder(n_components=2, **params).fit(
        embeddings, sample_weight=weight
    )
    heavy = embeddings[:30]
    assert weighted.score(heavy) > plain.score(heavy)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"init": "random"},
        {"hidden_layer_sizes": (5,), "rmse_weight": 1.0, "element_weight": 0.1},
    ],
    ids=["svd_start", "random_start", "hidden_layer_rmse"],
)
def test_zero_weight_rows_are_ignored(embeddings, params):
    """Whatever a zero-weight row holds, the fit is the same, to the bit; and it would
    not be if those rows counted (their content is wildly different)."""
    weight = np.ones(len(embeddings))
    weight[::2] = 0
    other = embeddings.copy()
    other[::2] = 100 * np.random.RandomState(1).normal(size=other[::2].shape)
    first = DirectionAutoEncoder(2, **params, **FAST).fit(embeddings, sample_weight=weight)
    second = DirectionAutoEncoder(2, **params, **FAST).fit(other, sample_weight=weight)
    for name in ("encoder_coefs_", "decoder_coefs_", "decoder_intercepts_"):
        for a, b in zip(getattr(first, name), getattr(second, name), strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.loss_curve_, second.loss_curve_)
    unweighted = DirectionAutoEncoder(2, **params, **FAST).fit(other)
    assert not np.allclose(unweighted.decoder_coefs_[-1], first.decoder_coefs_[-1])


def test_non_linear_variant_and_hidden_layers(embeddings):
    autoencoder = DirectionAutoEncoder(
        n_components=4, hidden_layer_sizes=(12,), latent_activation="elu", **FAST
    ).fit(embeddings)
    assert [c.shape for c in autoencoder.decoder_coefs_] == [(4, 12), (12, 24)]
    codes = autoencoder.transform(embeddings)
    assert codes.min() >= -1.0  # ELU's lower bound
    table = autoencoder.compress(embeddings)
    np.testing.assert_allclose(
        table.decode().numpy(), autoencoder.inverse_transform(codes), rtol=1e-5, atol=1e-6
    )


def test_compress_counts_latent_and_decoder_only(embeddings):
    autoencoder = DirectionAutoEncoder(n_components=5, **FAST).fit(embeddings)
    table = autoencoder.compress(embeddings)
    n, d = embeddings.shape
    assert table.n_parameters == n * 5 + 5 * d + d
    assert table.n_bytes == 4 * table.n_parameters
    rows = torch.tensor([3, 0, 7])
    np.testing.assert_allclose(
        table(rows).numpy(),
        autoencoder.inverse_transform(autoencoder.transform(embeddings[[3, 0, 7]])),
        rtol=1e-5,
        atol=1e-6,
    )


def test_verbose_shows_progress(embeddings, capsys):
    DirectionAutoEncoder(n_components=2, **{**FAST, "max_iter": 2, "verbose": 1}).fit(
        embeddings
    )
    assert "DirectionAutoEncoder" in capsys.readouterr().err


def test_all_zero_loss_weights_rejected(embeddings):
    with pytest.raises(ValueError, match="all zero"):
        DirectionAutoEncoder(
            n_components=2, cosine_weight=0, element_weight=0, rmse_weight=0, **FAST
        ).fit(embeddings)


def test_zero_rows_reconstruct_finite(embeddings):
    X = embeddings.copy()
    X[:5] = 0
    autoencoder = DirectionAutoEncoder(n_components=3, **FAST).fit(X)
    assert np.all(np.isfinite(autoencoder.inverse_transform(autoencoder.transform(X))))


def test_interrupt_keeps_best_epoch(embeddings, monkeypatch):
    import skdirection._engine.training as training

    calls = {"n": 0}
    real_step = torch.optim.Adam.step

    def step_then_interrupt(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 25:  # 300 rows / 32 = 10 steps an epoch: interrupt in epoch 3
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(training.torch.optim.Adam, "step", step_then_interrupt)
    with pytest.warns(RuntimeWarning, match="interrupted after 2 epoch"):
        autoencoder = DirectionAutoEncoder(n_components=3, **FAST).fit(embeddings)
    assert autoencoder.n_iter_ == 2
    assert np.all(np.isfinite(autoencoder.transform(embeddings)))


def test_interrupt_in_first_epoch_leaves_estimator_unfitted(embeddings, monkeypatch):
    from sklearn.exceptions import NotFittedError

    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.optim.Adam, "step", interrupt)
    autoencoder = DirectionAutoEncoder(n_components=3, **FAST)
    with pytest.raises(KeyboardInterrupt):
        autoencoder.fit(embeddings)
    with pytest.raises(NotFittedError):
        autoencoder.transform(embeddings)
    assert not [name for name in vars(autoencoder) if name.endswith("_")]


def test_reconstruction_cosine_is_per_row(embeddings):
    autoencoder = DirectionAutoEncoder(n_components=6, **FAST).fit(embeddings)
    similarity = row_cosine_similarity(
        embeddings, autoencoder.inverse_transform(autoencoder.transform(embeddings))
    )
    assert similarity.mean() == pytest.approx(autoencoder.score(embeddings), rel=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_returns_numpy_and_pickles_for_cpu(embeddings):
    import pickle

    autoencoder = DirectionAutoEncoder(n_components=4, **{**FAST, "device": "cuda"}).fit(
        embeddings
    )
    assert autoencoder.device_.startswith("cuda")
    assert isinstance(autoencoder.transform(embeddings), np.ndarray)
    restored = pickle.loads(pickle.dumps(autoencoder))
    assert all(isinstance(c, np.ndarray) for c in restored.decoder_coefs_)


def test_the_start_fits_rows_of_an_affine_subspace_exactly():
    # Rows on a 4-dimensional plane off the origin span 5 dimensions: no subspace of 4
    # holds their directions, the plane through its offset does.
    rng = np.random.RandomState(0)
    offset = 3 * rng.normal(size=24)
    X = (offset + rng.normal(size=(200, 4)) @ rng.normal(size=(4, 24))).astype(np.float32)
    X = np.vstack([X, np.zeros((3, 24), np.float32)])  # zero rows weigh nothing
    weight = torch.from_numpy(rng.uniform(0.5, 2.0, size=len(X)))
    basis, start_offset, _ = direction_start(RowSource(X), weight, 4, torch.device("cpu"))
    X_hat = start_offset + (torch.from_numpy(X) - start_offset) @ basis @ basis.T
    assert row_cosine_similarity(X[:200], X_hat[:200].numpy()).min() > 1 - 1e-5
    linear = TruncatedSVDCompressor(4).fit(X[:200])
    assert linear.score(X[:200]) < 0.99


def test_the_autoencoder_starts_from_the_affine_fit(embeddings):
    start = DirectionAutoEncoder(4, max_iter=1, learning_rate=1e-30, random_state=0)
    start.fit(embeddings)
    scale = start.training_scale_
    assert scale == 8.0  # the rows' root-mean-square norm is in [8, 16)
    basis, offset, kept = direction_start(
        RowSource(embeddings), torch.ones(300), 4, torch.device("cpu"), scale=scale
    )
    assert 0.5 < kept < 1
    latent = (torch.from_numpy(embeddings) / scale - offset) @ basis
    np.testing.assert_allclose(start.transform(embeddings), latent.numpy(), atol=1e-4)
    decoded = start.inverse_transform(latent.numpy())
    # Lengthened so that the rows keep their root-mean-square relative length.
    expected = scale * (offset + latent @ basis.T).numpy() / np.sqrt(kept)
    np.testing.assert_allclose(decoded, expected, atol=1e-4)
    relative = np.linalg.norm(decoded, axis=1) / np.linalg.norm(embeddings, axis=1)
    assert np.sqrt(np.mean(relative**2)) == pytest.approx(1.0, abs=1e-5)
