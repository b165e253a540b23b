"""Model search on a dask.distributed cluster through joblib's dask backend."""

import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

from skdirection import DirectionAutoEncoder

distributed = pytest.importorskip("distributed")


def test_grid_search_runs_on_a_local_dask_cluster(embeddings):
    search = GridSearchCV(
        DirectionAutoEncoder(max_iter=3, device="cpu", random_state=0),
        {"n_components": [2, 6], "cosine_weight": [0.1995, 0.05]},
        cv=2,
    )
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        with distributed.get_task_stream(client) as tasks:
            with joblib.parallel_config(backend="dask"):
                search.fit(embeddings)
    # 4 candidates x 2 folds ran as tasks on the cluster's workers.
    assert len({task["worker"] for task in tasks.data}) >= 1
    assert len(tasks.data) >= 8
    assert search.best_params_["n_components"] == 6
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
