"""Direction-preserving compression of embedding matrices.

Estimators follow scikit-learn's API and train with torch, on CUDA when available.
"""

from ._autoencoder import DirectionAutoEncoder
from ._hybrid_table import DenseTable, LinearDecodedTable, NormScaledTable, PartitionedTable
from ._mixed import FrequencyMixedCompressor
from ._product_quantized_table import ProductQuantizedTable
from ._product_quantizer import ProductQuantizer
from ._quantized_table import QuantizedTable
from ._quantizer import ScalarQuantizer
from ._svd import TruncatedSVDCompressor
from ._table import CompressedTable, LowRankTable, load_table, save_table

__version__ = "0.1.0.dev0"

__all__ = [
    "CompressedTable",
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
