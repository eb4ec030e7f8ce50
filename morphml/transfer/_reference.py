"""Deviations from a published reference model as a transfer representation (``reference_z``).

A reference model (:class:`morphml.reference.ReferenceModel`, e.g. the braincharts model of
57,000 people) is a second pretraining source besides a pretrain run: per feature it knows the
expected value and spread for an age, sex and site. :class:`ReferenceZ` turns a scan into its
z-scores under that reference, adapting a site the reference never saw from the training
fold's controls only (:class:`morphml.reference.ReferenceDeviations`).

The z-scores are kept **on the reference's own scale**. Re-standardising them per feature on
the small sample (what a ``StandardScaler`` in front of the model does) throws away exactly
what the reference knows: how large a deviation is relative to the healthy spread, and the
site adaptation, which is an affine map per feature that a per-feature scaling cancels. So the
head of ``reference_z`` is an L2-penalised model on the raw z (the penalty shrinks every
deviation's weight toward 0 in the same unit, one healthy standard deviation), fed also with
*deviation loads*: each scan's summed z over thickness and over volume features, and the
counts of its features below -2 and above +2 (how many extreme deviations it has), each
standardised by what the reference expects of a healthy scan (so about N(0, 1) in health). Only
the covariates are standardised, on the training fold.

Target scans carry the reference's features in raw units as ``ref:<feature id>`` columns of the
transfer input (the pretrain run's own features may be log-transformed or relative).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from morphml.exceptions import TransferError
from morphml.transfer._pretrained import META_PREFIX
from morphml.transfer._representations import _Covariates

__all__ = ["LOAD_NAMES", "REFERENCE_PREFIX", "ReferenceZ"]

#: column prefix of the reference's features (raw units) in the transfer input
REFERENCE_PREFIX = "ref:"
#: the deviation loads appended to the z-scores, in order
LOAD_NAMES = ("load_z_thickness", "load_z_volume", "count_below_-t", "count_above_+t")
_CLIP = 10.0


def reference_frame(X: pd.DataFrame) -> pd.DataFrame:
    """The ``ref:`` columns of a transfer input, renamed to feature ids, plus ``meta:`` columns."""
    ref_cols = [c for c in X.columns if str(c).startswith(REFERENCE_PREFIX)]
    if not ref_cols:
        raise TransferError(
            "reference_z needs the reference's features as 'ref:' columns of the target scans "
            "(set 'reference: PATH' in the transfer config)"
        )
    meta_cols = [c for c in X.columns if str(c).startswith(META_PREFIX)]
    frame = X[ref_cols].rename(columns=lambda c: str(c)[len(REFERENCE_PREFIX) :])
    return pd.concat([frame, X[meta_cols]], axis=1)


class ReferenceZ(TransformerMixin, BaseEstimator):
    """z-scores under a reference model, their loads, and standardised covariates.

    Parameters
    ----------
    reference : ReferenceModel
        Fixed knowledge (never refitted or copied by ``clone``).
    adaptation : {"braincharts", "shrunk"}, default="braincharts"
        How a site the reference never saw is adapted from the training fold's controls.
    new_sites : {"adapt", "prior", "refuse"}, default="prior"
        ``"prior"``: a new site with fewer than two controls in the training fold is scored
        with the reference's unknown-site prediction (small learning-curve subsamples may lack
        controls; nothing of the test fold is used); ``"adapt"`` refuses it instead;
        ``"refuse"`` refuses every new site.
    loads : bool, default=True
        Append the deviation loads (:data:`LOAD_NAMES`).
    threshold : float, default=2.0
        |z| beyond which a deviation counts as extreme in the loads.
    covariates : tuple of str, default=("age", "sex")

    Attributes
    ----------
    deviations_ : ReferenceDeviations
        Fitted on the training rows (new sites adapted from their controls there).
    features_ : list of str
        The reference features used.

    Examples
    --------
    >>> rep = ReferenceZ(reference=ReferenceModel.load("ref"))  # doctest: +SKIP
    >>> Z = rep.fit(X_train).transform(X_test)  # doctest: +SKIP
    """

    def __init__(self, *, reference: Any = None, adaptation: str = "braincharts",
                 new_sites: str = "prior", loads: bool = True, threshold: float = 2.0,
                 covariates: tuple[str, ...] = ("age", "sex")) -> None:  # fmt: skip
        self.reference = reference
        self.adaptation = adaptation
        self.new_sites = new_sites
        self.loads = loads
        self.threshold = threshold
        self.covariates = covariates

    def fit(self, X: pd.DataFrame, y: Any = None) -> ReferenceZ:
        from morphml.reference import ReferenceDeviations, ReferenceModel

        if not isinstance(self.reference, ReferenceModel):
            raise TransferError(
                "reference_z needs a reference model (ReferenceZ(reference=ReferenceModel."
                f"load(path))). Got {type(self.reference).__name__}."
            )
        if not (isinstance(self.threshold, int | float) and self.threshold > 0):
            raise TransferError(
                f"The 'threshold' parameter of ReferenceZ must be > 0. Got {self.threshold!r}."
            )
        frame = reference_frame(X)
        self.deviations_ = ReferenceDeviations(
            self.reference, new_sites=self.new_sites, adaptation=self.adaptation
        ).fit(frame)
        self.features_ = list(self.deviations_.features_)
        self.thickness_ = np.asarray([f.endswith(".thickness") for f in self.features_])
        self.covariates_ = _Covariates(covariates=tuple(self.covariates)).fit(X)
        cov = self.covariates_.transform(X)
        self.cov_mean_ = cov.mean(axis=0) if len(cov) else np.zeros(cov.shape[1])
        sd = cov.std(axis=0) if len(cov) else np.ones(cov.shape[1])
        self.cov_scale_ = np.where(sd > 0, sd, 1.0)
        return self

    def zscores(self, X: pd.DataFrame) -> np.ndarray:
        """The adapted z-scores (clipped to +-10; a missing value scores 0, no deviation)."""
        z = self.deviations_.transform(reference_frame(X)).to_numpy(np.float64)
        return np.clip(np.nan_to_num(z, nan=0.0), -_CLIP, _CLIP)

    def _loads(self, z: np.ndarray) -> np.ndarray:
        # Each load is standardised by what the reference says of healthy people (z ~ N(0, 1)
        # independently), not by the small sample: a sum of n z-scores over sqrt(n), and a
        # count of extreme deviations minus its binomial mean over its standard deviation.
        # So a healthy scan scores about N(0, 1) on each, the same unit as one z-score.
        from scipy.special import ndtr

        thick, vol = self.thickness_, ~self.thickness_
        n = z.shape[1]
        p = float(ndtr(-self.threshold))
        sd = np.sqrt(n * p * (1.0 - p))
        cols = [
            z[:, thick].sum(axis=1) / np.sqrt(max(int(thick.sum()), 1)),
            z[:, vol].sum(axis=1) / np.sqrt(max(int(vol.sum()), 1)),
            ((z < -self.threshold).sum(axis=1) - n * p) / sd,
            ((z > self.threshold).sum(axis=1) - n * p) / sd,
        ]
        return np.column_stack(cols)

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        z = self.zscores(X)
        parts = [z]
        if self.loads:
            parts.append(self._loads(z))
        cov = (self.covariates_.transform(X) - self.cov_mean_) / self.cov_scale_
        parts.append(cov)
        return np.column_stack(parts)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = [f"z:{f}" for f in self.features_]
        if self.loads:
            names += list(LOAD_NAMES)
        cov = [c for c in self.covariates if c != "site"]
        sites = list(self.covariates_.sites_) if self.covariates_.sites_ is not None else []
        return np.asarray(names + cov + [f"site={s}" for s in sites], dtype=object)


# --- what the transfer pipeline needs ---------------------------------------------------------


def load_reference(path: str | os.PathLike[str]) -> Any:
    """The reference model of a transfer config's ``reference:``, refused in one line."""
    from morphml.exceptions import ReferenceModelError
    from morphml.reference import ReferenceModel

    try:
        return ReferenceModel.load(Path(path))
    except ReferenceModelError as err:
        raise TransferError(
            f"reference: {err} (make it with 'morphml reference import ARCHIVE --format "
            "braincharts --out PATH' or 'morphml reference build')"
        ) from None


