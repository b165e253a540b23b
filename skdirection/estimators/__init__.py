"""scikit-learn estimators over the codecs: validation, sample weights, device and random
state here, the work in :mod:`skdirection.codecs`."""

from ._autoencoder import PAPER_PARAMS, DirectionAutoEncoder
from ._column_weighted import ColumnWeightedCompressor
from ._mixed import (
    Candidate,
    CandidateFamily,
    FrequencyMixedCompressor,
    register_candidates,
)
from ._product import ProductQuantizer
from ._scalar import ScalarQuantizer
from ._svd import TruncatedSVDCompressor

__all__ = [
    "PAPER_PARAMS",
    "Candidate",
    "CandidateFamily",
    "ColumnWeightedCompressor",
    "DirectionAutoEncoder",
    "FrequencyMixedCompressor",
    "ProductQuantizer",
    "ScalarQuantizer",
    "TruncatedSVDCompressor",
    "register_candidates",
]
