"""The direction-loss autoencoder of Balazy et al. (2021)."""

from ._estimator import PAPER_PARAMS, DirectionAutoEncoder

__all__ = ["PAPER_PARAMS", "DirectionAutoEncoder"]
