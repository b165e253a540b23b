"""Logits from the stored form: ``CompressedTable.linear`` and the head that uses it."""

import functools
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skdirection import (
    ColumnScaledTable,
    DenseTable,
    LinearDecodedTable,
    LowRankTable,
    NormScaledTable,
    PartitionedTable,
    ProductQuantizedTable,
    QuantizedTable,
)
from skdirection.codecs import CompressedTable, _scalar_linear, _table
from skdirection.nn import CompressedEmbedding, CompressedLMHead

N_FEATURES = 64


def _rows(n, d=N_FEATURES, seed=0):
    generator = torch.Generator().manual_seed(seed)
    scale = torch.rand(n, 1, generator=generator) + 0.5
    return torch.randn(n, d, generator=generator) * scale


def _pq(n, d=N_FEATURES, block=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    m = -(-d // block)
    codes = torch.randint(0, 256, (n, m), generator=generator, dtype=torch.uint8)
    books = torch.randn(m, 256, block, generator=generator).half()
    return ProductQuantizedTable(codes, books, d)


def _scalar(n, bits, group, d=N_FEATURES, seed=0):
    return QuantizedTable.from_rows(_rows(n, d, seed), bits, group, clip_search=False)


def _linear_decoded(n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    latent = _scalar(n, 8, None, d=16, seed=seed)
    return LinearDecodedTable(
        latent,
        torch.randn(16, N_FEATURES, generator=generator),
        torch.randn(N_FEATURES, generator=generator),
    )


def _low_rank(n, layers, seed=0):
    generator = torch.Generator().manual_seed(seed)
    sizes = [8, 24, N_FEATURES][-layers - 1 :]
    coefs = [torch.randn(a, b, generator=generator) for a, b in itertools.pairwise(sizes)]
    return LowRankTable(
        torch.randn(n, sizes[0], generator=generator),
        coefs,
        [torch.randn(b, generator=generator) for b in sizes[1:]],
        activation="tanh" if layers > 1 else None,
    )


def _partitioned(n, seed=0):
    assignment = torch.arange(n) % 4
    counts = torch.bincount(assignment).tolist()
    parts = [
        DenseTable(_rows(counts[0], seed=seed).half()),
        _scalar(counts[1], 4, 32, seed=seed),
        NormScaledTable(_pq(counts[2], seed=seed), _rows(counts[2], seed=seed).norm(dim=1)),
        _linear_decoded(counts[3], seed=seed),
    ]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return PartitionedTable(parts, assignment[order])


TABLES = {
    "dense": lambda n, seed=0: DenseTable(_rows(n, seed=seed)),
    "dense-float16": lambda n, seed=0: DenseTable(_rows(n, seed=seed).half()),
    **{
        f"int{bits}-{'row' if group is None else f'g{group}'}": (
            lambda n, seed=0, bits=bits, group=group: _scalar(n, bits, group, seed=seed)
        )
        for bits in (2, 3, 4, 8)
        for group in (None, 32)
    },
    "int3-g16-ragged": lambda n, seed=0: _scalar(n, 3, 16, d=60, seed=seed),
    "int4-g32-ragged": lambda n, seed=0: _scalar(n, 4, 32, d=40, seed=seed),
    "pq2": lambda n, seed=0: _pq(n, block=2, seed=seed),
    "pq3-padded": lambda n, seed=0: _pq(n, block=3, seed=seed),
    "pq4-norms": lambda n, seed=0: NormScaledTable(
        _pq(n, seed=seed), _rows(n, seed=seed).norm(dim=1).half()
    ),
    "int4-norms": lambda n, seed=0: NormScaledTable(
        _scalar(n, 4, None, seed=seed), _rows(n, seed=seed).norm(dim=1)
    ),
    "low-rank": lambda n, seed=0: _low_rank(n, 1, seed=seed),
    "low-rank-mlp": lambda n, seed=0: _low_rank(n, 2, seed=seed),
    "linear-decoded-int8": _linear_decoded,
    "linear-decoded-norms": lambda n, seed=0: NormScaledTable(
        _linear_decoded(n, seed=seed), _rows(n, seed=seed).norm(dim=1)
    ),
    "partitioned": _partitioned,
    "column-scaled-int4": lambda n, seed=0: ColumnScaledTable(
        _scalar(n, 4, 32, seed=seed), torch.rand(N_FEATURES) + 0.5
    ),
    "column-scaled-pq4-norms": lambda n, seed=0: ColumnScaledTable(
        NormScaledTable(_pq(n, seed=seed), _rows(n, seed=seed).norm(dim=1).half()),
        (torch.rand(N_FEATURES) + 0.5).half(),
    ),
}


@pytest.fixture(autouse=True)
def integer_kernel_on_small_tables(monkeypatch):
    """The integer kernel for tables of any size, so that these small ones test it."""
    monkeypatch.setattr(_scalar_linear, "INT_MIN_ROWS", 0)


@functools.cache
def _table_and_weight(name, n=400):
    """A table of each kind, made once, and its decoded matrix."""
    table = TABLES[name](n)
    return table, table.decode()


def _assert_logits_close(actual, expected, rtol=1e-5):
    # Relative to the largest logit: a logit near zero is a sum of terms that cancel.
    atol = rtol * expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", sorted(TABLES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_equals_the_decoded_table(name, dtype):
    table, weight = _table_and_weight(name)
    generator = torch.Generator().manual_seed(1)
    for shape in [(1, 1), (3, 1), (1, 1024)]:
        hidden = (3 * torch.randn(*shape, table.embedding_dim, generator=generator)).to(
            dtype
        )
        logits = table.linear(hidden)
        assert logits.dtype == torch.float32
        assert logits.shape == (*shape, table.num_embeddings)
        _assert_logits_close(logits, F.linear(hidden.float(), weight))


@pytest.mark.parametrize("name", sorted(TABLES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_head_equals_linear_on_the_decoded_table(name, dtype):
    table, weight = _table_and_weight(name)
    bias = nn.Parameter(torch.randn(table.num_embeddings), requires_grad=False)
    head = CompressedLMHead(table, bias)
    hidden = torch.randn(2, 5, table.embedding_dim).to(dtype)
    logits = head(hidden)
    assert logits.dtype == dtype
    expected = F.linear(hidden.float(), weight, bias)
    rtol = 1e-5 if dtype == torch.float32 else 2**-7  # bfloat16 keeps 8 bits
    _assert_logits_close(logits.float(), expected, rtol)


def test_lossless_dense_table_is_the_original_head():
    linear = nn.Linear(N_FEATURES, 300)
    head = CompressedLMHead(DenseTable(linear.weight.detach()), linear.bias)
    hidden = torch.randn(2, 7, N_FEATURES)
    with torch.no_grad():
        torch.testing.assert_close(head(hidden), linear(hidden))


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 64 rows of 64 float32 values, so that small tables span many tiles."""
    monkeypatch.setattr(_table, "TILE_BYTES", 64 * 4 * N_FEATURES)
    return 64


@pytest.mark.parametrize("name", sorted(TABLES))
def test_logits_never_decode_the_whole_table(name, small_tiles, monkeypatch):
    table, weight = _table_and_weight(name)
    table.load_state_dict(table.state_dict())  # forgets what it derived
    expected = F.linear(torch.ones(1, table.embedding_dim), weight)
    decoded = []
    for cls in {type(module) for module in table.modules()}:
        if not issubclass(cls, CompressedTable):
            continue

        def decode(self, indices=None, _original=cls.decode):
            assert indices is not None, "decoded the whole table"
            decoded.append(torch.as_tensor(indices).numel())
            return _original(self, indices)

        def decode_range(self, start, stop, _original=cls._decode_range):
            decoded.append(stop - start)
            return _original(self, start, stop)

        monkeypatch.setattr(cls, "decode", decode)
        monkeypatch.setattr(cls, "_decode_range", decode_range)
    head = CompressedLMHead(table)
    for t in (1, 100):
        logits = head(torch.ones(1, t, table.embedding_dim))
        _assert_logits_close(logits[0], expected.expand(t, -1))
    assert max(decoded, default=0) <= small_tiles


def test_fast_paths_decode_nothing(monkeypatch):
    def refuse(*args):
        raise AssertionError("decoded rows")

    tables = [
        TABLES[name](300) for name in ("int4-g32", "int8-row", "pq4-norms", "low-rank")
    ]
    tables[2].linear(torch.ones(1, N_FEATURES))  # the norms' scale is made once, by tiles
    for table in tables:
        for module in table.modules():
            monkeypatch.setattr(module, "decode", refuse, raising=False)
            monkeypatch.setattr(module, "_decode_range", refuse, raising=False)
        table.linear(torch.randn(2, N_FEATURES))


def test_derived_values_are_small_and_follow_the_stored_tensors():
    table, other = _partitioned(600, seed=0), _partitioned(600, seed=1)
    hidden = torch.randn(4, N_FEATURES)
    assert table.derived_bytes == 0
    table.linear(hidden)
    # row maps (3 x int64 a row), the norm scale of the PQ part, the field layouts
    assert 0 < table.derived_bytes < 600 * (3 * 8 + 4) + 8192
    assert "_derived_cache" not in table.state_dict()
    table.load_state_dict(other.state_dict())
    assert table.derived_bytes == 0
    _assert_logits_close(table.linear(hidden), F.linear(hidden, other.decode()))
    table.to(torch.float64)
    assert table.derived_bytes == 0


def test_linear_is_differentiable_in_hidden():
    table = TABLES["int3-g32"](300)
    hidden = torch.randn(3, N_FEATURES, requires_grad=True)
    reference = hidden.detach().clone().requires_grad_(True)
    grad = torch.randn(3, 300)
    table.linear(hidden).backward(grad)
    F.linear(reference, table.decode()).backward(grad)
    torch.testing.assert_close(hidden.grad, reference.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("n_features", [64, 60, 19])
def test_weighted_fields_add_up_to_every_code(bits, n_features):
    # Whole 64-bit words (64 columns) and bytes (60, 19) cut differently; either way a
    # column's fields times their weights must give back its code, and no field may
    # reach 128 (it is read as int8).
    from skdirection.codecs.scalar import pack_codes

    codes = torch.randint(0, 2**bits, (50, n_features), generator=torch.Generator())
    codes[0] = 2**bits - 1  # every bit set
    layout = _scalar_linear.FieldLayout(n_features, bits, 4, "cpu")
    packed = pack_codes(codes, bits)
    fields = layout.uint8_fields(
        packed, torch.empty(50, layout.n_fields, dtype=torch.uint8)
    )
    assert int(fields.max()) < 128
    parts = fields.double() * layout.weight.double()
    rebuilt = torch.zeros(50, n_features, dtype=torch.float64)
    rebuilt.index_add_(1, layout.column, parts)
    torch.testing.assert_close(rebuilt, codes.double(), rtol=0, atol=0)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("n_features", [64, 60])
def test_field_layouts_keep_their_tensors_on_the_table_device(bits, n_features):
    # "meta" stands in for a GPU: torch refuses to mix its tensors with the CPU's as it
    # does a GPU's, so a CPU tensor left in a device computation raises here too.
    layout = _scalar_linear.FieldLayout(n_features, bits, 32, torch.device("meta"))
    for name, value in vars(layout).items():
        if isinstance(value, torch.Tensor):
            assert value.device.type == "meta", name


@pytest.mark.parametrize("inference", [True, False])
def test_integer_kernel_tiles_grow_with_torch_threads(monkeypatch, inference):
    # One thread cuts the fields into tiles of 20 rows, three to a chunk (at most 64
    # rows); three threads, which share each op, into tiles THREADED_TILE_FACTOR times
    # larger, one a chunk. The last tile is ragged. The logits and gradients are those
    # of one thread.
    table = TABLES["int3-g32"](403)
    hidden = torch.randn(1, N_FEATURES)
    n_fields = table._derived(
        "fields",
        lambda: _scalar_linear.FieldLayout(N_FEATURES, 3, 32, table.packed.device),
    ).n_fields
    monkeypatch.setattr(_table, "TILE_BYTES", 20 * n_fields)
    monkeypatch.setattr(_scalar_linear, "CHUNK_ROWS", 64)
    monkeypatch.setitem(_scalar_linear._INT_MM_WORKS, "cpu", True)
    tiles = []
    int_mm = torch._int_mm
    monkeypatch.setattr(
        torch, "_int_mm", lambda a, b, **kw: tiles.append(len(a)) or int_mm(a, b, **kw)
    )
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = table.linear(hidden)
        serial_tiles, tiles[:] = list(tiles), []
        torch.set_num_threads(3)
        if inference:
            with torch.inference_mode():
                shared = table.linear(hidden)
        else:
            reference = hidden.clone().requires_grad_(True)
            shared = table.linear(reference)
            shared.sum().backward()
            torch.testing.assert_close(reference.grad, table.decode().sum(0)[None])
    finally:
        torch.set_num_threads(threads)
    assert serial_tiles == [20] * 20 + [3]
    large = 20 * _scalar_linear.THREADED_TILE_FACTOR
    assert tiles == [large] * (403 // large) + [403 % large]
    _assert_logits_close(shared, serial, rtol=1e-6)


def test_pool_threads_run_torch_on_one_thread():
    # A pool thread whose ops opened an OpenMP team of its own would slow every other
    # thread's torch ops for good.
    seen = []
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _table.in_threads(
            [
                functools.partial(lambda i: seen.append((i, torch.get_num_threads())), i)
                for i in range(3)
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert sorted(seen) == [(0, 2), (1, 1), (2, 1)]


@pytest.mark.parametrize("threaded_min_rows", [0, 204])
@pytest.mark.parametrize("block_size", [2, 3])
def test_product_codes_gathered_by_threads_match_the_decoded_table(
    monkeypatch, block_size, threaded_min_rows
):
    # One hidden state: tiles of 16 rows shared among 3 threads, the last tile ragged,
    # or for a table below _THREADED_MIN_ROWS rows, tiles of _GATHER_ROWS on this
    # thread; the same logits as the decoded table. With a gradient to track, the
    # look-up tables are summed by embedding_bag instead, same values.
    from skdirection.codecs import _table, product

    generator = torch.Generator().manual_seed(0)
    n_blocks = -(-64 // block_size)
    codebooks = torch.randn(n_blocks, 256, block_size, generator=generator)
    codes = torch.randint(0, 256, (203, n_blocks), generator=generator, dtype=torch.uint8)
    table = product.ProductQuantizedTable(codes, codebooks, 64)
    hidden = torch.randn(1, 64, generator=generator)
    expected = F.linear(hidden, table.decode())
    monkeypatch.setattr(_table, "_THREADED_GATHER_ROWS", 16)
    monkeypatch.setattr(_table, "_GATHER_ROWS", 50)
    monkeypatch.setattr(_table, "_THREADED_MIN_ROWS", threaded_min_rows)
    parts = []
    rows_in_threads = _table.rows_in_threads
    monkeypatch.setattr(
        _table,
        "rows_in_threads",
        lambda f, n, tile, max_threads: (
            parts.append((tile, max_threads)) or rows_in_threads(f, n, tile, max_threads)
        ),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        _assert_logits_close(table.linear(hidden), expected, rtol=1e-6)
        assert parts == ([(16, None)] if threaded_min_rows <= 203 else [(50, 1)])
        assert torch.get_num_threads() == 3
        tracked = hidden.clone().requires_grad_(True)
        logits = table.linear(tracked)
        logits.sum().backward()
    finally:
        torch.set_num_threads(threads)
    _assert_logits_close(logits.detach(), expected, rtol=1e-6)
    torch.testing.assert_close(tracked.grad, table.decode().sum(0)[None])


@pytest.mark.parametrize(
    "empty",
    [
        lambda: QuantizedTable.empty(0, N_FEATURES, 3, 32),
        lambda: ProductQuantizedTable.empty(0, N_FEATURES, 2, 256),
    ],
    ids=["int3-g32", "pq2"],
)
def test_a_table_without_rows_gives_no_logits(empty):
    # The kernels that share rows among threads get no rows to share.
    assert empty().linear(torch.ones(1, N_FEATURES)).shape == (1, 0)


@pytest.mark.parametrize("n_rows", [50, 60])
def test_integer_kernel_serves_tables_of_many_rows(monkeypatch, n_rows):
    monkeypatch.setattr(_scalar_linear, "INT_MIN_ROWS", 60)
    monkeypatch.setitem(_scalar_linear._INT_MM_WORKS, "cpu", True)
    calls = []
    int_mm = torch._int_mm
    monkeypatch.setattr(
        torch, "_int_mm", lambda a, b, **kw: calls.append(1) or int_mm(a, b, **kw)
    )
    table = TABLES["int4-g32"](n_rows)
    hidden = torch.randn(1, N_FEATURES)
    _assert_logits_close(table.linear(hidden), F.linear(hidden, table.decode()))
    assert bool(calls) == (n_rows >= 60)


def test_integer_kernel_failure_falls_back(monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("no integer kernel here")

    monkeypatch.setattr(torch, "_int_mm", fail, raising=False)
    monkeypatch.setitem(_scalar_linear._INT_MM_WORKS, "cpu", True)
    table = TABLES["int4-g32"](300)
    hidden = torch.randn(1, N_FEATURES)
    _assert_logits_close(table.linear(hidden), F.linear(hidden, table.decode()))
    assert not _scalar_linear._INT_MM_WORKS["cpu"]


@pytest.mark.parametrize("int_seconds, expected", [(0.5, True), (2.0, True), (2.5, False)])
def test_integer_kernel_serves_only_where_it_is_fast(monkeypatch, int_seconds, expected):
    # Measured once a device type: torch._int_mm at most INT_MM_MAX_SLOWDOWN (2) times
    # slower than torch.mm on float copies of its operands; on an AVX2-only CPU it was
    # 15 to 18x slower. Either way the logits are right.
    timings = iter([int_seconds, 1.0])
    monkeypatch.setattr(_scalar_linear, "_best_time", lambda operation: next(timings))
    monkeypatch.setattr(_scalar_linear, "_INT_MM_WORKS", {})
    calls = []
    int_mm = torch._int_mm
    monkeypatch.setattr(
        torch, "_int_mm", lambda a, b, **kw: calls.append(1) or int_mm(a, b, **kw)
    )
    table = TABLES["int4-g32"](3000)
    hidden = torch.randn(1, N_FEATURES)
    _assert_logits_close(table.linear(hidden), F.linear(hidden, table.decode()))
    assert _scalar_linear._INT_MM_WORKS == {"cpu": expected}
    assert bool(calls) == expected
    table.linear(hidden)  # not measured again: the timings would run out
    assert _scalar_linear._INT_MM_WORKS == {"cpu": expected}


def test_integer_kernel_probe_times_one_product_both_ways(monkeypatch):
    results = []

    def timed(operation):
        results.append(operation())
        return 1.0

    monkeypatch.setattr(_scalar_linear, "_best_time", timed)
    assert _scalar_linear._int_mm_is_fast_enough()
    int_product, float_product = results
    assert int_product.dtype == torch.int32
    assert int_product.shape == float_product.shape == (1024, 16)
    assert torch.equal(int_product.float(), float_product)  # exact: |sums| < 2**24


def test_embedding_decodes_only_the_rows_looked_up(monkeypatch):
    table, weight = _table_and_weight("partitioned")
    ids = torch.tensor([[5, 399, 5], [0, 17, 200]])
    expected = weight[ids]

    def refuse_whole(self, indices=None, _original=PartitionedTable.decode):
        assert indices is not None and torch.as_tensor(indices).numel() == ids.numel()
        return _original(self, indices)

    monkeypatch.setattr(PartitionedTable, "decode", refuse_whole)
    torch.testing.assert_close(CompressedEmbedding(table)(ids), expected)


@pytest.mark.parametrize("make", [lambda V: _scalar(V, 3, 8, d=32), lambda V: _pq(V, 32)])
def test_greedy_generation_matches_the_decoded_head(make, tiny_llama, tiny_tokenizer):
    from skdirection.adapters.transformers import patch_embeddings

    model = tiny_llama
    table = make(len(tiny_tokenizer))
    patch_embeddings(model, table, target="both")
    prompt = tiny_tokenizer("the quick brown fox", return_tensors="pt").input_ids

    def generate():
        with torch.no_grad():
            return model.generate(prompt, max_new_tokens=12, do_sample=False)

    compressed = generate()
    decoded_head = nn.Linear(32, len(tiny_tokenizer), bias=False)
    decoded_head.weight = nn.Parameter(table.decode(), requires_grad=False)
    model.lm_head = decoded_head
    torch.testing.assert_close(generate(), compressed, rtol=0, atol=0)


def test_float_path_tiles_grow_with_torch_threads(monkeypatch):
    # Without the integer kernel too, several threads share each op over tiles
    # THREADED_TILE_FACTOR times larger; the logits are those of one thread. Two rows of
    # hidden states: one would take the byte look-up tables.
    monkeypatch.setitem(_scalar_linear._INT_MM_WORKS, "cpu", False)
    sizes = []
    row_tiles = _scalar_linear.row_tiles

    def spy(*args, **kwargs):
        tiles = row_tiles(*args, **kwargs)
        sizes.append(tiles[0][1] - tiles[0][0])
        return tiles

    monkeypatch.setattr(_scalar_linear, "row_tiles", spy)
    table = TABLES["int3-g32"](403)
    n_fields = table._derived(
        "fields",
        lambda: _scalar_linear.FieldLayout(N_FEATURES, 3, 32, table.packed.device),
    ).n_fields
    monkeypatch.setattr(_table, "TILE_BYTES", 20 * 4 * n_fields)  # 20 float rows
    hidden = torch.randn(2, N_FEATURES)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = table.linear(hidden)
        torch.set_num_threads(3)
        shared = table.linear(hidden)
    finally:
        torch.set_num_threads(threads)
    assert sizes == [20, 20 * _scalar_linear.THREADED_TILE_FACTOR]
    _assert_logits_close(shared, serial)
    _assert_logits_close(serial, F.linear(hidden, table.decode()))


@pytest.mark.parametrize(
    "bits, n_features, group, expected_path",
    [
        *((bits, 64, 32, "lut") for bits in (2, 3)),  # rows of whole 64-bit words
        *((bits, 19, None, "lut") for bits in (2, 3)),  # a group a row, last byte padded
        (2, 60, 12, "lut"),  # groups of 3 bytes, rows cut byte by byte
        (3, 48, 8, "lut"),
        (3, 60, 12, "float"),  # 36 bits: groups that end inside a byte
        (2, 60, 10, "float"),
        (4, 64, 32, "lut"),  # two fields a byte
        (4, 19, None, "lut"),
        (4, 60, 9, "float"),
    ],
)
@pytest.mark.parametrize("threaded", [False, True])
def test_one_hidden_state_takes_byte_lookup_tables(
    monkeypatch, bits, n_features, group, expected_path, threaded
):
    # One row of h on the CPU without the integer kernel: a gather of every byte's dot
    # product from a 256-entry table and a weighted sum a group, where a group covers
    # whole bytes; the same logits as the decoded table. Threaded: tiles of 16 rows
    # shared among 3 threads, the last ragged.
    monkeypatch.setitem(_scalar_linear._INT_MM_WORKS, "cpu", False)
    if threaded:
        monkeypatch.setattr(_table, "_THREADED_MIN_ROWS", 0)
        monkeypatch.setattr(_table, "_GROUP_GATHER_ROWS", 16)
    paths = []
    for name in ("lut", "float"):
        original = getattr(_scalar_linear, f"_linear_{name}")
        monkeypatch.setattr(
            _scalar_linear,
            f"_linear_{name}",
            functools.partial(
                lambda name, original, *args: paths.append(name) or original(*args),
                name,
                original,
            ),
        )
    table = _scalar(203, bits, group, d=n_features)
    hidden = torch.randn(1, n_features, generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    torch.set_num_threads(3 if threaded else 1)
    try:
        logits = table.linear(hidden)
    finally:
        torch.set_num_threads(threads)
    assert paths == [expected_path]
    _assert_logits_close(logits, F.linear(hidden, table.decode()))


def test_byte_lookup_tables_serve_only_one_hidden_state_without_gradient(monkeypatch):
    monkeypatch.setitem(_scalar_linear._INT_MM_WORKS, "cpu", False)
    calls = []
    original = _scalar_linear._linear_lut
    monkeypatch.setattr(
        _scalar_linear, "_linear_lut", lambda *args: calls.append(1) or original(*args)
    )
    table = TABLES["int3-g32"](300)
    int8 = TABLES["int8-row"](300)
    hidden = torch.randn(2, N_FEATURES)
    tracked = hidden[:1].clone().requires_grad_(True)
    for tab, h in ((table, hidden), (table, tracked), (int8, hidden[:1])):
        logits = tab.linear(h)
        _assert_logits_close(logits.detach(), F.linear(h.detach(), tab.decode()))
    assert calls == []
    before = table.derived_bytes
    table.linear(hidden[:1])
    assert calls == [1]
    n_fields = table._derived("fields", None).n_fields
    assert table.derived_bytes == before + 256 * n_fields * 4  # kept, and counted
