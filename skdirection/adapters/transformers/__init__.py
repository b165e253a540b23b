"""Compressed embeddings inside Hugging Face transformers models, and what they cost.

A fitted compressor stores an embedding matrix as a :class:`~skdirection.CompressedTable`.
:func:`patch_embeddings` puts that table in a model in place of its input embedding, its
output head, or both (every module that holds the matrix, with whatever constant scale
the replaced embedding applied), and reports the parameters saved;
:func:`unpatch_embeddings` puts the original back exactly; :func:`perplexity` measures
what the compression costs, and :func:`evaluate` does it all for several methods and
ratios. The torch modules it puts in the model live in :mod:`skdirection.nn`, for any
adapter to reuse.

This package imports transformers only when a function needs it, and ``import
skdirection`` never imports it.
"""

from ...nn import CompressedEmbedding, CompressedLMHead, count_parameters
from ._evaluate import COLUMNS, evaluate
from ._metrics import (
    LanguageModelMeter,
    perplexity,
    sentence_embeddings,
    similarity_spearman,
)
from ._models import MODELS, load_model
from ._patch import TARGETS, PatchReport, patch_embeddings, patch_report, unpatch_embeddings
from ._saving import load_compressed, save_compressed
from ._sensitivity import head_moment
from ._text import split_sentences, token_counts
from ._tuning import TuningReport, tune_table

__all__ = [
    "COLUMNS",
    "MODELS",
    "TARGETS",
    "CompressedEmbedding",
    "CompressedLMHead",
    "LanguageModelMeter",
    "PatchReport",
    "TuningReport",
    "count_parameters",
    "evaluate",
    "head_moment",
    "load_compressed",
    "load_model",
    "patch_embeddings",
    "patch_report",
    "perplexity",
    "save_compressed",
    "sentence_embeddings",
    "similarity_spearman",
    "split_sentences",
    "token_counts",
    "tune_table",
    "unpatch_embeddings",
]
