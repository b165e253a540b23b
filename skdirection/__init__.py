"""Direction-preserving compression of embedding matrices.

Estimators follow scikit-learn's API and train with torch, on CUDA when available.
The package is layered: :mod:`skdirection.codecs` (how rows are stored) under
:mod:`skdirection.estimators` (scikit-learn wrappers) under :mod:`skdirection.presets`
(methods by name) under :mod:`skdirection.adapters` (tables inside other libraries'
models) under :mod:`skdirection.cli`.
"""

from .codecs import (
    ColumnScaledTable,
    CompressedTable,
    DeduplicatedTable,
    DenseTable,
    LinearDecodedTable,
    LowRankTable,
    NormScaledTable,
    PartitionedTable,
    ProductQuantizedTable,
    QuantizedTable,
    load_table,
    save_table,
)
from .estimators import (
    ColumnWeightedCompressor,
    DirectionAutoEncoder,
    FrequencyMixedCompressor,
    ProductQuantizer,
    ScalarQuantizer,
    TruncatedSVDCompressor,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "ColumnScaledTable",
    "ColumnWeightedCompressor",
    "CompressedTable",
    "DeduplicatedTable",
    "DenseTable",
    "DirectionAutoEncoder",
    "FrequencyMixedCompressor",
    "LinearDecodedTable",
    "LowRankTable",
    "NormScaledTable",
    "PartitionedTable",
    "ProductQuantizedTable",
    "ProductQuantizer",
    "QuantizedTable",
    "ScalarQuantizer",
    "TruncatedSVDCompressor",
    "load_table",
    "save_table",
]
