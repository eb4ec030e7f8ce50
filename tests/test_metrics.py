"""Metrics, bootstrap intervals and model comparison in morphml.evaluation."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from morphml.evaluation import (
    brain_age_metrics,
    classification_metrics,
    corrected_resampled_ttest,
    paired_bootstrap_delta,
    per_group_metrics,
    permutation_p_value,
    regression_metrics,
)
from morphml.evaluation._compare import _t_critical, _t_two_sided_p


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1.0 - p))


def _assert_json_safe(value: Any) -> None:
    """Only builtin types all the way down (np.float64 would pass json.dumps, so check types)."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            _assert_json_safe(item)
    elif isinstance(value, list):
        for item in value:
            _assert_json_safe(item)
    else:
        assert type(value) in (int, float, str), f"{value!r} is a {type(value)}"


def _same(a: Any, b: Any) -> bool:
    """Equality that treats nan as equal to nan (json round trips keep nan)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return bool(a == b) and type(a) is type(b)


def _round_trips(result: dict[str, Any]) -> None:
    _assert_json_safe(result)
    assert _same(json.loads(json.dumps(result)), result)


def _width(interval: Any) -> float:
    return float(interval[1] - interval[0])


@pytest.fixture
def clf_data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Well-calibrated probabilities: p drawn, y ~ Bernoulli(p)."""
    p = rng.uniform(0.05, 0.95, 20_000)
    return (rng.random(p.size) < p).astype(int), p


# --------------------------------------------------------------------------- regression


