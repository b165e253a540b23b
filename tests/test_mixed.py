import numpy as np
import pytest
import torch

from skdirection import (
    FrequencyMixedCompressor,
    PartitionedTable,
    ScalarQuantizer,
    load_table,
    save_table,
)


def row_cosines(X, Y):
    return np.sum(X * Y, 1) / np.linalg.norm(X, axis=1) / np.linalg.norm(Y, axis=1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = (rng.normal(size=(400, 48)) @ rng.normal(size=(48, 48)) / 7).astype(np.float32)
    counts = rng.zipf(1.3, size=400).astype(float) + 0.5
    return X, counts


@pytest.mark.parametrize("ratio", [4, 8, 16])
def test_budget_is_met_and_counted(data, ratio):
    X, counts = data
    mixed = FrequencyMixedCompressor(ratio, ranks=(4, 8, 16)).fit(X, sample_weight=counts)
    table = mixed.compress(X)
    assert table.n_bytes == mixed.stored_size_
    assert X.shape[0] * X.shape[1] * 4 / table.n_bytes >= ratio
    decoded = table.decode().numpy()
    cos = (
        np.sum(decoded * X, 1) / np.linalg.norm(decoded, axis=1) / np.linalg.norm(X, axis=1)
    )
    # The objective weighs rows by the counts' square root (weight_power=0.5).
    np.testing.assert_allclose(
        np.average(1 - cos, weights=np.sqrt(counts)),
        mixed.weighted_cosine_distance_,
        atol=2e-3,
    )


def test_frequent_rows_get_more(data):
    X, counts = data
    mixed = FrequencyMixedCompressor(8, ranks=(4, 8, 16)).fit(X, sample_weight=counts)
    cost = {
        name: i for i, name in enumerate(mixed.codecs_)
    }  # codecs_ are in decreasing cost
    order = np.argsort(-counts)
    top, bottom = mixed.assignment_[order[:20]], mixed.assignment_[order[-200:]]
    assert top.mean() < bottom.mean()
    assert cost["exact"] == 0


def test_weights_beat_uniform_on_weighted_error(data):
    X, counts = data
    weighted = FrequencyMixedCompressor(16, ranks=(4, 8, 16)).fit(X, sample_weight=counts)
    uniform = FrequencyMixedCompressor(16, ranks=(4, 8, 16)).fit(X)
    assert weighted.score(X, sample_weight=counts) > uniform.score(X, sample_weight=counts)


def test_params_unit(data):
    X, counts = data
    mixed = FrequencyMixedCompressor(5, ratio_unit="params", ranks=(4, 8, 16)).fit(
        X, sample_weight=counts
    )
    table = mixed.compress(X)
    assert not any(name.startswith("int") for name in mixed.codecs_)
    assert X.size / table.n_parameters >= 5
    assert all(p.dtype in (torch.float32, torch.uint8) for p in table.parameters())


def test_round_trip_and_errors(data, tmp_path):
    X, counts = data
    mixed = FrequencyMixedCompressor(10, ranks=(4, 8)).fit(X, sample_weight=counts)
    table = mixed.compress(X)
    save_table(table, tmp_path / "m.safetensors")
    loaded = load_table(tmp_path / "m.safetensors")
    assert isinstance(loaded, PartitionedTable) and loaded.n_bytes == table.n_bytes
    torch.testing.assert_close(loaded.decode(), table.decode())
    with pytest.raises(ValueError, match="rows"):
        mixed.compress(X[:10])
    with pytest.raises(ValueError, match="cannot be reached"):
        FrequencyMixedCompressor(1000, ranks=(4,)).fit(X)
    with pytest.raises(ValueError, match="bits"):
        FrequencyMixedCompressor(4, bits=(5,)).fit(X)


def test_never_worse_than_one_scalar_codec_for_every_row(data):
    # int3 in groups of 32 stores 18 bytes of codes and 2 x 4 of scales and offsets per
    # 48-value row: 7.38x. Any row may take it, so the mix at 7x must do at least as well.
    X, counts = data
    uniform = ScalarQuantizer(3, group_size=32).fit(X).compress(X).decode().numpy()
    # Weighted as the mix weighs its objective: the counts' square root (weight_power).
    uniform_distance = np.average(1 - row_cosines(X, uniform), weights=np.sqrt(counts))
    mixed = FrequencyMixedCompressor(7, ranks=(4, 8, 16)).fit(X, sample_weight=counts)
    assert mixed.weighted_cosine_distance_ <= uniform_distance
    per_row_only = FrequencyMixedCompressor(7, group_sizes=(None,), ranks=(4, 8, 16))
    per_row_only.fit(X, sample_weight=counts)
    assert mixed.weighted_cosine_distance_ < per_row_only.weighted_cosine_distance_
    assert any(
        name.endswith("-g32") for name in np.asarray(mixed.codecs_)[mixed.assignment_]
    )


def test_group_sizes_block_sizes_and_weight_power_are_checked(data):
    X, _ = data
    with pytest.raises(ValueError, match="group_sizes"):
        FrequencyMixedCompressor(4, group_sizes=(0,)).fit(X)
    with pytest.raises(ValueError, match="weight_power"):
        FrequencyMixedCompressor(4, weight_power=-0.5).fit(X)
    for bad in (0, 2.5, "4"):
        with pytest.raises(ValueError, match="block_sizes must hold positive integers"):
            FrequencyMixedCompressor(4, block_sizes=(2, bad)).fit(X)


def test_weight_power_tempers_the_counts(data):
    X, counts = data
    unweighted = FrequencyMixedCompressor(8, ranks=(4, 8, 16), random_state=0).fit(X)
    flat = FrequencyMixedCompressor(8, ranks=(4, 8, 16), weight_power=0, random_state=0)
    flat.fit(X, sample_weight=counts)
    np.testing.assert_array_equal(flat.assignment_, unweighted.assignment_)
    raw = FrequencyMixedCompressor(8, ranks=(4, 8, 16), weight_power=1).fit(
        X, sample_weight=counts
    )
    root = FrequencyMixedCompressor(8, ranks=(4, 8, 16)).fit(X, sample_weight=counts)
    # The square root spreads bytes more evenly: the rarest rows lose less.
    rare = np.argsort(counts)[:100]
    cosine_rare = [
        row_cosines(X[rare], m.compress(X).decode().numpy()[rare]).mean()
        for m in (raw, root)
    ]
    assert cosine_rare[1] > cosine_rare[0]


@pytest.mark.slow
def test_product_quantized_rows_where_they_pay():
    # A table large enough for 256-vector codebooks to pay for themselves at 8x.
    rng = np.random.RandomState(0)
    centres = rng.normal(size=(64, 32))
    X = centres[rng.randint(64, size=20000)] + 0.3 * rng.normal(size=(20000, 32))
    X = X.astype(np.float32)
    counts = rng.zipf(1.3, size=20000).astype(float) + 0.5
    options = dict(ranks=(2, 4), random_state=0)
    with_pq = FrequencyMixedCompressor(8, block_sizes=(4, 8), **options)
    with_pq.fit(X, sample_weight=counts)
    without = FrequencyMixedCompressor(8, block_sizes=(), **options)
    without.fit(X, sample_weight=counts)
    used = set(np.asarray(with_pq.codecs_)[with_pq.assignment_])
    assert used & {"pq4", "pq8"}
    assert with_pq.weighted_cosine_distance_ < 0.8 * without.weighted_cosine_distance_
    table = with_pq.compress(X)
    assert table.n_bytes == with_pq.stored_size_ and X.nbytes / table.n_bytes >= 8
    decoded = table.decode().numpy()
    np.testing.assert_allclose(
        np.average(1 - row_cosines(X, decoded), weights=np.sqrt(counts)),
        with_pq.weighted_cosine_distance_,
        atol=1e-3,
    )
    pq_rows = np.char.startswith(np.asarray(with_pq.codecs_)[with_pq.assignment_], "pq")
    np.testing.assert_allclose(
        np.linalg.norm(decoded[pq_rows], axis=1),
        np.linalg.norm(X[pq_rows], axis=1),
        rtol=2e-3,
    )


def test_codebooks_that_cannot_pay_are_left_out(data):
    X, counts = data  # 400 rows: a 256-vector codebook costs more than it saves
    mixed = FrequencyMixedCompressor(4, block_sizes=(4,), ranks=(), random_state=0)
    mixed.fit(X, sample_weight=counts)
    assert "pq4" in mixed.codecs_
    assert "pq4" not in set(np.asarray(mixed.codecs_)[mixed.assignment_])


@pytest.mark.slow
def test_rows_the_counts_never_saw_are_floored(data):
    X, _ = data
    rng = np.random.RandomState(1)
    counts = rng.zipf(1.3, size=len(X)).astype(float)
    counts[rng.rand(len(X)) < 0.4] = 0.0  # tokens absent from the counting text
    unseen = counts == 0
    params = dict(ranks=(4, 8, 16), random_state=0)
    floored = FrequencyMixedCompressor(8, **params).fit(X, sample_weight=counts)
    # The floor is half the smallest positive weight (a count of one), nothing else.
    by_hand = FrequencyMixedCompressor(8, weight_floor=0, **params).fit(
        X, sample_weight=np.maximum(counts, 0.5)
    )
    np.testing.assert_array_equal(floored.assignment_, by_hand.assignment_)
    crushed = FrequencyMixedCompressor(8, weight_floor=0, **params).fit(
        X, sample_weight=counts
    )

    def unseen_cosine(mixed):
        return row_cosines(X, mixed.compress(X).decode().numpy())[unseen].mean()

    assert unseen_cosine(crushed) < 0.5
    assert unseen_cosine(floored) > 0.9
    # Scaling the weights scales the floor: the same assignment.
    scaled = FrequencyMixedCompressor(8, **params).fit(X, sample_weight=counts * 1e-3)
    np.testing.assert_array_equal(scaled.assignment_, floored.assignment_)


@pytest.mark.parametrize("unit", ["bytes", "params"])
def test_every_candidate_measures_what_its_table_decodes(embeddings, unit):
    # The mix chooses codecs by the cosine errors its families measure: they must be
    # the errors of the table that codec.encode stores (its float16 bases included).
    from skdirection._engine.numerics import row_cosine
    from skdirection.estimators._mixed._candidates import CANDIDATE_FAMILIES, measure

    mix = FrequencyMixedCompressor(4, ratio_unit=unit, block_sizes=(4,), ranks=(6, 3))
    rows = torch.from_numpy(embeddings)
    weight = np.ones(len(rows))
    generator = torch.Generator().manual_seed(0)
    n_codecs = 0
    for family in CANDIDATE_FAMILIES.values():
        codecs = family.codecs(mix, *rows.shape)
        family.fit(codecs, rows, weight, generator)
        for codec in codecs:
            measured = measure(codec, family, rows, unit, len(rows)).distance
            stored = 1 - row_cosine(codec.encode(rows).decode(), rows).double()
            np.testing.assert_allclose(measured, stored.numpy(), rtol=0, atol=1e-6)
            n_codecs += 1
    assert n_codecs >= 4


def test_refits_stop_once_the_assignment_settles(data):
    X, counts = data
    params = dict(ranks=(4, 8, 16), random_state=0)
    settled = FrequencyMixedCompressor(8, n_refits=50, **params)
    settled.fit(X, sample_weight=counts)
    assert 1 <= settled.n_refits_ < 50
    # Had the refits not stopped, one more would have found the same assignment.
    again = FrequencyMixedCompressor(8, n_refits=settled.n_refits_ + 1, **params)
    again.fit(X, sample_weight=counts)
    np.testing.assert_array_equal(again.assignment_, settled.assignment_)
    none = FrequencyMixedCompressor(8, n_refits=0, **params).fit(X, sample_weight=counts)
    assert none.n_refits_ == 0


def test_each_codec_is_fitted_once_and_only_refitted_ones_measured_again(data, monkeypatch):
    from skdirection.codecs import ProductCodec, ProjectionCodec
    from skdirection.estimators._mixed import _compressor

    X, counts = data
    measured, fitted = {}, []

    def counting_measure(codec, *args):
        measured[codec.name] = measured.get(codec.name, 0) + 1
        return measure(codec, *args)

    def counting_fit(fit):
        def wrapped(self, *args, **kwargs):
            fitted.append((self.name, kwargs.get("init") is not None))
            return fit(self, *args, **kwargs)

        return wrapped

    measure = _compressor.measure
    monkeypatch.setattr(_compressor, "measure", counting_measure)
    for cls in (ProductCodec, ProjectionCodec):
        monkeypatch.setattr(cls, "fit", counting_fit(cls.fit))
    mixed = FrequencyMixedCompressor(
        16, block_sizes=(4, 8), ranks=(4, 8, 16), n_refits=1, random_state=0
    )
    mixed.fit(X, sample_weight=counts)
    used = set(np.asarray(mixed.codecs_)[mixed.assignment_])
    assert used & {"rank4", "rank8", "rank16"}
    # One basis for every rank; one k-means a block size; pq rows too few to refit.
    assert fitted == [("pq4", False), ("pq8", False), ("rank16", False), ("rank16", False)]
    assert measured.pop("rank4") == measured.pop("rank8") == measured.pop("rank16") == 2
    assert set(measured.values()) == {1} and len(measured) == len(mixed.codecs_) - 3


def test_progress_bar_only_when_verbose(data, capsys):
    X, counts = data
    params = dict(ranks=(4,), block_sizes=(4,), random_state=0)
    FrequencyMixedCompressor(8, verbose=0, **params).fit(X, sample_weight=counts)
    assert capsys.readouterr().err == ""
    FrequencyMixedCompressor(8, verbose=1, **params).fit(X, sample_weight=counts)
    assert "FrequencyMixedCompressor" in capsys.readouterr().err


def test_device_is_checked_and_recorded(data):
    X, counts = data
    params = dict(ranks=(4,), block_sizes=(4,), random_state=0)
    with pytest.raises(ValueError, match="device"):
        FrequencyMixedCompressor(8, device="tpu", **params).fit(X)
    with pytest.raises(ValueError, match="device"):
        FrequencyMixedCompressor(8, device=0, **params).fit(X)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            FrequencyMixedCompressor(8, device="cuda", **params).fit(X)
    on_cpu = FrequencyMixedCompressor(8, device="cpu", **params)
    on_cpu.fit(X, sample_weight=counts)
    assert on_cpu.device_ == "cpu"
    assert on_cpu.components_.dtype == np.float32


def _plain_bisection_assign(row_costs, fixed_costs, errors, budget):
    """The budget solver with every row recomputed at every step (the reference)."""

    def total_cost(row_costs, fixed_costs, choice):
        # Written out here, not imported from the solver: codes, the codecs in use,
        # and ceil(log2(codecs in use)) bits of part id a row, packed.
        used = np.unique(choice)
        id_bits = int(np.ceil(np.log2(len(used)))) if len(used) > 1 else 0
        return (
            row_costs[choice].sum()
            + fixed_costs[used].sum()
            + np.ceil(len(choice) * id_bits / 8)
        )

    row_costs = np.asarray(row_costs, dtype=np.float64)
    fixed_costs = np.asarray(fixed_costs, dtype=np.float64)
    allowed = np.arange(len(row_costs))
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = (lo + hi) / 2
        choice = allowed[np.argmin(errors + 10**mid * row_costs, axis=1)]
        if total_cost(row_costs, fixed_costs, choice) > budget:
            lo = mid
        else:
            hi = mid
    return allowed[np.argmin(errors + 10**hi * row_costs, axis=1)]


@pytest.mark.parametrize("seed", range(4))
def test_budget_bisection_matches_recomputing_every_row(seed):
    from skdirection.estimators._mixed._budget import assign

    rng = np.random.RandomState(seed)
    n, k = 3000, 7
    row_costs = np.array([64.0, 40, 32, 24, 16, 12, 8])
    errors = rng.gamma(1.0, 1e-3, size=(n, 1)) * np.exp(-row_costs / 20)
    errors = errors * rng.uniform(0.5, 1.5, size=(n, k)) * rng.zipf(1.5, size=(n, 1))
    errors[:, 0] = 0
    fixed = np.zeros(k)  # no codec to drop: one bisection decides
    budget = n * rng.uniform(12, 40)
    np.testing.assert_array_equal(
        assign(row_costs, fixed, errors, budget),
        _plain_bisection_assign(row_costs, fixed, errors, budget),
    )


@pytest.mark.parametrize("seed", range(6))
def test_codecs_dropped_do_not_depend_on_their_order(seed):
    # Two codecs with a codebook to pay for, and a budget that both cannot share
    # well: which one is dropped must follow from the objective, not from which
    # codec was listed first (dropping the first that helps failed this on more than
    # half of such random tables).
    from itertools import permutations

    from skdirection.estimators._mixed._budget import assign

    rng = np.random.default_rng(seed)
    n = 40
    worst = rng.random(n) * rng.choice([1, 10], n)
    errors = np.stack(
        [
            np.zeros(n),
            worst * rng.uniform(0.1, 0.4, n),
            worst * rng.uniform(0.3, 0.7, n),
            worst,
        ],
        axis=1,
    )
    row_costs = np.array([8.0, 4.0, 2.0, 1.0])
    fixed_costs = np.array([0.0, 12.0, 12.0, 0.0])
    reference = assign(row_costs, fixed_costs, errors, 3.0 * n)
    for order in map(np.array, permutations(range(4))):
        chosen = assign(row_costs[order], fixed_costs[order], errors[:, order], 3.0 * n)
        np.testing.assert_array_equal(order[chosen], reference)


def test_distances_measured_in_chunks_match_all_rows_at_once(embeddings, monkeypatch):
    """A codec's row distances are measured a chunk of rows at a time (sized for the
    cache): chunk boundaries, a ragged last chunk and one row a chunk change no
    distance."""
    from skdirection.estimators._mixed import _candidates

    rows = torch.from_numpy(embeddings)
    mix = FrequencyMixedCompressor(4, block_sizes=(4,), ranks=(6,))
    generator = torch.Generator().manual_seed(0)
    weight = np.ones(len(rows))
    for family in (_candidates.ScalarFamily(), _candidates.ProductFamily()):
        codecs = family.codecs(mix, *rows.shape)
        family.fit(codecs, rows, weight, generator)
        whole = _candidates.measure(codecs[-1], family, rows, "bytes", len(rows)).distance
        n_features = rows.shape[1]
        for values in (n_features, 7 * n_features, 10 * n_features + 1):
            monkeypatch.setattr(_candidates, "_CPU_MEASURE_VALUES", values)
            part = _candidates.measure(codecs[-1], family, rows, "bytes", len(rows))
            np.testing.assert_array_equal(part.distance, whole)
        monkeypatch.undo()


def test_a_codec_that_pays_only_for_every_row_is_found():
    # Per row, codecs 1 and 2 beat codec 3, so a search that starts from every codec
    # never gives codec 3 a row; but their two codebooks do not both fit, and either
    # alone leaves half the rows worse off than codec 3 on every row does.
    from skdirection.estimators._mixed._budget import assign, total_cost

    n = 40
    even = np.arange(n) % 2 == 0
    errors = np.stack(
        [np.ones(n), np.where(even, 0.2, 0.6), np.where(even, 0.6, 0.2), np.full(n, 0.3)],
        axis=1,
    )
    row_costs = np.array([1.0, 3.0, 3.0, 3.0])
    fixed_costs = np.array([0.0, 10.0 * n, 10.0 * n, 12.0 * n])
    everyone_on_3 = np.full(n, 3)
    budget = total_cost(row_costs, fixed_costs, everyone_on_3)
    np.testing.assert_array_equal(
        assign(row_costs, fixed_costs, errors, budget), everyone_on_3
    )


def test_projected_codes_where_the_variance_sits_in_few_directions():
    # Rank 10 plus noise in 48 columns: product quantization of the projections on the
    # principal directions beats every codec of all 48 columns, and reaches 16x, which
    # none of those can on 3000 rows.
    rng = np.random.RandomState(0)
    X = rng.normal(size=(3000, 10)) @ rng.normal(size=(10, 48))
    X = (X + 0.15 * rng.normal(size=X.shape)).astype(np.float32)
    projected = dict(projected_block_sizes=(4,), random_state=0)
    with_projection = FrequencyMixedCompressor(8, **projected).fit(X)
    without = FrequencyMixedCompressor(8, projected_block_sizes=(), random_state=0).fit(X)
    used = np.asarray(with_projection.codecs_)[with_projection.assignment_]
    assert any(name.startswith("rank") and name.endswith("-pq4") for name in used)
    assert (
        with_projection.weighted_cosine_distance_ < 0.8 * without.weighted_cosine_distance_
    )
    with pytest.raises(ValueError, match="cannot be reached"):
        FrequencyMixedCompressor(16, projected_block_sizes=(), random_state=0).fit(X)
    at_16 = FrequencyMixedCompressor(16, **projected).fit(X)
    table = at_16.compress(X)
    assert table.n_bytes == at_16.stored_size_ and X.nbytes / table.n_bytes >= 16
    decoded = table.decode().numpy()
    np.testing.assert_allclose(
        np.mean(1 - row_cosines(X, decoded)), at_16.weighted_cosine_distance_, atol=1e-4
    )
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="projected_block_sizes must hold positive"):
            FrequencyMixedCompressor(8, projected_block_sizes=(bad,)).fit(X)


