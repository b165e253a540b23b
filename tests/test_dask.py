"""Model search on a dask.distributed cluster through joblib's dask backend."""

import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

from skdirection import DirectionAutoEncoder

pytestmark = [pytest.mark.dask, pytest.mark.slow]


def test_grid_search_runs_on_both_workers_of_a_local_dask_cluster(embeddings):
    distributed = pytest.importorskip("distributed")
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
        workers = set(client.scheduler_info()["workers"])
        with distributed.get_task_stream(client) as tasks:
            with joblib.parallel_config(backend="dask"):
                search.fit(embeddings)
    assert len(workers) == 2
    # 4 candidates x 2 folds ran as tasks, and both workers ran some of them.
    assert len(tasks.data) >= 8
    assert {task["worker"] for task in tasks.data} == workers
    assert search.best_params_["n_components"] == 6
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
