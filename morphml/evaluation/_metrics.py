"""Regression, brain-age and classification metrics with bootstrap confidence intervals.

Every metric is computed from a *weight matrix* ``W`` of shape ``(n_resamples, n_rows)``:
row ``b`` holds how many times each scan appears in bootstrap resample ``b``. The point
estimate is the same computation with one row of ones, so point estimate and bootstrap can
never disagree about a definition. The weights come from an index matrix (``n_units`` draws
with replacement per resample, counted with one ``bincount``); with ``groups`` the units are
groups (subjects), and every scan of a drawn group gets its group's count (cluster bootstrap).
Resamples are processed in chunks of about two million cells, so memory stays bounded and
1000 resamples of 10,000 scans take a fraction of a second.

Confidence intervals are percentile intervals over the resamples in which the metric is
defined. Everything returned is a plain Python ``int``, ``float`` or ``list`` (``json.dumps``
works without an encoder); a value is ``nan`` only where the metric is undefined, e.g. ``r``
or ``r2`` when predictions or targets are constant.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "brain_age_metrics",
    "classification_metrics",
    "per_group_metrics",
    "regression_metrics",
]

FloatArray: TypeAlias = npt.NDArray[np.float64]
Metrics: TypeAlias = dict[str, float | list[float] | int]
#: anything ``np.random.default_rng`` accepts
RandomState: TypeAlias = int | np.random.Generator | np.random.SeedSequence | None
#: a metric computed for every row of a weight matrix at once
Kernel: TypeAlias = Callable[[FloatArray], dict[str, FloatArray]]

REGRESSION_METRICS = ("mae", "rmse", "r2", "r", "bias")
CLASSIFICATION_METRICS = (
    "auc",
    "balanced_accuracy",
    "brier",
    "calibration_slope",
    "calibration_intercept",
)
#: cells of one chunk of the weight matrix (16 MB of float64)
_CHUNK_CELLS = 2_000_000
#: probabilities are clipped to [_P_CLIP, 1 - _P_CLIP] before taking logits
_P_CLIP = 1e-6
_NEWTON_MAX_ITER = 50
#: Newton converges quadratically: once a step is this small, the error left is about its square
_NEWTON_TOL = 1e-7
#: a variance below this fraction of the full sample's variance counts as zero (constant)
_VAR_RTOL = 1e-12


# --------------------------------------------------------------------------- input checks


def _vector(
    name: str, values: npt.ArrayLike, *, n: int | None = None, ref: str = "y_true"
) -> FloatArray:
    """``values`` as a finite 1-D float64 array, or a ValueError naming ``name``."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} must be numeric; could not convert it to floats ({exc})"
        ) from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per scan); got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise ValueError(
            f"{name} has {len(arr)} values but {ref} has {n}; they must be the same length "
            "(one value per scan)"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} contains {int(bad.sum())} NaN or infinite value(s) (first at position "
            f"{first}); drop or impute those scans before computing metrics"
        )
    return arr


def _binary(name: str, values: npt.ArrayLike) -> FloatArray:
    """``values`` as a float array of 0.0 and 1.0, or a ValueError naming ``name``."""
    arr = _vector(name, values)
    other = np.setdiff1d(np.unique(arr), [0.0, 1.0])
    if other.size:
        shown = ", ".join(f"{v:g}" for v in other[:5])
        raise ValueError(
            f"{name} must hold only 0 and 1 (negative and positive class); also found {shown}"
        )
    return arr


def _codes(groups: npt.ArrayLike | None, n: int, name: str = "groups") -> tuple[Any, int]:
    """Integer codes 0..k-1 for ``groups`` (or None for row resampling) and k."""
    if groups is None:
        return None, n
    arr = np.asarray(groups, dtype=object)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(
            f"{name} must be 1-D with one label per scan ({n}); got shape {arr.shape}"
        )
    codes, uniques = pd.factorize(arr)
    if (codes < 0).any():
        first = int(np.flatnonzero(codes < 0)[0])
        raise ValueError(
            f"{name} has {int((codes < 0).sum())} missing label(s) (first at position {first}); "
            "every scan needs a group"
        )
    return codes.astype(np.intp), len(uniques)