def test_without_norms_the_codes_get_the_bytes():
    # A table searched by cosine: the directions' codecs store no norm (2 bytes a row),
    # so at the same ratio their rows get more codes and a lower weighted error; the
    # stored table counts what it holds, and its rows' cosines are what the fit measured.
    rng = np.random.RandomState(0)
    X = rng.normal(size=(3000, 10)) @ rng.normal(size=(10, 48))
    X = (X + 0.15 * rng.normal(size=X.shape)).astype(np.float32)
    X *= rng.uniform(0.5, 2.0, size=(3000, 1)).astype(np.float32)
    ratio, params = 32, dict(projected_block_sizes=(4,), random_state=0)
    with_norms = FrequencyMixedCompressor(ratio, **params).fit(X)
    without = FrequencyMixedCompressor(ratio, keep_norms=False, **params).fit(X)
    assert without.weighted_cosine_distance_ < with_norms.weighted_cosine_distance_
    table = without.compress(X)
    assert table.n_bytes == without.stored_size_ and X.nbytes / table.n_bytes >= ratio
    assert "NormScaledTable" not in repr(table)
    decoded = table.decode().numpy()
    np.testing.assert_allclose(
        np.mean(1 - row_cosines(X, decoded)), without.weighted_cosine_distance_, atol=1e-4
    )
    # the directions' rows decode to about unit length, not to their norms
    names = np.asarray(without.codecs_)[without.assignment_]
    directions = np.char.startswith(names, "pq") | np.char.startswith(names, "rank")
    assert directions.mean() > 0.5
    lengths = np.linalg.norm(decoded[directions], axis=1)
    assert abs(np.median(lengths) - 1) < 0.05 and lengths.max() < 1.2
    assert np.median(np.linalg.norm(X[directions], axis=1)) > 10


