"""The brain-age bias correction inside nested cross-validation.

The correction (Beheshti, or Cole / de Lange) is fitted on *out-of-fold* predictions of an
outer training set, never on its test fold: the tuning's inner out-of-fold predictions of the
best parameters, or (``bias_correction.folds``) those of the best parameters refitted on that
many inner folds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from morphml.config import BiasCorrectionSpec
from morphml.evaluation._tuning import predict_scores

__all__ = ["BiasSettings", "bias_entry", "bias_summary", "fit_bias_correction", "refit_oof"]


@dataclass(frozen=True)
class BiasSettings:
    """How the brain-age bias correction is fitted (``bias_correction`` of the config)."""

    method: str = "beheshti"
    min_slope: float = 0.3
    folds: int | None = None

    @classmethod
    def from_spec(cls, spec: BiasCorrectionSpec) -> BiasSettings:
        """The settings of a config's ``bias_correction`` section."""
        return cls(method=spec.method, min_slope=spec.min_slope, folds=spec.folds)

    @property
    def refits(self) -> bool:
        """Whether the correction is fitted on refitted inner folds (not the tuning's)."""
        return self.folds is not None and self.method != "none"


def fit_bias_correction(settings: BiasSettings, age: np.ndarray, oof: np.ndarray) -> Any:
    """The bias correction fitted on out-of-fold training predictions, or None.

    None when ``bias_correction.method`` is ``none``, and for the Cole correction when the
    predictions barely track age (slope not above ``min_slope``): dividing by that slope
    would amplify noise. The corrected prediction is then the uncorrected one, and the final
    model's sidecar carries no correction (``morphml predict`` then reports the uncorrected
    age in both columns). The Beheshti correction divides by nothing and always applies.
    """
    from morphml.models import AgeBiasCorrector, BiasCorrectionError

    if settings.method == "none":
        return None
    try:
        return AgeBiasCorrector(method=settings.method, min_slope=settings.min_slope).fit(age, oof)
    except BiasCorrectionError:
        return None


def refit_oof(
    build: Callable[[dict[str, Any]], Any],
    params: dict[str, Any],
    X: pd.DataFrame,
    y: np.ndarray,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """Out-of-fold age predictions of ``build(params)`` refitted on each of ``splits``."""
    oof = np.full(len(y), np.nan)
    for fit_rows, held in splits:
        model = build(params).fit(X.iloc[fit_rows], y[fit_rows])
        oof[held] = predict_scores(model, X.iloc[held], "regression")
    return oof


def bias_entry(settings: BiasSettings, corrector: Any) -> dict[str, Any]:
    """What one fold's correction was (for the manifest and the metrics' summary)."""
    if corrector is None:
        return {"method": "none", "configured": settings.method}
    return {
        "method": corrector.method,
        "intercept": corrector.intercept_,
        "slope": corrector.slope_,
    }


def bias_summary(
    settings: BiasSettings, entries: Sequence[dict[str, Any] | None]
) -> dict[str, Any]:
    """The configured bias correction and how many outer folds (``entries``, one per fold,
    see :func:`bias_entry`) it could be applied in."""
    method = settings.method
    n_folds = len(entries)
    corrected = sum(1 for e in entries if e is not None and e.get("method") != "none")
    slopes = [float(e["slope"]) for e in entries if e is not None and "slope" in e]
    out: dict[str, Any] = {
        "method": method,
        "folds": n_folds,
        "folds_corrected": corrected,
        "uses_true_age": method == "beheshti",
        "fitted_on": "inner out-of-fold predictions of each outer training set",
        "slope_range": [min(slopes), max(slopes)] if slopes else None,
    }
    if method == "cole":
        out["min_slope"] = settings.min_slope
    if settings.folds is not None:
        out["fitted_on"] = (
            f"out-of-fold predictions of the tuned model refitted on "
            f"{settings.folds} inner folds of each outer training set"
        )
    notes = []
    if method == "beheshti":
        notes.append(
            "corrected predictions subtract a line in the known (true) age: the corrected "
            "gap is free of the age bias, but the corrected MAE is not an accuracy of "
            "prediction without age; the uncorrected MAE is"
        )
    if method != "none" and corrected < n_folds:
        notes.append(
            f"{n_folds - corrected} of {n_folds} folds left uncorrected (slope of predicted "
            f"on true age not above min_slope)"
        )
    out["note"] = "; ".join(notes) or None
    return out