def reference_columns(
    db: str | os.PathLike[str] | None, cohort: Any, reference: Any, index: pd.Index
) -> pd.DataFrame:
    """The target scans' values of the reference's features in raw units, as ``ref:`` columns.

    Raw units: the reference models the values FreeSurfer writes, so none of the pretrain
    run's row-wise transforms (log volumes, relative thickness) are applied. Features the
    reference has and the scans lack are left out (listed in the error when none remain);
    a scan missing one of the used features is refused, as for the pretrain run's features.
    """
    from morphml.features import load_raw_frame

    frame = load_raw_frame(db, cohort)
    used = [f for f in reference.features if f in frame.X.columns]
    if not used:
        raise TransferError(
            f"the target scans hold none of the reference's {len(reference.features)} features "
            f"(e.g. {reference.features[:3]}); ingest the atlases the reference models"
        )
    values = frame.X.loc[index, used]
    holes = values.isna().any(axis=1)
    if holes.any():
        raise TransferError(
            f"{int(holes.sum())} target scans miss some of the reference's features "
            f"(e.g. scan {values.index[holes.to_numpy()][0]}); restrict the cohort"
        )
    return values.rename(columns=lambda c: f"{REFERENCE_PREFIX}{c}")


#: features drawn in the report when the reference has them (else its first ones)
CURVE_FEATURES = (
    "global.lh.MeanThickness.thickness",
    "aseg.na.Left-Hippocampus.volume",
    "aseg.na.Left-Lateral-Ventricle.volume",
    "aseg.na.Right-Pallidum.volume",
)
CURVE_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def reference_summary(
    reference: Any, X: pd.DataFrame, y: np.ndarray, *, kind: str, folder: str
) -> dict[str, Any]:
    """What a transfer run records of its reference: provenance, use, and centile curves.

    The curves are the reference's centiles (5 to 95%) at the cohort's ages for a site it does
    not know (its population prediction), per sex, with the cohort's scans over them (age,
    raw value, sex and, for a binary target, case or control). No scan key or id is kept.
    """
    frame = reference_frame(X)
    used = [f for f in reference.features if f in frame.columns]
    wanted = [f for f in CURVE_FEATURES if f in used] or used[:4]
    age = X[f"{META_PREFIX}age"].to_numpy(np.float64)
    sex = X[f"{META_PREFIX}sex"].to_numpy(np.float64)
    low, high = reference.age_range
    lo = max(float(np.floor(age.min())) - 2.0, low + 1e-6)
    hi = min(float(np.ceil(age.max())) + 2.0, high - 1e-6)
    grid = np.linspace(lo, hi, 41)
    curves = []
    for feature in wanted:
        by_sex = {}
        for code, label in ((0, "female"), (1, "male")):
            q = reference.quantile_curve(feature, grid, code, None, list(CURVE_QUANTILES))
            by_sex[label] = np.round(q, 4).tolist()
        points = {
            "age": np.round(age, 1).tolist(),
            "value": np.round(frame[feature].to_numpy(np.float64), 4).tolist(),
            "sex": ["male" if s == 1 else "female" for s in sex],
            "case": [bool(v) for v in y] if kind == "classification" else None,
        }
        curves.append({"feature": feature, "quantiles": by_sex, "points": points})
    prov = dict(reference.provenance)
    return {
        "folder": folder,
        "provenance": prov,
        "n_features": len(reference.features),
        "n_features_used": len(used),
        "n_sites": len(reference.sites),
        "unmapped": list(reference.unmapped),
        "curves": {
            "ages": np.round(grid, 2).tolist(),
            "quantiles": list(CURVE_QUANTILES),
            "features": curves,
        },
    }
