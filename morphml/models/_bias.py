"""Linear correction of the age bias of brain-age predictions."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from morphml.exceptions import BiasCorrectionError
from morphml.models._preprocess import ModelConfigError

__all__ = ["AgeBiasCorrector", "BiasCorrectionError"]

_METHOD = "linear-beheshti"


def _vector(values: ArrayLike, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim == 2 and 1 in array.shape:
        array = array.ravel()
    if array.ndim != 1:
        raise BiasCorrectionError(
            f"AgeBiasCorrector: {what} must be one-dimensional (one value per scan). Got "
            f"shape {array.shape}."
        )
    if not np.isfinite(array).all():
        raise BiasCorrectionError(
            f"AgeBiasCorrector: {what} has {int((~np.isfinite(array)).sum())} missing or "
            "infinite value(s); drop those scans first."
        )
    return array


class AgeBiasCorrector(BaseEstimator):
    r"""Remove the regression-to-the-mean bias of brain-age predictions (linear method).

    Brain-age models over-predict the young and under-predict the old, so the brain-age gap
    (predicted - chronological age) correlates with age. Following Beheshti et al. (2019,
    NeuroImage: Clinical 24:102063) and Smith et al. (2019, NeuroImage 200:528), :meth:`fit`
    regresses the *predicted* age on the true age in the training data,

    .. math:: \hat y = a + b \cdot \mathrm{age} + \varepsilon ,

    and :meth:`transform` returns the corrected prediction

    .. math:: \hat y_\mathrm{corr} = (\hat y - a) / b .

    In the data used for :meth:`fit` the corrected gap
    :math:`\hat y_\mathrm{corr} - \mathrm{age} = \varepsilon / b` is uncorrelated with age
    (exactly, up to rounding). Fit it on **out-of-fold predictions of the training set**,
    never on the test set: the correction is learned, like any other preprocessing.

    The fit signature is not scikit-learn's ``fit(X, y)``: it takes the two vectors the
    correction is about. The formula does not use the age of new scans.

    Parameters
    ----------
    min_slope : float, default=0.05
        Smallest slope :math:`b` accepted. Dividing by a slope near zero would blow up noise
        (predictions that barely track age cannot be corrected into meaningful ones).

    Attributes
    ----------
    intercept_ : float
        :math:`a`, in years.
    slope_ : float
        :math:`b`.
    n_samples_ : int
        Number of training scans.
    age_range_ : tuple of float
        Smallest and largest training age (the correction is linear; outside this range it
        extrapolates).

    Examples
    --------
    >>> import numpy as np
    >>> from morphml.models import AgeBiasCorrector
    >>> age = np.array([20.0, 40.0, 60.0, 80.0])
    >>> predicted = 0.5 * age + 25.0
    >>> corrector = AgeBiasCorrector().fit(age, predicted)
    >>> corrector.transform(age, predicted).round(6).tolist()
    [20.0, 40.0, 60.0, 80.0]
    """

    def __init__(self, *, min_slope: float = 0.05) -> None:
        self.min_slope = min_slope

    def _check_min_slope(self) -> float:
        value = self.min_slope
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.floating, np.integer))
            or not 0 <= value < 1
        ):
            raise ModelConfigError(
                f"The 'min_slope' parameter of AgeBiasCorrector must be a number in [0, 1). "
                f"Got {value!r}."
            )
        return float(value)

    def fit(self, age: ArrayLike, predicted: ArrayLike) -> AgeBiasCorrector:
        """Fit ``predicted = a + b * age`` by least squares.

        Parameters
        ----------
        age : array-like of shape (n_samples,)
            Chronological ages of the training scans.
        predicted : array-like of shape (n_samples,)
            Out-of-fold predicted ages of the same scans, in the same order.

        Returns
        -------
        self : AgeBiasCorrector

        Raises
        ------
        BiasCorrectionError
            Too few scans, no spread in age, or a slope ``b <= min_slope``.
        """
        min_slope = self._check_min_slope()
        age_v = _vector(age, "age")
        pred_v = _vector(predicted, "predicted")
        if age_v.shape != pred_v.shape:
            raise BiasCorrectionError(
                f"AgeBiasCorrector: age has {age_v.size} values but predicted has "
                f"{pred_v.size}; pass one predicted age per training scan."
            )
        if age_v.size < 3:
            raise BiasCorrectionError(
                f"AgeBiasCorrector needs at least 3 training scans; got {age_v.size}."
            )
        centred = age_v - age_v.mean()
        spread = float(centred @ centred)
        if spread == 0:
            raise BiasCorrectionError(
                "AgeBiasCorrector: every training scan has the same age; the bias slope cannot "
                "be estimated."
            )
        slope = float(centred @ (pred_v - pred_v.mean())) / spread
        if slope <= min_slope:
            raise BiasCorrectionError(
                f"AgeBiasCorrector: the slope of predicted on true age is {slope:.3g}, not above "
                f"min_slope={min_slope:g}. Dividing by it would amplify noise; the predictions "
                "barely track age. Check that `predicted` holds out-of-fold brain-age "
                "predictions for the same scans as `age`, in the same order."
            )
        self.slope_ = slope
        self.intercept_ = float(pred_v.mean() - slope * age_v.mean())
        self.n_samples_ = int(age_v.size)
        self.age_range_ = (float(age_v.min()), float(age_v.max()))
        return self

    def transform(self, age: ArrayLike | None, predicted: ArrayLike) -> np.ndarray:
        """Return the corrected predicted ages ``(predicted - a) / b``.

        Parameters
        ----------
        age : array-like of shape (n_samples,) or None
            Chronological ages; only checked to have the same length as ``predicted`` (the
            formula does not use them). ``None`` skips the check.
        predicted : array-like of shape (n_samples,)
            Predicted ages from the model the correction was fitted for.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        pred_v = _vector(predicted, "predicted")
        if age is not None:
            age_v = _vector(age, "age")
            if age_v.shape != pred_v.shape:
                raise BiasCorrectionError(
                    f"AgeBiasCorrector: age has {age_v.size} values but predicted has "
                    f"{pred_v.size}."
                )
        return (pred_v - self.intercept_) / self.slope_

    def gap(self, age: ArrayLike, predicted: ArrayLike) -> np.ndarray:
        """Corrected brain-age gap: ``transform(age, predicted) - age``."""
        return self.transform(age, predicted) - _vector(age, "age")

    def to_dict(self) -> dict[str, Any]:
        """The fitted correction as a JSON-serialisable dict (see :meth:`from_dict`).

        Examples
        --------
        >>> from morphml.models import AgeBiasCorrector
        >>> c = AgeBiasCorrector().fit([20, 50, 80], [30.0, 50.0, 70.0])
        >>> AgeBiasCorrector.from_dict(c.to_dict()).slope_
        0.6666666666666666
        """
        check_is_fitted(self)
        return {
            "method": _METHOD,
            "formula": "corrected = (predicted - intercept) / slope",
            "intercept": self.intercept_,
            "slope": self.slope_,
            "n_samples": self.n_samples_,
            "age_range": list(self.age_range_),
            "min_slope": float(self.min_slope),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgeBiasCorrector:
        """Rebuild a fitted corrector from :meth:`to_dict` output.

        Raises
        ------
        BiasCorrectionError
            Unknown method, missing keys, or a slope not above ``min_slope``.
        """
        if not isinstance(data, dict) or data.get("method") != _METHOD:
            method = data.get("method") if isinstance(data, dict) else None
            raise BiasCorrectionError(
                f"AgeBiasCorrector.from_dict: expected method {_METHOD!r}, got {method!r}."
            )
        needed = ("intercept", "slope", "n_samples", "age_range", "min_slope")
        missing = [k for k in needed if k not in data]
        if missing:
            raise BiasCorrectionError(f"AgeBiasCorrector.from_dict: missing keys {missing}.")
        corrector = cls(min_slope=float(data["min_slope"]))
        min_slope = corrector._check_min_slope()
        slope, intercept = float(data["slope"]), float(data["intercept"])
        if not (math.isfinite(slope) and math.isfinite(intercept)) or slope <= min_slope:
            raise BiasCorrectionError(
                f"AgeBiasCorrector.from_dict: slope {slope!r} / intercept {intercept!r} are not "
                f"a valid correction (slope must be finite and above {min_slope:g})."
            )
        corrector.slope_ = slope
        corrector.intercept_ = intercept
        corrector.n_samples_ = int(data["n_samples"])
        low, high = data["age_range"]
        corrector.age_range_ = (float(low), float(high))
        return corrector
