r"""Natural cubic spline basis for ComBat's covariates (ComBat-GAM style age term).

Pomponio et al. (2020, NeuroImage 208:116450) replace ComBat's linear age term by a smooth
function of age. Here the smooth is a natural cubic spline (cubic between knots, linear beyond
the boundary knots, so scans older or younger than any training scan are extrapolated along a
straight line instead of a cubic), written in the truncated-power form of Hastie, Tibshirani &
Friedman (2009), *The Elements of Statistical Learning*, eqs. 5.4-5.5: with knots
:math:`\xi_1 < \dots < \xi_K`,

.. math::

    N_1(x) = x, \quad N_{k+1}(x) = d_k(x) - d_{K-1}(x), \quad
    d_k(x) = \frac{(x - \xi_k)_+^3 - (x - \xi_K)_+^3}{\xi_K - \xi_k},
    \quad k = 1, \dots, K - 2 .

``K = df + 1`` knots at the quantiles ``0, 1/df, ..., 1`` of the training values give ``df``
columns (no intercept: ComBat's batch indicators carry it); ``df = 1`` is the linear term.
Tied quantiles are merged, which gives fewer columns.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["natural_spline_basis", "natural_spline_knots"]


def natural_spline_knots(values: NDArray[np.float64], df: int) -> NDArray[np.float64]:
    """Knots at the quantiles ``0, 1/df, ..., 1`` of ``values`` (ties merged).

    Parameters
    ----------
    values : ndarray of shape (n,)
        Training values of the covariate (finite).
    df : int
        Degrees of freedom (number of basis columns when no quantiles tie), at least 1.

    Returns
    -------
    ndarray
        Increasing knots; the first and last are the boundary knots (minimum and maximum).

    Examples
    --------
    >>> import numpy as np
    >>> natural_spline_knots(np.arange(11.0), 2).tolist()
    [0.0, 5.0, 10.0]
    """
    quantiles = np.quantile(values, np.linspace(0.0, 1.0, df + 1))
    return np.unique(quantiles)


def natural_spline_basis(
    values: NDArray[np.float64], knots: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Evaluate the natural cubic spline basis with the given knots.

    Values are first mapped to ``[0, 1]`` by the boundary knots, which keeps the cubes of
    large covariates (ages up to 100, volumes) well scaled for least squares.

    Parameters
    ----------
    values : ndarray of shape (n,)
        Covariate values; values outside the boundary knots are extrapolated linearly.
    knots : ndarray of shape (K,)
        Increasing knots from :func:`natural_spline_knots`, ``K >= 2``.

    Returns
    -------
    ndarray of shape (n, K - 1)

    Examples
    --------
    >>> import numpy as np
    >>> natural_spline_basis(np.array([0.0, 5.0, 10.0]), np.array([0.0, 10.0])).ravel().tolist()
    [0.0, 0.5, 1.0]
    """
    lo, hi = float(knots[0]), float(knots[-1])
    u = (np.asarray(values, dtype=float) - lo) / (hi - lo)
    kappa = (knots - lo) / (hi - lo)
    n_knots = kappa.size
    columns = [u]
    if n_knots > 2:
        last = np.clip(u - kappa[-1], 0.0, None) ** 3

        def d(k: int) -> NDArray[np.float64]:
            return (np.clip(u - kappa[k], 0.0, None) ** 3 - last) / (kappa[-1] - kappa[k])

        d_last = d(n_knots - 2)
        columns += [d(k) - d_last for k in range(n_knots - 2)]
    return np.column_stack(columns)
