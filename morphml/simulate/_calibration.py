"""The simulator's embedded coefficients and the age basis they were fitted with.

``data/calibration.json`` is written by ``tools/calibrate_simulator.py`` from real tables in
``../shared/data`` (fitted coefficients only, no rows of data). This module reads it and holds
the pieces the fit and the simulation must share, so the two cannot drift apart: the natural
cubic spline basis for age and the design matrix.

What is calibrated, and from which file
---------------------------------------
``pcntoolkit-demo/fcon1000.csv`` (1,078 healthy people, 23 sites), one linear model per feature
on a transformed scale (identity for thickness, ``log1p`` for volumes and counts)::

    t(y) = b0 + spline(age) + b_male * male + b_tiv * (log eTIV - ref) + site_j + e

with site fixed effects; from them the spread of additive site offsets (``tau``, method of
moments: variance of the site offsets minus their sampling variance), of multiplicative
residual scales (``omega``, SD of the log of the per-site residual SD, bias-corrected) and the
residual SD (``sigma``). Residual correlations between features become a factor model
(``subject_factors``: the leading eigenvectors of the residual correlation matrix); the
correlations of site offsets and of site scales likewise (``site_factors``,
``scale_factors``). Features: ``eTIV`` (no eTIV covariate), the 148 Destrieux thickness
regions, ``lh/rh MeanThickness``, the aseg volumes that are not empty, ``lh/rh CortexVol``,
``lh/rh CerebralWhiteMatterVol`` and ``lh/rh SurfaceHoles``; also the ``MaskVol / eTIV`` ratio.

``pcntoolkit-demo/IXI_aparc_thickness.csv`` + ``IXI_age_gender.csv`` (one site): the same
model without site terms for the 68 Desikan-Killiany thickness regions; their residuals are
regressed (mm per mm) on the residuals of ``lh/rh MeanThickness`` (``anchor_coef``, what is
left: ``anchor_resid``), so that in a simulated scan a region moves with the
fcon1000-calibrated mean thickness, its site offsets included. A region's own site offset
(``tau``) is the part of the median Destrieux offset its hemisphere's mean does not carry.

``enigma-toolbox/summary_statistics/scz_case-controls_{CortThick,CortSurf,SubVol}.csv``:
schizophrenia Cohen's d (``d_icv``) per DK region (thickness, area) and subcortical volume.

``enigma-toolbox/xdata/metr3_CortSurf.csv``: mean DK surface area per region (20 people), the
relative sizes of the DK regions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

__all__ = [
    "AGE_SCALE",
    "Calibration",
    "design_matrix",
    "load_calibration",
    "natural_spline_basis",
]

#: ages enter the spline in decades, which keeps the cubic terms of order 1-1000
AGE_SCALE = 10.0
#: version of the JSON layout written by tools/calibrate_simulator.py
CALIBRATION_FORMAT = 1


def natural_spline_basis(age: np.ndarray, knots: Sequence[float]) -> np.ndarray:
    """Natural cubic spline basis in age, without intercept.

    The truncated-power form of Hastie, Tibshirani & Friedman (*Elements of Statistical
    Learning*, eq. 5.4-5.5): ``x`` and ``K - 2`` cubic terms for ``K`` knots; linear beyond the
    boundary knots, so ages outside the calibration range extrapolate along a straight line.

    Parameters
    ----------
    age : numpy.ndarray
        Ages in years.
    knots : sequence of float
        Knots in years, increasing, at least 3.

    Returns
    -------
    numpy.ndarray
        Shape ``(len(age), len(knots) - 1)``.

    Examples
    --------
    >>> natural_spline_basis(np.array([20.0, 40.0]), [10, 30, 50, 70]).shape
    (2, 3)
    """
    x = np.asarray(age, dtype=np.float64) / AGE_SCALE
    k = np.asarray(knots, dtype=np.float64) / AGE_SCALE
    if k.ndim != 1 or len(k) < 3 or np.any(np.diff(k) <= 0):
        raise ValueError(f"knots must be at least 3 increasing ages, got {list(knots)}")

    def d(j: int) -> np.ndarray:
        return (np.clip(x - k[j], 0.0, None) ** 3 - np.clip(x - k[-1], 0.0, None) ** 3) / (
            k[-1] - k[j]
        )

    last = d(len(k) - 2)
    return np.column_stack([x, *(d(j) - last for j in range(len(k) - 2))])


def design_matrix(
    age: np.ndarray,
    male: np.ndarray,
    log_tiv: np.ndarray | None,
    knots: Sequence[float],
) -> np.ndarray:
    """``[1, spline(age), male, log eTIV - ref]`` (the last column left out when None)."""
    n = len(age)
    columns = [np.ones((n, 1)), natural_spline_basis(age, knots), np.asarray(male, float)[:, None]]
    if log_tiv is not None:
        columns.append(np.asarray(log_tiv, dtype=np.float64)[:, None])
    return np.hstack(columns)


@dataclass(frozen=True)
class FactorModel:
    """Loadings of a factor model over ``features`` (rows) on ``k`` factors (columns)."""

    features: tuple[str, ...]
    loadings: np.ndarray

    @property
    def uniqueness(self) -> np.ndarray:
        """The SD of each feature's own part, so that its total variance is 1."""
        return np.sqrt(np.clip(1.0 - (self.loadings**2).sum(axis=1), 0.0, None))


