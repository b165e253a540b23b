"""The method registry: each method meets the requested ratio in the requested unit."""

import numpy as np
import pytest

from skdirection import (
    FrequencyMixedCompressor,
    ProductQuantizer,
    ScalarQuantizer,
    TruncatedSVDCompressor,
)
from skdirection.presets import (
    METHODS,
    SCALAR_CONFIGS,
    auto_compressor,
    build_compressor,
    pq_stored_size,
    scalar_bytes_ratio,
)


def _bytes_ratio(X, table):
    return X.astype(np.float32).nbytes / table.n_bytes


@pytest.fixture(scope="module")
def table():
    rng = np.random.RandomState(0)
    return (rng.normal(size=(600, 64)) @ rng.normal(size=(64, 64)) / 8).astype(np.float32)


@pytest.mark.parametrize("n_features", [576, 40, 20])
@pytest.mark.parametrize("bits, group_size", SCALAR_CONFIGS)
def test_scalar_bytes_ratio_is_what_the_table_stores(n_features, bits, group_size):
    X = np.random.RandomState(0).normal(size=(5, n_features)).astype(np.float32)
    stored = ScalarQuantizer(bits, group_size=group_size).fit(X).compress(X)
    assert scalar_bytes_ratio(n_features, bits, group_size) == pytest.approx(
        _bytes_ratio(X, stored), rel=1e-12
    )


@pytest.mark.parametrize(
    "ratio, expected",
    [
        (1.5, (8, None)),
        (3.97, (8, None)),  # int8 a row: 576 bytes of codes + 4 of scale and offset
        (4.0, (4, 32)),
        (6.4, (4, 32)),
        (7.0, (4, None)),
        (8.0, (3, 32)),
        (10.0, (3, None)),
        (10.6, (2, 32)),
        (15.5, (2, None)),
    ],
)
def test_scalar_picks_the_most_precise_configuration_that_meets_the_ratio(ratio, expected):
    quantizer = build_compressor("scalar", 49152, 576, ratio, {"ratio_unit": "bytes"})
    assert isinstance(quantizer, ScalarQuantizer)
    assert (quantizer.bits, quantizer.group_size) == expected


def test_scalar_needs_bytes_and_a_reachable_ratio():
    with pytest.raises(ValueError, match="no parameters ratio.*--ratio-unit bytes"):
        build_compressor("scalar", 49152, 576, 4)
    with pytest.raises(ValueError, match="ratio 16.0 is too high.*reaches is 15.57"):
        build_compressor("scalar", 49152, 576, 16.0, {"ratio_unit": "bytes"})
    with pytest.raises(ValueError, match="ratio_unit must be one of"):
        build_compressor("svd", 100, 20, 4, {"ratio_unit": "values"})


@pytest.mark.parametrize("ratio", [0, -2.0, float("nan"), float("inf")])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_ratio_that_is_not_a_positive_number_is_refused(name, ratio):
    options = {"ratio_unit": "bytes", "column_weight": np.ones(20)}  # divides by it
    with pytest.raises(ValueError, match="ratio must be a positive number"):
        build_compressor(name, 100, 20, ratio, options)


@pytest.mark.parametrize("method", ["svd", "direction", "direction-fast"])
def test_low_rank_rank_is_the_same_in_both_units(method):
    ranks = {
        unit: build_compressor(method, 49152, 576, 5.0, {"ratio_unit": unit}).n_components
        for unit in ("params", "bytes")
    }
    assert ranks["params"] == ranks["bytes"]


@pytest.mark.parametrize("ratio", [2.5, 5.0])
def test_low_rank_bytes_ratio_equals_params_ratio(table, ratio):
    svd = build_compressor("svd", *table.shape, ratio, {"ratio_unit": "bytes"})
    stored = svd.fit(table).compress(table)
    assert _bytes_ratio(table, stored) == pytest.approx(table.size / stored.n_parameters)
    assert _bytes_ratio(table, stored) >= ratio


@pytest.mark.parametrize("unit, ratio", [("bytes", 6.0), ("bytes", 12.0), ("params", 3.0)])
def test_mixed_meets_the_ratio(table, unit, ratio):
    mixed = build_compressor("mixed", *table.shape, ratio, {"ratio_unit": unit})
    assert isinstance(mixed, FrequencyMixedCompressor) and mixed.ratio_unit == unit
    counts = np.random.RandomState(1).zipf(1.5, size=table.shape[0]).astype(float)
    stored = mixed.fit(table, sample_weight=counts).compress(table)
    achieved = (
        _bytes_ratio(table, stored)
        if unit == "bytes"
        else (table.size / stored.n_parameters)
    )
    assert achieved >= ratio


