"""Comparing two models: corrected resampled t-test, paired bootstrap, permutation p-value.

The t distribution is computed here (regularised incomplete beta function by its continued
fraction, Numerical Recipes 3rd ed. section 6.4) so that the package needs no SciPy; the
tests check it against ``scipy.stats.t`` where SciPy is installed.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from morphml.evaluation._metrics import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    Kernel,
    RandomState,
    _binary,
    _bootstrap,
    _check_length,
    _check_options,
    _classification_kernel,
    _codes,
    _percentile_ci,
    _regression_kernel,
    _vector,
)

__all__ = ["corrected_resampled_ttest", "paired_bootstrap_delta", "permutation_p_value"]

_BETACF_MAX_ITER = 500
_BETACF_EPS = 1e-15
_TINY = 1e-300


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _BETACF_MAX_ITER + 1):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + aa / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _BETACF_EPS:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    # the continued fraction converges fast on this side of the mean; use symmetry otherwise
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    return _betainc(0.5 * df, 0.5, df / (df + t * t))


def _t_critical(coverage: float, df: float) -> float:
    """The t with P(|T| <= t) = coverage, by bisection on the monotone two-sided p."""
    alpha = 1.0 - coverage
    low, high = 0.0, 1.0
    while _t_two_sided_p(high, df) > alpha:
        low, high = high, 2.0 * high
    for _ in range(200):
        mid = 0.5 * (low + high)
        if _t_two_sided_p(mid, df) > alpha:
            low = mid
        else:
            high = mid
        if high - low <= 1e-14 * high:
            break
    return 0.5 * (low + high)


def corrected_resampled_ttest(
    diffs: npt.ArrayLike, n_train: int, n_test: int, ci: float = 0.95
) -> dict[str, float | list[float] | int]:
    """Nadeau & Bengio's corrected resampled t-test of a mean score difference.

    Cross-validation folds share training data, so their scores are correlated and the
    ordinary t-test is far too liberal. Nadeau & Bengio (2003) inflate the variance:
    ``var_corrected = var(diffs) * (1/J + n_test/n_train)`` with ``J`` splits; the statistic
    ``t = mean / sqrt(var_corrected)`` is referred to Student's t with ``J - 1`` degrees of
    freedom.

    Parameters
    ----------
    diffs : array-like of shape (J,)
        Per-split score differences (model B minus model A, on the same splits), J >= 2.
    n_train, n_test : int
        Training and test set sizes of one split (typical ones when they vary a little).
    ci : float, default 0.95
        Coverage of the confidence interval of the mean difference.

    Returns
    -------
    dict
        ``mean``, ``ci = [low, high]`` (``mean -+ t_crit * se``), ``t``, ``p`` (two-sided),
        ``df`` (J - 1), ``se`` (corrected standard error), ``n_splits``. When all differences
        are equal the test is undefined: ``t`` and ``p`` are nan and ``ci`` is
        ``[mean, mean]``.

    Examples
    --------
    >>> res = corrected_resampled_ttest([0.02, 0.03, 0.01, 0.04, 0.02], n_train=80, n_test=20)
    >>> res["df"], round(res["mean"], 3), 0.0 < res["p"] < 1.0
    (4, 0.024, True)
    """
    d = _vector("diffs", diffs)
    if len(d) < 2:
        raise ValueError(f"diffs needs at least 2 per-split differences; got {len(d)}")
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be an int >= 1 (scans in one split); got {value!r}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be a coverage strictly between 0 and 1, e.g. 0.95; got {ci!r}")
    n_splits = len(d)
    df = n_splits - 1
    mean = float(d.mean())
    # all-equal differences: tested exactly, since their computed variance may be 1e-35, not 0
    constant = bool(np.all(d == d[0]))
    var = 0.0 if constant else float(d.var(ddof=1))
    se = math.sqrt(var * (1.0 / n_splits + n_test / n_train))
    if constant:
        t = p = math.nan
        interval = [mean, mean]
    else:
        t = mean / se
        p = _t_two_sided_p(t, df)
        half = _t_critical(ci, df) * se
        interval = [mean - half, mean + half]
    return {
        "mean": mean,
        "ci": interval,
        "t": float(t),
        "p": float(p),
        "df": df,
        "se": se,
        "n_splits": n_splits,
    }


def paired_bootstrap_delta(
    y_true: npt.ArrayLike,
    pred_a: npt.ArrayLike,
    pred_b: npt.ArrayLike,
    metric: str,
    *,
    groups: npt.ArrayLike | None = None,
    threshold: float = 0.5,
    n_boot: int = 1000,
    random_state: RandomState = None,
    ci: float = 0.95,
) -> dict[str, float | list[float] | int | str]:
    """Difference ``metric(b) - metric(a)`` of two models' predictions on the same scans.

    Both models are scored on the *same* resampled scans (or groups) in every resample, so
    the interval reflects the paired design and is much narrower than comparing two separate
    intervals.

    Parameters
    ----------
    y_true : array-like of shape (n_scans,)
        Targets; 0/1 labels for a classification metric.
    pred_a, pred_b : array-like of shape (n_scans,)
        Predictions (probabilities for classification) of model A and model B.
    metric : str
        One of ``mae``, ``rmse``, ``r2``, ``r``, ``bias``, ``auc``, ``balanced_accuracy``,
        ``brier``, ``calibration_slope``, ``calibration_intercept``.
    groups : array-like of shape (n_scans,), optional
        Cluster labels (subjects): resample whole groups.
    threshold : float, default 0.5
        Decision threshold for ``balanced_accuracy``.
    n_boot, random_state, ci
        As in :func:`morphml.evaluation.regression_metrics`.

    Returns
    -------
    dict
        ``metric``, ``n``, ``a``, ``b``, ``delta`` (``b - a``), ``delta_ci = [low, high]``,
        ``n_boot_used`` (resamples where the delta is defined; for classification, those
        holding both classes). Mind the direction: for errors (``mae``, ``rmse``, ``brier``)
        a negative delta means B is better.

    Examples
    --------
    >>> y = [1.0, 2.0, 3.0, 4.0, 5.0]
    >>> res = paired_bootstrap_delta(y, [2.0, 2.0, 4.0, 4.0, 6.0], y, "mae", random_state=0)
    >>> res["a"], res["b"], res["delta"]
    (0.6, 0.0, -0.6)
    """
    _check_options(n_boot, ci)
    kernel_a: Kernel
    kernel_b: Kernel
    if metric in REGRESSION_METRICS:
        y = _vector("y_true", y_true)
        a = _vector("pred_a", pred_a, n=len(y))
        b = _vector("pred_b", pred_b, n=len(y))
        _check_length(len(y))
        kernel_a, kernel_b = _regression_kernel(y, a), _regression_kernel(y, b)
    elif metric in CLASSIFICATION_METRICS:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be strictly between 0 and 1; got {threshold!r}")
        y = _binary("y_true", y_true)
        a = _vector("pred_a", pred_a, n=len(y))
        b = _vector("pred_b", pred_b, n=len(y))
        _check_length(len(y))
        for name, values in (("pred_a", a), ("pred_b", b)):
            if ((values < 0.0) | (values > 1.0)).any():
                raise ValueError(f"{name} must hold probabilities in [0, 1] for {metric!r}")
        if y.sum() in (0.0, float(len(y))):
            raise ValueError(f"y_true holds a single class; {metric!r} needs both 0 and 1")
        kernel_a = _classification_kernel(y, a, threshold)
        kernel_b = _classification_kernel(y, b, threshold)
    else:
        known = ", ".join(REGRESSION_METRICS + CLASSIFICATION_METRICS)
        raise ValueError(f"metric must be one of {known}; got {metric!r}")
    codes, n_units = _codes(groups, len(y))

    def kernel(W: npt.NDArray[np.float64]) -> dict[str, npt.NDArray[np.float64]]:
        return {"a": kernel_a(W)[metric], "b": kernel_b(W)[metric]}

    point = kernel(np.ones((1, len(y))))
    value_a, value_b = float(point["a"][0]), float(point["b"][0])
    out: dict[str, float | list[float] | int | str] = {
        "metric": metric,
        "n": len(y),
        "a": value_a,
        "b": value_b,
        "delta": value_b - value_a,
    }
    if n_boot > 0:
        rng = np.random.default_rng(random_state)
        boot = _bootstrap(kernel, len(y), codes, n_units, n_boot, rng)
        delta = boot["b"] - boot["a"]
        out["delta_ci"] = _percentile_ci(delta, ci)
        out["n_boot_used"] = int(np.isfinite(delta).sum())
    return out


def permutation_p_value(
    observed: float, null: npt.ArrayLike, greater_is_better: bool = True
) -> float:
    """One-sided permutation p-value, ``(1 + #{null at least as good}) / (1 + n)``.

    Counting the observed value as one of the permutations (Phipson & Smyth 2010) keeps the
    p-value valid and never 0: it lies in ``[1 / (n + 1), 1]``.

    Parameters
    ----------
    observed : float
        The score of the real model.
    null : array-like of shape (n,)
        Scores of the same procedure on permuted labels.
    greater_is_better : bool, default True
        True for scores such as AUC or r2 (count ``null >= observed``); False for errors such
        as MAE (count ``null <= observed``).

    Returns
    -------
    float

    Examples
    --------
    >>> permutation_p_value(0.8, [0.5, 0.6, 0.85, 0.55])
    0.4
    >>> permutation_p_value(3.0, [5.0, 4.0, 6.0], greater_is_better=False)
    0.25
    """
    if not math.isfinite(float(observed)):
        raise ValueError(f"observed must be a finite score; got {observed!r}")
    values = _vector("null", null)
    if values.size == 0:
        raise ValueError("null is empty; pass the scores of the permutation runs")
    if greater_is_better:
        count = int(np.sum(values >= observed))
    else:
        count = int(np.sum(values <= observed))
    return (1.0 + count) / (1.0 + values.size)
