"""Does ComBat remove the site signal? Site separability before and after harmonisation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from morphml.config import HarmonizeSpec
from morphml.evaluation._tuning import stable_seed
from morphml.features import SITE_PREFIX

__all__ = ["harmonization_diagnostics"]


def harmonization_diagnostics(
    X: pd.DataFrame, spec: HarmonizeSpec, *, targets: list[str], seed: int
) -> dict[str, Any]:
    """Site separability before and after ComBat (fitted in training folds), for the report.

    Parameters
    ----------
    X : DataFrame
        Features with the ``meta:`` columns ComBat reads (:func:`morphml.features.with_meta`).
    spec : HarmonizeSpec
        The config's ``harmonize`` section (its covariates are preserved).
    targets : list of str
        The run's targets (a warning is written when one is a ComBat covariate).
    seed : int
        The run's seed (the folds' own is derived from it).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from morphml.harmonize import HarmonizeStep

    sites = X["meta:site"].to_numpy()
    counts = pd.Series(sites).value_counts()
    keep = np.isin(sites, counts[counts >= 5].index)
    Xk, sk = X.loc[keep], sites[keep]
    features = [c for c in X.columns if not c.startswith(("meta:", SITE_PREFIX))]
    folds = StratifiedKFold(5, shuffle=True, random_state=stable_seed(seed, "harm"))
    before: list[float] = []
    after: list[float] = []
    for train, test in folds.split(Xk, sk):
        step = HarmonizeStep(covariates=tuple(f"meta:{c}" for c in spec.covariates))
        step.fit(Xk.iloc[train])
        for out, (a, b) in (
            (before, (Xk.iloc[train][features], Xk.iloc[test][features])),
            (after, (step.transform(Xk.iloc[train])[features],
                     step.transform(Xk.iloc[test])[features])),
        ):  # fmt: skip
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
            clf.fit(a.fillna(a.median()), sk[train])
            out.append(float((clf.predict(b.fillna(a.median())) == sk[test]).mean()))
    return {
        "method": "combat",
        "covariates": list(spec.covariates),
        "site_accuracy_before": float(np.mean(before)),
        "site_accuracy_after": float(np.mean(after)),
        "chance": float(counts[counts >= 5].max() / keep.sum()),
        "sites_scored": int((counts >= 5).sum()),
        "warning": _outcome_warning(spec, targets),
    }


def _outcome_warning(spec: HarmonizeSpec, targets: list[str]) -> str | None:
    """The leakage warning when an outcome is (allowed as) a ComBat covariate."""
    outcome = [c for c in spec.covariates if c in targets]
    if not (outcome and spec.allow_outcome_covariate):
        return None
    return (
        f"the outcome ({', '.join(outcome)}) is a ComBat covariate (allowed by the config): "
        "it is used to fit ComBat on training folds and set to its training mean at "
        "transform, so no test outcome is read, but the harmonised training features "
        "depend on the training outcomes"
    )
