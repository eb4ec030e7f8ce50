"""Optuna tuning inside one outer training set.

The study of each (target, model, scheme, outer fold) is kept in a journal file in the run
directory, so an interrupted fit resumes where it stopped. The sampler is seeded TPE; pruning
(median rule over inner folds) stops poor trials early.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.metrics import log_loss, mean_absolute_error

__all__ = ["TuningResult", "predict_scores", "stable_seed", "tune"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class TuningResult:
    """Best parameters and the out-of-fold predictions they gave on the training set."""

    params: dict[str, Any]
    score: float
    oof: np.ndarray
    n_trials: int


def predict_scores(model: BaseEstimator, X: pd.DataFrame, kind: str) -> np.ndarray:
    """Predictions: values for regression, P(class 1) for classification."""
    if kind == "classification":
        return np.asarray(model.predict_proba(X))[:, 1]
    return np.asarray(model.predict(X), dtype=np.float64)


def _loss(kind: str, y: np.ndarray, pred: np.ndarray) -> float:
    if kind == "classification":
        return float(log_loss(y, np.clip(pred, 1e-6, 1 - 1e-6), labels=[0, 1]))
    return float(mean_absolute_error(y, pred))


def stable_seed(seed: int, *parts: object) -> int:
    """A seed derived from ``seed`` and names (no Python hash randomisation)."""
    text = "|".join(str(p) for p in parts).encode()
    return (seed * 1_000_003 + zlib.crc32(text)) % (2**31 - 1)


def tune(
    build: Callable[[dict[str, Any]], BaseEstimator],
    space: Callable[[optuna.Trial], dict[str, Any]],
    X: pd.DataFrame,
    y: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    *,
    kind: str,
    trials: int,
    timeout: float | None,
    seed: int,
    storage_path: Path | None,
    study_name: str,
    pruning: bool = True,
) -> TuningResult:
    """Minimise the inner-fold loss (MAE, or log loss for classification) over ``space``.

    Returns the best parameters and the out-of-fold predictions of the training set made
    with them (used to fit the brain-age bias correction without touching the test fold).
    """
    storage: Any = None
    if storage_path is not None:
        storage_path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(JournalFileBackend(str(storage_path)))
    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
        if pruning
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction="minimize",
        load_if_exists=True,
    )
    oofs: dict[int, np.ndarray] = {}

    def objective(trial: optuna.Trial) -> float:
        params = space(trial)
        oof = np.full(len(y), np.nan)
        losses = []
        for step, (tr, va) in enumerate(splits):
            model = build(params).fit(X.iloc[tr], y[tr])
            oof[va] = predict_scores(model, X.iloc[va], kind)
            losses.append(_loss(kind, y[va], oof[va]))
            trial.report(float(np.mean(losses)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        oofs[trial.number] = oof
        return float(np.mean(losses))

    done = len([t for t in study.trials if t.state.is_finished()])
    remaining = max(trials - done, 0)
    if remaining:
        study.optimize(objective, n_trials=remaining, timeout=timeout, gc_after_trial=False)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(f"tuning {study_name}: no trial completed (timeout too short?)")
    best = study.best_trial
    oof = oofs.get(best.number)
    if oof is None:  # the best trial ran in an earlier, interrupted process: recompute
        oof = np.full(len(y), np.nan)
        for tr, va in splits:
            model = build(_params_of(best, space)).fit(X.iloc[tr], y[tr])
            oof[va] = predict_scores(model, X.iloc[va], kind)
    params = _params_of(best, space)
    score = float(best.value) if best.value is not None else float("nan")
    return TuningResult(params=params, score=score, oof=oof, n_trials=len(completed))


def _params_of(
    trial: optuna.trial.FrozenTrial, space: Callable[[optuna.Trial], dict[str, Any]]
) -> dict[str, Any]:
    """The parameters the space built for this trial (spaces may derive values from trial
    suggestions, so replay the space on a fixed trial)."""
    fixed = optuna.trial.FixedTrial(trial.params)
    return space(fixed)  # type: ignore[arg-type]
