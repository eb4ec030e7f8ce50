"""ComBat site harmonisation as a scikit-learn transformer (fitted inside training folds)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from morphml.exceptions import FeatureMismatchError, HarmonizationError
from morphml.harmonize._eb import (
    BatchMoments,
    Hyperpriors,
    SitePopulation,
    batch_moments,
    hyperpriors,
    new_batch_hyperpriors,
    nonparametric_posterior,
    parametric_posterior,
    site_population,
)
from morphml.harmonize._spline import natural_spline_basis, natural_spline_knots

__all__ = ["META_PREFIX", "ComBat"]

#: columns whose name starts with this carry the batch and covariates, not features
META_PREFIX = "meta:"

Array = NDArray[np.float64]

#: how many names an error message lists
_MAX_LISTED = 5
#: residual SD below this fraction of a feature's largest magnitude counts as no variance
_CONSTANT_RTOL = 1e-9


def _listed(names: Sequence[Any]) -> str:
    shown = ", ".join(repr(str(n)) for n in names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _as_names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    try:
        names = tuple(value)
    except TypeError:
        raise HarmonizationError(
            f"The {what!r} parameter of ComBat must be a column name or a sequence of column "
            f"names. Got {value!r}."
        ) from None
    if not all(isinstance(n, str) for n in names):
        raise HarmonizationError(
            f"The {what!r} parameter of ComBat must hold column names (strings). Got {value!r}."
        )
    return names


class ComBat(TransformerMixin, BaseEstimator):
    r"""Remove additive and multiplicative site effects per feature, keeping covariate effects.

    ComBat (Johnson, Li & Rabinovic 2007, *Biostatistics* 8:118; for brain morphometry Fortin
    et al. 2017, *NeuroImage* 161:149 and 2018, *NeuroImage* 167:104) models feature
    :math:`g` of scan :math:`j` at site (batch) :math:`i` as

    .. math::

        y_{ijg} = \alpha_g + x_{ij}^\top \beta_g + \gamma_{ig}
                  + \delta_{ig} \varepsilon_{ijg}, \qquad
        \varepsilon_{ijg} \sim N(0, \sigma_g^2),

    with covariates :math:`x` (age, sex) whose effects are kept. Each covariate listed in
    ``spline_covariates`` enters as a natural cubic spline with ``spline_df`` degrees of
    freedom (knots at training quantiles), the smooth age term of ComBat-GAM (Pomponio et al.
    2020, *NeuroImage* 208:116450). :meth:`fit` follows the published estimator:

    1. per feature, ordinary least squares on [batch indicators, covariates] (one
       ``lstsq`` for all features when nothing is missing);
    2. grand mean :math:`\hat\alpha_g` = batch-size-weighted mean of the batch intercepts
       (the reference batch's intercept when ``reference_batch`` is set), pooled
       :math:`\hat\sigma_g^2` = mean squared residual (reference-batch rows only when set);
    3. standardise :math:`z = (y - \hat\alpha - x^\top\hat\beta) / \hat\sigma`; per batch
       :math:`\hat\gamma_{ig}` = mean and :math:`\hat\delta^2_{ig}` = variance of :math:`z`;
    4. empirical-Bayes shrinkage across features: hyperpriors :math:`\bar\gamma_i,
       \bar\tau^2_i` and inverse-gamma :math:`a_i, b_i` by the method of moments, then the
       posterior means :math:`\gamma^*, \delta^{2*}` by the iterative parametric solution, or
       the non-parametric estimator of section 3.2 when ``parametric=False``; ``eb=False``
       uses :math:`\hat\gamma, \hat\delta^2` as they are.

    :meth:`transform` returns
    :math:`(z - \gamma^*_{ig}) / \delta^*_{ig} \cdot \hat\sigma_g + \hat\alpha_g +
    x^\top\hat\beta_g` from the stored parameters only, row by row.

    Input is a DataFrame. Columns whose names start with ``META_PREFIX`` (``"meta:"``) carry
    the batch and covariates and are dropped from the output; columns starting with one of
    ``passthrough_prefixes`` (one-hot site indicators) are passed through unchanged; every
    other column is a feature to harmonise. The output keeps the index and the non-meta
    columns in their original order.

    Special cases:

    * Missing feature values (NaN) are left out of every estimate of that feature and stay
      NaN in the output.
    * Features without residual variance (constant, or constant within every site) are
      passed through unchanged: there is no scale to standardise by.
    * A site with a single scan: its location :math:`\gamma^*` is estimated with the usual
      shrinkage, but its scale :math:`\delta^{2*}` is the prior mean
      :math:`b/(a-1)` pooled over the sites with two or more scans. One value has no sample
      variance, and its distance from the shrunken location is an artefact of the shrinkage,
      not information about the site's spread; the prior mean is the best scale available.
      The same holds for any site and feature with fewer than two non-missing values.
    * Sites not seen in :meth:`fit` are refused (``new_batches="refuse"``) or, with
      ``new_batches="adapt"``, estimated by :meth:`adapt` from a few of their own control
      scans, shrunk toward the training sites' priors.
    * When the outcome of a later model is age, age cannot be a covariate applied to test
      scans (it would write each scan's own age back into its features). Leaving age out of
      the covariates makes ComBat remove age differences between sites along with the site
      effects; the alternative is to keep age in :meth:`fit` and :meth:`adapt` (training
      scans and controls) and to transform every scan with ``meta:age`` set to the training
      mean (see ``benchmarks/eval_harmonise.py``).

    Parameters
    ----------
    batch : str, default="meta:site"
        Meta column holding the site (batch) of each scan; values are used as strings.
    covariates : sequence of str, default=("meta:age", "meta:sex")
        Numeric meta columns whose effects are estimated and kept (sex coded 0/1). Never put
        the outcome of a later model here: its effect would be written back into the features
        from each scan's own outcome.
    spline_covariates : sequence of str, default=("meta:age",)
        Covariates modelled by a natural cubic spline instead of a straight line. Entries that
        are not among ``covariates`` are ignored, so the default stays valid when age is left
        out of the covariates.
    spline_df : int, default=4
        Degrees of freedom of each spline (number of basis columns); 1 is linear.
    parametric : bool, default=True
        Parametric empirical-Bayes priors (normal / inverse gamma) or the non-parametric
        estimator.
    eb : bool, default=True
        Shrink the site effects by empirical Bayes; ``False`` uses the per-site estimates
        (fragile for small sites and for features almost constant within a site, whose tiny
        sample variance then blows up the rescaled values: on fcon1000 a ridge brain-age
        model fed ``eb=False`` output had a mean absolute error of 28 years).
    reference_batch : str or None, default=None
        Harmonise every site to this one; its scans come out unchanged.
    new_batches : {"refuse", "adapt"}, default="refuse"
        What :meth:`transform` does with sites not seen in :meth:`fit`: refuse, or use the
        estimates stored by :meth:`adapt`.
    control_col : str, default="meta:control"
        Meta column marking the control scans :meth:`adapt` may use (true / false or 1 / 0).
        When ``X`` has no such column, :meth:`adapt` uses every row of the new sites.
    passthrough_prefixes : sequence of str, default=("site=",)
        Columns starting with one of these are returned unchanged and not harmonised.

    Attributes
    ----------
    batches_ : ndarray of str, shape (n_batches,)
        Sites seen in :meth:`fit`, sorted.
    batch_sizes_ : ndarray of int, shape (n_batches,)
        Scans per site in :meth:`fit`.
    features_ : list of str
        Harmonised feature columns, in input order.
    output_columns_ : list of str
        Columns of the output (features and passthrough columns, in input order).
    feature_names_in_ : ndarray of str
        Every column of the ``X`` given to :meth:`fit` (meta columns included).
    n_features_in_ : int
    covariate_columns_ : list of str
        Names of the covariate design columns (spline basis columns as ``name[ns1]`` ...).
    spline_knots_ : dict of str to ndarray
        Knots of each spline covariate (boundary knots first and last).
    alpha_ : ndarray of shape (n_features,)
        Grand mean of each feature.
    beta_ : ndarray of shape (n_covariate_columns, n_features)
        Covariate effects.
    sigma_ : ndarray of shape (n_features,)
        Pooled residual SD (0 for features passed through).
    constant_features_ : list of str
        Features passed through because they have no residual variance.
    usable_ : ndarray of bool, shape (n_features,)
        False for the constant features.
    reference_index_ : int or None
        Position of ``reference_batch`` in ``batches_``.
    batch_counts_ : ndarray of shape (n_batches, n_features)
        Non-missing values per site and feature.
    gamma_hat_, delta_hat_ : ndarray of shape (n_batches, n_features)
        Per-site mean and variance of the standardised data (NaN where undefined).
    gamma_star_ : ndarray of shape (n_batches, n_features)
        Additive site effects :math:`\gamma^*` in units of :math:`\hat\sigma`.
    delta_star_ : ndarray of shape (n_batches, n_features)
        Multiplicative site effects as *variances* :math:`\delta^{2*}` (the adjustment divides
        by their square root), as in the sva and neuroCombat code.
    gamma_bar_, tau2_, a_prior_, b_prior_ : ndarray of shape (n_batches,)
        Empirical-Bayes hyperparameters of each site.
    delta_prior_mean_ : float
        Prior mean of :math:`\delta^2` pooled over sites (the single-scan fallback).
    new_batch_prior_ : dict of str to float
        How the training sites' hyperparameters vary (``gamma_bar``, ``gamma_bar_var``,
        ``tau2``, ``delta_mean``, ``delta_mean_var``, ``a``): the prior :meth:`adapt` puts
        on a new site's hyperparameters.
    n_iter_ : int
        Iterations of the parametric solution (0 when not used).
    adapted_ : dict
        Per site added by :meth:`adapt`: ``n`` (controls used), ``gamma_hat``, ``delta_hat``,
        ``gamma_star``, ``delta_star`` (arrays over features) and the site's hyperparameters
        ``gamma_bar``, ``tau2``, ``a``, ``b``. Empty after :meth:`fit`.

    See Also
    --------
    morphml.config.HarmonizeSpec : the configuration this estimator is built from.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from morphml.harmonize import ComBat
    >>> rng = np.random.default_rng(0)
    >>> site = np.repeat(["a", "b", "c"], 20)
    >>> X = pd.DataFrame({"meta:site": site, "meta:age": rng.uniform(20, 80, 60),
    ...                   "meta:sex": rng.integers(0, 2, 60)})
    >>> for k in range(5):
    ...     X[f"f{k}"] = rng.normal(size=60) + (site == "b") * 2.0
    >>> out = ComBat(spline_df=2).fit_transform(X)
    >>> list(out.columns)
    ['f0', 'f1', 'f2', 'f3', 'f4']
    >>> bool(abs(out["f0"][site == "b"].mean() - out["f0"][site == "a"].mean()) < 0.5)
    True
    """

    def __init__(
        self,
        *,
        batch: str = "meta:site",
        covariates: Sequence[str] = ("meta:age", "meta:sex"),
        spline_covariates: Sequence[str] = ("meta:age",),
        spline_df: int = 4,
        parametric: bool = True,
        eb: bool = True,
        reference_batch: str | None = None,
        new_batches: str = "refuse",
        control_col: str = "meta:control",
        passthrough_prefixes: Sequence[str] = ("site=",),
    ) -> None:
        self.batch = batch
        self.covariates = covariates
        self.spline_covariates = spline_covariates
        self.spline_df = spline_df
        self.parametric = parametric
        self.eb = eb
        self.reference_batch = reference_batch
        self.new_batches = new_batches
        self.control_col = control_col
        self.passthrough_prefixes = passthrough_prefixes

    # ------------------------------------------------------------------ validation
    def _meta_name(self, value: Any, what: str) -> str:
        if not isinstance(value, str) or not value.startswith(META_PREFIX):
            raise HarmonizationError(
                f"The {what!r} parameter of ComBat must name a meta column (starting with "
                f"{META_PREFIX!r}, e.g. '{META_PREFIX}site'). Got {value!r}."
            )
        return value

    def _check_params(self) -> tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        batch = self._meta_name(self.batch, "batch")
        covariates = _as_names(self.covariates, "covariates")
        for name in covariates:
            self._meta_name(name, "covariates")
        repeated = sorted(n for n, c in Counter(covariates).items() if c > 1)
        if repeated:
            raise HarmonizationError(
                f"The 'covariates' parameter of ComBat lists {_listed(repeated)} more than once."
            )
        if batch in covariates:
            raise HarmonizationError(
                f"The batch column {batch!r} cannot also be a covariate of ComBat: site effects "
                "are what ComBat removes."
            )
        spline = tuple(n for n in _as_names(self.spline_covariates, "spline_covariates"))
        spline = tuple(n for n in spline if n in covariates)
        prefixes = _as_names(self.passthrough_prefixes, "passthrough_prefixes")
        if any(p == "" or p.startswith(META_PREFIX) for p in prefixes):
            raise HarmonizationError(
                "The 'passthrough_prefixes' parameter of ComBat must hold non-empty prefixes "
                f"that do not start with {META_PREFIX!r}. Got {prefixes!r}."
            )
        if isinstance(self.spline_df, bool) or not isinstance(self.spline_df, int | np.integer):
            raise HarmonizationError(
                f"The 'spline_df' parameter of ComBat must be an int >= 1. Got {self.spline_df!r}."
            )
        if self.spline_df < 1:
            raise HarmonizationError(
                f"The 'spline_df' parameter of ComBat must be an int >= 1. Got {self.spline_df}."
            )
        for what in ("parametric", "eb"):
            if not isinstance(getattr(self, what), bool | np.bool_):
                raise HarmonizationError(
                    f"The {what!r} parameter of ComBat must be True or False. "
                    f"Got {getattr(self, what)!r}."
                )
        if self.new_batches not in ("refuse", "adapt"):
            raise HarmonizationError(
                "The 'new_batches' parameter of ComBat must be 'refuse' or 'adapt'. "
                f"Got {self.new_batches!r}."
            )
        self._meta_name(self.control_col, "control_col")
        if self.reference_batch is not None and not isinstance(self.reference_batch, str):
            raise HarmonizationError(
                "The 'reference_batch' parameter of ComBat must be a site name (str) or None. "
                f"Got {self.reference_batch!r}."
            )
        return batch, covariates, spline, prefixes

    @staticmethod
    def _check_frame(X: Any, method: str) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise HarmonizationError(
                f"ComBat.{method} needs a pandas DataFrame whose '{META_PREFIX}' columns hold the "
                f"site and covariates (e.g. '{META_PREFIX}site', '{META_PREFIX}age'). "
                f"Got {type(X).__name__}."
            )
        repeated = sorted(str(n) for n, c in Counter(X.columns).items() if c > 1)
        if repeated:
            raise HarmonizationError(
                f"ComBat.{method}: X has duplicated column names {_listed(repeated)}; every "
                "column must have a unique name."
            )
        if len(X) == 0:
            raise HarmonizationError(f"ComBat.{method}: X has no rows.")
        return X

    @staticmethod
    def _layout(X: pd.DataFrame, prefixes: tuple[str, ...]) -> tuple[list[str], list[str]]:
        """Feature columns and output columns (features and passthrough), in input order."""
        features: list[str] = []
        output: list[str] = []
        for column in X.columns:
            name = str(column)
            if name.startswith(META_PREFIX):
                continue
            output.append(column)
            if not name.startswith(prefixes):
                features.append(column)
        return features, output

    def _column(self, X: pd.DataFrame, name: str, role: str) -> pd.Series:
        if name not in X.columns:
            meta = [str(c) for c in X.columns if str(c).startswith(META_PREFIX)]
            todo = (
                f"Add it, or remove {name.removeprefix(META_PREFIX)!r} from harmonize.covariates."
                if role == "covariate"
                else "Every scan needs its site."
            )
            raise HarmonizationError(
                f"ComBat {role} column {name!r} is not in X (its meta columns are "
                f"{_listed(meta) if meta else 'none'}). {todo}"
            )
        return X[name]

    def _batch_labels(self, X: pd.DataFrame) -> NDArray[np.str_]:
        column = self._column(X, self.batch, "batch")
        n_missing = int(column.isna().sum())
        if n_missing:
            raise HarmonizationError(
                f"ComBat batch column {self.batch!r} is missing in {n_missing} of {len(X)} "
                "rows; every scan needs its site. Drop or fix those scans."
            )
        return column.astype(str).to_numpy(dtype=str)

    def _covariate(self, X: pd.DataFrame, name: str) -> Array:
        column = self._column(X, name, "covariate")
        if not pd.api.types.is_numeric_dtype(column.dtype):
            raise HarmonizationError(
                f"ComBat covariate {name!r} must be numeric (sex coded 0/1); it has dtype "
                f"{column.dtype}."
            )
        values = column.to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            raise HarmonizationError(
                f"ComBat covariate {name!r} is missing or infinite in {int(bad.sum())} of "
                f"{len(values)} rows; ComBat needs every covariate of every scan. Drop or "
                f"impute those scans first, or remove {name.removeprefix(META_PREFIX)!r} from "
                "harmonize.covariates."
            )
        return values

    def _features(self, X: pd.DataFrame, features: list[str]) -> Array:
        dtypes = X.dtypes[features]
        text = [c for c, t in dtypes.items() if not pd.api.types.is_numeric_dtype(t)]
        if text:
            raise HarmonizationError(
                f"ComBat: feature column(s) {_listed(text)} are not numeric. Name meta columns "
                f"'{META_PREFIX}...' and passthrough columns with one of "
                f"{tuple(self.passthrough_prefixes)!r}; every other column is harmonised."
            )
        values = X[features].to_numpy(dtype=float)
        infinite = np.isinf(values)
        if infinite.any():
            columns = [features[j] for j in np.flatnonzero(infinite.any(axis=0))]
            raise HarmonizationError(
                f"ComBat: feature column(s) {_listed(columns)} hold infinite values "
                f"({int(infinite.sum())} in all); use NaN for a missing value."
            )
        return values

    def _design(self, X: pd.DataFrame, knots: dict[str, Array]) -> Array:
        columns = []
        for name in _as_names(self.covariates, "covariates"):
            values = self._covariate(X, name)
            if name in knots:
                columns.append(natural_spline_basis(values, knots[name]))
            else:
                columns.append(values[:, None])
        return np.hstack(columns) if columns else np.zeros((len(X), 0))

    def _check_schema(self, X: pd.DataFrame, method: str) -> list[str]:
        prefixes = _as_names(self.passthrough_prefixes, "passthrough_prefixes")
        features, output = self._layout(X, prefixes)
        if [str(c) for c in output] != [str(c) for c in self.output_columns_]:
            fitted, given = set(map(str, self.output_columns_)), set(map(str, output))
            missing = sorted(fitted - given)
            extra = sorted(given - fitted)
            detail = (
                f"missing {_listed(missing) if missing else 'none'}; "
                f"extra {_listed(extra) if extra else 'none'}"
                if missing or extra
                else "same columns in another order"
            )
            raise FeatureMismatchError(
                f"ComBat.{method}: X's non-meta columns differ from the "
                f"{len(self.output_columns_)} seen in fit ({detail}). Give X the columns of "
                "get_feature_names_out() in the same order; ComBat never reorders, drops or "
                "fills feature columns."
            )
        return features

    # ------------------------------------------------------------------ fit
    def fit(self, X: pd.DataFrame, y: Any = None) -> ComBat:
        """Estimate covariate effects, pooled scales and shrunken site effects.

        Parameters
        ----------
        X : DataFrame of shape (n_scans, n_columns)
            Features plus the meta columns named by ``batch`` and ``covariates``.
        y : ignored
            Present for pipeline compatibility; the outcome is never used.

        Returns
        -------
        self : ComBat

        Raises
        ------
        HarmonizationError
            Fewer than two sites, a missing or non-numeric covariate or feature, covariates
            confounded with site, an unknown ``reference_batch``, or bad parameters.
        """
        _, covariates, spline, prefixes = self._check_params()
        X = self._check_frame(X, "fit")
        features, output = self._layout(X, prefixes)
        if not features:
            raise HarmonizationError(
                "ComBat.fit: X has no feature column to harmonise (only meta and passthrough "
                "columns)."
            )
        batches, codes, ref = self._fit_batches(X)
        knots, cov, cov_names = self._fit_covariates(X, covariates, spline)
        values = self._features(X, features)
        missing_mask = np.isnan(values)
        missing = missing_mask if missing_mask.any() else None
        onehot = np.zeros((codes.size, batches.size))
        onehot[np.arange(codes.size), codes] = 1.0
        _check_rank(np.hstack([onehot, cov]), batches.size, cov_names, int(self.spline_df))
        pooled = _pooled_fit(onehot, cov, values, missing, ref)
        moments = pooled.standardised_moments()
        try:
            priors, pooled_mean = hyperpriors(moments, pooled.usable)
        except ValueError:
            raise HarmonizationError(
                "ComBat cannot estimate site scales: no site has two scans with a varying value "
                f"of any of the {len(features)} features. Harmonise a larger training set."
            ) from None
        gamma_star, delta_star, n_iter = _posterior(
            moments, priors, pooled.usable, eb=bool(self.eb), parametric=bool(self.parametric)
        )
        if ref is not None:
            gamma_star[ref], delta_star[ref] = 0.0, 1.0

        self.batches_ = batches
        self.batch_sizes_ = np.bincount(codes, minlength=batches.size)
        self.features_ = list(features)
        self.output_columns_ = list(output)
        self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
        self.n_features_in_ = X.shape[1]
        self.covariate_columns_ = cov_names
        self.spline_knots_ = knots
        self.alpha_ = pooled.alpha
        self.beta_ = pooled.beta
        self.sigma_ = pooled.sigma
        self.usable_ = pooled.usable
        self.constant_features_ = [
            f for f, ok in zip(features, pooled.usable, strict=True) if not ok
        ]
        self.reference_index_ = ref
        self._store_site_effects(moments, gamma_star, delta_star, priors)
        self.delta_prior_mean_ = float(pooled_mean)
        self.new_batch_prior_ = dict(vars(site_population(priors, ref)))
        self.n_iter_ = n_iter
        self.adapted_: dict[str, dict[str, Any]] = {}
        return self

    def _fit_batches(
        self, X: pd.DataFrame
    ) -> tuple[NDArray[np.str_], NDArray[np.intp], int | None]:
        """The training sites (sorted), each row's site code, and the reference site's code."""
        labels = self._batch_labels(X)
        batches, codes = np.unique(labels, return_inverse=True)
        codes = codes.ravel()
        if batches.size < 2:
            raise HarmonizationError(
                f"ComBat needs at least 2 sites in {self.batch!r} to estimate site effects; the "
                f"training data hold {batches.size} ({_listed(list(batches))}). Use "
                "harmonize.method: none for single-site data."
            )
        if self.reference_batch is None:
            return batches, codes, None
        if self.reference_batch not in batches:
            raise HarmonizationError(
                f"ComBat reference site {self.reference_batch!r} is not among the training "
                f"sites ({_listed(list(batches))}); set harmonize.reference_site to one of "
                "them."
            )
        return batches, codes, int(np.searchsorted(batches, self.reference_batch))

    def _fit_covariates(
        self, X: pd.DataFrame, covariates: tuple[str, ...], spline: tuple[str, ...]
    ) -> tuple[dict[str, Array], Array, list[str]]:
        """Spline knots (training quantiles), the covariate design and its column names."""
        knots: dict[str, Array] = {}
        for name in covariates:
            values = self._covariate(X, name)
            if np.ptp(values) == 0:
                raise HarmonizationError(
                    f"ComBat covariate {name!r} has the same value ({values[0]:g}) in every "
                    "training scan, so its effect cannot be estimated; remove "
                    f"{name.removeprefix(META_PREFIX)!r} from harmonize.covariates."
                )
            if name in spline:
                knots[name] = natural_spline_knots(values, int(self.spline_df))
        cov_names = []
        for name in covariates:
            if name in knots:
                cov_names += [f"{name}[ns{k + 1}]" for k in range(knots[name].size - 1)]
            else:
                cov_names.append(name)
        return knots, self._design(X, knots), cov_names

    def _store_site_effects(
        self, moments: BatchMoments, gamma_star: Array, delta_star: Array, priors: Hyperpriors
    ) -> None:
        self.batch_counts_ = moments.n.astype(int)
        self.gamma_hat_ = np.where(moments.n >= 1, moments.mean, np.nan)
        self.delta_hat_ = moments.delta_hat
        self.gamma_star_ = gamma_star
        self.delta_star_ = delta_star
        self.gamma_bar_ = priors.gamma_bar
        self.tau2_ = priors.tau2
        self.a_prior_ = priors.a
        self.b_prior_ = priors.b

    # ------------------------------------------------------------------ transform
    def _standardised(self, X: pd.DataFrame, features: list[str]) -> tuple[Array, Array, Array]:
        """Features, the covariate part of the mean, and z, with the stored parameters."""
        values = self._features(X, features)
        mean = self.alpha_ + self._design(X, self.spline_knots_) @ self.beta_
        z = (values - mean) / np.where(self.usable_, self.sigma_, 1.0)
        return values, mean, z

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Harmonise each row with the stored parameters.

        Parameters
        ----------
        X : DataFrame
            The columns seen in :meth:`fit` (same non-meta columns, same order) and the batch
            and covariate meta columns.

        Returns
        -------
        DataFrame
            Same index; the non-meta columns in their original order, features harmonised.

        Raises
        ------
        HarmonizationError
            A site not seen in :meth:`fit` (and not adapted), or missing covariates.
        FeatureMismatchError
            Non-meta columns other than those seen in :meth:`fit`.
        """
        check_is_fitted(self)
        X = self._check_frame(X, "transform")
        features = self._check_schema(X, "transform")
        labels = self._batch_labels(X)
        names = [*map(str, self.batches_), *self.adapted_]
        position = {name: i for i, name in enumerate(names)}
        unknown = sorted(set(labels) - set(position))
        if unknown:
            self._refuse(unknown)
        index = np.fromiter((position[label] for label in labels), dtype=np.intp, count=len(X))
        gamma = self.gamma_star_
        delta = self.delta_star_
        if self.adapted_:
            gamma = np.vstack([gamma, *(a["gamma_star"] for a in self.adapted_.values())])
            delta = np.vstack([delta, *(a["delta_star"] for a in self.adapted_.values())])
        values = self._features(X, features)
        mean = self._design(X, self.spline_knots_) @ self.beta_
        mean += self.alpha_
        # (z - gamma*) / delta* * sigma + mean, with z = (y - mean) / sigma, site by site in
        # place (no n x p temporaries beyond the output and the mean)
        out = np.subtract(values, mean)
        shift = self.sigma_ * gamma
        scale = 1.0 / np.sqrt(delta)
        for k in np.unique(index):
            rows = np.flatnonzero(index == k)
            out[rows] = (out[rows] - shift[k]) * scale[k]
        out += mean
        out[:, ~self.usable_] = values[:, ~self.usable_]
        if self.reference_index_ is not None:
            same = index == self.reference_index_
            out[same] = values[same]
        result = pd.DataFrame(out, index=X.index, columns=features)
        if len(features) != len(self.output_columns_):
            harmonised = set(features)
            passthrough = [c for c in self.output_columns_ if c not in harmonised]
            result = pd.concat([result, X[passthrough]], axis=1)[self.output_columns_]
        return result

    def _refuse(self, unknown: list[str]) -> None:
        fitted = _listed(list(self.batches_))
        if self.new_batches == "refuse":
            raise HarmonizationError(
                f"ComBat was not fitted on site(s) {_listed(unknown)} (batch column "
                f"{self.batch!r}; fitted sites: {fitted}). Their site effects are unknown, so "
                "harmonising them would be a guess. Set harmonize.new_sites: adapt and provide "
                "controls from these sites (ComBat.adapt), or leave these scans out."
            )
        raise HarmonizationError(
            f"Site(s) {_listed(unknown)} were not seen in ComBat.fit and have not been adapted "
            "yet (harmonize.new_sites: adapt): call ComBat.adapt(X_controls) with control scans "
            "of these sites before transforming them."
        )

    # ------------------------------------------------------------------ adapt
    def adapt(self, X: pd.DataFrame) -> ComBat:
        r"""Estimate the site effects of sites not seen in :meth:`fit` from their controls.

        Uses the rows of ``X`` whose site is not among ``batches_`` and, when ``X`` has the
        ``control_col`` column, whose control flag is true. Their standardised values (with the
        stored grand mean, covariate effects and scales; nothing fitted changes) give per-site
        :math:`\hat\gamma, \hat\delta^2`, shrunk by the same empirical Bayes as in
        :meth:`fit`, one level up: the new site's hyperparameters (the offset its features
        share, the mean of its scales) are estimated from its controls and shrunk toward the
        training sites' hyperparameters (``new_batch_prior_``; see
        :func:`morphml.harmonize._eb.new_batch_hyperpriors`), and its features' effects are
        then shrunk toward those by Johnson's parametric posterior (for ``parametric=False``
        too: the training sites are summarised by parametric hyperparameters). With two
        controls the estimates stay close to the prior; with many they approach the
        controls' own means and variances. ``eb=False`` takes the controls' estimates as they
        are. Rows of sites seen in :meth:`fit` are ignored; a site adapted before is
        estimated again from the new rows.

        A prior centred on the training sites' average alone (the natural first idea) is
        worse than no adaptation with a handful of controls: each feature's mean of two scans
        is noisy, while the offset that a site's features share is estimated well from all
        features together.

        Use it inside training folds only: the controls are training data.

        Parameters
        ----------
        X : DataFrame
            Control scans of the new sites (other rows are ignored), with the columns seen in
            :meth:`fit` and the batch and covariate meta columns.

        Returns
        -------
        self : ComBat

        Raises
        ------
        HarmonizationError
            ``new_batches`` is not ``"adapt"``, a new site has no control row, or the control
            flags or covariates are unusable.
        """
        check_is_fitted(self)
        if self.new_batches != "adapt":
            raise HarmonizationError(
                "ComBat.adapt needs new_batches='adapt' (harmonize.new_sites: adapt); this model "
                "was built to refuse sites not seen in fit."
            )
        X = self._check_frame(X, "adapt")
        features = self._check_schema(X, "adapt")
        labels = self._batch_labels(X)
        unseen = ~np.isin(labels, np.asarray(self.batches_, dtype=str))
        if not unseen.any():
            return self
        rows = unseen.copy()
        if self.control_col in X.columns:
            rows &= self._controls(X)
        new_sites = sorted(set(labels[unseen]))
        without = [s for s in new_sites if not (rows & (labels == s)).any()]
        if without:
            raise HarmonizationError(
                f"ComBat.adapt: new site(s) {_listed(without)} have no control scan (rows with "
                f"{self.control_col!r} true); adapting a site needs at least one of its "
                "controls, ideally ten or more."
            )
        subset = X.iloc[np.flatnonzero(rows)]
        _, _, z = self._standardised(subset, features)
        z[:, ~self.usable_] = 0.0
        missing_mask = np.isnan(z)
        sites, codes = np.unique(labels[rows], return_inverse=True)
        moments = batch_moments(
            z, codes.ravel(), sites.size, missing_mask if missing_mask.any() else None
        )
        usable = self.usable_
        priors = new_batch_hyperpriors(
            BatchMoments(moments.n[:, usable], moments.mean[:, usable], moments.ss[:, usable]),
            SitePopulation(**self.new_batch_prior_),
        )
        gamma_star, delta_star, _ = _posterior(
            moments, priors, self.usable_, eb=bool(self.eb), parametric=True
        )
        gamma_hat = np.where(moments.n >= 1, moments.mean, np.nan)
        delta_hat = moments.delta_hat
        for k, site in enumerate(sites):
            self.adapted_[str(site)] = {
                "n": int((codes == k).sum()),
                "gamma_hat": gamma_hat[k],
                "delta_hat": delta_hat[k],
                "gamma_star": gamma_star[k],
                "delta_star": delta_star[k],
                "gamma_bar": float(priors.gamma_bar[k]),
                "tau2": float(priors.tau2[k]),
                "a": float(priors.a[k]),
                "b": float(priors.b[k]),
            }
        return self

    def _controls(self, X: pd.DataFrame) -> NDArray[np.bool_]:
        column = X[self.control_col]
        if column.dtype == bool:
            return column.to_numpy(dtype=bool)
        valid = column.isin([True, False, 0, 1]) & column.notna()
        if not valid.all():
            raise HarmonizationError(
                f"ComBat.adapt: control column {self.control_col!r} must hold true/false or "
                f"1/0; {int((~valid).sum())} rows hold something else (e.g. "
                f"{column[~valid].iloc[0]!r})."
            )
        return column.astype(float).to_numpy() == 1.0

    # ------------------------------------------------------------------ diagnostics
    def get_feature_names_out(self, input_features: Any = None) -> NDArray[np.object_]:
        """Output columns: the non-meta columns seen in :meth:`fit`, in order."""
        check_is_fitted(self)
        return np.asarray([str(c) for c in self.output_columns_], dtype=object)

    @property
    def site_effects_(self) -> pd.DataFrame:
        """Site effects per site and feature, one row each (long format, for diagnostics).

        Columns: ``batch``, ``feature``, ``n`` (non-missing values), ``gamma_hat``,
        ``gamma_star`` (additive, in units of ``sigma_``), ``delta2_hat``, ``delta2_star``
        (multiplicative, as variances), ``source`` (``"fit"`` or ``"adapt"``).
        """
        check_is_fitted(self)
        names = [str(b) for b in self.batches_]
        blocks = {
            "n": [self.batch_counts_],
            "gamma_hat": [self.gamma_hat_],
            "gamma_star": [self.gamma_star_],
            "delta2_hat": [self.delta_hat_],
            "delta2_star": [self.delta_star_],
        }
        sources = ["fit"] * len(names)
        for site, adapted in self.adapted_.items():
            names.append(site)
            sources.append("adapt")
            blocks["n"].append(np.full((1, len(self.features_)), adapted["n"]))
            blocks["gamma_hat"].append(adapted["gamma_hat"][None, :])
            blocks["gamma_star"].append(adapted["gamma_star"][None, :])
            blocks["delta2_hat"].append(adapted["delta_hat"][None, :])
            blocks["delta2_star"].append(adapted["delta_star"][None, :])
        n_features = len(self.features_)
        frame = pd.DataFrame(
            {
                "batch": np.repeat(names, n_features),
                "feature": np.tile(np.asarray(self.features_, dtype=object), len(names)),
                **{key: np.vstack(parts).ravel() for key, parts in blocks.items()},
                "source": np.repeat(sources, n_features),
            }
        )
        return frame

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


@dataclass
class _Pooled:
    """Step 1-2 of ComBat's fit: OLS per feature, grand means and pooled scales."""

    coef: Array  # (n_batches + n_covariate_columns, n_features)
    sum_r2: Array  # per site and feature: sum of squared residuals
    counts: Array  # per site and feature: non-missing values
    alpha: Array
    sigma: Array
    usable: NDArray[np.bool_]

    @property
    def beta(self) -> Array:
        return self.coef[self.counts.shape[0] :]

    def standardised_moments(self) -> BatchMoments:
        """Per-site mean and centred sum of squares of z = (y - alpha - x'beta) / sigma.

        The site indicators make the OLS residuals sum to zero within each site, so the site
        mean of z is (site intercept - alpha) / sigma and its centred sum of squares is the
        residual sum of squares / sigma^2: the moments of the standardised data without
        forming it (an n x p array less).
        """
        n_batches, usable, counts = self.counts.shape[0], self.usable, self.counts
        safe = np.where(usable, self.sigma, 1.0)
        gamma_hat = np.where(counts > 0, (self.coef[:n_batches] - self.alpha) / safe, 0.0)
        ss = np.where(counts >= 2, self.sum_r2 / safe**2, 0.0)
        gamma_hat[:, ~usable], ss[:, ~usable] = 0.0, 0.0
        return BatchMoments(n=counts, mean=gamma_hat, ss=ss)


def _pooled_fit(
    onehot: Array, cov: Array, values: Array, missing: NDArray[np.bool_] | None,
    ref: int | None,
) -> _Pooled:  # fmt: skip
    """OLS on [site indicators, covariates]; grand mean and pooled SD of every feature.

    The grand mean is the batch-size-weighted mean of the site intercepts (the reference
    site's intercept when ``ref`` is set), the pooled variance the mean squared residual
    (reference-site rows only when set). Features without residual variance are marked
    unusable, with sigma 0.
    """
    n_batches = onehot.shape[1]
    coef = _least_squares(onehot, cov, values, missing)
    resid2 = np.hstack([onehot, cov]) @ coef
    np.subtract(values, resid2, out=resid2)
    if missing is not None:
        resid2[missing] = 0.0
    np.square(resid2, out=resid2)
    sum_r2 = onehot.T @ resid2
    del resid2
    if missing is None:
        counts = np.repeat(onehot.sum(axis=0)[:, None], values.shape[1], axis=1)
    else:
        counts = onehot.T @ (~missing).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        if ref is None:
            total = counts.sum(axis=0)
            alpha = (counts * coef[:n_batches]).sum(axis=0) / total
            sigma = np.sqrt(sum_r2.sum(axis=0) / total)
        else:
            alpha = coef[ref].copy()
            sigma = np.sqrt(sum_r2[ref] / counts[ref])
    scale = _max_abs(values, missing)
    with np.errstate(invalid="ignore"):
        usable = (sigma > _CONSTANT_RTOL * scale) & (scale > 0)
    sigma = np.where(usable, sigma, 0.0)
    alpha = np.where(np.isfinite(alpha), alpha, 0.0)
    return _Pooled(coef, sum_r2, counts, alpha, sigma, usable)


def _posterior(
    moments: BatchMoments, priors: Hyperpriors, usable: NDArray[np.bool_], *, eb: bool,
    parametric: bool,
) -> tuple[Array, Array, int]:  # fmt: skip
    """gamma*, delta*^2 of the usable features; 0 and 1 (no change) for the others.

    Only the usable features enter, so features passed through cannot change the others'
    estimates, not even through the stopping rule of the iteration.
    """
    gamma = np.zeros(moments.n.shape)
    delta = np.ones(moments.n.shape)
    sub = BatchMoments(moments.n[:, usable], moments.mean[:, usable], moments.ss[:, usable])
    n_iter = 0
    if not eb:
        delta_hat = sub.delta_hat
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(delta_hat) & (delta_hat > 0)
        g = np.where(sub.n >= 1, sub.mean, priors.gamma_bar[:, None])
        d = np.where(ok, delta_hat, priors.delta_mean[:, None])
    elif parametric:
        g, d, n_iter = parametric_posterior(sub, priors)
    else:
        g, d = nonparametric_posterior(sub, np.ones(sub.n.shape[1], dtype=bool), priors)
    gamma[:, usable], delta[:, usable] = g, d
    return gamma, delta, n_iter


def _least_squares(
    onehot: Array, cov: Array, values: Array, missing: NDArray[np.bool_] | None
) -> Array:
    """OLS coefficients of every feature on [site indicators, covariates], ignoring NaN.

    Features without missing values share one SVD of the design. Features with missing
    values each have their own rows, so they are solved through their normal equations,
    assembled for all of them at once (a loop of per-feature solves would take minutes when
    values are missing at random across 1,000 features).
    """
    design = np.hstack([onehot, cov])
    if missing is None:
        return _solve(design, values)
    coef = np.empty((design.shape[1], values.shape[1]))
    incomplete = missing.any(axis=0)
    if not incomplete.all():
        coef[:, ~incomplete] = _solve(design, values[:, ~incomplete])
    coef[:, incomplete] = _normal_equations(
        onehot, cov, values[:, incomplete], missing[:, incomplete]
    )
    return coef


def _normal_equations(
    onehot: Array, cov: Array, values: Array, missing: NDArray[np.bool_]
) -> Array:
    k = onehot.shape[1]
    # covariates centred and orthonormalised over all rows: the per-feature Gram matrices
    # are then close to diagonal, so squaring the condition number costs no accuracy
    centre = cov.mean(axis=0)
    q, r = np.linalg.qr(cov - centre)
    n_cov = q.shape[1]
    weights = (~missing).astype(float)
    y0 = np.where(missing, 0.0, values)
    p = values.shape[1]
    gram = np.zeros((p, k + n_cov, k + n_cov))
    rhs = np.empty((p, k + n_cov))
    counts = onehot.T @ weights
    gram[:, np.arange(k), np.arange(k)] = counts.T
    rhs[:, :k] = (onehot.T @ y0).T
    if n_cov:
        codes = onehot.argmax(axis=1)
        for b in range(k):
            rows = np.flatnonzero(codes == b)
            cross = q[rows].T @ weights[rows]  # (n_cov, p): sum of covariates over present rows
            gram[:, b, k:] = cross.T
            gram[:, k:, b] = cross.T
        for i in range(n_cov):
            for j in range(i, n_cov):
                block = (q[:, i] * q[:, j]) @ weights
                gram[:, k + i, k + j] = block
                gram[:, k + j, k + i] = block
        rhs[:, k:] = (q.T @ y0).T
    # minimum-norm solutions (a site without any value of a feature gets coefficient 0)
    solved = (np.linalg.pinv(gram) @ rhs[:, :, None])[:, :, 0].T
    beta = np.linalg.solve(r, solved[k:]) if n_cov else solved[k:]
    intercepts = solved[:k] - centre @ beta
    return np.vstack([intercepts, beta])


def _solve(design: Array, values: Array) -> Array:
    # minimum-norm least squares through one SVD of the (small) design; for many features
    # this is several times faster than lstsq, whose cost grows with every right-hand side
    u, s, vt = np.linalg.svd(design, full_matrices=False)
    keep = s > s[0] * max(design.shape) * np.finfo(float).eps
    return vt[keep].T @ ((u[:, keep].T @ values) / s[keep, None])


def _max_abs(values: Array, missing: NDArray[np.bool_] | None) -> Array:
    if missing is None:
        return np.maximum(values.max(axis=0), -values.min(axis=0))
    return np.where(missing, 0.0, np.abs(values)).max(axis=0)


def _check_rank(design: Array, n_batches: int, names: list[str], spline_df: int) -> None:
    """Refuse covariates that the batch indicators (and earlier covariates) already span."""
    if np.linalg.matrix_rank(design) == design.shape[1]:
        return
    for j in range(n_batches, design.shape[1]):
        if np.linalg.matrix_rank(design[:, : j + 1]) <= j:
            name = names[j - n_batches]
            spline = "[ns" in name
            raise HarmonizationError(
                f"ComBat cannot separate covariate {name.split('[')[0]!r} from the sites: in the "
                "training data it is a linear combination of the site indicators and the "
                "covariates before it (e.g. each site holds a single sex), so site and covariate "
                "effects are confounded. "
                + (
                    f"Lower the spline degrees of freedom (harmonize.age_spline_df, now "
                    f"{spline_df}) or remove the covariate."
                    if spline
                    else "Remove it from harmonize.covariates."
                )
            )
