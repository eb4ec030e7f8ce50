r"""Empirical-Bayes estimation of ComBat's site effects (Johnson, Li & Rabinovic 2007).

Every function works on ``(n_batches, n_features)`` arrays at once, so the cost does not grow
with a Python loop over features. Notation of the paper (section 3), on standardised data
:math:`Z_{ijg}` (batch :math:`i`, scan :math:`j`, feature :math:`g`):

* :math:`\hat\gamma_{ig}` = batch mean of :math:`Z`, :math:`\hat\delta^2_{ig}` = batch
  sample variance (denominator :math:`n_{ig} - 1`);
* priors :math:`\gamma_{ig} \sim N(\bar\gamma_i, \bar\tau^2_i)` and
  :math:`\delta^2_{ig} \sim \text{Inverse-Gamma}(\lambda_i, \theta_i)` with hyperparameters
  from the method of moments over the features of batch :math:`i`;
* posterior means (parametric, section 3.1), iterated to a fixed point:

  .. math::

      \gamma^*_{ig} = \frac{n_{ig}\bar\tau^2_i\hat\gamma_{ig} + \delta^{2*}_{ig}\bar\gamma_i}
                           {n_{ig}\bar\tau^2_i + \delta^{2*}_{ig}}, \qquad
      \delta^{2*}_{ig} = \frac{\theta_i + \tfrac12\sum_j (Z_{ijg} - \gamma^*_{ig})^2}
                              {n_{ig}/2 + \lambda_i - 1};

* or the non-parametric posterior (section 3.2): the expectations over the empirical
  distribution of the other features' :math:`(\hat\gamma, \hat\delta^2)`, weighted by the
  likelihood of feature :math:`g`'s data.

Sums over scans are carried as sufficient statistics: with :math:`SS_{ig}` the sum of squares
about :math:`\hat\gamma_{ig}`, :math:`\sum_j (Z_{ijg} - \gamma)^2 = SS_{ig} + n_{ig}
(\hat\gamma_{ig} - \gamma)^2` exactly, which is what makes the vectorisation possible.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sklearn.exceptions import ConvergenceWarning

__all__ = [
    "BatchMoments",
    "Hyperpriors",
    "SitePopulation",
    "batch_moments",
    "hyperpriors",
    "new_batch_hyperpriors",
    "nonparametric_posterior",
    "parametric_posterior",
    "site_population",
]

Array = NDArray[np.float64]

#: relative change at which the parametric iteration stops (the value of the sva package)
_CONV = 1e-4
_MAX_ITER = 1000
#: target features per block of the non-parametric estimator (bounds its memory)
_BLOCK = 512


@dataclass(frozen=True)
class BatchMoments:
    """Per batch and feature: number of values, mean and sum of squares about the mean."""

    n: Array  # (K, p) float counts
    mean: Array  # (K, p), 0 where n == 0
    ss: Array  # (K, p), 0 where n <= 1

    @property
    def delta_hat(self) -> Array:
        """Sample variance (denominator ``n - 1``), NaN where ``n < 2``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.n >= 2, self.ss / (self.n - 1.0), np.nan)


@dataclass(frozen=True)
class Hyperpriors:
    """Per-batch prior hyperparameters (shape ``(K,)`` each)."""

    gamma_bar: Array
    tau2: Array
    a: Array
    b: Array

    @property
    def delta_mean(self) -> Array:
        r"""Prior mean of :math:`\delta^2`, ``b / (a - 1)``."""
        return self.b / (self.a - 1.0)


def batch_moments(
    z: Array, codes: NDArray[np.intp], n_batches: int, missing: NDArray[np.bool_] | None
) -> BatchMoments:
    """Counts, means and centred sums of squares of ``z`` per batch, ignoring NaN.

    Parameters
    ----------
    z : ndarray of shape (n, p)
        Standardised data; NaN where ``missing``.
    codes : ndarray of shape (n,)
        Batch index of each row, ``0 .. n_batches - 1``.
    n_batches : int
    missing : ndarray of bool, shape (n, p), or None
        Missing-value mask; ``None`` when there is none (the fast path).
    """
    onehot = np.zeros((codes.size, n_batches))
    onehot[np.arange(codes.size), codes] = 1.0
    if missing is None:
        n = np.repeat(onehot.sum(axis=0)[:, None], z.shape[1], axis=1)
        sums = onehot.T @ z
    else:
        n = onehot.T @ (~missing).astype(float)
        sums = onehot.T @ np.where(missing, 0.0, z)
    mean = np.divide(sums, n, out=np.zeros_like(sums), where=n > 0)
    centred = z - mean[codes]
    if missing is not None:
        centred[missing] = 0.0
    ss = onehot.T @ (centred * centred)
    return BatchMoments(n=n, mean=mean, ss=np.where(n >= 2, ss, 0.0))