def test_refits_reuse_the_measured_codes_and_get_the_same_mix(monkeypatch):
    # The codes a product codec's rows got when it was measured are its refit's first
    # assignment: the fitted mix is the one that searches them again.
    from skdirection.codecs import ProductCodec
    from skdirection.estimators._mixed._candidates import CandidateFamily, ProductFamily

    rng = np.random.RandomState(1)
    X = (rng.normal(size=(2000, 48)) @ rng.normal(size=(48, 48))).astype(np.float32)
    counts = rng.zipf(1.5, size=2000).astype(float)
    params = dict(ranks=(4,), bits=(4,), block_sizes=(2, 4), random_state=0)
    given = []
    fit = ProductCodec.fit

    def spy(self, *args, init_codes=None, **kwargs):
        given.append(init_codes is not None)
        return fit(self, *args, init_codes=init_codes, **kwargs)

    monkeypatch.setattr(ProductCodec, "fit", spy)
    reused = FrequencyMixedCompressor(8, **params).fit(X, sample_weight=counts)
    assert reused.n_refits_ >= 1 and any(given)
    given.clear()
    monkeypatch.setattr(ProductFamily, "distances", CandidateFamily.distances)
    searched = FrequencyMixedCompressor(8, **params).fit(X, sample_weight=counts)
    assert not any(given)
    np.testing.assert_array_equal(reused.assignment_, searched.assignment_)
    assert reused.weighted_cosine_distance_ == pytest.approx(
        searched.weighted_cosine_distance_, rel=1e-6
    )
