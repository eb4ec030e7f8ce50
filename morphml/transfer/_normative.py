"""A normative model of every feature: what the pretraining cohort predicts for a scan's age,
sex and site, and how far the scan deviates from it (a z-score).

Per feature, a linear model with a cubic B-spline of age, sex and sum-to-zero site contrasts
is fitted by least squares; the noise variance depends on age (a second spline fitted to the
squared residuals) and on the site (a scale factor per site). A site the model never saw is
*adapted* from its own controls with empirical-Bayes shrinkage: its offset is the controls'
mean residual shrunk toward 0 by ``n tau^2 / (n tau^2 + sigma^2)``, where ``tau^2`` is the
variance of the pretraining sites' offsets, and its scale is a scaled-inverse-chi-square
posterior around 1 (prior weight ``prior_weight`` pseudo-scans). This is the approach of
normative-model transfer to new sites (Kia et al. 2021; Bayer et al. 2022), written for
morphml's linear model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.preprocessing import SplineTransformer

from morphml.exceptions import TransferError

__all__ = ["NormativeModel"]

_EPS = 1e-12


class NormativeModel:
    """Per-feature normative model of age, sex and site with new-site adaptation.

    Not a scikit-learn estimator on purpose: it is fitted once on the pretraining cohort and
    passed to :class:`NormativeZ` as fixed knowledge, which ``clone`` must neither refit nor
    copy (``__deepcopy__`` returns the same object; :meth:`adapted_copy` gives a private copy
    for a training fold's new sites).

    Parameters
    ----------
    n_knots : int, default=5
        Knots of the cubic B-spline of age (mean and variance).
    prior_weight : float, default=10.0
        Pseudo-scans of the prior on a new site's scale (1): with fewer controls than this the
        scale stays close to 1.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> age = rng.uniform(20, 80, 300); sex = rng.integers(0, 2, 300)
    >>> site = np.repeat(["a", "b", "c"], 100)
    >>> X = np.c_[3 - 0.01 * age + rng.normal(0, 0.1, 300)]
    >>> model = NormativeModel().fit(X, age, sex, site)
    >>> abs(float(model.zscores(X, age, sex, site).mean())) < 0.05
    True
    """

    def __init__(self, *, n_knots: int = 5, prior_weight: float = 10.0) -> None:
        self.n_knots = n_knots
        self.prior_weight = prior_weight

    def __deepcopy__(self, memo: dict[int, Any]) -> NormativeModel:
        return self

    def __repr__(self) -> str:
        return f"NormativeModel(n_knots={self.n_knots}, prior_weight={self.prior_weight})"

    def adapted_copy(self) -> NormativeModel:
        """A copy sharing everything fitted, with no adapted sites (adapt it freely)."""
        if not hasattr(self, "coef_"):
            raise TransferError("the normative model is not fitted; call fit() first")
        copy = NormativeModel(n_knots=self.n_knots, prior_weight=self.prior_weight)
        copy.__dict__.update({k: v for k, v in self.__dict__.items() if k.endswith("_")})
        copy.adapted_ = {}
        return copy

    def _basis(self, age: np.ndarray) -> np.ndarray:
        return np.asarray(self.spline_.transform(age.reshape(-1, 1)), dtype=np.float64)

    def _design(self, age: np.ndarray, sex: np.ndarray) -> np.ndarray:
        return np.column_stack([np.ones(len(age)), self._basis(age), sex])

    def fit(self, X: Any, age: Any, sex: Any, site: Any) -> NormativeModel:
        """Fit on the pretraining cohort (features ``X``, one row per scan)."""
        Xv = np.asarray(X, dtype=np.float64)
        age_v = np.asarray(age, dtype=np.float64)
        sex_v = np.asarray(sex, dtype=np.float64)
        site_v = np.asarray(site).astype(str)
        if np.isnan(age_v).any() or np.isnan(sex_v).any():
            raise TransferError("the normative model needs age and sex for every training scan")
        if self.n_knots < 2:
            raise TransferError(f"n_knots must be an int >= 2. Got {self.n_knots!r}.")
        if self.prior_weight <= 0:
            raise TransferError(f"prior_weight must be > 0. Got {self.prior_weight!r}.")
        # the spline extrapolates linearly beyond the training ages
        self.spline_ = SplineTransformer(
            n_knots=self.n_knots, degree=3, include_bias=False, extrapolation="linear"
        ).fit(age_v.reshape(-1, 1))
        col_median = np.nanmedian(Xv, axis=0)
        Xf = np.where(np.isnan(Xv), col_median, Xv)
        self.sites_ = np.unique(site_v)
        base = self._design(age_v, sex_v)
        k = len(self.sites_)
        codes = np.searchsorted(self.sites_, site_v)
        contrasts = np.zeros((len(age_v), max(k - 1, 0)))
        for j in range(k - 1):  # sum-to-zero: the last site is minus the others
            contrasts[codes == j, j] = 1.0
            contrasts[codes == k - 1, j] = -1.0
        design = np.column_stack([base, contrasts])
        coef, *_ = np.linalg.lstsq(design, Xf, rcond=None)
        self.coef_ = coef[: base.shape[1]]
        site_coef = coef[base.shape[1] :]
        offsets = (
            np.vstack([site_coef, -site_coef.sum(axis=0, keepdims=True)])
            if k > 1
            else (np.zeros((1, Xf.shape[1])))
        )
        resid = Xf - design @ coef
        basis = self._basis(age_v)
        var_design = np.column_stack([np.ones(len(age_v)), basis])
        self.var_coef_, *_ = np.linalg.lstsq(var_design, resid**2, rcond=None)
        variance = self._variance(age_v)
        scaled = resid**2 / variance
        scale2 = np.ones((k, Xf.shape[1]))
        counts = np.bincount(codes, minlength=k)
        for j in range(k):
            scale2[j] = scaled[codes == j].mean(axis=0)
        self.site_offset_ = offsets
        self.site_scale_ = np.sqrt(np.maximum(scale2, _EPS))
        self.site_counts_ = counts
        # between-site variance of the offsets, minus their sampling noise
        noise = (variance.mean(axis=0) / np.maximum(counts, 1)[:, None]).mean(axis=0)
        self.tau2_ = (
            np.maximum(offsets.var(axis=0, ddof=1) - noise, _EPS)
            if k > 1
            else (np.full(Xf.shape[1], _EPS))
        )
        self.n_features_in_ = Xf.shape[1]
        self.adapted_: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        return self

    def _variance(self, age: np.ndarray) -> np.ndarray:
        design = np.column_stack([np.ones(len(age)), self._basis(age)])
        floor = np.maximum(self.var_coef_[0], _EPS) * 1e-3 if hasattr(self, "var_coef_") else _EPS
        return np.maximum(design @ self.var_coef_, floor)

    def predict_mean(self, age: Any, sex: Any) -> np.ndarray:
        """The population mean (average site) for each scan and feature."""
        age_v = np.asarray(age, dtype=np.float64)
        return self._design(age_v, np.asarray(sex, dtype=np.float64)) @ self.coef_

    def adapt(self, X: Any, age: Any, sex: Any, site: Any) -> NormativeModel:
        """Estimate the offset and scale of sites not seen in ``fit`` from their controls.

        Call it with a training fold's control scans only; it changes nothing learned from
        the pretraining cohort. Returns ``self``.
        """
        Xv = np.asarray(X, dtype=np.float64)
        age_v = np.asarray(age, dtype=np.float64)
        site_v = np.asarray(site).astype(str)
        if len(site_v) == 0:
            return self
        resid = Xv - self.predict_mean(age_v, sex)
        variance = self._variance(age_v)
        for name in np.unique(site_v):
            if name in set(self.sites_):
                continue
            rows = site_v == name
            r = resid[rows]
            n = np.sum(~np.isnan(r), axis=0)
            mean_r = np.where(n > 0, np.nansum(r, axis=0) / np.maximum(n, 1), 0.0)
            sigma2 = variance[rows].mean(axis=0)
            shrink = n * self.tau2_ / (n * self.tau2_ + sigma2)
            offset = shrink * mean_r
            sq = np.nansum((r - offset) ** 2 / variance[rows], axis=0)
            scale2 = (self.prior_weight + sq) / (self.prior_weight + n)
            self.adapted_[str(name)] = (offset, np.sqrt(np.maximum(scale2, _EPS)))
        return self

    def zscores(
        self, X: Any, age: Any, sex: Any, site: Any, *, unknown: str = "raise"
    ) -> np.ndarray:
        """Deviation of every value from the normative prediction, in standard deviations.

        ``unknown="prior"`` scores a site that was neither in ``fit`` nor adapted with the
        prior of an adapted site with no controls (offset 0, scale 1: the pretraining
        cohort's average site) instead of raising.
        """
        if unknown not in ("raise", "prior"):
            raise TransferError(f"unknown must be 'raise' or 'prior'. Got {unknown!r}.")
        Xv = np.asarray(X, dtype=np.float64)
        if Xv.shape[1] != self.n_features_in_:
            raise TransferError(
                f"the normative model has {self.n_features_in_} features; got {Xv.shape[1]}"
            )
        age_v = np.asarray(age, dtype=np.float64)
        site_v = np.asarray(site).astype(str)
        mean = self.predict_mean(age_v, sex)
        sd = np.sqrt(self._variance(age_v))
        offset = np.zeros_like(Xv)
        scale = np.ones_like(Xv)
        known = {str(s): j for j, s in enumerate(self.sites_)}
        for name in np.unique(site_v):
            rows = site_v == name
            if name in known:
                offset[rows] = self.site_offset_[known[name]]
                scale[rows] = self.site_scale_[known[name]]
            elif name in self.adapted_:
                offset[rows], scale[rows] = self.adapted_[name]
            elif unknown == "prior":
                continue
            else:
                raise TransferError(
                    f"site {name!r} is new to the normative model and was not adapted; "
                    "adapt it from its controls first (harmonize.new_sites: adapt)"
                )
        return (Xv - mean - offset) / (sd * scale)