def _method_of_moments(values: Array) -> tuple[float, float]:
    # inverse gamma with the sample mean m and variance s2 of ``values``:
    # a = (2 s2 + m^2) / s2, b = (m s2 + m^3) / s2 (the sva package's aprior / bprior)
    m = float(np.mean(values))
    s2 = float(np.var(values, ddof=1))
    # identical values (a degenerate, infinitely sure prior): keep a finite, very sure prior
    s2 = max(s2, 1e-12 * m * m)
    return (2.0 * s2 + m * m) / s2, (m * s2 + m**3) / s2


def hyperpriors(moments: BatchMoments, usable: NDArray[np.bool_]) -> tuple[Hyperpriors, float]:
    r"""Method-of-moments hyperparameters per batch, over the usable features.

    Location priors use cells with at least one value, scale priors cells with at least two
    values and a positive sample variance. A batch with too few such cells (a site with a
    single scan has no sample variance at all) takes the pooled values of all batches.

    Parameters
    ----------
    moments : BatchMoments
    usable : ndarray of bool, shape (p,)
        Features with residual variance (constant features are left out).

    Returns
    -------
    priors : Hyperpriors
    pooled_delta_mean : float
        Prior mean of :math:`\delta^2` pooled over all batches.

    Raises
    ------
    ValueError
        When no batch has two values of any usable feature (then nothing tells the scale).
    """
    gamma = moments.mean
    delta = moments.delta_hat
    loc_ok = (moments.n >= 1) & usable[None, :]
    with np.errstate(invalid="ignore"):
        scale_ok = (moments.n >= 2) & usable[None, :] & np.isfinite(delta) & (delta > 0)
    if scale_ok.sum() < 2:
        raise ValueError("no batch has two scans with a varying value of any feature")
    pooled_g = gamma[loc_ok]
    pooled_gamma_bar = float(pooled_g.mean())
    pooled_tau2 = float(pooled_g.var(ddof=1)) if pooled_g.size > 1 else 0.0
    pooled_a, pooled_b = _method_of_moments(delta[scale_ok])
    n_batches = gamma.shape[0]
    gamma_bar, tau2 = np.empty(n_batches), np.empty(n_batches)
    a, b = np.empty(n_batches), np.empty(n_batches)
    for i in range(n_batches):
        g = gamma[i, loc_ok[i]]
        if g.size >= 2:
            gamma_bar[i], tau2[i] = g.mean(), g.var(ddof=1)
        else:
            gamma_bar[i], tau2[i] = pooled_gamma_bar, pooled_tau2
        d = delta[i, scale_ok[i]]
        if d.size >= 2:
            a[i], b[i] = _method_of_moments(d)
        else:
            a[i], b[i] = pooled_a, pooled_b
    return Hyperpriors(gamma_bar, tau2, a, b), pooled_b / (pooled_a - 1.0)


@dataclass(frozen=True)
class SitePopulation:
    r"""How the training sites' hyperparameters vary: the prior of a new site's ones.

    ``gamma_bar`` and ``gamma_bar_var``: mean and variance over sites of
    :math:`\bar\gamma_i`; ``tau2``: mean of :math:`\bar\tau^2_i`; ``delta_mean`` and
    ``delta_mean_var``: mean and variance over sites of the prior mean
    :math:`b_i / (a_i - 1)` of :math:`\delta^2`; ``a``: mean of the shapes :math:`a_i`.
    """

    gamma_bar: float
    gamma_bar_var: float
    tau2: float
    delta_mean: float
    delta_mean_var: float
    a: float


def site_population(priors: Hyperpriors, reference: int | None = None) -> SitePopulation:
    r"""Summarise the training sites' hyperparameters (see :func:`new_batch_hyperpriors`).

    The reference site (when there is one) is left out: the data are standardised by its own
    mean and scale, so its hyperparameters are degenerate (every :math:`\hat\gamma` is 0 and
    every :math:`\hat\delta^2` the same), not a draw from the population of sites. The shape
    ``a`` is averaged through the prior's relative variance :math:`1 / (a - 2)`, so one site
    with an almost exact prior (huge ``a``) does not dominate. With fewer than two sites to
    learn from, the between-site variances are left effectively unbounded (the new site's
    own data decide).
    """
    keep = np.ones(priors.a.size, dtype=bool)
    if reference is not None:
        keep[reference] = False
    m = priors.delta_mean[keep]
    g = priors.gamma_bar[keep]
    big_m = float(m.mean())
    unbounded = 1e12
    return SitePopulation(
        gamma_bar=float(g.mean()),
        gamma_bar_var=max(float(g.var(ddof=1)), 1e-12) if g.size > 1 else unbounded,
        tau2=float(priors.tau2[keep].mean()),
        delta_mean=big_m,
        delta_mean_var=(
            max(float(m.var(ddof=1)), 1e-12 * big_m * big_m) if m.size > 1 else unbounded
        ),
        a=2.0 + 1.0 / float(np.mean(1.0 / (priors.a[keep] - 2.0))),
    )


