"""A pretrain run opened for transfer: its final models, feature space and training cohort.

Opening one from its run directory is :func:`morphml.rundir.load_pretrained`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from morphml.config import PretrainConfig
from morphml.exceptions import TransferError
from morphml.features import SITE_PREFIX, FeatureFrame, load_frame, target_vector

__all__ = ["META_PREFIX", "PretrainedModel", "PretrainedRun", "meta_columns"]

#: prefix of the columns that carry a scan's covariates next to its features
META_PREFIX = "meta:"


def meta_columns(meta: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """``meta:<name>`` columns (age, sex, site, control...) for the given scans."""
    out = pd.DataFrame(index=meta.index)
    for name in names:
        out[f"{META_PREFIX}{name}"] = meta[name].to_numpy()
    return out


@dataclass
class PretrainedModel:
    """One final model of a pretrain run and what its sidecar says about it."""

    key: str
    model: Any
    sidecar: dict[str, Any]

    @property
    def columns(self) -> list[str]:
        names = getattr(self.model, "feature_names_in_", None)
        if names is None:
            names = self.sidecar.get("feature_ids")
        if names is None:
            raise TransferError(
                f"pretrained model {self.key} records no feature ids (neither the model nor "
                "its sidecar); refit the pretrain run with this morphml version"
            )
        return [str(c) for c in names]

    def frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """The model's input: site indicators all zero (the target's sites are not the
        model's), ``meta:`` columns (ComBat's site, age and sex) as they are."""
        data: dict[str, Any] = {}
        for col in self.columns:
            if col.startswith(SITE_PREFIX):
                data[col] = np.zeros(len(X))
            elif col.startswith(META_PREFIX):
                data[col] = X[col].to_numpy()
            else:
                data[col] = X[col].to_numpy(np.float64)
        return pd.DataFrame(data, index=X.index, columns=self.columns)

    def score(self, X: pd.DataFrame) -> np.ndarray:
        """Predicted age (years), or the sex logit for a classifier."""
        Xm = self.frame(X)
        if self.sidecar.get("target") == "sex":
            proba = np.asarray(self.model.predict_proba(Xm))[:, 1]
            proba = np.clip(proba, 1e-9, 1 - 1e-9)
            return np.log(proba / (1 - proba))
        return np.asarray(self.model.predict(Xm), dtype=np.float64)

    def booster_parts(self) -> tuple[Any, Any]:
        """``(preprocessing, XGBoost estimator)``; preprocessing may be None."""
        from sklearn.compose import TransformedTargetRegressor
        from sklearn.pipeline import Pipeline

        model = self.model
        final = model.steps[-1][1] if isinstance(model, Pipeline) else model
        inner = final.regressor_ if isinstance(final, TransformedTargetRegressor) else final
        if not hasattr(inner, "get_booster"):
            raise TransferError(f"pretrained model {self.key} is not an XGBoost model")
        front = Pipeline(model.steps[:-1]) if isinstance(model, Pipeline) else None
        return front, inner

    def booster_input(self, X: pd.DataFrame) -> Any:
        front, _ = self.booster_parts()
        Xm = self.frame(X)
        return front.transform(Xm) if front is not None else Xm

    def tree_sum(self, X: pd.DataFrame) -> np.ndarray:
        """The sum of the booster's trees (its raw output without the base score)."""
        import xgboost as xgb

        booster = self.booster_parts()[1].get_booster()
        inputs = pd.DataFrame(self.booster_input(X), columns=booster.feature_names)
        out = booster.predict(
            xgb.DMatrix(inputs, base_margin=np.zeros(len(X))), output_margin=True
        )
        return np.asarray(out, dtype=np.float64)

    def leaves(self, X: pd.DataFrame) -> np.ndarray:
        """Leaf index of every tree for every scan (n_scans, n_trees)."""
        _, inner = self.booster_parts()
        return np.asarray(inner.apply(self.booster_input(X)), dtype=np.int64)


@dataclass
class PretrainedRun:
    """A pretrain run directory, opened read-only (:func:`morphml.rundir.load_pretrained`).

    Never copied: scikit-learn's ``clone`` deep-copies non-estimator parameters, and every
    representation holding the same run should share it (and its prediction cache).
    """

    run_dir: Path
    run_id: str
    config: PretrainConfig
    manifest: dict[str, Any]
    models: dict[str, PretrainedModel] = field(default_factory=dict)

    def __deepcopy__(self, memo: dict[int, Any]) -> PretrainedRun:
        return self

    @property
    def feature_ids(self) -> list[str]:
        return list(self.manifest["feature_ids"])

    def get(self, target: str, family: str, *, etiv: bool = False) -> PretrainedModel | None:
        """The final model of a family (``ridge``, ``xgboost``, ``logistic``...), or None."""
        label = f"{family}_etiv_adjusted" if etiv else family
        return self.models.get(f"{target}/{label}")

    def first(self, target: str, families: tuple[str, ...]) -> PretrainedModel | None:
        for family in families:
            model = self.get(target, family)
            if model is not None:
                return model
        return None

    def training_frame(self, db: str | os.PathLike[str] | None) -> FeatureFrame:
        """The scans the run was trained on, as they are in the database now."""
        features = self.config.features.model_copy(update={"site_covariates": False})
        frame = load_frame(db, self.config.cohort, features)
        keep = frame.X.index.isin(self.manifest["scan_keys"])
        frame = frame.subset(keep)
        missing = [f for f in self.feature_ids if f not in frame.X.columns]
        if missing:
            raise TransferError(
                f"the pretraining scans in the database lack {len(missing)} of the run's "
                f"features (first: {missing[:5]})"
            )
        meta = frame.meta.copy()
        sex, known = target_vector(meta, "sex")  # 1 = male, as in the target's meta:sex
        meta["sex"] = np.where(known, sex, np.nan)
        return FeatureFrame(frame.X[self.feature_ids], meta)
