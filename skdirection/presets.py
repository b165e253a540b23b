"""Compression methods by name: the presets the CLI, the benchmarks and users share.

A method is one entry: a function that, given the shape of the embedding matrix, the
compression ratio to meet and the run's options, returns an unfitted estimator whose
``compress`` stores a table at least ``ratio`` times smaller than the float32 matrix.
``options["ratio_unit"]`` says what is counted: ``"params"`` (stored values, the paper's
metric) or ``"bytes"``. The estimator then takes the run's ``device``, ``seed`` (as
``random_state``) and ``verbose`` wherever it has those parameters. With
``options["column_weight"]`` (the diagonal of an output head's input moment, say) every
method is wrapped in :class:`ColumnWeightedCompressor`, its ratio raised to pay for the
stored column scales. A new method is one more :func:`register_method` call.
"""

import math
from dataclasses import dataclass
from numbers import Real

import torch

from .codecs import (
    NormScaledCodec,
    ProductCodec,
    ProjectionCodec,
    ScalarCodec,
    StoredSize,
    largest_rank,
)
from .estimators import (
    ColumnWeightedCompressor,
    DirectionAutoEncoder,
    FrequencyMixedCompressor,
    ProductQuantizer,
    ScalarQuantizer,
    TruncatedSVDCompressor,
)

METHODS = {}

DEFAULT_OPTIONS = {
    "device": "auto",
    "seed": 1,  # the paper's seed
    "epochs": 30,
    "batch_size": 32,
    "verbose": 0,
    "ratio_unit": "params",
    "search": False,  # a table searched by cosine rather than read by a model
    "column_weight": None,  # importance of each column (ColumnWeightedCompressor)
    "identity_weight": 0.8,  # its share of the plain squared error
}

RATIO_UNITS = ("params", "bytes")

# (bits, group_size) of ScalarQuantizer from the most to the least precise; a group size
# of None means one scale and offset a row.
SCALAR_CONFIGS = ((8, None), (4, 32), (4, None), (3, 32), (3, None), (2, 32), (2, None))


@dataclass(frozen=True)
class Method:
    """A named way to build a compressor that meets a compression ratio."""

    name: str
    build: object
    description: str


def register_method(name, build, description=""):
    """Make ``build(n_rows, n_features, ratio, options) -> estimator`` available by name."""
    METHODS[name] = Method(name, build, description)
    return build