def new_batch_hyperpriors(
    moments: BatchMoments, population: SitePopulation, *, n_rounds: int = 5
) -> Hyperpriors:
    r"""Hyperparameters of batches not seen in fit, from their few scans and the training sites.

    Johnson's model gives every site its own :math:`\bar\gamma_i` (the offset its features
    share) and its own inverse-gamma prior of :math:`\delta^2`. For a new site these are
    estimated from its data, shrunk toward the training sites' values (a second level of the
    same empirical Bayes): the within-site spreads :math:`\bar\tau^2` and the shape
    :math:`a` are the training sites' means, and

    .. math::

        m_i = \frac{M / V_m + \sum_g \hat\delta^2_{ig} / v_{ig}}{1 / V_m + \sum_g 1 / v_{ig}},
        \qquad
        \bar\gamma_i = \frac{G / V_G + \sum_g \hat\gamma_{ig} / (\bar\tau^2 + m_i / n_{ig})}
                              {1 / V_G + \sum_g 1 / (\bar\tau^2 + m_i / n_{ig})},

    with :math:`G, V_G` and :math:`M, V_m` the mean and variance over training sites of
    :math:`\bar\gamma` and of the prior mean of :math:`\delta^2`, and
    :math:`v_{ig} = m_i^2 / (a - 2) + 2 m_i^2 (a - 1) / ((a - 2)(n_{ig} - 1))` the variance of
    a sample variance with :math:`n_{ig} - 1` degrees of freedom under the prior. Then
    :math:`b_i = m_i (a - 1)`. With few scans the site's prior stays near the training
    sites'; with many it follows the site's own features, as Johnson's estimates do.
    """
    n, g_hat = moments.n, moments.mean
    d_hat = moments.delta_hat
    a = population.a
    n_batches = n.shape[0]
    gamma_bar, b = np.empty(n_batches), np.empty(n_batches)
    for i in range(n_batches):
        with np.errstate(invalid="ignore"):
            scale_ok = (n[i] >= 2) & np.isfinite(d_hat[i])
        m = population.delta_mean
        for _ in range(n_rounds):
            v = m * m / (a - 2.0) + 2.0 * m * m * (a - 1.0) / ((a - 2.0) * (n[i, scale_ok] - 1.0))
            m = (
                population.delta_mean / population.delta_mean_var + (d_hat[i, scale_ok] / v).sum()
            ) / (1.0 / population.delta_mean_var + (1.0 / v).sum())
        loc_ok = n[i] >= 1
        w = 1.0 / (population.tau2 + m / n[i, loc_ok])
        gamma_bar[i] = (
            population.gamma_bar / population.gamma_bar_var + (w * g_hat[i, loc_ok]).sum()
        ) / (1.0 / population.gamma_bar_var + w.sum())
        b[i] = m * (a - 1.0)
    return Hyperpriors(gamma_bar, np.full(n_batches, population.tau2), np.full(n_batches, a), b)


