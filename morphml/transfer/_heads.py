"""Small-sample models on top of each representation, with their inner-fold tuning.

Every head is a scikit-learn pipeline (representation, imputation, scaling, an L2 model)
wrapped in a small grid search over the penalty in inner folds of the training data; the
grid is kept short on purpose (three values), since dozens of scans cannot support more.
The searches give GridSearchCV's answer (tested) while fitting the representation once
per inner fold instead of once per grid value, and the warm-started boosters once per
fold for all numbers of rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from morphml.exceptions import TransferError
from morphml.models import MedianImputer
from morphml.registry import RepresentationType, representation, resolve
from morphml.transfer._normative import NormativeModel
from morphml.transfer._pretrained import PretrainedRun
from morphml.transfer._representations import (
    StackedModel,
    WarmStartClassifier,
    WarmStartRegressor,
)

__all__ = ["HeadFactory", "PenaltySearch", "RoundsSearch"]

#: penalty grids of the small models (inverse strength C for logistic, alpha for ridge)
C_GRID = (0.01, 0.1, 1.0)
ALPHA_GRID = (1.0, 10.0, 100.0)
ROUNDS_GRID = (10, 40)
#: logistic C for z-scores kept on a reference's own scale (penalty in units of one healthy
#: standard deviation; the grid sits lower than C_GRID since ~190 deviations enter unscaled)
Z_C_GRID = (0.001, 0.01, 0.1)
#: ridge alpha for the same
Z_ALPHA_GRID = (10.0, 100.0, 1000.0)


def _entry(name: str) -> RepresentationType:
    try:
        return representation(name)
    except ValueError as err:
        raise TransferError(str(err)) from None


class _FoldSearch(BaseEstimator):
    """What the two searches share: folds, the score, GridSearchCV's tie rule, the refit."""

    values: tuple[Any, ...]
    cv: Any
    kind: str

    def _splits(self, yv: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        stratify = yv if self.kind == "classification" else None
        return list(self.cv.split(np.zeros(len(yv)), stratify))

    def _validation_score(self, y_valid: np.ndarray, score: np.ndarray) -> float:
        from sklearn.metrics import mean_absolute_error, roc_auc_score

        if self.kind == "classification":  # AUC of the margin, as scoring="roc_auc"
            return float(roc_auc_score(y_valid, score))
        return -float(mean_absolute_error(y_valid, score))

    def _refit_best(self, scores: np.ndarray, best: Any, X: Any, yv: np.ndarray) -> None:
        """Keep the fold scores, pick the first best value, refit ``best(value)`` on all."""
        self.cv_scores_ = scores
        self.best_value_ = self.values[int(np.argmax(scores.mean(axis=0)))]
        self.best_estimator_ = best(self.best_value_).fit(X, yv)
        if self.kind == "classification":
            self.classes_ = self.best_estimator_.classes_

    def decision_function(self, X: Any) -> np.ndarray:
        return np.asarray(self.best_estimator_.decision_function(X), dtype=np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.asarray(self.best_estimator_.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.best_estimator_.predict(X))


class PenaltySearch(_FoldSearch):
    """A grid search over the final step's penalty that fits the pipeline's front once per fold.

    Gives what ``GridSearchCV(pipeline, {"<final>__<param>": values}, cv=cv, scoring=...)``
    gives (the same folds, AUC or negative MAE on the validation fold, the first best value
    on ties, a refit on all the training data), but the front of the pipeline (the
    representation, imputation and scaling, which the penalty does not touch) is fitted and
    applied once per inner fold instead of once per value: in the transfer comparison that
    front is most of the work.

    Parameters
    ----------
    pipeline : Pipeline
        Transformers followed by the final model.
    param : str
        The final model's parameter searched (``C``, ``alpha``).
    values : sequence
    cv : splitter
        Inner folds of the training data (stratified for classification).
    kind : {"classification", "regression"}
    """

    def __init__(self, pipeline: Pipeline | None = None, *, param: str = "C",
                 values: tuple[float, ...] = (), cv: Any = None,
                 kind: str = "classification") -> None:  # fmt: skip
        self.pipeline = pipeline
        self.param = param
        self.values = values
        self.cv = cv
        self.kind = kind

    def fit(self, X: Any, y: Any) -> PenaltySearch:
        if self.pipeline is None or not self.values:
            raise TransferError("PenaltySearch needs a pipeline and at least one value")
        pipeline = self.pipeline
        yv = np.asarray(y)
        front = Pipeline(pipeline.steps[:-1])
        final_name, final = pipeline.steps[-1]
        splits = self._splits(yv)
        scores = np.zeros((len(splits), len(self.values)))
        for k, (train, valid) in enumerate(splits):
            fitted = clone(front)
            Z_train = fitted.fit_transform(X.iloc[train], yv[train])
            Z_valid = fitted.transform(X.iloc[valid])
            for j, value in enumerate(self.values):
                model = clone(final).set_params(**{self.param: value}).fit(Z_train, yv[train])
                score = (
                    model.decision_function(Z_valid)
                    if self.kind == "classification"
                    else model.predict(Z_valid)
                )
                scores[k, j] = self._validation_score(yv[valid], score)
        self._refit_best(
            scores,
            lambda v: clone(pipeline).set_params(**{f"{final_name}__{self.param}": v}),
            X,
            yv,
        )
        return self


class RoundsSearch(_FoldSearch):
    """The number of boosting rounds of a warm-started booster, chosen in inner folds.

    What ``GridSearchCV(booster, {"n_rounds": values})`` gives (same folds, AUC or negative
    MAE, first best on ties, refit on all the training data), with one booster of the most
    rounds per fold scored at every smaller number of rounds: boosting without row or
    column sampling is deterministic, so its first ``n`` trees are the ``n``-round booster.
    """

    def __init__(self, booster: Any = None, *, values: tuple[int, ...] = (), cv: Any = None,
                 kind: str = "classification") -> None:  # fmt: skip
        self.booster = booster
        self.values = values
        self.cv = cv
        self.kind = kind

    def fit(self, X: Any, y: Any) -> RoundsSearch:
        if self.booster is None or not self.values:
            raise TransferError("RoundsSearch needs a booster and at least one value")
        yv = np.asarray(y)
        splits = self._splits(yv)
        scores = np.zeros((len(splits), len(self.values)))
        for k, (train, valid) in enumerate(splits):
            model = clone(self.booster).set_params(n_rounds=max(self.values))
            model.fit(X.iloc[train], yv[train])
            for j, rounds in enumerate(self.values):
                score = model.decision_function(X.iloc[valid], rounds=rounds)
                scores[k, j] = self._validation_score(yv[valid], score)
        self._refit_best(scores, lambda v: clone(self.booster).set_params(n_rounds=v), X, yv)
        return self


@dataclass
class HeadFactory:
    """Builds the unfitted small-sample model of each representation."""

    pretrained: PretrainedRun
    kind: str
    covariates: tuple[str, ...]
    inner_folds: int = 3
    normative: NormativeModel | None = None
    components: Any = None
    #: a ReferenceModel for ``reference_z`` and how it adapts new sites
    reference: Any = None
    reference_adaptation: str = "braincharts"
    reference_new_sites: str = "prior"

    def _rep(self, name: str) -> Any:
        """The feature block of a representation, built as its registry entry says."""
        entry = _entry(name)
        if entry.block is None:
            raise TransferError(f"representation {name!r} has no feature block")
        inputs = {key: getattr(self, attribute) for key, attribute in entry.inputs.items()}
        return resolve(entry.block)(**inputs)

    def _linear(self, seed: int, penalty: float | None = None) -> Any:
        if self.kind == "classification":
            return LogisticRegression(C=penalty or 0.1, max_iter=5000, random_state=seed)
        return Ridge(alpha=penalty or 10.0)

    def _pipeline(self, name: str, seed: int, penalty: float | None = None) -> Pipeline:
        rep = self._rep(name)
        head = _entry(name).head
        if head == "sparse":  # e.g. one-hot leaves: no imputation or centring
            return Pipeline([("rep", rep), ("model", self._linear(seed, penalty))])
        if head == "own_scale":  # e.g. z on a reference's own scale: no per-feature scaling
            default = Z_C_GRID[1] if self.kind == "classification" else Z_ALPHA_GRID[1]
            return Pipeline([("rep", rep), ("model", self._linear(seed, penalty or default))])
        return Pipeline([
            ("rep", rep), ("impute", MedianImputer()),
            ("scale", StandardScaler()), ("model", self._linear(seed, penalty)),
        ])  # fmt: skip

    def _warm(self, name: str, seed: int, n_rounds: int = 20) -> Any:
        cls = WarmStartClassifier if self.kind == "classification" else WarmStartRegressor
        variant = _entry(name).options.get("variant", "continue")
        return cls(
            pretrained=self.pretrained, source="age", variant=variant, kind=self.kind,
            n_rounds=n_rounds, random_state=seed,
        )  # fmt: skip

    def _base(self, name: str, seed: int) -> Any:
        """The untuned model of a representation, as a base of ``stacked``."""
        if _entry(name).head == "warm_start":
            return self._warm(name, seed)
        return self._pipeline(name, seed)

    def _cv(self, seed: int) -> Any:
        if self.kind == "classification":
            return StratifiedKFold(self.inner_folds, shuffle=True, random_state=seed)
        return KFold(self.inner_folds, shuffle=True, random_state=seed)

    def build(self, name: str, seed: int, *, bases: list[str] | None = None) -> Any:
        """The tuned model of one representation (a ``stacked`` head stacks ``bases``)."""
        head = _entry(name).head
        if head == "warm_start":
            return RoundsSearch(
                self._warm(name, seed), values=ROUNDS_GRID, cv=self._cv(seed), kind=self.kind
            )
        if head == "stacked":
            names = [b for b in (bases or []) if _entry(b).head != "stacked"]
            estimators = [(b, self._base(b, seed)) for b in names]
            return StackedModel(
                estimators=estimators, kind=self.kind, cv=self.inner_folds, random_state=seed
            )
        classify = self.kind == "classification"
        grids = (Z_C_GRID, Z_ALPHA_GRID) if head == "own_scale" else (C_GRID, ALPHA_GRID)
        return PenaltySearch(
            self._pipeline(name, seed), param="C" if classify else "alpha",
            values=grids[0] if classify else grids[1], cv=self._cv(seed), kind=self.kind,
        )  # fmt: skip