def test_regression_known_values() -> None:
    # errors 0.5, 0, -0.5, 1; SS_tot = 5; centred y -1.5 -.5 .5 1.5, centred p -1.25 -.75 -.25 2.25
    m: dict[str, Any] = regression_metrics([1, 2, 3, 4], [1.5, 2, 2.5, 5], n_boot=0)
    assert m["n"] == 4 and m["n_groups"] == 4
    assert m["mae"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(math.sqrt(1.5 / 4))
    assert m["bias"] == pytest.approx(0.25)
    assert m["r2"] == pytest.approx(1 - 1.5 / 5)
    assert m["r"] == pytest.approx(5.5 / math.sqrt(5 * 7.25))
    assert not any(key.endswith("_ci") for key in m)


def test_regression_matches_scikit_learn(rng: np.random.Generator) -> None:
    skm = pytest.importorskip("sklearn.metrics")
    y = rng.normal(50, 15, 300)
    p = 0.7 * y + rng.normal(10, 6, 300)
    m: dict[str, Any] = regression_metrics(y, p, n_boot=0)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert m["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, p)))
    assert m["r2"] == pytest.approx(skm.r2_score(y, p))
    assert m["r"] == pytest.approx(np.corrcoef(y, p)[0, 1])


def test_constant_predictions_give_nan_r_but_stay_json_safe() -> None:
    m: dict[str, Any] = regression_metrics(
        [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0], n_boot=50, random_state=0
    )
    assert math.isnan(m["r"]) and all(math.isnan(v) for v in m["r_ci"])
    assert m["r2"] == pytest.approx(1 - 6 / 5)  # defined: the targets vary
    _round_trips(m)


def test_bootstrap_ci_contains_estimate_and_shrinks_with_n(rng: np.random.Generator) -> None:
    widths = []
    for n in (100, 10_000):
        y = rng.normal(50, 15, n)
        m: dict[str, Any] = regression_metrics(y, y + rng.normal(1, 5, n), random_state=1)
        for name in ("mae", "rmse", "r2", "r", "bias"):
            low, high = m[f"{name}_ci"]
            assert low <= m[name] <= high, name
        widths.append(_width(m["mae_ci"]))
    # interval width goes with 1 / sqrt(n): 10x here
    assert widths[1] < widths[0] / 5


def test_same_seed_gives_identical_results(rng: np.random.Generator) -> None:
    y = rng.normal(size=200)
    p = y + rng.normal(size=200)
    groups = np.repeat(np.arange(50), 4)
    first: dict[str, Any] = regression_metrics(y, p, groups=groups, random_state=7)
    assert first == regression_metrics(y, p, groups=groups, random_state=7)
    assert first != regression_metrics(y, p, groups=groups, random_state=8)
    yb = (rng.random(200) < 0.5).astype(int)
    pb = np.clip(0.5 + 0.3 * (yb - 0.5) + rng.normal(0, 0.2, 200), 0.01, 0.99)
    assert classification_metrics(yb, pb, random_state=3) == classification_metrics(
        yb, pb, random_state=3
    )


def test_cluster_bootstrap_widens_interval_for_duplicated_scans(
    rng: np.random.Generator,
) -> None:
    # 60 people scanned 5 times with identical results: there are 60, not 300, observations
    y = np.repeat(rng.normal(50, 15, 60), 5)
    p = y + np.repeat(rng.normal(0, 6, 60), 5)
    subject = np.repeat([f"sub-{i:03d}" for i in range(60)], 5)
    rows: dict[str, Any] = regression_metrics(y, p, random_state=0)
    clustered: dict[str, Any] = regression_metrics(y, p, groups=subject, random_state=0)
    assert clustered["n_groups"] == 60 and rows["n_groups"] == 300
    assert clustered["mae"] == rows["mae"]
    # the row bootstrap is too narrow by about sqrt(5)
    assert _width(clustered["mae_ci"]) > 1.6 * _width(rows["mae_ci"])


# --------------------------------------------------------------------------- brain age


def test_brain_age_gap_correlation(rng: np.random.Generator) -> None:
    age = rng.uniform(20, 80, 500)
    predicted = 50 + 0.6 * (age - 50) + rng.normal(0, 4, 500)  # regression to the mean
    # the usual correction: regress predicted on age, invert
    slope, intercept = np.polyfit(age, predicted, 1)
    corrected = (predicted - intercept) / slope
    m: dict[str, Any] = brain_age_metrics(age, predicted, corrected, random_state=0, n_boot=200)
    assert m["gap_age_r"] < -0.5
    assert m["gap_age_r_ci"][1] < 0
    assert abs(m["gap_age_r_corrected"]) < 0.1
    assert m["mae"] == pytest.approx(np.mean(np.abs(predicted - age)))
    assert m["mae_corrected"] == pytest.approx(np.mean(np.abs(corrected - age)))
    direct = np.corrcoef(predicted - age, age)[0, 1]
    assert m["gap_age_r"] == pytest.approx(direct)
    for name in ("mae", "mae_corrected", "gap_age_r", "gap_age_r_corrected", "r2_corrected"):
        assert f"{name}_ci" in m
    _round_trips(m)
    without: dict[str, Any] = brain_age_metrics(age, predicted, n_boot=0)
    assert "mae_corrected" not in without and "gap_age_r" in without


# --------------------------------------------------------------------------- classification


def test_auc_extremes_and_ties() -> None:
    y = [0, 0, 0, 1, 1]
    perfect: dict[str, Any] = classification_metrics(y, [0.1, 0.2, 0.3, 0.8, 0.9], n_boot=0)
    reversed_: dict[str, Any] = classification_metrics(y, [0.9, 0.8, 0.7, 0.2, 0.1], n_boot=0)
    tied: dict[str, Any] = classification_metrics(y, [0.5] * 5, n_boot=0)
    assert perfect["auc"] == 1.0 and reversed_["auc"] == 0.0 and tied["auc"] == 0.5
    # separated classes: the calibration slope's maximum-likelihood estimate is infinite
    assert math.isnan(perfect["calibration_slope"])
    # 4 pairs won, 1 tie (0.4 vs 0.4), 1 lost, of 2 x 3 = 6 pairs
    partial: dict[str, Any] = classification_metrics(
        [0, 0, 0, 1, 1], [0.1, 0.4, 0.6, 0.4, 0.9], n_boot=0
    )
    assert partial["auc"] == pytest.approx(4.5 / 6)


def test_brier_and_balanced_accuracy_known_values() -> None:
    y = [0, 0, 1, 1]
    p = [0.1, 0.6, 0.4, 0.8]
    m: dict[str, Any] = classification_metrics(y, p, n_boot=0)
    assert m["brier"] == pytest.approx((0.01 + 0.36 + 0.36 + 0.04) / 4)
    # threshold 0.5: sensitivity 1/2, specificity 1/2
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert classification_metrics(y, p, threshold=0.35, n_boot=0)["balanced_accuracy"] == 0.75
    assert m["n"] == 4 and m["n_pos"] == 2


def test_classification_matches_scikit_learn(clf_data: tuple[np.ndarray, np.ndarray]) -> None:
    skm = pytest.importorskip("sklearn.metrics")
    y, p = clf_data
    m: dict[str, Any] = classification_metrics(y, p, n_boot=0)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p >= 0.5))


