import numpy as np
import pytest


@pytest.fixture
def embeddings():
    """A small embedding-like table: low-rank structure plus noise, rows of varied norm."""
    rng = np.random.RandomState(0)
    basis = rng.normal(size=(6, 24))
    X = rng.normal(size=(300, 6)) @ basis + 0.1 * rng.normal(size=(300, 24))
    return (X * rng.uniform(0.5, 2.0, size=(300, 1))).astype(np.float32)
