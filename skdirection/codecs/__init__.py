"""Codecs: how rows are stored, each with its maths, its stored table and its size.

A :class:`Codec` learns what it shares across rows (``fit``), stores rows as a
:class:`CompressedTable` (``encode``) and states its size before anything is fitted
(``row_size``, ``fixed_size``); the table decodes rows by index and counts what it
stores. Codecs compose the way faiss's index factory composes quantizers: a
:class:`NormScaledCodec` stores the directions of any codec and the norms beside them, a
:class:`ProjectionCodec` stores latent codes with any codec, and a
:class:`PartitionedTable` puts each row in the table of the codec chosen for it, and a
:class:`DeduplicatedTable` stores rows that repeat once.

Adding a codec means one module here: a :class:`Codec` subclass, and its table class
decorated with :func:`register_table` so that :func:`load_table` can read it back. The
frequency-aware mix then offers it to each row once registered with
:func:`skdirection.estimators.register_candidates`.
"""

from ._codec import Codec
from ._table import (
    CompressedTable,
    StoredSize,
    index_size,
    load_table,
    register_table,
    save_table,
)
from .column_scaled import ColumnScaledTable
from .deduplicated import DeduplicatedTable, distinct_rows, rows_repeat
from .dense import DenseCodec, DenseTable
from .low_rank import (
    LinearDecodedTable,
    LowRankTable,
    ProjectionCodec,
    largest_rank,
    low_rank_size,
)
from .norm_scaled import NormScaledCodec, NormScaledTable
from .partitioned import PartitionedTable, partition_size
from .product import ProductCodec, ProductQuantizedTable
from .scalar import QuantizedTable, ScalarCodec

__all__ = [
    "Codec",
    "ColumnScaledTable",
    "CompressedTable",
    "DeduplicatedTable",
    "DenseCodec",
    "DenseTable",
    "LinearDecodedTable",
    "LowRankTable",
    "NormScaledCodec",
    "NormScaledTable",
    "PartitionedTable",
    "ProductCodec",
    "ProductQuantizedTable",
    "ProjectionCodec",
    "QuantizedTable",
    "ScalarCodec",
    "StoredSize",
    "distinct_rows",
    "index_size",
    "largest_rank",
    "load_table",
    "low_rank_size",
    "partition_size",
    "register_table",
    "rows_repeat",
    "save_table",
]
