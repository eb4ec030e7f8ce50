"""The covariate basis and the warp of a reference model (braincharts' form).

Design row per scan: ``1, age, sex`` then one indicator per site the reference knows (all 0
for a site it does not), then the cubic B-spline of age on the stored knot vector. Prediction
never builds the full row: everything but the site indicator is shared by all sites ("common"
columns), so means and variances are computed from the common part plus one site column.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.interpolate import BSpline

__all__ = [
    "braincharts_knots",
    "common_design",
    "inverse_warp",
    "spline_basis",
    "warp",
]

Array = NDArray[np.float64]

#: the number of design columns before the site indicators (intercept, age, sex)
N_LEADING = 3


def braincharts_knots(low: float = -5.0, high: float = 110.0, n_knots: int = 5) -> Array:
    """The full knot vector braincharts uses: ``linspace(low, high, n_knots)``, ends tripled more.

    >>> braincharts_knots().tolist()[:5]
    [-5.0, -5.0, -5.0, -5.0, 23.75]
    """
    inner = np.linspace(low, high, n_knots)
    return np.concatenate([[low] * 3, inner, [high] * 3]).astype(np.float64)


def spline_basis(age: Array, knots: Array, degree: int = 3) -> Array:
    """B-spline basis of ``age`` (one column per basis function); ages must lie in the knots.

    At the right end point the last function is 1 (the basis is closed on both sides).
    """
    x = np.asarray(age, dtype=np.float64)
    t = np.asarray(knots, dtype=np.float64)
    n_basis = len(t) - degree - 1
    # clip the right end into the last non-empty interval so age == high is inside
    inside = np.clip(x, t[degree], np.nextafter(t[-degree - 1], -np.inf))
    design = BSpline.design_matrix(inside, t, degree, extrapolate=False)
    out = np.asarray(design.toarray(), dtype=np.float64)
    at_end = x >= t[-degree - 1]
    if at_end.any():
        out[at_end] = 0.0
        out[at_end, n_basis - 1] = 1.0
    return out


def common_design(age: Array, sex: Array, knots: Array, degree: int = 3) -> Array:
    """The columns every site shares: ``1, age, sex, spline(age)...`` (site columns left out)."""
    a = np.asarray(age, dtype=np.float64)
    s = np.asarray(sex, dtype=np.float64)
    return np.column_stack([np.ones_like(a), a, s, spline_basis(a, knots, degree)])


def warp(y: Array, epsilon: Array | float, delta: Array | float) -> Array:
    r"""Sinh-arcsinh warp :math:`f(y) = \sinh(\delta\,\mathrm{asinh}(y) + \epsilon\delta)`.

    ``epsilon`` and ``delta`` broadcast against ``y`` (one value per feature = per column).
    """
    return np.sinh(delta * np.arcsinh(y) + epsilon * delta)


def inverse_warp(x: Array, epsilon: Array | float, delta: Array | float) -> Array:
    r"""Inverse of :func:`warp`: :math:`y = \sinh((\mathrm{asinh}(x) - \epsilon\delta)/\delta)`."""
    return np.sinh((np.arcsinh(x) - epsilon * delta) / delta)
