"""scikit-learn's own estimator checks over every public estimator."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from skdirection import (
    ColumnWeightedCompressor,
    DirectionAutoEncoder,
    FrequencyMixedCompressor,
    ProductQuantizer,
    ScalarQuantizer,
    TruncatedSVDCompressor,
)

FAST_AUTOENCODER = dict(
    n_components=1, max_iter=3, batch_size=16, device="cpu", random_state=0
)

ESTIMATORS = [
    DirectionAutoEncoder(**FAST_AUTOENCODER),
    TruncatedSVDCompressor(n_components=1, device="cpu", random_state=0),
    TruncatedSVDCompressor(
        n_components=1, algorithm="randomized", device="cpu", random_state=0
    ),
    ScalarQuantizer(bits=4),
    ScalarQuantizer(bits=2, group_size=2),
    FrequencyMixedCompressor(ratio=1.5, ranks=(1,)),
    FrequencyMixedCompressor(
        ratio=1.5, ranks=(1,), projected_block_sizes=(1,), keep_norms=False
    ),
    ProductQuantizer(block_size=2, device="cpu", random_state=0),
    ProductQuantizer(block_size=3, keep_norms=False, device="cpu", random_state=0),
    ProductQuantizer(block_size=1, n_components=1, device="cpu", random_state=0),
    ColumnWeightedCompressor(ScalarQuantizer(bits=4)),
]


def expected_failed_checks(estimator):
    if isinstance(estimator, DirectionAutoEncoder):
        return {
            "check_sample_weight_equivalence_on_dense_data": (
                "mini-batch training: a weight of 2 and a repeated row give the same "
                "loss in expectation, but repeating a row changes the shuffled batches, "
                "so the fitted weights differ (the SVD, a closed form, passes)"
            ),
        }
    if isinstance(estimator, ProductQuantizer):
        return {
            "check_sample_weight_equivalence_on_dense_data": (
                "k-means starts from rows drawn by weight: a weight of 2 and a repeated "
                "row give the same objective but different draws, so different codebooks "
                "and code numbers (as scikit-learn's own KMeans)"
            ),
        }
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize("mode", [torch.inference_mode, torch.no_grad])
@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_fit_under_inference_mode_matches_a_plain_fit(estimator, mode):
    # Users fit beside a model they run under no_grad or inference_mode: training must
    # still have gradients, and the k-means' worker threads (2 torch threads) the
    # caller's mode. The stored table is the plain fit's.
    X = np.random.RandomState(0).normal(size=(300, 6)).astype(np.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = clone(estimator).fit(X).compress(X).decode()
        with mode():
            table = clone(estimator).fit(X).compress(X)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(table.decode(), expected)