def test_calibration_of_well_calibrated_probabilities(
    clf_data: tuple[np.ndarray, np.ndarray],
) -> None:
    y, p = clf_data
    m: dict[str, Any] = classification_metrics(y, p, n_boot=200, random_state=0)
    assert m["calibration_slope"] == pytest.approx(1.0, abs=0.08)
    assert m["calibration_intercept"] == pytest.approx(0.0, abs=0.08)
    assert m["calibration_slope_ci"][0] < 1.0 < m["calibration_slope_ci"][1]
    assert m["n_boot_used"] == 200
    _round_trips(m)


def test_calibration_detects_overconfidence_and_underestimated_risk(
    clf_data: tuple[np.ndarray, np.ndarray],
) -> None:
    y, p = clf_data
    overconfident = _sigmoid(2.0 * _logit(p))  # too close to 0 and 1
    m: dict[str, Any] = classification_metrics(y, overconfident, n_boot=0)
    assert m["calibration_slope"] == pytest.approx(0.5, abs=0.05)
    too_low = _sigmoid(_logit(p) - 1.0)  # every risk underestimated
    m = classification_metrics(y, too_low, n_boot=0)
    assert m["calibration_intercept"] == pytest.approx(1.0, abs=0.08)
    assert m["calibration_slope"] == pytest.approx(1.0, abs=0.08)


def test_calibration_slope_matches_unpenalised_logistic_regression(
    rng: np.random.Generator,
) -> None:
    lm = pytest.importorskip("sklearn.linear_model")
    p = rng.uniform(0.01, 0.99, 400)
    y = (rng.random(400) < _sigmoid(0.3 + 0.7 * _logit(p))).astype(int)
    fit = lm.LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(_logit(p)[:, None], y)
    m: dict[str, Any] = classification_metrics(y, p, n_boot=0)
    assert m["calibration_slope"] == pytest.approx(fit.coef_[0, 0], rel=1e-5)


def test_single_class_resamples_are_skipped(rng: np.random.Generator) -> None:
    # one positive among 8: about (7/8)^8 = 34 % of resamples miss it
    y = [0] * 7 + [1]
    p = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.2, 0.7]
    m: dict[str, Any] = classification_metrics(y, p, n_boot=300, random_state=0)
    assert 150 < m["n_boot_used"] < 260
    _round_trips(m)


# --------------------------------------------------------------------------- per group


def test_per_group_metrics_skips_small_and_one_class_groups(rng: np.random.Generator) -> None:
    site = np.array(["B"] * 40 + ["A"] * 30 + ["C"] * 5 + ["D"] * 12)
    y = np.r_[rng.integers(0, 2, 70), rng.integers(0, 2, 5), np.zeros(12, dtype=int)]
    y[:2], y[40:42] = [0, 1], [0, 1]  # both classes in A and B
    p = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, y.size), 0.01, 0.99)
    res: dict[str, Any] = per_group_metrics(
        "classification", y, p, site, n_boot=100, random_state=0
    )
    assert list(res) == ["A", "B", "C", "D"]
    assert res["C"] == {"n": 5, "skipped": "fewer than 10 scans"}
    assert res["D"] == {"n": 12, "n_pos": 0, "skipped": "only one class (n_pos=0)"}
    direct = classification_metrics(y[site == "A"], p[site == "A"], n_boot=0)
    assert res["A"]["auc"] == direct["auc"] and res["A"]["n"] == 30
    assert res == per_group_metrics("classification", y, p, site, n_boot=100, random_state=0)
    _round_trips(res)