def _check_options(n_boot: int, ci: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 0:
        raise ValueError(f"n_boot must be an int >= 0 (0 skips the bootstrap); got {n_boot!r}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be a coverage strictly between 0 and 1, e.g. 0.95; got {ci!r}")


def _check_length(n: int, name: str = "y_true", minimum: int = 2) -> None:
    if n < minimum:
        raise ValueError(f"{name} has {n} value(s); metrics need at least {minimum} scans")


# --------------------------------------------------------------------------- bootstrap engine


def _resample_weights(rng: np.random.Generator, codes: Any, n_units: int, size: int) -> FloatArray:
    """``(size, n_rows)`` counts of each row in ``size`` bootstrap resamples."""
    idx = rng.integers(0, n_units, size=(size, n_units))
    idx += (np.arange(size) * n_units)[:, None]
    counts = np.bincount(idx.ravel(), minlength=size * n_units).reshape(size, n_units)
    if codes is not None:
        counts = counts[:, codes]
    return counts.astype(np.float64)


def _bootstrap(
    kernel: Kernel,
    n_rows: int,
    codes: Any,
    n_units: int,
    n_boot: int,
    rng: np.random.Generator,
) -> dict[str, FloatArray]:
    """The kernel's metrics on ``n_boot`` resamples, one array of length ``n_boot`` each."""
    chunk = max(1, min(n_boot, _CHUNK_CELLS // max(n_rows, n_units)))
    parts: list[dict[str, FloatArray]] = []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        parts.append(kernel(_resample_weights(rng, codes, n_units, size)))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _percentile_ci(values: FloatArray, ci: float) -> list[float]:
    """Percentile interval of the finite values; ``[nan, nan]`` when there are none."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [math.nan, math.nan]
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return [float(low), float(high)]


def _summarise(
    kernel: Kernel,
    names: tuple[str, ...],
    n_rows: int,
    codes: Any,
    n_units: int,
    n_boot: int,
    random_state: RandomState,
    ci: float,
) -> tuple[Metrics, dict[str, FloatArray]]:
    """Point estimates and ``<name>_ci`` for ``names``, plus the raw bootstrap arrays."""
    point = kernel(np.ones((1, n_rows)))
    out: Metrics = {}
    boot: dict[str, FloatArray] = {}
    if n_boot > 0:
        boot = _bootstrap(
            kernel, n_rows, codes, n_units, n_boot, np.random.default_rng(random_state)
        )
    for name in names:
        out[name] = float(point[name][0])
        if n_boot > 0:
            out[f"{name}_ci"] = _percentile_ci(boot[name], ci)
    return out, boot


# --------------------------------------------------------------------------- kernels


def _weighted_corr(W: FloatArray, sw: FloatArray, a: FloatArray, b: FloatArray) -> FloatArray:
    """Pearson r of ``a`` and ``b`` under each row of weights; nan where either is constant."""
    # centring on the full-sample means keeps E[x^2] - E[x]^2 accurate for values like ages
    a = a - a.mean()
    b = b - b.mean()
    ma, mb = (W @ a) / sw, (W @ b) / sw
    va = (W @ (a * a)) / sw - ma * ma
    vb = (W @ (b * b)) / sw - mb * mb
    cov = (W @ (a * b)) / sw - ma * mb
    ok = (va > _VAR_RTOL * np.mean(a * a)) & (vb > _VAR_RTOL * np.mean(b * b))
    r = np.full(len(sw), np.nan)
    r[ok] = np.clip(cov[ok] / np.sqrt(va[ok] * vb[ok]), -1.0, 1.0)
    return r


def _regression_kernel(y: FloatArray, p: FloatArray, suffix: str = "") -> Kernel:
    err = p - y
    abs_err = np.abs(err)
    sq_err = err * err
    yc = y - y.mean()
    y_tol = _VAR_RTOL * np.mean(yc * yc)

    def kernel(W: FloatArray) -> dict[str, FloatArray]:
        sw = W.sum(axis=1)
        mse = (W @ sq_err) / sw
        my = (W @ yc) / sw
        var_y = (W @ (yc * yc)) / sw - my * my
        r2 = np.full(len(sw), np.nan)
        ok = var_y > y_tol
        r2[ok] = 1.0 - mse[ok] / var_y[ok]
        return {
            f"mae{suffix}": (W @ abs_err) / sw,
            f"rmse{suffix}": np.sqrt(mse),
            f"r2{suffix}": r2,
            f"r{suffix}": _weighted_corr(W, sw, y, p),
            f"bias{suffix}": (W @ err) / sw,
        }

    return kernel


def _sigmoid(z: FloatArray) -> FloatArray:
    # tanh form never overflows, unlike 1 / (1 + exp(-z))
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _logistic_calibration(
    W: FloatArray,
    y: FloatArray,
    x: FloatArray,
    start: tuple[float, float, float] = (0.0, 1.0, 0.0),
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per weight row, ``(a, b)`` of ``logit P(y=1) = a + b x`` and the intercept of ``c + x``.

    Both by Newton's method on the weighted log-likelihood (concave, so Newton converges in a
    few steps), only on rows not yet converged, from ``start`` = (a, b, intercept). Rows that
    do not converge (separated data: the maximum-likelihood estimate is infinite) get nan.
    """
    n_res = W.shape[0]
    a = np.full(n_res, start[0])
    b = np.full(n_res, start[1])
    joint = np.full(n_res, np.nan)
    slope = np.full(n_res, np.nan)
    active = np.arange(n_res)
    with np.errstate(all="ignore"):
        for _ in range(_NEWTON_MAX_ITER):
            Wa = W[active]
            mu = _sigmoid(a[active, None] + b[active, None] * x)
            resid = Wa * (y - mu)
            g0, g1 = resid.sum(axis=1), resid @ x
            v = Wa * mu * (1.0 - mu)
            h00, h01, h11 = v.sum(axis=1), v @ x, v @ (x * x)
            det = h00 * h11 - h01 * h01
            step0 = (h11 * g0 - h01 * g1) / det
            step1 = (h00 * g1 - h01 * g0) / det
            a[active] += step0
            b[active] += step1
            bad = ~(np.isfinite(step0) & np.isfinite(step1))
            done = (np.abs(step0) + np.abs(step1)) < _NEWTON_TOL * (
                1.0 + np.abs(a[active]) + np.abs(b[active])
            )
            ok = active[done & ~bad]
            joint[ok], slope[ok] = a[ok], b[ok]
            active = active[~(done | bad)]
            if active.size == 0:
                break
        # intercept: calibration-in-the-large, logit P(y=1) = a + offset(x)
        a = np.full(n_res, start[2])
        intercept = np.full(n_res, np.nan)
        active = np.arange(n_res)
        for _ in range(_NEWTON_MAX_ITER):
            Wa = W[active]
            mu = _sigmoid(a[active, None] + x)
            g = (Wa * (y - mu)).sum(axis=1)
            h = (Wa * mu * (1.0 - mu)).sum(axis=1)
            step = g / h
            a[active] += step
            bad = ~np.isfinite(step)
            done = np.abs(step) < _NEWTON_TOL * (1.0 + np.abs(a[active]))
            intercept[active[done & ~bad]] = a[active[done & ~bad]]
            active = active[~(done | bad)]
            if active.size == 0:
                break
    return joint, slope, intercept


def _classification_kernel(y: FloatArray, p: FloatArray, threshold: float) -> Kernel:
    pos = np.flatnonzero(y == 1.0)
    neg = np.flatnonzero(y == 0.0)
    neg = neg[np.argsort(p[neg], kind="stable")]
    # AUC = P(score of a positive > score of a negative) + P(tie) / 2. For each positive, the
    # negatives scored below it are the first `lo` of the sorted negatives, those below or
    # tied the first `hi`; with cumulative negative weights C, its weighted count of wins
    # (ties half) is (C[lo] + C[hi]) / 2.
    lo = np.searchsorted(p[neg], p[pos], side="left")
    hi = np.searchsorted(p[neg], p[pos], side="right")
    ties = bool((lo != hi).any())
    sq_err = (p - y) ** 2
    hit_pos = y * (p >= threshold)
    hit_neg = (1.0 - y) * (p < threshold)
    clipped = np.clip(p, _P_CLIP, 1.0 - _P_CLIP)
    x = np.log(clipped) - np.log1p(-clipped)
    # the full-sample fit is where bootstrap fits start: they then need one or two steps
    full = [float(v[0]) for v in _logistic_calibration(np.ones((1, len(y))), y, x)]
    start = (full[0], full[1], full[2]) if np.isfinite(full).all() else (0.0, 1.0, 0.0)

    def kernel(W: FloatArray) -> dict[str, FloatArray]:
        sw = W.sum(axis=1)
        w_pos_rows = W[:, pos]
        w_pos = w_pos_rows.sum(axis=1)
        w_neg = sw - w_pos
        both = (w_pos > 0) & (w_neg > 0)
        cum_neg = np.zeros((W.shape[0], len(neg) + 1))
        np.cumsum(W[:, neg], axis=1, out=cum_neg[:, 1:])
        if ties:
            wins = 0.5 * (w_pos_rows * (cum_neg[:, lo] + cum_neg[:, hi])).sum(axis=1)
        else:
            wins = (w_pos_rows * cum_neg[:, lo]).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = wins / (w_pos * w_neg)
            bacc = 0.5 * ((W @ hit_pos) / w_pos + (W @ hit_neg) / w_neg)
        slope = np.full(len(sw), np.nan)
        intercept = np.full(len(sw), np.nan)
        if both.any():
            _, slope[both], intercept[both] = _logistic_calibration(W[both], y, x, start)
        out = {
            "auc": auc,
            "balanced_accuracy": bacc,
            "brier": (W @ sq_err) / sw,
            "calibration_slope": slope,
            "calibration_intercept": intercept,
        }
        for values in out.values():
            values[~both] = np.nan
        return out

    return kernel


# --------------------------------------------------------------------------- public API


def regression_metrics(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    *,
    groups: npt.ArrayLike | None = None,
    n_boot: int = 1000,
    random_state: RandomState = None,
    ci: float = 0.95,
) -> Metrics:
    """Error, fit and bias of continuous predictions, with bootstrap confidence intervals.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_scans,)
        Observed and predicted values; finite numbers.
    groups : array-like of shape (n_scans,), optional
        A label per scan, e.g. the subject id when people have several scans. The bootstrap
        then resamples whole groups (cluster bootstrap), so scans of one person stay together
        and the intervals are not too narrow. Without it, scans are resampled.
    n_boot : int, default 1000
        Number of bootstrap resamples; 0 skips the bootstrap and the ``_ci`` keys.
    random_state : int, numpy Generator or None
        Seed of the bootstrap; the same seed gives identical results.
    ci : float, default 0.95
        Coverage of the percentile intervals.

    Returns
    -------
    dict
        ``n`` (scans), ``n_groups`` (groups; ``n`` without ``groups``), ``mae``, ``rmse``,
        ``r2`` (``1 - SS_res / SS_tot``, may be negative), ``r`` (Pearson), ``bias`` (mean of
        ``y_pred - y_true``), and for each metric ``<name>_ci = [low, high]``. ``r`` and
        ``r2`` are nan when the targets (``r`` also: the predictions) are constant; their
        intervals then use only resamples where they are defined.

    Examples
    --------
    >>> m = regression_metrics([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 5.0], random_state=0)
    >>> m["n"], m["mae"], m["bias"]
    (4, 0.25, 0.25)
    >>> len(m["mae_ci"])
    2
    """
    _check_options(n_boot, ci)
    y = _vector("y_true", y_true)
    p = _vector("y_pred", y_pred, n=len(y))
    _check_length(len(y))
    codes, n_units = _codes(groups, len(y))
    out: Metrics = {"n": len(y), "n_groups": n_units}
    metrics, _ = _summarise(
        _regression_kernel(y, p),
        REGRESSION_METRICS,
        len(y),
        codes,
        n_units,
        n_boot,
        random_state,
        ci,
    )
    out.update(metrics)
    return out


def brain_age_metrics(
    age: npt.ArrayLike,
    predicted: npt.ArrayLike,
    corrected: npt.ArrayLike | None = None,
    *,
    groups: npt.ArrayLike | None = None,
    n_boot: int = 1000,
    random_state: RandomState = None,
    ci: float = 0.95,
) -> Metrics:
    """Brain-age accuracy before and after bias correction, and the gap's dependence on age.

    The brain-age gap (``predicted - age``) of a regression model correlates negatively with
    age (regression to the mean: the young are predicted older, the old younger), so a gap
    means little until this is corrected. ``gap_age_r`` measures that bias; after a good
    correction ``gap_age_r_corrected`` is near 0. All metrics share the same bootstrap
    resamples.

    Parameters
    ----------
    age : array-like of shape (n_scans,)
        Chronological age.
    predicted : array-like of shape (n_scans,)
        Predicted (brain) age, uncorrected.
    corrected : array-like of shape (n_scans,), optional
        Bias-corrected predictions. Without it, the ``*_corrected`` keys are absent.
    groups, n_boot, random_state, ci
        As in :func:`regression_metrics`.

    Returns
    -------
    dict
        The keys of :func:`regression_metrics` for ``predicted``; ``mae_corrected``,
        ``rmse_corrected``, ``r2_corrected``, ``r_corrected``, ``bias_corrected`` for
        ``corrected``; ``gap_age_r`` and ``gap_age_r_corrected`` (Pearson r of the gap with
        age; nan when the gap is constant). Each metric has ``<name>_ci``.

    Examples
    --------
    >>> age = [20.0, 30.0, 40.0, 50.0, 60.0]
    >>> pred = [28.0, 34.0, 40.0, 46.0, 52.0]  # shrunk towards the mean
    >>> m = brain_age_metrics(age, pred, n_boot=0)
    >>> round(m["mae"], 6), round(m["gap_age_r"], 6)
    (4.8, -1.0)
    """
    _check_options(n_boot, ci)
    y = _vector("age", age)
    p = _vector("predicted", predicted, n=len(y), ref="age")
    c = None if corrected is None else _vector("corrected", corrected, n=len(y), ref="age")
    _check_length(len(y), "age")
    codes, n_units = _codes(groups, len(y))
    base = _regression_kernel(y, p)
    after = None if c is None else _regression_kernel(y, c, suffix="_corrected")
    names = [*REGRESSION_METRICS, "gap_age_r"]
    if c is not None:
        names += [*(f"{m}_corrected" for m in REGRESSION_METRICS), "gap_age_r_corrected"]

    def kernel(W: FloatArray) -> dict[str, FloatArray]:
        sw = W.sum(axis=1)
        res = base(W)
        res["gap_age_r"] = _weighted_corr(W, sw, y, p - y)
        if after is not None and c is not None:
            res.update(after(W))
            res["gap_age_r_corrected"] = _weighted_corr(W, sw, y, c - y)
        return res

    out: Metrics = {"n": len(y), "n_groups": n_units}
    metrics, _ = _summarise(kernel, tuple(names), len(y), codes, n_units, n_boot, random_state, ci)
    out.update(metrics)
    return out


def classification_metrics(
    y_true: npt.ArrayLike,
    proba: npt.ArrayLike,
    *,
    groups: npt.ArrayLike | None = None,
    threshold: float = 0.5,
    n_boot: int = 1000,
    random_state: RandomState = None,
    ci: float = 0.95,
) -> Metrics:
    """Discrimination and calibration of predicted probabilities, with bootstrap intervals.

    Parameters
    ----------
    y_true : array-like of shape (n_scans,)
        0 (negative) or 1 (positive); both classes must occur.
    proba : array-like of shape (n_scans,)
        Predicted probability of the positive class, in [0, 1].
    groups : array-like of shape (n_scans,), optional
        Cluster labels for the bootstrap, as in :func:`regression_metrics`.
    threshold : float, default 0.5
        ``proba >= threshold`` counts as a positive prediction (balanced accuracy only).
    n_boot, random_state, ci
        As in :func:`regression_metrics`.

    Returns
    -------
    dict
        ``n``, ``n_groups``, ``n_pos``; ``auc`` (ties count half); ``balanced_accuracy`` (mean
        of sensitivity and specificity at ``threshold``); ``brier`` (mean squared error of
        ``proba``); ``calibration_slope``: ``b`` in ``logit P(y=1) = a + b logit(p)``, fitted
        by unpenalised maximum likelihood (Newton's method) with ``p`` clipped to
        ``[1e-6, 1 - 1e-6]``: 1 is ideal, below 1 means overconfident probabilities;
        ``calibration_intercept``: calibration-in-the-large, ``a`` in
        ``logit P(y=1) = a + logit(p)`` (slope fixed at 1; Van Calster et al. 2019), 0 is
        ideal, positive means risks are underestimated. Both calibration values are nan when
        the classes are separated by ``proba`` (the estimate is infinite).
        Each metric has ``<name>_ci``; ``n_boot_used`` counts the resamples they come from:
        resamples that hold only one class are skipped for every metric, since AUC,
        balanced accuracy and calibration are undefined there.

    Examples
    --------
    >>> m = classification_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], n_boot=0)
    >>> m["auc"], m["n_pos"]
    (0.75, 2)
    >>> round(m["brier"], 4)
    0.1581
    """
    _check_options(n_boot, ci)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be strictly between 0 and 1; got {threshold!r}")
    y = _binary("y_true", y_true)
    p = _vector("proba", proba, n=len(y))
    if ((p < 0.0) | (p > 1.0)).any():
        raise ValueError(
            f"proba must hold probabilities in [0, 1]; got values from {p.min():g} to "
            f"{p.max():g} (pass predict_proba(X)[:, 1], not decision scores)"
        )
    _check_length(len(y))
    n_pos = int(y.sum())
    if n_pos in (0, len(y)):
        raise ValueError(
            f"y_true holds a single class ({len(y)} x {int(y[0])}); AUC, balanced accuracy and "
            "calibration need both 0 and 1"
        )
    codes, n_units = _codes(groups, len(y))
    out: Metrics = {"n": len(y), "n_groups": n_units, "n_pos": n_pos}
    metrics, boot = _summarise(
        _classification_kernel(y, p, threshold),
        CLASSIFICATION_METRICS,
        len(y),
        codes,
        n_units,
        n_boot,
        random_state,
        ci,
    )
    out.update(metrics)
    if n_boot > 0:
        out["n_boot_used"] = int(np.isfinite(boot["auc"]).sum())
    return out


_KINDS: dict[str, Callable[..., Metrics]] = {
    "regression": regression_metrics,
    "brain_age": brain_age_metrics,
    "classification": classification_metrics,
}
#: keyword arguments holding one value per scan: subset with the scans of each group
_PER_SCAN_KW = ("groups", "corrected")


def per_group_metrics(
    kind: str,
    y_true: npt.ArrayLike,
    pred: npt.ArrayLike,
    by: npt.ArrayLike,
    *,
    min_size: int = 10,
    random_state: RandomState = None,
    **kw: Any,
) -> dict[str, dict[str, Any]]:
    """The metrics of ``kind`` computed separately within each level of ``by`` (site, sex ...).

    Parameters
    ----------
    kind : {"regression", "brain_age", "classification"}
        Which function computes the metrics: :func:`regression_metrics`,
        :func:`brain_age_metrics` (``y_true`` is age, ``pred`` the predicted age) or
        :func:`classification_metrics` (``pred`` is the probability).
    y_true, pred : array-like of shape (n_scans,)
        As for that function.
    by : array-like of shape (n_scans,)
        The label that splits the scans, e.g. site; no missing values.
    min_size : int, default 10
        Groups with fewer scans are reported as skipped, not computed.
    random_state : int, numpy Generator or None
        Seed; every group gets its own independent generator derived from it.
    **kw
        Passed on to the metric function. ``groups`` and ``corrected`` (one value per scan)
        are subset to each group's scans.

    Returns
    -------
    dict
        ``{str(label): metrics}`` sorted by label. A skipped group maps to
        ``{"n": k, "skipped": reason}``; for classification also groups holding a single
        class (with ``n_pos``).

    Examples
    --------
    >>> y = [0, 1] * 10 + [0] * 3
    >>> p = [0.2, 0.7] * 10 + [0.1] * 3
    >>> site = ["A"] * 20 + ["B"] * 3
    >>> res = per_group_metrics("classification", y, p, site, n_boot=0)
    >>> res["A"]["auc"], res["B"]
    (1.0, {'n': 3, 'skipped': 'fewer than 10 scans'})
    """
    if kind not in _KINDS:
        close = difflib.get_close_matches(str(kind), list(_KINDS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"kind must be one of {sorted(_KINDS)}; got {kind!r}{hint}")
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 2:
        raise ValueError(f"min_size must be an int >= 2; got {min_size!r}")
    y_arr = np.asarray(y_true)
    p_arr = np.asarray(pred)
    if y_arr.ndim != 1:
        raise ValueError(f"y_true must be 1-D (one value per scan); got shape {y_arr.shape}")
    if p_arr.shape != y_arr.shape:
        raise ValueError(
            f"pred has shape {p_arr.shape} but y_true has {y_arr.shape}; they must be the "
            "same length (one value per scan)"
        )
    codes, n_levels = _codes(by, len(y_arr), name="by")
    per_scan = {}
    for key in _PER_SCAN_KW:
        if kw.get(key) is not None:
            arr = np.asarray(kw.pop(key))
            if arr.shape != y_arr.shape:
                raise ValueError(
                    f"{key} has shape {arr.shape} but y_true has {y_arr.shape}; one value per "
                    "scan is needed"
                )
            per_scan[key] = arr
    keys = [str(label) for label in pd.factorize(np.asarray(by, dtype=object))[1]]
    if len(set(keys)) != len(keys):
        raise ValueError(f"by has labels that look the same as text: {sorted(keys)}")
    # checked here so that a bad label is reported before any group is skipped for it
    y_binary = _binary("y_true", y_arr) if kind == "classification" else None
    rngs = np.random.default_rng(random_state).spawn(n_levels)
    fn = _KINDS[kind]
    results: dict[str, dict[str, Any]] = {}
    for level in sorted(range(n_levels), key=lambda i: keys[i]):
        rows = np.flatnonzero(codes == level)
        entry: dict[str, Any] = {"n": len(rows)}
        if len(rows) < min_size:
            entry["skipped"] = f"fewer than {min_size} scans"
        elif y_binary is not None:
            n_pos = int(y_binary[rows].sum())
            if n_pos in (0, len(rows)):
                entry["n_pos"] = n_pos
                entry["skipped"] = f"only one class (n_pos={n_pos})"
        if "skipped" not in entry:
            extra = {key: arr[rows] for key, arr in per_scan.items()}
            entry = dict(fn(y_arr[rows], p_arr[rows], random_state=rngs[level], **extra, **kw))
        results[keys[level]] = entry
    return results
