"""Deviation scores from a reference model, with new sites adapted inside the training rows.

A site the reference knows is scored with its own site coefficients. A site it never saw is
*adapted* from that site's controls among the rows given to ``fit`` (a training fold, never a
test fold):

* ``adaptation="braincharts"`` (Rutherford et al. 2022, the braincharts transfer recipe): on
  the site's controls, ``r = phi m - f(y)`` with all site indicators 0; then
  ``z = (f(y) - phi m + mean r) / std r`` (population standard deviation), per feature. It
  needs at least two controls per site.
* ``adaptation="shrunk"``: the same offset and scale estimated by empirical Bayes on the
  standardised residuals ``e = (f(y) - phi m) / s``, with ComBat's parametric posterior
  (:mod:`morphml.harmonize._eb`, Johnson et al. 2007): the offset is shrunk toward the mean
  offset of the reference's own sites with their spread as prior variance, and the scale is
  a scaled-inverse-chi-square posterior around 1 with ``prior_weight`` pseudo-scans. With
  few controls it stays near the prior, with many it approaches the braincharts recipe.

Input follows the transfer representations' convention: a DataFrame of canonical features
plus ``meta:age``, ``meta:sex`` (0 female, 1 male), ``meta:site`` and optionally
``meta:control`` columns (or the same as a separate ``meta`` frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.special import ndtr
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from morphml.exceptions import ReferenceModelError
from morphml.harmonize import Hyperpriors, batch_moments, parametric_posterior
from morphml.reference._model import ReferenceModel, covariates

__all__ = ["ReferenceDeviations", "SiteAdaptation"]

Array = NDArray[np.float64]

_NEW_SITES = ("adapt", "prior", "refuse")
_ADAPTATIONS = ("braincharts", "shrunk")
#: the braincharts recipe needs a standard deviation: at least this many controls per site
MIN_CONTROLS = 2


class SiteAdaptation:
    """A new site's offset and scale per feature (``kind``: which residual they apply to).

    ``kind="warped"``: ``z = (f(y) - phi m - offset) / scale`` (braincharts recipe);
    ``kind="standardised"``: ``z = ((f(y) - phi m) / s - offset) / scale`` (shrunk).
    """

    def __init__(self, kind: str, offset: Array, scale: Array, n_controls: int) -> None:
        self.kind = kind
        self.offset = offset
        self.scale = scale
        self.n_controls = n_controls

    def __repr__(self) -> str:
        return f"SiteAdaptation({self.kind}, n_controls={self.n_controls})"


def _frame_meta(X: pd.DataFrame, meta: pd.DataFrame | None) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise ReferenceModelError(
            f"ReferenceDeviations needs a DataFrame with canonical feature ids as columns; got "
            f"{type(X).__name__}"
        )
    if meta is None:
        cols = [c for c in X.columns if str(c).startswith("meta:")]
        return X[cols]
    if len(meta) != len(X):
        raise ReferenceModelError(f"meta has {len(meta)} rows and X {len(X)}; give one each")
    return meta


def _control_mask(meta: pd.DataFrame, controls: str | None, n: int) -> NDArray[np.bool_]:
    name = controls or "control"
    for key in (name, f"meta:{name}"):
        if key in meta.columns:
            values = meta[key]
            if values.isna().any():
                raise ReferenceModelError(
                    f"the controls column {key!r} has missing values; mark every row 0 or 1"
                )
            return values.to_numpy().astype(bool)
    if controls is not None:
        raise ReferenceModelError(
            f"controls={controls!r}: no column {controls!r} or 'meta:{controls}' in the data"
        )
    return np.ones(n, dtype=bool)  # no control column: every training row is a control


class ReferenceDeviations(TransformerMixin, BaseEstimator):
    """z-scores of a reference model, new sites adapted from the training rows' controls.

    Parameters
    ----------
    reference : ReferenceModel
        Fixed knowledge: never refitted or copied by ``clone``.
    features : sequence of str, optional
        Canonical feature ids to score (default: every reference feature present in ``X``).
    new_sites : {"adapt", "prior", "refuse"}, default="adapt"
        A site the reference does not know: ``"adapt"`` adapts it from its controls in the
        training rows and refuses it when it has too few there; ``"prior"`` does the same but
        scores such a site with the prior (the reference's unknown-site prediction for
        ``braincharts``, the posterior with no data for ``shrunk``); ``"refuse"`` adapts
        nothing and refuses every site the reference does not know.
    adaptation : {"braincharts", "shrunk"}, default="braincharts"
        How a new site's offset and scale are estimated (see the module docstring).
    controls : str, optional
        Column (``name`` or ``meta:name``) marking healthy controls (1) among the rows; by
        default ``meta:control`` when present, else every training row counts as a control.
    prior_weight : float, default=10.0
        ``shrunk`` only: pseudo-scans of the prior on a new site's scale.

    Attributes
    ----------
    features_ : list of str
    adapted_ : dict of str to SiteAdaptation
        The new sites adapted in ``fit``.
    unscored_ : dict of str to list of str
        Per adapted site, features its controls do not vary in (z is NaN there).

    Examples
    --------
    >>> dev = ReferenceDeviations(ref, adaptation="braincharts")  # doctest: +SKIP
    >>> z = dev.fit(X_train).transform(X_test)  # doctest: +SKIP
    """

    def __init__(
        self,
        reference: ReferenceModel | None = None,
        *,
        features: Sequence[str] | None = None,
        new_sites: str = "adapt",
        adaptation: str = "braincharts",
        controls: str | None = None,
        prior_weight: float = 10.0,
    ) -> None:
        self.reference = reference
        self.features = features
        self.new_sites = new_sites
        self.adaptation = adaptation
        self.controls = controls
        self.prior_weight = prior_weight

    # ------------------------------------------------------------------ helpers

    def _check_params(self) -> ReferenceModel:
        if not isinstance(self.reference, ReferenceModel):
            raise ReferenceModelError(
                "The 'reference' parameter of ReferenceDeviations must be a ReferenceModel "
                f"(ReferenceModel.load(path)). Got {type(self.reference).__name__}."
            )
        if self.new_sites not in _NEW_SITES:
            raise ReferenceModelError(
                f"The 'new_sites' parameter of ReferenceDeviations must be one of "
                f"{list(_NEW_SITES)}. Got {self.new_sites!r}."
            )
        if self.adaptation not in _ADAPTATIONS:
            raise ReferenceModelError(
                f"The 'adaptation' parameter of ReferenceDeviations must be one of "
                f"{list(_ADAPTATIONS)}. Got {self.adaptation!r}."
            )
        if not isinstance(self.prior_weight, int | float) or not self.prior_weight > 0:
            raise ReferenceModelError(
                "The 'prior_weight' parameter of ReferenceDeviations must be a number > 0. "
                f"Got {self.prior_weight!r}."
            )
        return self.reference

    def _residuals(
        self, X: pd.DataFrame, meta: pd.DataFrame
    ) -> tuple[Array, Array, Array, NDArray[np.intp], NDArray[np.str_]]:
        """f(y), mean and sd with the site's own coefficients (0 for new sites), codes, sites."""
        ref = self._check_params()
        missing = [f for f in self.features_ if f not in X.columns]
        if missing:
            raise ReferenceModelError(
                f"{len(missing)} of the {len(self.features_)} features fitted are not in the "
                f"data: {missing[:5]}"
            )
        age, sex, site = covariates(meta)
        codes = ref.site_codes(site)
        cols = np.asarray([ref.features.index(f) for f in self.features_], dtype=np.intp)
        mean, var = ref.moments(age, sex, codes, cols)
        fy = ref.warp_values(X[self.features_].to_numpy(np.float64), cols)
        return fy, mean, np.sqrt(var), codes, site

    def _site_population(self, ref: ReferenceModel) -> tuple[float, float]:
        """Mean and variance of the reference's own site offsets, in noise standard deviations."""
        cols = np.asarray([ref.features.index(f) for f in self.features_], dtype=np.intp)
        k = len(ref.sites)
        if k < 2:
            return 0.0, 1.0  # nothing to learn the spread of sites from: a wide prior
        offsets = ref.coef[cols, 3 : 3 + k] / np.sqrt(ref.noise_var[cols])[:, None]
        return float(offsets.mean()), float(offsets.var(ddof=1))

    # ------------------------------------------------------------------ fit / transform

    def fit(
        self, X: pd.DataFrame, y: Any = None, *, meta: pd.DataFrame | None = None
    ) -> ReferenceDeviations:
        """Adapt the sites the reference does not know from their controls in these rows."""
        ref = self._check_params()
        meta_df = _frame_meta(X, meta)
        if self.features is None:
            self.features_ = [f for f in ref.features if f in X.columns]
            if not self.features_:
                raise ReferenceModelError(
                    "the data hold none of the reference's features (canonical ids such as "
                    f"{ref.features[0]!r})"
                )
        else:
            wanted = [str(f) for f in self.features]
            unknown = [f for f in wanted if f not in ref.features]
            if unknown:
                raise ReferenceModelError(
                    f"{len(unknown)} requested features are not in the reference: {unknown[:5]}"
                )
            self.features_ = wanted
        fy, mean, sd, codes, site = self._residuals(X, meta_df)
        is_control = _control_mask(meta_df, self.controls, len(X))
        new = codes < 0
        self.adapted_: dict[str, SiteAdaptation] = {}
        self.too_few_: dict[str, int] = {}
        self.unscored_: dict[str, list[str]] = {}
        if self.new_sites == "refuse":
            if new.any():
                self._refuse(sorted(set(site[new].tolist())), "in the training rows")
            self.n_features_in_ = len(self.features_)
            return self
        names = sorted(set(site[new].tolist()))
        if self.adaptation == "braincharts":
            for name in names:
                rows = (site == name) & is_control
                n = int(rows.sum())
                if n < MIN_CONTROLS:
                    self.too_few_[name] = n
                    continue
                # braincharts: r = phi m - f(y); z = (f(y) - phi m + mean r) / std r
                r = mean[rows] - fy[rows]
                counts = np.sum(np.isfinite(r), axis=0)
                mean_r = np.nansum(r, axis=0) / np.maximum(counts, 1)
                std_r = np.sqrt(np.nansum((r - mean_r) ** 2, axis=0) / np.maximum(counts, 1))
                # a feature the site's controls do not vary in (or lack) cannot be scored
                # there: its z is NaN at this site, and listed
                bad = ~(std_r > 0) | (counts < MIN_CONTROLS)
                if bad.any():
                    self.unscored_[name] = [
                        f for f, b in zip(self.features_, bad, strict=True) if b
                    ]
                std_r = np.where(bad, np.nan, std_r)
                self.adapted_[name] = SiteAdaptation("warped", -mean_r, std_r, n)
        else:
            self._fit_shrunk(ref, names, fy, mean, sd, site, is_control)
        self.n_features_in_ = len(self.features_)
        return self

    def _fit_shrunk(
        self,
        ref: ReferenceModel,
        names: list[str],
        fy: Array,
        mean: Array,
        sd: Array,
        site: NDArray[np.str_],
        is_control: NDArray[np.bool_],
    ) -> None:
        gamma_bar, tau2 = self._site_population(ref)
        self.prior_ = (gamma_bar, tau2)
        with_controls = [n for n in names if ((site == n) & is_control).any()]
        for name in names:
            if name not in with_controls:
                self.too_few_[name] = 0
        if not with_controls:
            return
        k = len(with_controls)
        rows = np.isin(site, with_controls) & is_control
        e = (fy[rows] - mean[rows]) / sd[rows]
        codes = np.searchsorted(np.asarray(with_controls), site[rows])
        missing = np.isnan(e)
        moments = batch_moments(
            np.where(missing, 0.0, e), codes, k, missing if missing.any() else None
        )
        nu = float(self.prior_weight)
        priors = Hyperpriors(
            gamma_bar=np.full(k, gamma_bar),
            tau2=np.full(k, tau2),
            a=np.full(k, nu / 2.0 + 1.0),
            b=np.full(k, nu / 2.0),
        )
        gamma_star, delta_star, _ = parametric_posterior(moments, priors)
        counts = np.bincount(codes, minlength=k)
        for i, name in enumerate(with_controls):
            self.adapted_[name] = SiteAdaptation(
                "standardised", gamma_star[i], np.sqrt(delta_star[i]), int(counts[i])
            )

    def _refuse(self, names: list[str], where: str) -> None:
        shown = ", ".join(repr(n) for n in names[:5])
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        if self.new_sites == "refuse":
            fix = "use new_sites: adapt (adapt them from their controls) or map the site names"
        else:
            fix = (
                f"give each at least {MIN_CONTROLS} controls in the training rows, or use "
                "new_sites: prior"
            )
        raise ReferenceModelError(
            f"sites the reference does not know {where}: {shown}{more} "
            f"({'not adapted' if self.new_sites != 'refuse' else 'refused'}); {fix}"
        )

    def transform(self, X: pd.DataFrame, *, meta: pd.DataFrame | None = None) -> pd.DataFrame:
        """z-scores, one column per feature in ``features_``, index of ``X``."""
        check_is_fitted(self, "features_")
        meta_df = _frame_meta(X, meta)
        fy, mean, sd, codes, site = self._residuals(X, meta_df)
        z = (fy - mean) / sd  # known sites: their own coefficients; new sites: the prior
        new = codes < 0
        if new.any():
            names = sorted(set(site[new].tolist()))
            unadapted = [n for n in names if n not in self.adapted_]
            if unadapted and self.new_sites != "prior":
                self._refuse(unadapted, "in these rows")
            for name in names:
                rows = site == name
                adapt = self.adapted_.get(name)
                if adapt is None:  # new_sites: prior
                    if self.adaptation == "shrunk":
                        gamma_bar, _ = self._site_population(self._check_params())
                        z[rows] = z[rows] - gamma_bar
                    continue
                if adapt.kind == "warped":
                    z[rows] = (fy[rows] - mean[rows] - adapt.offset) / adapt.scale
                else:
                    z[rows] = ((fy[rows] - mean[rows]) / sd[rows] - adapt.offset) / adapt.scale
        return pd.DataFrame(z, index=X.index, columns=list(self.features_))

    def fit_transform(
        self, X: pd.DataFrame, y: Any = None, *, meta: pd.DataFrame | None = None
    ) -> pd.DataFrame:
        """``fit`` then ``transform`` on the same rows (``meta`` passed to both)."""
        return self.fit(X, y, meta=meta).transform(X, meta=meta)

    def centiles(self, X: pd.DataFrame, *, meta: pd.DataFrame | None = None) -> pd.DataFrame:
        """``Phi(z)`` of :meth:`transform` (0..1)."""
        z = self.transform(X, meta=meta)
        return pd.DataFrame(ndtr(z.to_numpy()), index=z.index, columns=z.columns)

    def get_feature_names_out(self, input_features: Any = None) -> NDArray[np.object_]:
        check_is_fitted(self, "features_")
        return np.asarray(self.features_, dtype=object)
