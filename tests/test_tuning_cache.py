"""Histogram reuse: the trials of a tuning share each inner fold's quantised matrices, with the
same trees, predictions and tree counts as fits that build their own."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from morphml.evaluation import tune
from morphml.models import fit_early_stopped, make_age_model, make_sex_model, search_space


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(240, 10)), columns=[f"f{i}" for i in range(10)])
    X.iloc[::9, 2] = np.nan  # missing values go through the cached matrices too
    age = 40 + 10 * X["f0"].to_numpy() + 5 * np.tanh(X["f1"].to_numpy()) + rng.normal(size=240)
    sex = (X["f3"].to_numpy() + rng.normal(size=240) > 0).astype(int)
    return X, age, sex


_GRID = [{"learning_rate": 0.1, "max_depth": 2}, {"learning_rate": 0.3, "max_depth": 4},
         {"learning_rate": 0.05, "max_depth": 3, "subsample": 0.7}]  # fmt: skip


def _model(target: str, params: dict[str, Any]) -> Pipeline:
    maker = make_age_model if target == "age" else make_sex_model
    return maker("xgboost", {"n_estimators": 2000, **params}, etiv_adjust=False, random_state=0)


@pytest.mark.parametrize("target", ["age", "sex"])
def test_cached_fits_equal_fresh_fits(data: Any, target: str) -> None:
    X, age, sex = data
    y, kind = (age, "regression") if target == "age" else (sex, "classification")
    tr, va = np.arange(80, 240), np.arange(80)
    cache: dict[Any, Any] = {}
    for params in _GRID:
        fresh = fit_early_stopped(_model(target, params), X.iloc[tr], y[tr], X.iloc[va], y[va],
                                  rounds=20, kind=kind)  # fmt: skip
        cached = fit_early_stopped(_model(target, params), X.iloc[tr], y[tr], X.iloc[va],
                                   y[va], rounds=20, kind=kind, cache=cache)  # fmt: skip
        assert cached[1] == fresh[1]
        np.testing.assert_array_equal(cached[0], fresh[0])
    assert len(cache) == 1  # built once, reused by the other parameter sets
    # the same as XGBoost's own fit of that many trees and its predict
    model = _model(target, {**_GRID[-1], "n_estimators": fresh[1]}).fit(X.iloc[tr], y[tr])
    own = model.predict(X.iloc[va]) if target == "age" else model.predict_proba(X.iloc[va])[:, 1]
    np.testing.assert_allclose(cached[0], own, rtol=1e-5)


def test_another_preprocessing_gets_its_own_matrices(data: Any) -> None:
    X, age, _ = data
    tr, va = np.arange(80, 240), np.arange(80)
    cache: dict[Any, Any] = {}
    plain = _model("age", _GRID[0])
    fit_early_stopped(plain, X.iloc[tr], age[tr], X.iloc[va], age[va], rounds=20,
                      kind="regression", cache=cache)  # fmt: skip
    other_bins = _model("age", {**_GRID[0], "max_bin": 16})
    fit_early_stopped(other_bins, X.iloc[tr], age[tr], X.iloc[va], age[va], rounds=20,
                      kind="regression", cache=cache)  # fmt: skip
    unlogged = make_age_model("xgboost", {"n_estimators": 2000, **_GRID[0]}, etiv_adjust=False,
                              random_state=0, log_target=False)  # fmt: skip
    pred, _ = fit_early_stopped(unlogged, X.iloc[tr], age[tr], X.iloc[va], age[va], rounds=20,
                                kind="regression", cache=cache)  # fmt: skip
    assert len(cache) == 3
    fresh, _ = fit_early_stopped(unlogged, X.iloc[tr], age[tr], X.iloc[va], age[va], rounds=20,
                                 kind="regression")  # fmt: skip
    np.testing.assert_array_equal(pred, fresh)


def test_tuning_with_reused_matrices_is_seeded_and_picklable(data: Any) -> None:
    import pickle

    from morphml.evaluation._tuning import _Objective

    X, age, _ = data
    idx = np.arange(240)
    splits = [(idx[idx % 3 != k], idx[idx % 3 == k]) for k in range(3)]
    space = search_space("xgboost", "age", early_stopping=True)

    def run() -> Any:
        return tune(_build, space, X, age, splits, kind="regression", trials=4, timeout=None,
                    seed=2, study_name="age", early_stopping_rounds=20)  # fmt: skip

    first, second = run(), run()
    assert first.params == second.params
    np.testing.assert_array_equal(first.oof, second.oof)
    objective = _Objective(_build, space, X, age, splits, "regression", 20)
    list(objective.folds({"n_estimators": 2000, "learning_rate": 0.3}))
    assert len(objective._caches) == 3  # one per inner fold
    assert pickle.loads(pickle.dumps(objective))._caches == {}  # matrices never travel


def _build(params: dict[str, Any]) -> Pipeline:
    return make_age_model("xgboost", {**params, "max_depth": 2}, etiv_adjust=False,
                          random_state=0)  # fmt: skip
