"""Bad input gets a clear error naming the problem."""

import numpy as np
import pytest
import torch

from skdirection import (
    DirectionAutoEncoder,
    FrequencyMixedCompressor,
    ProductQuantizer,
    ScalarQuantizer,
    TruncatedSVDCompressor,
)

ESTIMATORS = [
    lambda **kw: DirectionAutoEncoder(
        **{"max_iter": 1, "device": "cpu", "random_state": 0, **kw}
    ),
    lambda **kw: TruncatedSVDCompressor(**{"device": "cpu", "random_state": 0, **kw}),
]
ids = ["autoencoder", "svd"]
X = np.random.RandomState(0).normal(size=(40, 6)).astype(np.float32)


@pytest.fixture(params=ESTIMATORS, ids=ids)
def make(request):
    return request.param


@pytest.mark.parametrize("bad, message", [(np.nan, "NaN"), (np.inf, "infinity")])
def test_non_finite_values(make, bad, message):
    X_bad = X.copy()
    X_bad[3, 2] = bad
    with pytest.raises(ValueError, match=message):
        make().fit(X_bad)


@pytest.mark.parametrize(
    "shape, message",
    [((10,), "Expected 2D array"), ((4, 3, 2), "dim 3"), ((0, 6), "0 sample")],
)
def test_wrong_dimensions_and_empty(make, shape, message):
    with pytest.raises(ValueError, match=message):
        make().fit(np.ones(shape))


@pytest.mark.parametrize("k", [6, 7])
def test_n_components_too_large(make, k):
    with pytest.raises(ValueError, match=rf"n_components={k} must be strictly less"):
        make(n_components=k).fit(X)


@pytest.mark.parametrize("k", [0, -1])
def test_n_components_too_small(make, k):
    with pytest.raises(ValueError, match="n_components"):
        make(n_components=k).fit(X)


def test_n_components_not_an_int(make):
    with pytest.raises(ValueError, match="n_components"):
        make(n_components=2.5).fit(X)


def test_strings_rejected(make):
    with pytest.raises(TypeError, match="must hold numbers"):
        make().fit(np.array([["a", "b"], ["c", "d"]]))


def test_object_strings_rejected(make):
    with pytest.raises(ValueError, match="could not convert string to float"):
        make().fit(np.array([["a", "b", "c"]] * 4, dtype=object))


def test_negative_sample_weight(make):
    weight = np.ones(len(X))
    weight[0] = -1
    with pytest.raises(
        ValueError, match="Negative values in data passed to `sample_weight`"
    ):
        make().fit(X, sample_weight=weight)


def test_wrong_length_sample_weight(make):
    with pytest.raises(
        ValueError, match=r"sample_weight.shape == \(39,\), expected \(40,\)"
    ):
        make().fit(X, sample_weight=np.ones(39))


def test_all_zero_sample_weight(make):
    with pytest.raises(ValueError, match="at least one non-zero"):
        make().fit(X, sample_weight=np.zeros(len(X)))


def test_nan_sample_weight(make):
    weight = np.ones(len(X))
    weight[1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        make().fit(X, sample_weight=weight)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(make):
    with pytest.raises(ValueError, match="CUDA is not available"):
        make(device="cuda").fit(X)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "npu"])
def test_unknown_device(make, device):
    with pytest.raises(ValueError, match="device"):
        make(device=device).fit(X)


def test_transform_with_other_feature_count(make):
    model = make().fit(X)
    with pytest.raises(
        ValueError, match="X has 5 features, but .* is expecting 6 features"
    ):
        model.transform(X[:, :5])


def test_inverse_transform_with_wrong_code_width(make):
    model = make().fit(X)
    with pytest.raises(ValueError, match="expects 2 columns"):
        model.inverse_transform(np.ones((3, 3)))