def test_per_group_brain_age_subsets_corrected_and_groups(rng: np.random.Generator) -> None:
    age = rng.uniform(20, 80, 60)
    pred = age + rng.normal(0, 5, 60)
    corrected = pred - 1.0
    sex = np.array([1, 2] * 30)
    subject = np.repeat(np.arange(30), 2)
    res: dict[str, Any] = per_group_metrics(
        "brain_age", age, pred, sex, corrected=corrected, groups=subject, random_state=0
    )
    assert set(res) == {"1", "2"}
    assert res["1"]["n"] == 30 and res["1"]["n_groups"] == 30
    one = sex == 1
    assert res["1"]["bias_corrected"] == pytest.approx(np.mean(corrected[one] - age[one]))


def test_per_group_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="did you mean 'regression'"):
        per_group_metrics("regresion", [1.0, 2.0], [1.0, 2.0], ["a", "a"])


# --------------------------------------------------------------------------- comparison


def test_t_distribution_against_tables() -> None:
    assert _t_critical(0.95, 4) == pytest.approx(2.776445, abs=1e-6)
    assert _t_critical(0.95, 1) == pytest.approx(12.706205, abs=1e-6)
    assert _t_critical(0.99, 30) == pytest.approx(2.749996, abs=1e-6)
    assert _t_two_sided_p(2.0, 10) == pytest.approx(0.0733880, abs=1e-7)
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 9, 29, 99):
        for t in (0.1, 1.0, 2.5, 8.0):
            assert _t_two_sided_p(t, df) == pytest.approx(2 * stats.t.sf(t, df), rel=1e-9)
        assert _t_critical(0.9, df) == pytest.approx(stats.t.ppf(0.95, df), rel=1e-9)


def test_corrected_resampled_ttest_matches_formula() -> None:
    diffs = np.array([0.021, 0.034, 0.008, 0.041, 0.017, 0.029, 0.012, 0.025, 0.038, 0.019])
    res: dict[str, Any] = corrected_resampled_ttest(diffs, n_train=900, n_test=100)
    J = len(diffs)
    se = math.sqrt(diffs.var(ddof=1) * (1 / J + 100 / 900))
    t = diffs.mean() / se
    assert res["mean"] == pytest.approx(diffs.mean())
    assert res["se"] == pytest.approx(se)
    assert res["t"] == pytest.approx(t)
    assert res["df"] == J - 1 and res["n_splits"] == J
    # t_{0.975, 9} = 2.262157 (tables)
    half = 2.262157 * se
    assert res["ci"] == pytest.approx([diffs.mean() - half, diffs.mean() + half], abs=1e-7)
    stats = pytest.importorskip("scipy.stats")
    assert res["p"] == pytest.approx(2 * stats.t.sf(abs(t), J - 1), rel=1e-9)
    # the correction makes the test more conservative than the naive one
    naive = diffs.mean() / math.sqrt(diffs.var(ddof=1) / J)
    assert abs(res["t"]) < abs(naive)
    _round_trips(res)


def test_corrected_ttest_with_constant_diffs_is_undefined() -> None:
    res: dict[str, Any] = corrected_resampled_ttest([0.1, 0.1, 0.1], n_train=90, n_test=10)
    assert math.isnan(res["t"]) and math.isnan(res["p"])
    assert res["ci"] == [pytest.approx(0.1), pytest.approx(0.1)]
    _round_trips(res)


def test_paired_bootstrap_delta(rng: np.random.Generator) -> None:
    y = rng.normal(50, 15, 400)
    a = y + rng.normal(0, 8, 400)
    b = y + rng.normal(0, 5, 400)
    res: dict[str, Any] = paired_bootstrap_delta(y, a, b, "mae", random_state=0)
    assert res["a"] == pytest.approx(np.mean(np.abs(a - y)))
    assert res["delta"] == pytest.approx(res["b"] - res["a"])
    assert res["delta_ci"][0] <= res["delta"] <= res["delta_ci"][1] < 0  # B is better
    assert res == paired_bootstrap_delta(y, a, b, "mae", random_state=0)
    same: dict[str, Any] = paired_bootstrap_delta(y, a, a, "r2", n_boot=50, random_state=0)
    assert same["delta"] == 0.0 and same["delta_ci"] == [0.0, 0.0]
    _round_trips(res)


