"""Compression methods by name, for the CLI and the benchmarks.

A method is one entry: a function that, given the shape of the embedding matrix, the
compression ratio to meet and the run's options, returns an unfitted estimator whose
``compress`` stores at most ``n_rows * n_features / ratio`` values. A new method (a
quantizer, a hybrid) is one more :func:`register_method` call.
"""

from dataclasses import dataclass

from ._autoencoder import DirectionAutoEncoder
from ._svd import TruncatedSVDCompressor

METHODS = {}

DEFAULT_OPTIONS = {
    "device": "auto",
    "seed": 1,  # the paper's seed
    "epochs": 30,
    "batch_size": 32,
    "verbose": 0,
}


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
    merged = {**DEFAULT_OPTIONS, **(options or {})}
    return METHODS[name].build(n_rows, n_features, ratio, merged)


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
    if ratio <= 1:
        raise ValueError(f"ratio must be greater than 1, got {ratio}.")
    budget = n_rows * n_features / ratio - (n_features if bias else 0)
    k = int(budget // (n_rows + n_features))
    if k < 1:
        raise ValueError(
            f"ratio {ratio} is too high for a {n_rows} x {n_features} matrix: even rank 1 "
            "stores more."
        )
    if k >= n_features:
        raise ValueError(f"ratio {ratio} needs rank {k} >= {n_features}: nothing to compress.")
    return k


def _svd(n_rows, n_features, ratio, options):
    return TruncatedSVDCompressor(
        n_components=low_rank_components(n_rows, n_features, ratio),
        device=options["device"],
        random_state=options["seed"],
    )


def _direction(n_rows, n_features, ratio, options):
    return DirectionAutoEncoder.paper(
        low_rank_components(n_rows, n_features, ratio, bias=True),
        max_iter=options["epochs"],
        batch_size=options["batch_size"],
        device=options["device"],
        random_state=options["seed"],
        verbose=options["verbose"],
    )


def _direction_fast(n_rows, n_features, ratio, options):
    # The package's own training (SVD start, large batches, few epochs); the paper's
    # epochs and batch size do not apply to it.
    return DirectionAutoEncoder(
        low_rank_components(n_rows, n_features, ratio, bias=True),
        device=options["device"],
        random_state=options["seed"],
        verbose=options["verbose"],
    )


register_method("svd", _svd, "truncated SVD, not centred (the paper's baseline)")
register_method(
    "direction", _direction, "the paper's linear autoencoder with the direction loss"
)
register_method(
    "direction-fast",
    _direction_fast,
    "the direction loss with this package's fast training (SVD start, batch 512, 5 epochs)",
)