def test_transform_before_fit(make):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        make().transform(X)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize(
    "name", ["ScalarQuantizer", "ProductQuantizer", "FrequencyMixedCompressor"]
)
def test_every_estimator_refuses_an_absent_cuda_in_fit(name):
    import skdirection

    estimator = getattr(skdirection, name)()
    rows = np.random.RandomState(0).normal(size=(300, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="CUDA is not available"):
        estimator.set_params(device="cuda").fit(rows)


@pytest.mark.parametrize("name", ["DirectionAutoEncoder", "FrequencyMixedCompressor"])
def test_subnormal_weights_weigh_like_any_positive_weights(name):
    # Normalising them must not overflow (found by tests/test_properties.py).
    import skdirection

    rows = np.random.RandomState(0).normal(size=(300, 8)).astype(np.float32)
    make = getattr(skdirection, name)
    params = {"device": "cpu", "random_state": 0}
    params["n_components" if name == "DirectionAutoEncoder" else "ratio"] = 2
    tiny = make(**params).fit(rows, sample_weight=np.full(300, 5e-324))
    plain = make(**params).fit(rows)
    assert tiny.score(rows) == pytest.approx(plain.score(rows), rel=1e-6)


# Estimators that store float16 numbers, with what they store in them.
FLOAT16_STORES = {
    "scalar": (lambda: ScalarQuantizer(4, device="cpu"), "scales"),
    "product": (lambda: ProductQuantizer(2, device="cpu", random_state=0), "norms"),
    # stores no value of the rows it encodes: only its fit is refused
    "product without norms": (
        lambda: ProductQuantizer(2, keep_norms=False, device="cpu", random_state=0),
        "codebooks",
    ),
    "mix": (
        lambda: FrequencyMixedCompressor(4, device="cpu", random_state=0),
        "values and scales",
    ),
}
TABLE = np.random.RandomState(0).normal(size=(300, 8)).astype(np.float32)


@pytest.mark.parametrize("name", FLOAT16_STORES)
@pytest.mark.parametrize("scale, problem", [(1e-9, "below"), (1e5, "too large")])
def test_a_table_beyond_float16_is_refused_not_zeroed(name, scale, problem):
    """Before the check, a table of values near 1e-9 decoded to zero rows (a mean cosine
    of 0, no error) and one near 1e5 failed with 'Input contains infinity'."""
    make, stores = FLOAT16_STORES[name]
    with pytest.raises(ValueError, match=f"{problem}.*float16 {stores}.*multiply X"):
        make().fit(TABLE * np.float32(scale))
    if name == "product without norms":
        return
    fitted = make().fit(TABLE)
    assert fitted.score(TABLE) > 0.5
    with pytest.raises(ValueError, match=f"{problem}.*float16 {stores}"):
        fitted.compress(TABLE * np.float32(scale))
    if hasattr(fitted, "transform"):  # its codes hold the same float16 numbers
        with pytest.raises(ValueError, match=f"{problem}.*float16 {stores}"):
            fitted.transform(TABLE * np.float32(scale))


@pytest.mark.parametrize("name", FLOAT16_STORES)
def test_a_small_but_storable_table_keeps_its_directions(name):
    """Values near 1e-5 still hold 8 significant bits in float16: accepted, and
    compressed as well as the same table at unit scale."""
    make, _ = FLOAT16_STORES[name]
    small = TABLE * np.float32(2e-5)
    assert make().fit(small).score(small) == pytest.approx(
        make().fit(TABLE).score(TABLE), abs=2e-3
    )


def test_float32_storage_is_the_remedy_for_tiny_scalar_tables():
    tiny = TABLE * np.float32(1e-9)
    model = ScalarQuantizer(4, scale_dtype="float32", device="cpu").fit(tiny)
    assert model.score(tiny) > 0.95


def test_a_loss_that_diverges_names_the_learning_rate():
    model = DirectionAutoEncoder(2, max_iter=3, learning_rate=1e30, device="cpu")
    with pytest.raises(FloatingPointError, match="became nan.*lower learning_rate"):
        model.set_params(random_state=0).fit(TABLE)


def test_a_learning_rate_beyond_float32_is_refused_before_fitting():
    """Adam's first step is ten times the rate: beyond float32, torch failed mid-step
    with 'value cannot be converted to type float without overflow'."""
    model = DirectionAutoEncoder(2, learning_rate=1e38, device="cpu", random_state=0)
    with pytest.raises(ValueError, match="learning_rate=1e\\+38 is too large"):
        model.fit(TABLE)
    assert not hasattr(model, "training_scale_")


def _autoencoder(**params):
    return DirectionAutoEncoder(2, max_iter=4, device="cpu", random_state=0, **params)


@pytest.mark.parametrize("factor", [2.0**-40, 2.0**-9, 2.0**5, 2.0**90])
@pytest.mark.parametrize(
    "params", [{}, {"hidden_layer_sizes": (4,)}], ids=["linear", "hidden"]
)
def test_the_autoencoder_fits_a_rescaled_table_alike(factor, params):
    """A table times a power of two gives the same model, its weights scaled, bit for
    bit. Before the fit divided rows by their scale, the table times 2**-9 kept a mean
    cosine of 0.17 against 0.51 (Adam moved the biases by far more than the values),
    and times 2**90 failed with a nan loss (float32 squares overflowed)."""
    base = _autoencoder(**params).fit(TABLE)
    scaled = _autoencoder(**params).fit(TABLE * np.float32(factor))
    np.testing.assert_array_equal(scaled.loss_curve_, base.loss_curve_)
    np.testing.assert_array_equal(
        scaled.transform(TABLE * np.float32(factor)), base.transform(TABLE)
    )
    np.testing.assert_array_equal(
        scaled.inverse_transform(base.transform(TABLE)),
        base.inverse_transform(base.transform(TABLE)) * np.float32(factor),
    )
    assert scaled.training_scale_ == base.training_scale_ * factor


def test_partial_fit_resumes_a_rescaled_table_from_its_stored_weights():
    """After pickling, ``partial_fit`` rebuilds the network from the stored weights,
    which hold the scale: undone exactly, it continues as on the unscaled table."""
    import pickle

    def two_epochs(table):
        model = pickle.loads(pickle.dumps(_autoencoder().partial_fit(table)))
        return model.partial_fit(table)

    factor = np.float32(2.0**-9)
    base, scaled = two_epochs(TABLE), two_epochs(TABLE * factor)
    np.testing.assert_array_equal(scaled.loss_curve_, base.loss_curve_)
    np.testing.assert_array_equal(
        scaled.decoder_coefs_[-1], base.decoder_coefs_[-1] * factor
    )
    np.testing.assert_array_equal(scaled.encoder_coefs_[0], base.encoder_coefs_[0] / factor)


@pytest.mark.parametrize("factor", [1e-30, 1e-4, 1e25])
def test_the_autoencoder_keeps_directions_at_any_scale(factor):
    """Any factor, not only a power of two: the same mean cosine within 0.01."""
    expected = _autoencoder().fit(TABLE).score(TABLE)
    table = TABLE * np.float32(factor)
    assert _autoencoder().fit(table).score(table) == pytest.approx(expected, abs=0.01)
