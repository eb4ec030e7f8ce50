"""Small-sample models on top of each representation, with their inner-fold tuning.

Every head is a scikit-learn pipeline (representation, imputation, scaling, an L2 model)
wrapped in a small grid search over the penalty in inner folds of the training data; the
grid is kept short on purpose (three values), since dozens of scans cannot support more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from morphml.exceptions import TransferError
from morphml.transfer._normative import NormativeModel
from morphml.transfer._pretrained import PretrainedRun
from morphml.transfer._representations import (
    BrainAgeGap,
    LeafEmbedding,
    LinearProjection,
    NormativeZ,
    RawFeatures,
    SexScore,
    StackedModel,
    WarmStartClassifier,
    WarmStartRegressor,
)

__all__ = ["HeadFactory"]

#: penalty grids of the small models (inverse strength C for logistic, alpha for ridge)
C_GRID = (0.01, 0.1, 1.0)
ALPHA_GRID = (1.0, 10.0, 100.0)
ROUNDS_GRID = (10, 40)


@dataclass
class HeadFactory:
    """Builds the unfitted small-sample model of each representation."""

    pretrained: PretrainedRun
    kind: str
    covariates: tuple[str, ...]
    inner_folds: int = 3
    normative: NormativeModel | None = None
    components: Any = None

    def _rep(self, name: str) -> Any:
        run, cov = self.pretrained, self.covariates
        if name == "raw":
            return RawFeatures(pretrained=run, covariates=cov)
        if name == "brain_age_gap":
            return BrainAgeGap(pretrained=run, covariates=cov)
        if name == "sex_score":
            return SexScore(pretrained=run, covariates=cov)
        if name == "normative_z":
            return NormativeZ(pretrained=run, normative=self.normative, covariates=cov)
        if name == "linear_projection":
            return LinearProjection(pretrained=run, components=self.components, covariates=cov)
        if name == "leaf_embedding":
            return LeafEmbedding(pretrained=run, covariates=cov)
        raise TransferError(f"unknown representation {name!r}")

    def _linear(self, seed: int, penalty: float | None = None) -> Any:
        if self.kind == "classification":
            return LogisticRegression(C=penalty or 0.1, max_iter=5000, random_state=seed)
        return Ridge(alpha=penalty or 10.0)

    def _pipeline(self, name: str, seed: int, penalty: float | None = None) -> Pipeline:
        rep = self._rep(name)
        if name == "leaf_embedding":  # sparse one-hot: no imputation or centring
            return Pipeline([("rep", rep), ("model", self._linear(seed, penalty))])
        return Pipeline([
            ("rep", rep), ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()), ("model", self._linear(seed, penalty)),
        ])  # fmt: skip

    def _warm(self, name: str, seed: int, n_rounds: int = 20) -> Any:
        cls = WarmStartClassifier if self.kind == "classification" else WarmStartRegressor
        variant = "base_margin" if name == "warm_start_base_margin" else "continue"
        return cls(
            pretrained=self.pretrained, source="age", variant=variant, kind=self.kind,
            n_rounds=n_rounds, random_state=seed,
        )  # fmt: skip

    def _search(self, model: Any, grid: dict[str, Any], seed: int) -> GridSearchCV:
        if self.kind == "classification":
            cv: Any = StratifiedKFold(self.inner_folds, shuffle=True, random_state=seed)
            scoring = "roc_auc"
        else:
            cv = KFold(self.inner_folds, shuffle=True, random_state=seed)
            scoring = "neg_mean_absolute_error"
        return GridSearchCV(model, grid, cv=cv, scoring=scoring, refit=True, error_score="raise")

    def build(self, name: str, seed: int, *, bases: list[str] | None = None) -> Any:
        """The tuned model of one representation (``stacked`` stacks ``bases``)."""
        if name in ("warm_start", "warm_start_base_margin"):
            return self._search(self._warm(name, seed), {"n_rounds": list(ROUNDS_GRID)}, seed)
        if name == "stacked":
            names = [b for b in (bases or []) if b != "stacked"]
            estimators = [
                (b, self._warm(b, seed) if b.startswith("warm_start") else self._pipeline(b, seed))
                for b in names
            ]
            return StackedModel(
                estimators=estimators, kind=self.kind, cv=self.inner_folds, random_state=seed
            )
        key = "model__C" if self.kind == "classification" else "model__alpha"
        grid = list(C_GRID) if self.kind == "classification" else list(ALPHA_GRID)
        return self._search(self._pipeline(name, seed), {key: grid}, seed)
