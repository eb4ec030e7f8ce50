"""Scoring out-of-fold predictions: overall and per site, with bootstrap intervals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from morphml.evaluation._metrics import (
    brain_age_metrics,
    classification_metrics,
    per_group_metrics,
)
from morphml.evaluation._tuning import stable_seed

__all__ = ["NARROW_AGE_SD", "mark_narrow_sites", "score_predictions"]

#: within a site whose ages have a smaller SD (years), R² is not a meaningful accuracy
NARROW_AGE_SD = 5.0


def score_predictions(
    target: str, preds: pd.DataFrame, *, n_boot: int, seed: int
) -> dict[str, Any]:
    """Metrics of one model's out-of-fold predictions of ``target``, overall and per site.

    Parameters
    ----------
    target : {"age", "sex"}
    preds : DataFrame
        Rows of ``predictions.parquet``: ``subject_key``, ``site``, ``y_true``, ``y_pred``
        (and ``y_pred_corrected`` for age).
    n_boot : int
        Bootstrap resamples (of subjects) for the intervals.
    seed : int
        The run's seed (the bootstrap's own is derived from it and the target).
    """
    boot_seed = stable_seed(seed, "bootstrap", target)
    groups = preds["subject_key"].to_numpy()
    y = preds["y_true"].to_numpy()
    p = preds["y_pred"].to_numpy()
    sites = preds["site"].astype(str).to_numpy()
    out: dict[str, Any]
    if target == "age":
        out = dict(brain_age_metrics(
            y, p, preds["y_pred_corrected"].to_numpy(), groups=groups, n_boot=n_boot,
            random_state=boot_seed,
        ))  # fmt: skip
        out["per_site"] = per_group_metrics(
            "regression", y, p, sites, n_boot=n_boot, random_state=boot_seed
        )
        mark_narrow_sites(out["per_site"], preds)
    else:
        out = dict(
            classification_metrics(y, p, groups=groups, n_boot=n_boot, random_state=boot_seed)
        )
        out["per_site"] = per_group_metrics(
            "classification", y, p, sites, n_boot=n_boot, random_state=boot_seed
        )
    return out


def mark_narrow_sites(per_site: dict[str, Any], preds: pd.DataFrame) -> None:
    """Add ``age_sd`` and ``r2_meaningful`` to each site's brain-age metrics.

    R² compares the error with the variance of age *within the site*: at a site whose people
    are all 20-25, a 4-year MAE gives a hugely negative R² although the predictions are as
    good as elsewhere. R² is marked not meaningful where the site's age SD is below
    ``NARROW_AGE_SD`` years (the report then hides it); MAE and mean gap stay meaningful.
    """
    sd = preds.groupby(preds["site"].astype(str))["y_true"].std(ddof=1)
    for site, entry in per_site.items():
        value = sd.get(site)
        if value is None or not np.isfinite(value):
            continue
        entry["age_sd"] = float(value)
        if "skipped" not in entry:
            entry["r2_meaningful"] = bool(value >= NARROW_AGE_SD)
            if value < NARROW_AGE_SD:
                entry["r2_note"] = (
                    f"age SD {value:.1f} < {NARROW_AGE_SD:g} years: R² within so narrow an "
                    "age range is not a meaningful accuracy"
                )