def parametric_posterior(moments: BatchMoments, priors: Hyperpriors) -> tuple[Array, Array, int]:
    r"""Posterior means of the parametric model, iterated to Johnson's fixed point.

    Cells with fewer than two values keep :math:`\delta^{2*}` at the prior mean (one value
    carries no information on spread; see :class:`~morphml.harmonize.ComBat`), and their
    :math:`\gamma^*` is the posterior mean given that scale; cells with no value get the
    prior means.

    Returns
    -------
    gamma_star, delta_star : ndarray of shape (K, p)
    n_iter : int
    """
    n, g_hat = moments.n, moments.mean
    g_bar, t2 = priors.gamma_bar[:, None], priors.tau2[:, None]
    a, b = priors.a[:, None], priors.b[:, None]
    prior_mean = np.broadcast_to(b / (a - 1.0), n.shape)
    fixed = n < 2
    d_hat = moments.delta_hat
    with np.errstate(invalid="ignore"):
        start_ok = ~fixed & np.isfinite(d_hat) & (d_hat > 0)
    g_old = np.where(n > 0, g_hat, g_bar)
    d_old = np.where(start_ok, d_hat, prior_mean)
    tiny = np.finfo(float).tiny
    n_iter = 0
    for n_iter in range(1, _MAX_ITER + 1):  # noqa: B007 (n_iter is returned)
        g_new = (t2 * n * g_hat + d_old * g_bar) / (t2 * n + d_old)
        sum2 = moments.ss + n * (g_hat - g_new) ** 2
        d_new = np.where(fixed, prior_mean, (0.5 * sum2 + b) / (0.5 * n + a - 1.0))
        change = max(
            float(np.max(np.abs(g_new - g_old) / np.maximum(np.abs(g_old), tiny))),
            float(np.max(np.abs(d_new - d_old) / d_old)),
        )
        g_old, d_old = g_new, d_new
        if change < _CONV:
            break
    else:
        warnings.warn(
            f"ComBat's empirical-Bayes iteration did not converge in {_MAX_ITER} iterations "
            f"(last relative change {change:.2g}); the estimates are used as they are.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return g_old, d_old, n_iter


def nonparametric_posterior(
    moments: BatchMoments, usable: NDArray[np.bool_], priors: Hyperpriors
) -> tuple[Array, Array]:
    r"""Posterior means under the empirical distribution of the other features' estimates.

    For feature :math:`g` of batch :math:`i`, every other usable feature :math:`g'` is a
    support point :math:`(\hat\gamma_{ig'}, \hat\delta^2_{ig'})` weighted by the Gaussian
    likelihood of :math:`g`'s values under it, and :math:`\gamma^*, \delta^{2*}` are the
    weighted means (Johnson et al. 2007, section 3.2). The weights are normalised in log
    space, so they do not underflow in large batches. Cells with fewer than two values keep
    :math:`\delta^{2*}` at the prior mean and weigh the support locations with that variance.
    """
    n, g_hat, ss = moments.n, moments.mean, moments.ss
    d_hat = moments.delta_hat
    prior_mean = priors.delta_mean
    n_batches, n_features = n.shape
    gamma_star = np.empty((n_batches, n_features))
    delta_star = np.empty((n_batches, n_features))
    log2pi = np.log(2.0 * np.pi)
    for i in range(n_batches):
        with np.errstate(invalid="ignore"):
            full = usable & (n[i] >= 2) & np.isfinite(d_hat[i]) & (d_hat[i] > 0)
        loc_only = usable & (n[i] >= 1)
        targets = np.flatnonzero(n[i] >= 2)
        few = np.flatnonzero(n[i] < 2)
        # features with two or more values: support points carry location and scale
        support = np.flatnonzero(full)
        gs, ds = g_hat[i, support], d_hat[i, support]
        for start in range(0, targets.size, _BLOCK):
            block = targets[start : start + _BLOCK]
            nb = n[i, block][:, None]
            sum2 = ss[i, block][:, None] + nb * (g_hat[i, block][:, None] - gs[None, :]) ** 2
            loglik = -0.5 * nb * (log2pi + np.log(ds)[None, :]) - sum2 / (2.0 * ds[None, :])
            loglik[block[:, None] == support[None, :]] = -np.inf
            weights = _softmax(loglik)
            supported = weights.sum(axis=1) > 0
            gamma_star[i, block] = np.where(supported, weights @ gs, priors.gamma_bar[i])
            delta_star[i, block] = np.where(supported, weights @ ds, prior_mean[i])
        # one value or none: the scale is the prior mean, the location is weighed with it
        if few.size:
            support = np.flatnonzero(loc_only)
            gs = g_hat[i, support]
            nb = n[i, few][:, None]
            loglik = -nb * (g_hat[i, few][:, None] - gs[None, :]) ** 2 / (2.0 * prior_mean[i])
            loglik[few[:, None] == support[None, :]] = -np.inf
            weights = _softmax(loglik)
            gamma_star[i, few] = np.where(
                weights.sum(axis=1) > 0, weights @ gs, priors.gamma_bar[i]
            )
            delta_star[i, few] = prior_mean[i]
    return gamma_star, delta_star


def _softmax(loglik: Array) -> Array:
    # rows without any support point (no other usable feature) get all-zero weights; the
    # caller replaces their estimates by the prior means
    if loglik.shape[1] == 0:
        return np.zeros_like(loglik)
    top = np.max(loglik, axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    weights = np.exp(loglik - top)
    total = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