def build_compressor(name, n_rows, n_features, ratio, options=None):
    """An unfitted compressor of method ``name`` meeting ``ratio`` on this shape."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {sorted(METHODS)}.")
    if not (isinstance(ratio, Real) and 0 < ratio < math.inf):
        raise ValueError(f"ratio must be a positive number, got {ratio!r}.")
    merged = {**DEFAULT_OPTIONS, **(options or {})}
    if merged["ratio_unit"] not in RATIO_UNITS:
        raise ValueError(
            f"ratio_unit must be one of {RATIO_UNITS}, got {merged['ratio_unit']!r}."
        )
    column_weight = merged["column_weight"]
    if column_weight is not None:
        ratio = column_scaled_ratio(n_rows, n_features, ratio, merged["ratio_unit"])
    estimator = METHODS[name].build(n_rows, n_features, ratio, merged)
    shared = {
        "device": merged["device"],
        "random_state": merged["seed"],
        "verbose": merged["verbose"],
    }
    params = estimator.get_params(deep=False)
    estimator.set_params(**{k: v for k, v in shared.items() if k in params})
    if column_weight is None:
        return estimator
    return ColumnWeightedCompressor(
        estimator,
        column_weight=column_weight,
        identity_weight=merged["identity_weight"],
    )


def column_scaled_ratio(n_rows, n_features, ratio, ratio_unit):
    """The ratio a table must meet so that, with the ``n_features`` float32 column
    scales of a :class:`ColumnScaledTable` beside it, ``ratio`` is met.

    Examples
    --------
    >>> round(column_scaled_ratio(49152, 576, 16, "bytes"), 4)
    16.0052
    """
    original = n_rows * n_features * (4 if ratio_unit == "bytes" else 1)
    scales = StoredSize.of_values(n_features, torch.float32).in_unit(ratio_unit)
    budget = original / ratio - scales
    if budget <= 0:
        raise ValueError(f"ratio {ratio} leaves nothing beside the column scales.")
    return original / budget


def low_rank_components(n_rows, n_features, ratio, *, bias=False):
    """Largest rank ``k`` whose table (``n_rows*k + k*n_features`` values, plus
    ``n_features`` for a decoder bias) is at least ``ratio`` times smaller than the matrix.

    Examples
    --------
    >>> low_rank_components(30522, 768, 10)
    74
    >>> low_rank_components(49152, 576, 10, bias=True)
    56
    """
    return largest_rank(n_rows, n_features, ratio, bias=bias)


def scalar_bytes_ratio(n_features, bits, group_size):
    """Float32 bytes of a row over what :class:`ScalarQuantizer` stores of it: the
    bit-packed codes and a float16 scale and offset a group.

    Examples
    --------
    >>> scalar_bytes_ratio(576, 4, 32)
    6.4
    """
    return 4 * n_features / ScalarCodec(bits, group_size).row_size(n_features).n_bytes


def scalar_config(n_features, ratio, *, min_bits=2):
    """The most precise ``(bits, group_size)`` of :data:`SCALAR_CONFIGS` with at least
    ``min_bits`` bits whose bytes ratio is at least ``ratio``, or ``None``."""
    for bits, group_size in SCALAR_CONFIGS:
        if bits >= min_bits and scalar_bytes_ratio(n_features, bits, group_size) >= ratio:
            return bits, group_size
    return None


def pq_stored_size(n_rows, n_features, block_size, ratio_unit, n_components=None):
    """Bytes (or parameters) of :class:`ProductQuantizer`'s table: a one-byte code a
    block and a float16 norm a row, and the codebooks (float16 values); with
    ``n_components``, blocks of that many projections and the basis in float16.

    Examples
    --------
    >>> pq_stored_size(49152, 576, 4, "bytes")  # 144 codes + 2 bytes a row, codebooks
    7471104
    """
    codec = ProductCodec(block_size, codebook_dtype=torch.float16)
    if n_components is not None:
        codec = ProjectionCodec(n_components, codec, torch.float16)
    return NormScaledCodec(codec).stored_size(n_rows, n_features).in_unit(ratio_unit)


def pq_components(n_rows, n_features, ratio, ratio_unit, block_size=4):
    """The most components, a multiple of ``block_size`` below ``n_features``, whose
    projected product quantization (``ProductQuantizer(block_size,
    n_components=...)``) meets ``ratio``, or ``None``.

    Examples
    --------
    >>> pq_components(20000, 300, 32, "bytes")  # spaCy's en_core_web_md vectors
    116
    """
    original = n_rows * n_features * (4 if ratio_unit == "bytes" else 1)
    fits = [
        k
        for k in range(block_size, n_features, block_size)
        if original / pq_stored_size(n_rows, n_features, block_size, ratio_unit, k) >= ratio
    ]
    return max(fits, default=None)


def pq_block_size(n_rows, n_features, ratio, ratio_unit):
    """The smallest block size (the most precise codes) whose table meets ``ratio``, or
    ``None``."""
    original = n_rows * n_features * (4 if ratio_unit == "bytes" else 1)
    for block_size in range(1, n_features + 1):
        if original / pq_stored_size(n_rows, n_features, block_size, ratio_unit) >= ratio:
            return block_size
    return None


def auto_compressor(n_rows, n_features, ratio, ratio_unit, *, search=False):
    """The package's preset for a ratio: :class:`FrequencyMixedCompressor`, with token
    counts as ``sample_weight`` when there are some (every row the same weight
    otherwise).

    For a table searched by cosine (``search``: word vectors, a sentence-vector
    store), the mix also offers product quantization of the principal directions in
    blocks of 2 and 4 (``projected_block_sizes=(2, 4)``), which a model's embedding
    must not get: a model reads every direction; and it stores no norms for the codecs
    of unit directions (``keep_norms=False``): a cosine search never reads a length,
    and the bytes go to codes.

    The mix spends the whole budget at every ratio, where one scalar code overshoots
    or misses it. On SmolLM2-135M (perplexity on 4096 tokens of Hamlet, counts from
    news and Wikipedia, ``benchmarks/bench_quality.py`` and one run of each): at 4x,
    6x and 6.4x fewer bytes, x1.0003, x1.0055 and x1.0040 as the input embedding and
    x1.0012, x1.0139 and x1.0142 as the tied table, where int4 in groups of 32 (6.4x,
    the most precise scalar code within 4x to 6.4x) gives x1.0074 and x1.0741; without
    counts, x1.0000 and x1.0016 (input) and x1.0008 and x1.0082 (tied) at 4x and 6x.
    Beyond, the mix with counts gives 1.0065 at 8x, 1.017 at 10x, 1.084 at 16x and 1.78
    at 32x; without counts, 1.0069 at 8x and 1.18 at 16x, where product quantization at
    the smallest block that meets the ratio gives 1.072 (blocks of 3, 11.5x) and 1.56
    (blocks of 5, 18.6x). On spaCy's word vectors (``benchmarks/bench_neighbours.py``),
    ``search`` keeps a 10-NN overlap of 0.981 at 8x, 0.872 at 16x and 0.685 at 32x
    (half its rows repeat another, and the mix stores them once: 0.899, 0.793 and
    0.651 when every row is coded), and on MiniLM sentence vectors of Wikipedia 0.958,
    0.862 and 0.745, ahead of faiss's PQ and OPQ at equal bytes on both; at 4x and 6x
    it keeps 0.9995 and 0.994 on spaCy's and 0.994 and 0.970 on MiniLM's, where int4 in
    groups of 32 keeps 0.929 and 0.955. A mix fits in seconds to minutes (SmolLM2's
    table: about 10 s on two cores), a scalar code in under a second: for speed alone,
    ``build_compressor("scalar", ...)``.
    """
    return FrequencyMixedCompressor(
        ratio,
        ratio_unit=ratio_unit,
        projected_block_sizes=(2, 4) if search else (),
        keep_norms=not search,
    )


# Low-rank tables store float32, so their bytes ratio equals their parameters ratio and
# one rank serves both units.
def _svd(n_rows, n_features, ratio, options):
    return TruncatedSVDCompressor(low_rank_components(n_rows, n_features, ratio))


def _direction(n_rows, n_features, ratio, options):
    return DirectionAutoEncoder.paper(
        low_rank_components(n_rows, n_features, ratio, bias=True),
        max_iter=options["epochs"],
        batch_size=options["batch_size"],
    )


def _direction_fast(n_rows, n_features, ratio, options):
    # The package's own training (PCA start, large batches, few epochs); the paper's
    # epochs and batch size do not apply to it.
    return DirectionAutoEncoder(low_rank_components(n_rows, n_features, ratio, bias=True))


def _scalar(n_rows, n_features, ratio, options):
    if options["ratio_unit"] == "params":
        raise ValueError(
            "scalar quantization stores every value (plus scales), so it reaches no "
            "parameters ratio; count bytes instead (--ratio-unit bytes)."
        )
    config = scalar_config(n_features, ratio)
    if config is None:
        largest = max(scalar_bytes_ratio(n_features, *c) for c in SCALAR_CONFIGS)
        raise ValueError(
            f"ratio {ratio} is too high for scalar quantization of {n_features} features: "
            f"the largest bytes ratio it reaches is {largest:.2f}."
        )
    bits, group_size = config
    return ScalarQuantizer(bits, group_size=group_size)


def _product(n_rows, n_features, ratio, options):
    block_size = pq_block_size(n_rows, n_features, ratio, options["ratio_unit"])
    if block_size is None:
        raise ValueError(
            f"ratio {ratio} is too high for product quantization of a {n_rows} x "
            f"{n_features} table: even one code a row and its codebook store more."
        )
    return ProductQuantizer(block_size)


def _mixed(n_rows, n_features, ratio, options):
    return FrequencyMixedCompressor(ratio, ratio_unit=options["ratio_unit"])


def _auto(n_rows, n_features, ratio, options):
    return auto_compressor(
        n_rows, n_features, ratio, options["ratio_unit"], search=options["search"]
    )


register_method("svd", _svd, "truncated SVD, not centred (the paper's baseline)")
register_method(
    "direction", _direction, "the paper's linear autoencoder with the direction loss"
)
register_method(
    "direction-fast",
    _direction_fast,
    "the direction loss with this package's fast training (PCA start, batch 512, 6 "
    "epochs, Adam 3e-3 halved every 2)",
)
register_method(
    "scalar",
    _scalar,
    "scalar quantization, the most precise that meets the ratio: 8 bits, then 4, 3, 2 "
    "bits with a scale per 32 values or per row (bytes only)",
)
register_method(
    "pq",
    _product,
    "product quantization: one byte a block of columns into k-means codebooks of "
    "unit directions, norms apart; the smallest block that meets the ratio (a code "
    "counts as one parameter)",
)
register_method(
    "mixed",
    _mixed,
    "frequency-aware mix: each row exact, quantized or low rank as its frequency in "
    "--counts-text pays for (every row the same weight without counts)",
)
register_method(
    "auto",
    _auto,
    "the preset: the frequency-aware mix at every ratio (weighted by --counts-text "
    "when given), which spends the whole budget where one scalar code overshoots it",
)
