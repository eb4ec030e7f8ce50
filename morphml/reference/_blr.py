r"""Fitting one (warped) Bayesian linear regression per feature by type-II maximum likelihood.

The model of the braincharts references (Fraza et al. 2021): weights :math:`w \sim N(0,
\alpha^{-1} I)`, warped responses :math:`f(y) = \Phi w + e`, :math:`e \sim N(0, \beta^{-1})`,
with the sinh-arcsinh warp :math:`f(y) = \sinh(\delta\,\mathrm{asinh}(y) + \epsilon\delta)` or
none. The hyperparameters maximise the log evidence (Bishop 2006, eq. 3.86) plus the log
Jacobian of the warp; the posterior of the weights is then :math:`N(m, A^{-1})` with
:math:`A = \alpha I + \beta \Phi^T\Phi`, :math:`m = \beta A^{-1}\Phi^T f(y)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize

from morphml.exceptions import ReferenceModelError
from morphml.reference._basis import warp

__all__ = ["BLRFit", "fit_blr"]

Array = NDArray[np.float64]

_LOG_2PI = float(np.log(2.0 * np.pi))
#: bounds of log(delta) and epsilon: wide enough for any morphometric measure, and they keep
#: sinh finite for raw values up to ~1e7 (eTIV in mm^3)
_LOG_DELTA = (-3.0, 1.5)
_EPSILON = (-5.0, 5.0)
_LOG_WINDOW = 60.0


@dataclass(frozen=True)
class BLRFit:
    """One feature's fitted model."""

    coef: Array
    cov: Array
    noise_var: float
    epsilon: float
    delta: float
    n: int
    converged: bool
    #: the minimised negative log evidence (with the warp's log Jacobian)
    nll: float


def _log_cosh(x: Array) -> Array:
    ax = np.abs(x)
    return ax + np.log1p(np.exp(-2.0 * ax)) - np.log(2.0)


def _posterior(
    gram: Array, phit: Array, log_beta: float, log_alpha: float
) -> tuple[Array, Array, float] | None:
    beta, alpha = np.exp(log_beta), np.exp(log_alpha)
    d = gram.shape[0]
    a = beta * gram + alpha * np.eye(d)
    try:
        chol = np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        return None
    m = beta * np.linalg.solve(chol.T, np.linalg.solve(chol, phit))
    return m, chol, float(np.sum(np.log(np.diag(chol))))


def _neg_log_evidence(theta: Array, phi: Array, gram: Array, y: Array, warped: bool) -> float:
    log_beta, log_alpha = float(theta[0]), float(theta[1])
    if warped:
        eps, delta = float(theta[2]), float(np.exp(theta[3]))
        inner = delta * np.arcsinh(y) + eps * delta
        t = np.sinh(inner)
        log_jac = float(np.sum(np.log(delta) + _log_cosh(inner) - 0.5 * np.log1p(y * y)))
    else:
        t, log_jac = y, 0.0
    phit = phi.T @ t
    post = _posterior(gram, phit, log_beta, log_alpha)
    if post is None or not np.all(np.isfinite(t)):
        return 1e300
    m, _, log_det_half = post
    n, d = phi.shape
    beta, alpha = np.exp(log_beta), np.exp(log_alpha)
    resid = t - phi @ m
    energy = 0.5 * beta * float(resid @ resid) + 0.5 * alpha * float(m @ m)
    log_z = 0.5 * d * log_alpha + 0.5 * n * log_beta - energy - log_det_half - 0.5 * n * _LOG_2PI
    value = -(log_z + log_jac)
    return value if np.isfinite(value) else 1e300


def fit_blr(phi: Array, y: Array, *, warped: bool) -> BLRFit:
    """Fit one feature: ``phi`` (n, d) design rows, ``y`` (n,) raw values, no NaN.

    Starts from least squares (``beta`` from the residual variance, ``alpha`` from the
    weights' size, the identity warp ``epsilon = 0, delta = 1``) and maximises the evidence
    with L-BFGS-B.
    """
    n, d = phi.shape
    gram = phi.T @ phi
    w_ols, *_ = np.linalg.lstsq(phi, y, rcond=None)
    resid = y - phi @ w_ols
    var = max(float(resid @ resid) / max(n - d, 1), 1e-12 * float(np.var(y)) + 1e-300)
    theta0 = [-np.log(var), np.log(d / max(float(w_ols @ w_ols), 1e-300))]
    # a wide window around least squares keeps exp() finite; the warp may rescale the
    # response by many orders of magnitude (raw eTIV is ~1e6 mm^3), so it is wide indeed
    bounds: list[tuple[float | None, float | None]] = [
        (theta0[0] - _LOG_WINDOW, theta0[0] + _LOG_WINDOW),
        (theta0[1] - _LOG_WINDOW, theta0[1] + _LOG_WINDOW),
    ]
    if warped:
        theta0 += [0.0, 0.0]
        bounds += [_EPSILON, _LOG_DELTA]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        result = minimize(
            _neg_log_evidence,
            np.asarray(theta0, dtype=np.float64),
            args=(phi, gram, y, warped),
            method="L-BFGS-B",
            bounds=bounds,
        )
    theta = result.x
    eps, delta = (float(theta[2]), float(np.exp(theta[3]))) if warped else (0.0, 1.0)
    t = warp(y, eps, delta) if warped else y
    converged = bool(result.success)
    post = _posterior(gram, phi.T @ t, float(theta[0]), float(theta[1]))
    if post is None:  # the optimum sits where A is numerically singular: keep the start,
        theta = np.asarray(theta0)  # reported as not converged
        eps, delta, t, converged = 0.0, 1.0, y, False
        post = _posterior(gram, phi.T @ t, float(theta[0]), float(theta[1]))
        if post is None:
            raise ReferenceModelError(
                "the design has no positive-definite posterior (too few scans for its columns)"
            )
    m, chol, _ = post
    inv_chol = np.linalg.solve(chol, np.eye(d))
    cov = inv_chol.T @ inv_chol
    return BLRFit(
        coef=m,
        cov=(cov + cov.T) / 2.0,
        noise_var=float(np.exp(-theta[0])),
        epsilon=eps,
        delta=delta,
        n=n,
        converged=converged,
        nll=float(result.fun),
    )
