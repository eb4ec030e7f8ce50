"""Linear correction of the age bias of brain-age predictions (Beheshti; Cole / de Lange)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator
from sklearn.utils import TransformerTags
from sklearn.utils.validation import check_is_fitted

from morphml.exceptions import BiasCorrectionError
from morphml.models._preprocess import ModelConfigError

__all__ = ["BIAS_METHODS", "AgeBiasCorrector", "BiasCorrectionError"]

#: the correction methods, by their published names
BIAS_METHODS = ("beheshti", "cole")
#: the name runs before morphml 0.x wrote for what is the Cole / de Lange formula
_LEGACY_COLE = "linear-beheshti"
_FORMULAS = {
    "beheshti": "corrected = predicted - (intercept + (slope - 1) * age)",
    "cole": "corrected = (predicted - intercept) / slope",
}


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
    r"""Remove the regression-to-the-mean bias of brain-age predictions (linear methods).

    Brain-age models over-predict the young and under-predict the old, so the brain-age gap
    (predicted - chronological age) correlates with age. :meth:`fit` regresses the *predicted*
    age on the true age in the training data,

    .. math:: \hat y = a + b \cdot \mathrm{age} + \varepsilon ,

    which is the same least-squares line as the gap on age,
    :math:`\hat y - \mathrm{age} = a + (b - 1) \cdot \mathrm{age} + \varepsilon`. The two
    published corrections then differ:

    * ``method="beheshti"`` (Beheshti et al. 2019, NeuroImage: Clinical 24:102063): subtract
      the fitted gap-on-age line from the gap,
      :math:`\hat y_\mathrm{corr} = \hat y - (a + (b - 1)\,\mathrm{age})`; the corrected gap
      is the residual :math:`\varepsilon`. Nothing is divided, so the correction cannot
      explode when predictions track age poorly (new sites), but it **uses the true age of
      every scan it corrects**: the corrected predictions are not predictions made without
      the age, and their MAE is not the model's accuracy (the uncorrected MAE is).
    * ``method="cole"`` (Cole et al. 2018, Mol Psychiatry 23:1385; de Lange & Cole 2020,
      NeuroImage: Clinical 26:102229): invert the line,
      :math:`\hat y_\mathrm{corr} = (\hat y - a) / b`; the corrected gap is
      :math:`\varepsilon / b`. It does not use the age of new scans, but it divides by
      :math:`b`, amplifying every error by :math:`1/b`; slopes at or below ``min_slope`` are
      refused.

    In the data used for :meth:`fit` both corrected gaps are uncorrelated with age (exactly,
    up to rounding). Fit it on **out-of-fold predictions of the training set**, never on the
    test set: the correction is learned, like any other preprocessing.

    The fit signature is not scikit-learn's ``fit(X, y)``: it takes the two vectors the
    correction is about.

    Parameters
    ----------
    method : {"beheshti", "cole"}, default="beheshti"
        Which correction :meth:`transform` applies (see above).
    min_slope : float, default=0.3
        ``method="cole"`` only: the smallest slope :math:`b` accepted (errors are amplified
        by at most :math:`1/b`, about 3.3 at the default). Beheshti's correction divides by
        nothing and accepts any slope.

    Attributes
    ----------
    intercept_ : float
        :math:`a`, in years.
    slope_ : float
        :math:`b`, the slope of the predicted on the true age (the gap's slope is
        :math:`b - 1`).
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
    >>> AgeBiasCorrector(method="cole").fit(age, predicted).transform(age, predicted).tolist()
    [20.0, 40.0, 60.0, 80.0]
    >>> AgeBiasCorrector().fit(age, predicted).transform(age, predicted + 2.0).tolist()
    [22.0, 42.0, 62.0, 82.0]
    """

    def __init__(self, *, method: str = "beheshti", min_slope: float = 0.3) -> None:
        self.method = method
        self.min_slope = min_slope

    def _check_params(self) -> tuple[str, float]:
        if self.method not in BIAS_METHODS:
            raise ModelConfigError(
                f"The 'method' parameter of AgeBiasCorrector must be one of "
                f"{', '.join(BIAS_METHODS)}. Got {self.method!r}."
            )
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
        return str(self.method), float(value)

    @property
    def uses_age(self) -> bool:
        """Whether :meth:`transform` needs the true age of the scans it corrects."""
        return self.method == "beheshti"

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
            Too few scans, no spread in age, or (``method="cole"``) a slope
            ``b <= min_slope``.
        """
        method, min_slope = self._check_params()
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
        if method == "cole" and slope <= min_slope:
            raise BiasCorrectionError(
                f"AgeBiasCorrector: the slope of predicted on true age is {slope:.3g}, not above "
                f"min_slope={min_slope:g}. The Cole correction divides by it and would amplify "
                "noise; the predictions barely track age. Use method='beheshti' (no division), "
                "or check that `predicted` holds out-of-fold brain-age predictions for the same "
                "scans as `age`, in the same order."
            )
        self.slope_ = slope
        self.intercept_ = float(pred_v.mean() - slope * age_v.mean())
        self.n_samples_ = int(age_v.size)
        self.age_range_ = (float(age_v.min()), float(age_v.max()))
        return self

    def transform(self, age: ArrayLike | None, predicted: ArrayLike) -> np.ndarray:
        """Return the corrected predicted ages.

        Parameters
        ----------
        age : array-like of shape (n_samples,) or None
            Chronological ages. ``method="beheshti"`` needs them (the correction is a line in
            age); ``method="cole"`` only checks their length, and ``None`` skips the check.
        predicted : array-like of shape (n_samples,)
            Predicted ages from the model the correction was fitted for.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        method, _ = self._check_params()
        pred_v = _vector(predicted, "predicted")
        if age is None:
            if method == "beheshti":
                raise BiasCorrectionError(
                    "AgeBiasCorrector: the Beheshti correction subtracts a line in the true "
                    "age; pass the scans' ages (or use method='cole', which does not need them)."
                )
            return (pred_v - self.intercept_) / self.slope_
        age_v = _vector(age, "age")
        if age_v.shape != pred_v.shape:
            raise BiasCorrectionError(
                f"AgeBiasCorrector: age has {age_v.size} values but predicted has {pred_v.size}."
            )
        if method == "beheshti":
            return pred_v - (self.intercept_ + (self.slope_ - 1.0) * age_v)
        return (pred_v - self.intercept_) / self.slope_

    def gap(self, age: ArrayLike, predicted: ArrayLike) -> np.ndarray:
        """Corrected brain-age gap: ``transform(age, predicted) - age``."""
        return self.transform(age, predicted) - _vector(age, "age")

    def to_dict(self) -> dict[str, Any]:
        """The fitted correction as a JSON-serialisable dict (see :meth:`from_dict`).

        Examples
        --------
        >>> from morphml.models import AgeBiasCorrector
        >>> c = AgeBiasCorrector(method="cole").fit([20, 50, 80], [30.0, 50.0, 70.0])
        >>> AgeBiasCorrector.from_dict(c.to_dict()).slope_
        0.6666666666666666
        """
        check_is_fitted(self)
        method, min_slope = self._check_params()
        return {
            "method": method,
            "formula": _FORMULAS[method],
            "uses_age": self.uses_age,
            "intercept": self.intercept_,
            "slope": self.slope_,
            "n_samples": self.n_samples_,
            "age_range": list(self.age_range_),
            "min_slope": min_slope,
        }

    def __sklearn_tags__(self) -> Any:
        # it transforms predictions (given the ages), though with its own signature
        tags = super().__sklearn_tags__()
        tags.transformer_tags = TransformerTags()
        return tags

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgeBiasCorrector:
        """Rebuild a fitted corrector from :meth:`to_dict` output.

        Sidecars written before the methods were named correctly say ``linear-beheshti``
        for what was computed as ``(predicted - intercept) / slope``: they are read as
        ``method="cole"``, so old runs predict exactly as they did.

        Raises
        ------
        BiasCorrectionError
            Unknown method, missing keys, or a non-finite line (Cole: a slope not above
            ``min_slope``).
        """
        method = data.get("method") if isinstance(data, dict) else None
        if method == _LEGACY_COLE:
            method = "cole"
        if method not in BIAS_METHODS:
            raise BiasCorrectionError(
                f"AgeBiasCorrector.from_dict: expected method one of "
                f"{', '.join(BIAS_METHODS)} (or {_LEGACY_COLE!r}), got {method!r}."
            )
        needed = ("intercept", "slope", "n_samples", "age_range", "min_slope")
        missing = [k for k in needed if k not in data]
        if missing:
            raise BiasCorrectionError(f"AgeBiasCorrector.from_dict: missing keys {missing}.")
        corrector = cls(method=method, min_slope=float(data["min_slope"]))
        _, min_slope = corrector._check_params()
        slope, intercept = float(data["slope"]), float(data["intercept"])
        if not (math.isfinite(slope) and math.isfinite(intercept)) or (
            method == "cole" and slope <= min_slope
        ):
            raise BiasCorrectionError(
                f"AgeBiasCorrector.from_dict: slope {slope!r} / intercept {intercept!r} are not "
                f"a valid {method} correction (finite; for cole a slope above {min_slope:g})."
            )
        corrector.slope_ = slope
        corrector.intercept_ = intercept
        corrector.n_samples_ = int(data["n_samples"])
        low, high = data["age_range"]
        corrector.age_range_ = (float(low), float(high))
        return corrector
