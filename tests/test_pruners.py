"""Multi-fidelity pruning of XGBoost trials (successive halving / Hyperband on boosting rounds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from morphml.config import parse_config
from morphml.evaluation import tune
from morphml.evaluation._tuning import storage_from
from morphml.exceptions import MorphmlError
from morphml.models import fit_early_stopped, make_age_model, search_space


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(300, 12)), columns=[f"f{i}" for i in range(12)])
    age = 40 + 10 * X["f0"].to_numpy() + 5 * np.tanh(X["f1"].to_numpy()) + rng.normal(size=300)
    idx = np.arange(300)
    splits = [(idx[idx % 3 != k], idx[idx % 3 == k]) for k in range(3)]
    return X, age, splits


def _build(params: dict[str, Any]) -> Pipeline:
    return make_age_model("xgboost", {**params, "max_depth": 2}, etiv_adjust=False,
                          random_state=0)  # fmt: skip


def _tune(data: Any, pruner: str, journal: Path, trials: int = 10) -> Any:
    X, age, splits = data
    space = search_space("xgboost", "age", early_stopping=True)
    return tune(_build, space, X, age, splits, kind="regression", trials=trials, timeout=None,
                seed=1, storage_path=journal, study_name="age", pruner=pruner,
                early_stopping_rounds=20)  # fmt: skip


def _trials(journal: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="age", storage=storage_from(journal)).trials


def test_report_callback_sees_best_loss_and_stops_training(data: Any) -> None:
    X, age, splits = data
    tr, va = splits[0]
    calls: list[tuple[int, float]] = []

    def report(trees: int, loss: float) -> bool:
        calls.append((trees, loss))
        return trees >= 75  # the pruner's verdict: stop

    model = _build({"n_estimators": 2000, "learning_rate": 0.02})
    pred, trees = fit_early_stopped(model, X.iloc[tr], age[tr], X.iloc[va], age[va],
                                    rounds=500, kind="regression", report=report,
                                    report_every=25)  # fmt: skip
    assert [t for t, _ in calls] == [25, 50, 75]
    losses = [loss for _, loss in calls]
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0]
    assert trees is not None and trees <= 75 and pred.shape == (len(va),)
    # without a report the same model grows past 75 trees (slow learning rate)
    _, full = fit_early_stopped(_build({"n_estimators": 2000, "learning_rate": 0.02}),
                                X.iloc[tr], age[tr], X.iloc[va], age[va], rounds=500,
                                kind="regression")  # fmt: skip
    assert full is not None and full > 75


@pytest.mark.parametrize("pruner", ["halving", "hyperband"])
def test_round_pruners_stop_trials_inside_the_first_fold(
    data: Any, tmp_path: Path, pruner: str
) -> None:
    result = _tune(data, pruner, tmp_path / "a.journal")
    trials = _trials(tmp_path / "a.journal")
    states = [t.state for t in trials]
    assert len(trials) == 10 and optuna.trial.TrialState.COMPLETE in states
    for t in trials:  # reports are boosting rounds of the first inner fold, every 25 trees
        steps = sorted(t.intermediate_values)
        assert steps and all(s % 25 == 0 for s in steps)
    if pruner == "halving":
        pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
        assert pruned, "successive halving pruned no trial"
        # a pruned trial stopped at a rung (50, 150, 450, ... trees) and never reached fold 2
        assert all(max(t.intermediate_values) in (50, 150, 450, 1350) for t in pruned)
        assert all("measured_params" not in t.user_attrs for t in pruned)
    assert result.n_trials == states.count(optuna.trial.TrialState.COMPLETE)
    assert 1 <= result.params["n_estimators"] < 2000
    # deterministic for a seed: a second study makes the same trials and the same choice
    again = _tune(data, pruner, tmp_path / "b.journal")
    assert again.params == result.params and again.score == result.score
    assert [(t.params, t.state, t.intermediate_values) for t in _trials(tmp_path / "b.journal")] \
        == [(t.params, t.state, t.intermediate_values) for t in trials]  # fmt: skip
    # a resumed study (every trial in the journal) gives the same parameters and predictions
    resumed = _tune(data, pruner, tmp_path / "a.journal")
    assert resumed.params == result.params and len(_trials(tmp_path / "a.journal")) == 10
    np.testing.assert_allclose(resumed.oof, result.oof, rtol=1e-6)


def test_pruning_false_switches_the_round_pruner_off(data: Any, tmp_path: Path) -> None:
    X, age, splits = data
    space = search_space("xgboost", "age", early_stopping=True)
    tune(_build, space, X, age, splits, kind="regression", trials=4, timeout=None, seed=1,
         storage_path=tmp_path / "off.journal", study_name="age", pruner="halving",
         pruning=False, early_stopping_rounds=20)  # fmt: skip
    trials = _trials(tmp_path / "off.journal")
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # no round reports: only the (unpruned) fold-level losses, as before
    assert all(sorted(t.intermediate_values) == [0, 1, 2] for t in trials)


def test_pruner_config_key() -> None:
    base = {"kind": "pretrain", "name": "p", "cohort": {"sources": ["s"]}, "targets": ["age"]}
    assert parse_config(base).tuning.pruner == "median"  # the default is unchanged
    assert parse_config({**base, "tuning": {"pruner": "hyperband"}}).tuning.pruner == "hyperband"
    with pytest.raises(MorphmlError, match="pruner"):
        parse_config({**base, "tuning": {"pruner": "successive"}})
    with pytest.raises(MorphmlError):
        tune(_build, search_space("ridge", "age"), pd.DataFrame({"a": [1.0]}), np.ones(1), [],
             kind="regression", trials=1, timeout=None, seed=0, study_name="x",
             pruner="bogus")  # fmt: skip