@dataclass(frozen=True)
class Calibration:
    """The parsed ``calibration.json`` (see the module docstring for what each part is).

    Attributes
    ----------
    knots : dict
        Spline knots by source (``fcon1000``, ``ixi``).
    ref_log_tiv : float
        Mean log eTIV of fcon1000, subtracted before eTIV enters a model.
    features : dict
        Feature id -> its model: ``source``, ``transform``, ``coef``, ``sigma``, ``tau``,
        ``omega``; IXI features also ``anchors`` / ``anchor_coef`` / ``anchor_resid``.
    subject_factors, site_factors, scale_factors : FactorModel
    derived : dict
        Spreads used for the features no real table calibrates.
    diagnosis : dict
        Feature id -> schizophrenia Cohen's d.
    area_share : dict
        DK region -> its share of the hemisphere's white surface area.
    raw : dict
        The whole JSON document.
    """

    knots: dict[str, tuple[float, ...]]
    ref_log_tiv: float
    features: dict[str, dict[str, Any]]
    subject_factors: FactorModel
    site_factors: FactorModel
    scale_factors: FactorModel
    derived: dict[str, float]
    diagnosis: dict[str, float]
    area_share: dict[str, float]
    raw: dict[str, Any]

    def model_of(self, fid: str) -> dict[str, Any]:
        return self.features[fid]


def _factor(block: dict[str, Any]) -> FactorModel:
    return FactorModel(tuple(block["features"]), np.asarray(block["loadings"], dtype=np.float64))


def parse_calibration(doc: dict[str, Any]) -> Calibration:
    """Build a :class:`Calibration` from the JSON document."""
    if doc.get("format") != CALIBRATION_FORMAT:
        raise ValueError(
            f"calibration.json has format {doc.get('format')!r}; this morphml reads format "
            f"{CALIBRATION_FORMAT}. Regenerate it with tools/calibrate_simulator.py"
        )
    return Calibration(
        knots={k: tuple(v) for k, v in doc["knots"].items()},
        ref_log_tiv=float(doc["ref_log_tiv"]),
        features=doc["features"],
        subject_factors=_factor(doc["subject_factors"]),
        site_factors=_factor(doc["site_factors"]),
        scale_factors=_factor(doc["scale_factors"]),
        derived={k: float(v) for k, v in doc["derived"].items()},
        diagnosis={k: float(v) for k, v in doc["diagnosis"].items()},
        area_share={k: float(v) for k, v in doc["area_share"].items()},
        raw=doc,
    )


@cache
def load_calibration() -> Calibration:
    """The coefficients shipped with morphml (``morphml/simulate/data/calibration.json``)."""
    text = resources.files("morphml.simulate").joinpath("data/calibration.json").read_text("utf-8")
    return parse_calibration(json.loads(text))