def test_paired_bootstrap_delta_classification(clf_data: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = clf_data
    y, p = y[:2000], p[:2000]
    noisy = np.clip(p + np.random.default_rng(1).normal(0, 0.2, p.size), 0.0, 1.0)
    res: dict[str, Any] = paired_bootstrap_delta(y, noisy, p, "auc", n_boot=200, random_state=0)
    auc_a: Any = classification_metrics(y, noisy, n_boot=0)["auc"]
    auc_b: Any = classification_metrics(y, p, n_boot=0)["auc"]
    assert res["a"] == auc_a and res["delta"] == pytest.approx(auc_b - auc_a)
    assert res["delta_ci"][0] > 0 and res["n_boot_used"] == 200
    _round_trips(res)


def test_permutation_p_value() -> None:
    null = np.array([0.5, 0.6, 0.85, 0.55])
    assert permutation_p_value(0.8, null) == pytest.approx(2 / 5)
    assert permutation_p_value(0.99, null) == pytest.approx(1 / 5)  # smallest possible
    assert permutation_p_value(0.0, null) == 1.0
    assert permutation_p_value(3.0, [5.0, 4.0, 6.0, 2.0], greater_is_better=False) == 0.4
    p = permutation_p_value(0.7, np.random.default_rng(0).uniform(size=999))
    assert 1 / 1000 <= p <= 1 and type(p) is float


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: regression_metrics([1, 2, 3], [1, 2]), "y_pred has 2 values but y_true has 3"),
        (lambda: regression_metrics([1, np.nan, 3], [1, 2, 3]), "y_true contains 1 NaN"),
        (lambda: regression_metrics([1, 2], [1, 2], groups=[1]), "groups must be 1-D"),
        (
            lambda: regression_metrics([1, 2], [1, 2], groups=np.array([1, None])),
            "groups has 1 missing",
        ),
        (lambda: regression_metrics([1, 2], [1, 2], n_boot=-1), "n_boot must be an int"),
        (lambda: regression_metrics([1, 2], [1, 2], ci=95), "ci must be a coverage"),
        (lambda: regression_metrics([[1, 2]], [[1, 2]]), "y_true must be 1-D"),
        (lambda: regression_metrics(["a", "b"], [1, 2]), "y_true must be numeric"),
        (
            lambda: brain_age_metrics([20, 30], [25, 35], [1]),
            "corrected has 1 values but age has 2",
        ),
        (lambda: classification_metrics([1, 1, 1], [0.2, 0.5, 0.9]), "y_true holds a single"),
        (lambda: classification_metrics([0, 1, 2], [0.2, 0.5, 0.9]), "only 0 and 1"),
        (lambda: classification_metrics([0, 1], [0.2, 1.5]), r"proba must hold probabilities"),
        (lambda: classification_metrics([0, 1], [0.2, 0.8], threshold=1), "threshold must"),
        (lambda: corrected_resampled_ttest([0.1], 90, 10), "diffs needs at least 2"),
        (lambda: corrected_resampled_ttest([0.1, 0.2], 0, 10), "n_train must be an int"),
        (lambda: paired_bootstrap_delta([1, 2], [1, 2], [1, 2], "mse"), "metric must be one"),
        (lambda: paired_bootstrap_delta([1, 2], [1, 2], [1], "mae"), "pred_b has 1 values"),
        (lambda: permutation_p_value(0.5, []), "null is empty"),
        (lambda: permutation_p_value(0.5, [0.1, np.nan]), "null contains 1 NaN"),
        (lambda: per_group_metrics("regression", [1, 2], [1, 2], ["a"]), "by must be 1-D"),
        (lambda: per_group_metrics("regression", [1, 2], [1], ["a", "a"]), "pred has shape"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
