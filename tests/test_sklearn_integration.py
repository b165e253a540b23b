"""The estimators inside scikit-learn's tools: pipelines, searches, pandas, pickles."""

import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from skdirection import DirectionAutoEncoder, TruncatedSVDCompressor
from skdirection.metrics import compression_ratio_scorer, cosine_scorer

FAST = dict(max_iter=5, learning_rate=1e-2, lr_step_size=100, device="cpu", random_state=0)
MODELS = [
    DirectionAutoEncoder(n_components=3, **FAST),
    TruncatedSVDCompressor(n_components=3, device="cpu", random_state=0),
]


@pytest.mark.slow
def test_grid_search_over_rank_and_loss_weight_in_parallel(embeddings):
    pipeline = Pipeline(
        [
            (
                "scale",
                FunctionTransformer(lambda X: X / 10.0, inverse_func=lambda X: X * 10.0),
            ),
            ("compress", DirectionAutoEncoder(**FAST)),
        ]
    )
    search = GridSearchCV(
        pipeline,
        {"compress__n_components": [2, 6], "compress__cosine_weight": [0.1995, 0.05]},
        cv=2,
        n_jobs=2,
    )
    search.fit(embeddings)
    assert search.best_params_["compress__n_components"] == 6
    assert len(search.cv_results_["mean_test_score"]) == 4
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))


def test_grid_search_with_several_scorers(embeddings):
    search = GridSearchCV(
        TruncatedSVDCompressor(device="cpu"),
        {"n_components": [1, 2, 4]},
        scoring={"cosine": cosine_scorer, "ratio": compression_ratio_scorer},
        refit="cosine",
        cv=3,
    )
    search.fit(embeddings)
    assert search.best_params_ == {"n_components": 4}
    ratios = search.cv_results_["mean_test_ratio"]
    assert ratios[0] > ratios[1] > ratios[2] > 1


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_pandas_in_and_out(model, embeddings):
    model = clone(model)
    frame = pd.DataFrame(
        embeddings, columns=[f"dim{i}" for i in range(embeddings.shape[1])]
    )
    model = model.set_output(transform="pandas")
    codes = model.fit_transform(frame)
    assert isinstance(codes, pd.DataFrame)
    prefix = type(model).__name__.lower()
    assert list(codes.columns) == [f"{prefix}{i}" for i in range(3)]
    assert list(model.get_feature_names_out()) == list(codes.columns)
    np.testing.assert_array_equal(model.feature_names_in_, frame.columns)
    assert model.inverse_transform(codes).shape == embeddings.shape
    assert 0 < model.score(frame) <= 1


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_memmap_input(model, embeddings, tmp_path):
    model = clone(model)
    path = tmp_path / "table.npy"
    np.save(path, embeddings)
    mapped = np.load(path, mmap_mode="r")
    from_memmap = model.fit(mapped).transform(mapped)
    np.testing.assert_array_equal(from_memmap, model.fit(embeddings).transform(embeddings))


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(model, dtype, embeddings):
    model = clone(model)
    X = embeddings.astype(dtype)
    codes = model.fit_transform(X)
    assert codes.dtype == dtype
    assert model.inverse_transform(codes).dtype == dtype


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_pickle_and_joblib_round_trip(model, embeddings, tmp_path):
    model = clone(model)
    model.fit(embeddings)
    expected = model.transform(embeddings)
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(model)).transform(embeddings), expected
    )
    joblib.dump(model, tmp_path / "model.joblib")
    np.testing.assert_array_equal(
        joblib.load(tmp_path / "model.joblib").transform(embeddings), expected
    )


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_model_fitted_on_cuda_transforms_on_cpu_only_machine(
    model, embeddings, monkeypatch
):
    """A GPU fit stores only numpy arrays: on a machine without CUDA it still transforms."""
    model = clone(model)
    import torch

    model.fit(embeddings)
    expected = model.transform(embeddings)
    # What a CUDA fit leaves behind: the CUDA device in its parameters and its record.
    model.set_params(device="cuda")
    model.device_ = "cuda:0"
    restored = pickle.loads(pickle.dumps(model))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    np.testing.assert_allclose(restored.transform(embeddings), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="CUDA is not available"):
        restored.fit(embeddings)