@pytest.mark.parametrize("ratio", [1.5, 3.0, 6.0, 6.4])
def test_auto_spends_the_whole_budget_below_where_scalar_codes_reach(ratio):
    # One scalar code (int4 in groups of 32 at 6.4x, int8 at 3.97x) overshoots these.
    mixed = auto_compressor(49152, 576, ratio, "bytes")
    assert isinstance(mixed, FrequencyMixedCompressor) and mixed.ratio == ratio
    assert mixed.projected_block_sizes == () and mixed.keep_norms
    searched = auto_compressor(49152, 576, ratio, "bytes", search=True)
    assert isinstance(searched, FrequencyMixedCompressor) and searched.ratio == ratio
    assert searched.projected_block_sizes == (2, 4) and not searched.keep_norms
    registered = build_compressor("auto", 49152, 576, ratio, {"ratio_unit": "bytes"})
    assert registered.get_params() == {**mixed.get_params(), "random_state": 1}


def test_auto_refuses_a_ratio_that_compresses_nothing_by_name():
    X = np.random.RandomState(0).normal(size=(50, 8)).astype(np.float32)
    for ratio in (0.5, 1.0):
        auto = build_compressor("auto", *X.shape, ratio, {"ratio_unit": "bytes"})
        with pytest.raises(ValueError, match="'ratio' parameter"):
            auto.fit(X)


@pytest.mark.parametrize("ratio, unit", [(7.0, "bytes"), (16.0, "bytes"), (2.0, "params")])
def test_auto_mixes_beyond_and_projects_only_a_searched_table(ratio, unit):
    mixed = auto_compressor(49152, 576, ratio, unit)
    assert isinstance(mixed, FrequencyMixedCompressor)
    assert (mixed.ratio, mixed.ratio_unit, mixed.projected_block_sizes) == (ratio, unit, ())
    assert mixed.keep_norms  # a model reads the rows' lengths
    searched = auto_compressor(49152, 576, ratio, unit, search=True)
    assert searched.projected_block_sizes == (2, 4)
    assert not searched.keep_norms  # a cosine search does not
    options = {"ratio_unit": unit, "seed": 3, "search": True}
    registered = build_compressor("auto", 49152, 576, ratio, options)
    assert registered.get_params() == {**searched.get_params(), "random_state": 3}


@pytest.mark.parametrize("unit, ratio", [("bytes", 6.0), ("bytes", 12.0), ("params", 3.0)])
def test_pq_meets_the_ratio_and_its_size_is_predicted(unit, ratio):
    # Tall enough for the codebooks (256 vectors a block) to pay for themselves.
    table = np.random.RandomState(0).normal(size=(6000, 32)).astype(np.float32)
    pq = build_compressor("pq", *table.shape, ratio, {"ratio_unit": unit})
    assert isinstance(pq, ProductQuantizer)
    stored = pq.fit(table).compress(table)
    size = stored.n_bytes if unit == "bytes" else stored.n_parameters
    assert size == pq_stored_size(*table.shape, pq.block_size, unit)
    original = table.size * (4 if unit == "bytes" else 1)
    assert original / size >= ratio
    smaller = pq.block_size - 1
    assert smaller == 0 or original / pq_stored_size(*table.shape, smaller, unit) < ratio


def test_pq_rejects_an_unreachable_ratio():
    with pytest.raises(ValueError, match="too high for product quantization"):
        build_compressor("pq", 300, 64, 60.0, {"ratio_unit": "bytes"})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_takes_the_run_options(name):
    options = {"device": "cpu", "seed": 7, "verbose": 1, "ratio_unit": "bytes"}
    try:
        estimator = build_compressor(name, 3000, 64, 8, options)
    except ValueError:  # a ratio the method cannot meet
        estimator = build_compressor(name, 3000, 64, 4, options)
    params = estimator.get_params(deep=False)
    requested = {"device": "cpu", "random_state": 7, "verbose": 1}
    # The options each kind of estimator has must all arrive: scalar codes draw
    # nothing and run in one pass; the SVD shows no progress.
    expected = {"device"}
    if not isinstance(estimator, ScalarQuantizer):
        expected.add("random_state")
    if not isinstance(estimator, (ScalarQuantizer, TruncatedSVDCompressor)):
        expected.add("verbose")
    assert {k: params.get(k) for k in expected} == {k: requested[k] for k in expected}
