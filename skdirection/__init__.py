"""Direction-preserving compression of embedding matrices.

Estimators follow scikit-learn's API and train with torch, on CUDA when available.
"""

from ._autoencoder import DirectionAutoEncoder
from ._svd import TruncatedSVDCompressor
from ._table import CompressedTable, LowRankTable, load_table, save_table

__version__ = "0.1.0.dev0"

__all__ = [
    "CompressedTable",
    "DirectionAutoEncoder",
    "LowRankTable",
    "TruncatedSVDCompressor",
    "load_table",
    "save_table",
]
