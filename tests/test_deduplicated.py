import math

import numpy as np
import pytest
import torch

from skdirection import (
    DeduplicatedTable,
    DenseTable,
    FrequencyMixedCompressor,
    PartitionedTable,
    load_table,
    save_table,
)
from skdirection.codecs import deduplicated, distinct_rows
from skdirection.codecs.deduplicated import pack_integers, unpack_integers


def repeated_rows(n_distinct=300, max_copies=4, n_features=24, seed=0):
    """A table whose ``n_distinct`` rows each appear 1 to ``max_copies`` times, in a
    shuffled order."""
    rng = np.random.RandomState(seed)
    distinct = rng.normal(size=(n_distinct, n_features)) @ rng.normal(
        size=(n_features, n_features)
    )
    copies = rng.randint(1, max_copies + 1, size=n_distinct)
    rows = rng.permutation(np.repeat(np.arange(n_distinct), copies))
    return distinct[rows].astype(np.float32)


@pytest.mark.parametrize("chunk", [None, 16])
@pytest.mark.parametrize("bits", [1, 2, 3, 7, 8, 9, 14, 17, 24])
def test_integers_round_trip_at_any_width(bits, chunk, monkeypatch):
    if chunk is not None:  # many chunks, the last one short, odd widths across them
        monkeypatch.setattr(deduplicated, "_CHUNK_VALUES", chunk)
    generator = torch.Generator().manual_seed(bits)
    values = torch.randint(0, 2**bits, (1001,), generator=generator)
    values[:2] = torch.tensor([0, 2**bits - 1])
    packed = pack_integers(values, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(1001 * bits / 8)
    assert torch.equal(unpack_integers(packed, bits, 1001), values)


def test_distinct_rows_find_every_repeat_in_order_of_appearance():
    X = repeated_rows()
    first, inverse = distinct_rows(X)
    assert len(first) == len(np.unique(X, axis=0)) == 300
    assert np.all(np.diff(first) > 0)
    np.testing.assert_array_equal(X[first[inverse]], X)
    assert inverse[0] == 0 and np.all(inverse[first] == np.arange(len(first)))
    # Equal up to float32 rounding is not equal: only exact repeats are merged.
    nudged = X.copy()
    nudged[first[0]] = np.nextafter(nudged[first[0]], np.inf)
    assert len(distinct_rows(nudged)[0]) == 301


def test_distinct_rows_never_merge_rows_whose_hashes_collide(monkeypatch):
    X = repeated_rows(n_features=5)  # 20 bytes a row: padded to whole words
    monkeypatch.setattr(
        deduplicated, "_row_hashes", lambda raw: np.zeros(len(raw), np.uint64)
    )
    first, inverse = distinct_rows(X)
    assert len(first) == 300
    np.testing.assert_array_equal(X[first[inverse]], X)


def test_deduplicated_table_decodes_counts_and_saves(tmp_path):
    distinct = DenseTable(torch.randn(5, 3, generator=torch.Generator().manual_seed(0)))
    index = torch.tensor([4, 0, 0, 2, 1, 3, 4, 4, 2])
    table = DeduplicatedTable(distinct, index)
    torch.testing.assert_close(table.decode(), distinct.decode()[index])
    torch.testing.assert_close(
        table(torch.tensor([[1, 3]])), distinct.decode()[[0, 2]][None]
    )
    assert (table.num_embeddings, table.embedding_dim) == (9, 3)
    assert table.n_bytes == distinct.n_bytes + math.ceil(9 * 3 / 8)  # 3 bits a row
    assert table.n_parameters == distinct.n_parameters + math.ceil(9 * 3 / 8)
    h = torch.randn(7, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(table.linear(h), h @ table.decode().T)
    save_table(table, tmp_path / "t.safetensors")
    loaded = load_table(tmp_path / "t.safetensors")
    assert isinstance(loaded, DeduplicatedTable) and loaded.n_bytes == table.n_bytes
    assert torch.equal(loaded.decode(), table.decode())
    single = DeduplicatedTable(
        DenseTable(torch.ones(1, 3)), torch.zeros(4, dtype=torch.long)
    )
    assert single.n_bytes == 12 and torch.equal(single.decode(), torch.ones(4, 3))
    with pytest.raises(ValueError, match="outside"):
        DeduplicatedTable(distinct, torch.tensor([0, 5]))


@pytest.mark.parametrize("unit, ratio", [("bytes", 8), ("params", 3)])
def test_the_mix_stores_repeated_rows_once_and_spends_the_bytes(unit, ratio):
    X = repeated_rows()
    params = dict(ratio_unit=unit, ranks=(4, 8), block_sizes=(4,), random_state=0)
    once = FrequencyMixedCompressor(ratio, **params).fit(X)
    every = FrequencyMixedCompressor(ratio, deduplicate=False, **params).fit(X)
    assert once.n_distinct_rows_ == 300 and every.n_distinct_rows_ == len(X) == once.n_rows_
    table = once.compress(X)
    assert isinstance(table, DeduplicatedTable)
    assert isinstance(every.compress(X), PartitionedTable)
    size = table.n_bytes if unit == "bytes" else table.n_parameters
    assert size == once.stored_size_
    assert X.size * (4 if unit == "bytes" else 1) / size >= ratio
    decoded = table.decode().numpy()
    first, inverse = distinct_rows(X)
    np.testing.assert_array_equal(decoded, decoded[first[inverse]])
    np.testing.assert_array_equal(once.assignment_, once.assignment_[first[inverse]])
    cosine = (
        np.sum(decoded * X, 1) / np.linalg.norm(decoded, axis=1) / np.linalg.norm(X, axis=1)
    )
    np.testing.assert_allclose(
        np.mean(1 - cosine), once.weighted_cosine_distance_, atol=1e-4
    )
    assert once.weighted_cosine_distance_ < 0.8 * every.weighted_cosine_distance_


def test_copies_weigh_what_they_weigh_together():
    # Fitting the repeated rows equals fitting the distinct rows once, each weighted by
    # its copies' summed weights, under the budget left beside the index.
    X = repeated_rows()
    counts = np.random.RandomState(1).zipf(1.5, size=len(X)).astype(float)
    first, inverse = distinct_rows(X)
    params = dict(
        ranks=(4, 8), block_sizes=(4,), weight_power=1, weight_floor=0, random_state=0
    )
    repeated = FrequencyMixedCompressor(12, **params).fit(X, sample_weight=counts)
    index_bytes = math.ceil(len(X) * 9 / 8)  # 300 distinct rows: 9 bits
    ratio = X[first].nbytes / (X.nbytes / 12 - index_bytes)
    once = FrequencyMixedCompressor(ratio, **params).fit(
        X[first], sample_weight=np.bincount(inverse, weights=counts)
    )
    np.testing.assert_array_equal(repeated.assignment_, once.assignment_[inverse])
    assert repeated.stored_size_ == once.stored_size_ + index_bytes
    np.testing.assert_allclose(
        repeated.weighted_cosine_distance_, once.weighted_cosine_distance_, rtol=1e-12
    )


def test_a_few_repeats_are_not_worth_an_index():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(400, 24)).astype(np.float32)
    X[1] = X[0]
    params = dict(ranks=(4, 8), block_sizes=(4,), random_state=0)
    mixed = FrequencyMixedCompressor(8, **params).fit(X)
    plain = FrequencyMixedCompressor(8, deduplicate=False, **params).fit(X)
    assert mixed.n_distinct_rows_ == 400
    assert isinstance(mixed.compress(X), PartitionedTable)
    np.testing.assert_array_equal(mixed.assignment_, plain.assignment_)
    assert mixed.weighted_cosine_distance_ == plain.weighted_cosine_distance_


def test_compressing_a_table_whose_repeats_changed_is_refused():
    X = repeated_rows()
    mixed = FrequencyMixedCompressor(12, ranks=(4,), block_sizes=(4,), random_state=0).fit(
        X
    )
    first, inverse = distinct_rows(X)
    copy = np.flatnonzero(np.bincount(inverse)[inverse] > 1)[-1]
    changed = X.copy()
    changed[copy] += 1
    with pytest.raises(ValueError, match="not the fitted table"):
        mixed.compress(changed)


def test_the_mix_codes_every_row_when_the_index_leaves_too_little():
    # A rank-64 basis takes much of the budget, so the 35 repeated rows save less than
    # the index costs at the highest ratio that coding every row reaches.
    rng = np.random.RandomState(0)
    distinct = rng.normal(size=(2013, 512)).astype(np.float32)
    X = np.concatenate([distinct, distinct[:35]])
    params = dict(bits=(), block_sizes=(), ranks=(64,), n_refits=0, random_state=0)
    every = FrequencyMixedCompressor(20, deduplicate=False, **params).fit(X)
    mixed = FrequencyMixedCompressor(every.ratio_, **params).fit(X)
    assert mixed.n_distinct_rows_ == len(X)
    table = mixed.compress(X)
    assert isinstance(table, PartitionedTable)
    assert X.nbytes / table.n_bytes >= every.ratio_
    with pytest.raises(ValueError, match="cannot be reached"):
        FrequencyMixedCompressor(1.001 * every.ratio_, **params).fit(X)


def test_a_table_of_one_repeated_row_saves_loads_and_decodes(tmp_path):
    X = np.tile(np.random.RandomState(0).normal(size=(1, 24)).astype(np.float32), (500, 1))
    mixed = FrequencyMixedCompressor(8, ranks=(4,), block_sizes=(4,), random_state=0)
    table = mixed.fit(X).compress(X)
    assert isinstance(table, DeduplicatedTable) and mixed.n_distinct_rows_ == 1
    assert table.n_bytes == mixed.stored_size_ == table.distinct.n_bytes  # a 0-bit index
    np.testing.assert_allclose(table.decode().numpy(), X, atol=2e-3)
    save_table(table, tmp_path / "one.safetensors")
    loaded = load_table(tmp_path / "one.safetensors")
    assert torch.equal(loaded.decode(), table.decode())


def test_a_mixed_table_of_repeated_rows_saves_and_loads(tmp_path):
    X = repeated_rows()
    mixed = FrequencyMixedCompressor(8, ranks=(4, 8), block_sizes=(4,), random_state=0)
    table = mixed.fit(X).compress(X)
    save_table(table, tmp_path / "mixed.safetensors")
    loaded = load_table(tmp_path / "mixed.safetensors")
    assert isinstance(loaded, DeduplicatedTable)
    assert isinstance(loaded.distinct, PartitionedTable)
    assert loaded.n_bytes == table.n_bytes == mixed.stored_size_
    assert torch.equal(loaded.decode(), table.decode())
    h = torch.randn(5, X.shape[1], generator=torch.Generator().manual_seed(0))
    expected = h @ table.decode().T  # the quantized parts sum in their own order
    torch.testing.assert_close(
        loaded.linear(h), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max())
    )


def test_the_index_follows_the_distinct_rows_device():
    # On the meta device, which refuses mixing devices as CUDA does.
    distinct = DenseTable(torch.ones(4, 3)).to("meta")
    table = DeduplicatedTable(distinct, torch.tensor([0, 3, 3, 1]))
    assert table.packed_index.device.type == "meta"
