"""The frequency-aware mix: candidate codecs by family, a budget solver, the estimator."""

from ._candidates import Candidate, CandidateFamily, register_candidates
from ._compressor import FrequencyMixedCompressor

__all__ = [
    "Candidate",
    "CandidateFamily",
    "FrequencyMixedCompressor",
    "register_candidates",
]
