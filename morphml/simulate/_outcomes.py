"""Treatment response and a continuous clinical measure, linked to morphometry.

Both are linear in a few features' *deviations*: a scan's site-free value minus the calibrated
norm for its age, sex and eTIV, in residual SDs (the diagnosis effect included), so a model
that sees the features, age, sex and eTIV can in principle learn them once site effects are
removed. The weights below are the truth; ``truth/outcomes.json`` repeats them.

* ``response`` (patients only): ``responder`` when ``sum(w * z) + noise > threshold``, with
  ``z`` taken at the participant's first session, ``noise ~ N(0, RESPONSE_NOISE)`` and the
  threshold at the patients' expected ``sum(w * d)`` (about half respond).
* ``clinical_score`` (everyone, every session; think of a glutamate level in arbitrary units):
  ``CLINICAL_INTERCEPT + sum(v * z) + CLINICAL_PATIENT_SHIFT * patient + N(0, CLINICAL_NOISE)``;
  a few values are missing (empty cells).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CLINICAL_WEIGHTS",
    "RESPONSE_WEIGHTS",
    "clinical_score",
    "response_liability",
]

RESPONSE_WEIGHTS: dict[str, float] = {
    "aseg.na.Left-Hippocampus.volume": 0.9,
    "aparc.lh.rostralanteriorcingulate.thickness": 0.7,
    "aparc.rh.superiortemporal.thickness": 0.6,
    "aseg.na.Right-Lateral-Ventricle.volume": -0.6,
}
RESPONSE_NOISE = 0.8

CLINICAL_WEIGHTS: dict[str, float] = {
    "aparc.lh.medialorbitofrontal.thickness": 0.6,
    "aseg.na.Left-Putamen.volume": -0.5,
    "aparc.rh.insula.thickness": 0.45,
}
CLINICAL_INTERCEPT = 10.0
CLINICAL_PATIENT_SHIFT = -0.8
CLINICAL_NOISE = 0.7
CLINICAL_MISSING = 0.02


def response_threshold(diagnosis: dict[str, float]) -> float:
    """The patients' expected ``sum(w * z)``: their z is shifted by the diagnosis d."""
    return float(sum(w * diagnosis.get(f, 0.0) for f, w in RESPONSE_WEIGHTS.items()))


def response_liability(
    rng: np.random.Generator, deviation: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(noise-free linear predictor, liability with noise) for each row of ``deviation``."""
    signal = sum(w * deviation[f] for f, w in RESPONSE_WEIGHTS.items())
    signal = np.asarray(signal, dtype=np.float64)
    return signal, signal + RESPONSE_NOISE * rng.standard_normal(len(signal))


def clinical_score(
    rng: np.random.Generator, deviation: dict[str, np.ndarray], patient: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(noise-free score, score with noise and NaN where missing) for each row."""
    signal = CLINICAL_INTERCEPT + CLINICAL_PATIENT_SHIFT * patient.astype(float)
    signal = signal + sum(v * deviation[f] for f, v in CLINICAL_WEIGHTS.items())
    score = signal + CLINICAL_NOISE * rng.standard_normal(len(signal))
    score[rng.random(len(signal)) < CLINICAL_MISSING] = np.nan
    return signal, score
