"""Tests of morphml.harmonize.ComBat: the published equations, leakage, edge cases, real data.

ComBat is not in ``test_estimator_checks.py``: scikit-learn's generic checks feed unnamed numpy
arrays, while ComBat needs a DataFrame whose ``meta:`` columns carry each scan's site and
covariates (without a site there is nothing to harmonise, and a column position cannot say
which column is the site). It refuses such input with a HarmonizationError, so nearly every
generic check would fail for that reason alone. The parts of the contract that do apply
(clone, get_params, fit returns self, learned attributes ending in ``_``, no state from a
transform, identical output for identical input) are tested here directly.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from morphml.exceptions import FeatureMismatchError, HarmonizationError, MorphmlError
from morphml.harmonize import META_PREFIX, ComBat
from morphml.harmonize._simulate import SimulatedSites, simulate_site_effects
from morphml.harmonize._spline import natural_spline_basis, natural_spline_knots

SITE, AGE, SEX = "meta:site", "meta:age", "meta:sex"


@pytest.fixture(autouse=True)
def _one_blas_thread() -> Any:
    # several jobs share two cores here; threaded BLAS then spins against itself and the
    # classifiers below (and ComBat's small SVD) run tens of times slower
    with threadpool_limits(1):
        yield


def _sim(
    rng: np.random.Generator, n: int = 240, p: int = 40, k: int = 5, **kw: Any
) -> SimulatedSites:
    seed = int(rng.integers(0, 2**31))
    return simulate_site_effects(n, p, k, random_state=seed, **kw)


def _fitted_state(model: ComBat) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in vars(model).items() if k.endswith("_")}


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, dict):
            if not _same_state(
                {f"{k}_": v for k, v in x.items()}, {f"{k}_": v for k, v in y.items()}
            ):
                return False
        elif isinstance(x, np.ndarray):
            if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                return False
        elif x != y:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# A literal, per-feature transcription of Johnson, Li & Rabinovic (2007), as in the sva package
# (ComBat, it.sol, postmean, postvar, aprior, bprior, int.eprior), independent of the estimator.
# ---------------------------------------------------------------------------------------------
def _aprior(d: np.ndarray) -> float:
    m, s2 = d.mean(), d.var(ddof=1)
    return float((2 * s2 + m**2) / s2)


def _bprior(d: np.ndarray) -> float:
    m, s2 = d.mean(), d.var(ddof=1)
    return float((m * s2 + m**3) / s2)


def _postmean(g_hat: float, g_bar: float, n: int, d_star: float, t2: float) -> float:
    return (t2 * n * g_hat + d_star * g_bar) / (t2 * n + d_star)


def _postvar(sum2: float, n: int, a: float, b: float) -> float:
    return (0.5 * sum2 + b) / (n / 2 + a - 1)


def _it_sol(x: np.ndarray, g_hat: float, d_hat: float, g_bar: float, t2: float, a: float,
            b: float, conv: float = 1e-12) -> tuple[float, float]:  # fmt: skip
    n = x.size
    g_old, d_old = g_hat, d_hat
    for _ in range(100_000):
        g_new = _postmean(g_hat, g_bar, n, d_old, t2)
        sum2 = float(((x - g_new) ** 2).sum())
        d_new = _postvar(sum2, n, a, b)
        change = max(abs(g_new - g_old) / abs(g_old), abs(d_new - d_old) / d_old)
        g_old, d_old = g_new, d_new
        if change < conv:
            break
    return g_old, d_old


def _int_eprior(
    x: np.ndarray, g_hat: np.ndarray, d_hat: np.ndarray, g: int
) -> tuple[float, float]:
    others = np.arange(g_hat.size) != g
    gs, ds = g_hat[others], d_hat[others]
    lh = np.array(
        [
            np.prod(np.exp(-((x - gi) ** 2) / (2 * di)) / np.sqrt(2 * np.pi * di))
            for gi, di in zip(gs, ds, strict=True)
        ]
    )
    return float((gs * lh).sum() / lh.sum()), float((ds * lh).sum() / lh.sum())


def _literal_combat(
    frame: pd.DataFrame, features: list[str], parametric: bool
) -> dict[str, np.ndarray]:
    y = frame[features].to_numpy(float)
    n, p = y.shape
    batches = sorted(frame[SITE].unique())
    batch = frame[SITE].to_numpy()
    onehot = np.column_stack([(batch == b).astype(float) for b in batches])
    covariates = frame[[AGE, SEX]].to_numpy(float)
    design = np.hstack([onehot, covariates])
    k = len(batches)
    n_batch = onehot.sum(axis=0)
    gamma_hat, delta_hat = np.empty((k, p)), np.empty((k, p))
    gamma_star, delta_star = np.empty((k, p)), np.empty((k, p))
    stand_mean, s_data = np.empty((n, p)), np.empty((n, p))
    var_pooled = np.empty(p)
    for g in range(p):
        b_hat = np.linalg.lstsq(design, y[:, g], rcond=None)[0]
        grand_mean = float(n_batch @ b_hat[:k]) / n
        var_pooled[g] = float(((y[:, g] - design @ b_hat) ** 2).mean())
        stand_mean[:, g] = grand_mean + covariates @ b_hat[k:]
        s_data[:, g] = (y[:, g] - stand_mean[:, g]) / np.sqrt(var_pooled[g])
        for i, b in enumerate(batches):
            x = s_data[batch == b, g]
            gamma_hat[i, g] = x.mean()
            delta_hat[i, g] = x.var(ddof=1)
    for i, b in enumerate(batches):
        g_bar, t2 = gamma_hat[i].mean(), gamma_hat[i].var(ddof=1)
        a, bb = _aprior(delta_hat[i]), _bprior(delta_hat[i])
        for g in range(p):
            x = s_data[batch == b, g]
            if parametric:
                gamma_star[i, g], delta_star[i, g] = _it_sol(
                    x, gamma_hat[i, g], delta_hat[i, g], g_bar, t2, a, bb
                )
            else:
                gamma_star[i, g], delta_star[i, g] = _int_eprior(x, gamma_hat[i], delta_hat[i], g)
    adjusted = np.empty((n, p))
    for i, b in enumerate(batches):
        rows = batch == b
        adjusted[rows] = (s_data[rows] - gamma_star[i]) / np.sqrt(delta_star[i])
    adjusted = adjusted * np.sqrt(var_pooled) + stand_mean
    return {
        "gamma_hat": gamma_hat,
        "delta_hat": delta_hat,
        "gamma_star": gamma_star,
        "delta_star": delta_star,
        "sigma": np.sqrt(var_pooled),
        "adjusted": adjusted,
    }


@pytest.mark.parametrize("parametric", [True, False])
def test_matches_literal_published_equations(rng: np.random.Generator, parametric: bool) -> None:
    sim = _sim(rng, n=45, p=8, k=3, min_site_size=12)
    model = ComBat(spline_covariates=(), parametric=parametric).fit(sim.frame)
    ref = _literal_combat(sim.frame, sim.features, parametric)
    np.testing.assert_allclose(model.sigma_, ref["sigma"], rtol=1e-10)
    np.testing.assert_allclose(model.gamma_hat_, ref["gamma_hat"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.delta_hat_, ref["delta_hat"], rtol=1e-9)
    # the estimator stops at a relative change of 1e-4 (as sva does), the literal one at 1e-12
    tol = 1e-3 if parametric else 1e-9
    np.testing.assert_allclose(model.gamma_star_, ref["gamma_star"], rtol=tol, atol=tol * 1e-2)
    np.testing.assert_allclose(model.delta_star_, ref["delta_star"], rtol=tol)
    np.testing.assert_allclose(model.transform(sim.frame).to_numpy(), ref["adjusted"], rtol=tol)


def test_recovers_known_site_effects(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=1200, p=60, k=6, min_site_size=80, age_confounding=0.3)
    model = ComBat().fit(sim.frame)
    sizes = model.batch_sizes_ / model.batch_sizes_.sum()
    assert list(model.batches_) == sim.sites
    # ComBat's parameters are relative to the size-weighted grand mean and the pooled SD
    gamma_true = (sim.gamma - sizes @ sim.gamma) / model.sigma_
    pooled_var = sizes @ sim.delta2 * sim.sd**2
    delta_true = sim.delta2 * sim.sd**2 / pooled_var
    gamma_err = np.abs(model.gamma_star_ - gamma_true).mean()
    raw_err = np.abs(model.gamma_hat_ - gamma_true).mean()
    # sites of 100-400 scans: sampling error of a site mean is about 0.05-0.1 SD
    assert gamma_err < 0.08, f"mean |gamma* - gamma| = {gamma_err:.3f}"
    assert gamma_err < raw_err, f"shrinkage should help: {gamma_err:.4f} vs {raw_err:.4f}"
    assert np.corrcoef(model.gamma_star_.ravel(), gamma_true.ravel())[0, 1] > 0.98
    delta_rel = np.median(np.abs(np.sqrt(model.delta_star_ / delta_true) - 1))
    assert delta_rel < 0.06, f"median relative scale error {delta_rel:.3f}"
    assert np.corrcoef(np.log(model.delta_star_).ravel(), np.log(delta_true).ravel())[0, 1] > 0.9


def test_harmonised_closer_to_site_free_truth(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=600, p=50, k=6, age_confounding=0.8)
    raw = sim.frame[sim.features]
    out = ComBat().fit_transform(sim.frame)
    # ComBat maps every site onto the pooled location and scale, which is the truth up to
    # the weighted site offset and pooled scale: compare deviations from each feature's mean
    truth = sim.truth - sim.truth.mean()
    before = float(np.sqrt((((raw - raw.mean()) - truth) ** 2).to_numpy().mean()))
    after = float(np.sqrt((((out - out.mean()) - truth) ** 2).to_numpy().mean()))
    assert after < 0.5 * before, f"RMS error vs truth: raw {before:.4f}, ComBat {after:.4f}"


def test_spline_age_term_beats_linear_on_curved_age(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=800, p=30, k=6, age_confounding=1.0)
    truth = sim.truth - sim.truth.mean()

    def error(df: int) -> float:
        out = ComBat(spline_df=df).fit_transform(sim.frame)
        return float(np.sqrt((((out - out.mean()) - truth) ** 2).to_numpy().mean()))

    linear, spline = error(1), error(4)
    assert spline < 0.9 * linear, f"RMS vs truth: linear age {linear:.4f}, spline {spline:.4f}"


def test_site_classifier_drops_to_chance(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=480, p=40, k=4, age_confounding=0.0, min_site_size=60, location_scale=1.0)
    y = sim.frame[SITE].to_numpy()
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    before = balanced_accuracy_score(y, cross_val_predict(clf, sim.frame[sim.features], y, cv=cv))
    harmonised = make_pipeline(ComBat(), StandardScaler(), LogisticRegression(max_iter=2000))
    after = balanced_accuracy_score(y, cross_val_predict(harmonised, sim.frame, y, cv=cv))
    chance = 1 / 4
    assert before > 0.8, f"site accuracy before ComBat {before:.2f}"
    assert after < chance + 0.12, f"site accuracy {before:.2f} -> {after:.2f} (chance {chance})"


def test_age_signal_kept(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=500, p=40, k=5, age_confounding=0.2)
    age = sim.frame[AGE].to_numpy()
    cv = KFold(5, shuffle=True, random_state=0)
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 3, 12)))
    raw = mean_absolute_error(age, cross_val_predict(ridge, sim.frame[sim.features], age, cv=cv))
    # age is the outcome, so it is not a ComBat covariate here (it would leak into features)
    harmonised = make_pipeline(ComBat(covariates=(SEX,)), clone(ridge))
    combat = mean_absolute_error(age, cross_val_predict(harmonised, sim.frame, age, cv=cv))
    assert combat <= raw * 1.02, f"ridge age MAE: raw {raw:.2f} y, ComBat {combat:.2f} y"


def test_age_effect_preserved_when_site_and_age_confounded(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=900, p=20, k=6, age_confounding=1.0, location_scale=1.0)
    out = ComBat().fit_transform(sim.frame)
    a = np.column_stack([np.ones(len(out)), sim.frame[AGE], sim.frame[AGE] ** 2, sim.frame[SEX]])

    def slopes(values: pd.DataFrame) -> np.ndarray:
        return np.linalg.lstsq(a, values.to_numpy(), rcond=None)[0][1:]

    true, raw, harmonised = slopes(sim.truth), slopes(sim.frame[sim.features]), slopes(out)
    err_raw = np.abs(raw - true).mean()
    err_combat = np.abs(harmonised - true).mean()
    assert err_combat < 0.5 * err_raw, f"age/sex effect error: raw {err_raw:.4f}, {err_combat:.4f}"


# ------------------------------------------------------------------------- folds and leakage
def test_test_rows_change_nothing_fitted_and_rows_are_independent(
    rng: np.random.Generator,
) -> None:
    sim = _sim(rng, n=300, p=15, k=4)
    frame = sim.frame
    train, test = frame.iloc[:: 3 * 1 + 0].index, None
    test_mask = np.zeros(len(frame), dtype=bool)
    test_mask[::4] = True
    train, test = frame[~test_mask], frame[test_mask]
    model = ComBat().fit(train)
    state = _fitted_state(model)
    out = model.transform(test)
    changed = test.copy()
    changed.iloc[:5, 3:] += 50.0
    changed.iloc[:5, changed.columns.get_loc(AGE)] += 20.0
    out_changed = model.transform(changed)
    assert _same_state(state, _fitted_state(model))
    pd.testing.assert_frame_equal(out.iloc[5:], out_changed.iloc[5:])
    assert not np.allclose(out.iloc[:5], out_changed.iloc[:5])
    one_by_one = pd.concat([model.transform(test.iloc[[i]]) for i in range(0, len(test), 7)])
    pd.testing.assert_frame_equal(one_by_one, out.iloc[::7])
    pd.testing.assert_frame_equal(model.transform(train), ComBat().fit_transform(train))


def test_same_input_identical_output(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=200, p=12, k=4)
    for parametric in (True, False):
        a = ComBat(parametric=parametric).fit_transform(sim.frame)
        b = ComBat(parametric=parametric).fit_transform(sim.frame.copy())
        assert np.array_equal(a.to_numpy(), b.to_numpy())


def test_clone_and_params() -> None:
    model = ComBat(spline_df=3, reference_batch="a", new_batches="adapt", covariates=(SEX,))
    copy_ = clone(model)
    assert copy_.get_params() == model.get_params()
    assert copy_.get_params()["spline_df"] == 3
    assert not any(k.endswith("_") for k in vars(copy_))
    assert not hasattr(copy_, "site_effects_")


def test_output_layout_passthrough_and_index(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=120, p=4, k=3)
    frame = sim.frame.copy()
    frame.index = [f"scan{i}" for i in range(len(frame))]
    frame.insert(4, "site=site00", (frame[SITE] == "site00").astype(float))
    frame["meta:control"] = True
    model = ComBat()
    out = model.fit_transform(frame)
    expected = [c for c in frame.columns if not c.startswith(META_PREFIX)]
    assert list(out.columns) == expected == list(model.get_feature_names_out())
    assert list(out.index) == list(frame.index)
    pd.testing.assert_series_equal(out["site=site00"], frame["site=site00"])
    assert model.features_ == sim.features
    with pytest.raises(FeatureMismatchError, match="f001"):
        model.transform(frame.drop(columns="f001"))
    swapped = list(frame.columns)
    i, j = swapped.index("f002"), swapped.index("f003")
    swapped[i], swapped[j] = swapped[j], swapped[i]
    with pytest.raises(FeatureMismatchError, match="order"):
        model.transform(frame[swapped])


def test_site_effects_frame(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=150, p=6, k=3)
    model = ComBat().fit(sim.frame)
    effects = model.site_effects_
    assert len(effects) == 3 * 6
    row = effects[(effects.batch == "site01") & (effects.feature == "f002")].iloc[0]
    assert row.gamma_star == model.gamma_star_[1, 2]
    assert row.delta2_star == model.delta_star_[1, 2]
    assert row.source == "fit"


# ------------------------------------------------------------------------------ edge cases
def test_single_scan_site(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=200, p=20, k=4)
    solo = sim.frame.iloc[[0]].copy()
    solo[SITE] = "solo"
    solo[sim.features] += 2.0 * sim.sd
    frame = pd.concat([sim.frame, solo])
    for parametric, eb in ((True, True), (False, True), (True, False)):
        model = ComBat(parametric=parametric, eb=eb).fit(frame)
        i = list(model.batches_).index("solo")
        assert model.batch_sizes_[i] == 1
        np.testing.assert_allclose(model.delta_star_[i], model.delta_prior_mean_)
        out = model.transform(frame)
        assert np.isfinite(out.to_numpy()).all()
        g_hat, g_star, g_bar = model.gamma_hat_[i], model.gamma_star_[i], model.gamma_bar_[i]
        if eb and parametric:
            # the posterior mean lies between the estimate and the prior mean
            assert (np.abs(g_star - g_bar) <= np.abs(g_hat - g_bar) + 1e-12).all()
            assert np.abs(g_star - g_hat).mean() > 1e-3
        elif eb:
            assert np.abs(g_star - g_bar).mean() < np.abs(g_hat - g_bar).mean()
        else:
            np.testing.assert_allclose(model.gamma_star_[i], model.gamma_hat_[i])


def test_unseen_site_refused(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=200, p=10, k=4)
    held = sim.frame[SITE] == "site02"
    model = ComBat().fit(sim.frame[~held])
    with pytest.raises(HarmonizationError, match=r"'site02'.*new_sites: adapt") as info:
        model.transform(sim.frame)
    assert isinstance(info.value, MorphmlError) and isinstance(info.value, ValueError)
    with pytest.raises(HarmonizationError, match="new_batches='adapt'"):
        model.adapt(sim.frame)
    waiting = ComBat(new_batches="adapt").fit(sim.frame[~held])
    with pytest.raises(HarmonizationError, match=r"'site02'.*not been adapted.*adapt\("):
        waiting.transform(sim.frame[held])


def test_adapt_new_site_from_controls(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=900, p=40, k=6, min_site_size=100)
    new = "site03"
    held = (sim.frame[SITE] == new).to_numpy()
    model = ComBat(new_batches="adapt").fit(sim.frame[~held])
    state = _fitted_state(model)
    site_rows = sim.frame[held].copy()
    prior = model.new_batch_prior_["gamma_bar"]
    # the new site's true offsets in the model's units
    sizes = model.batch_sizes_ / model.batch_sizes_.sum()
    train_sites = [sim.sites.index(s) for s in model.batches_]
    gamma_true = (sim.gamma[sim.sites.index(new)] - sizes @ sim.gamma[train_sites]) / model.sigma_

    few = site_rows.copy()
    few["meta:control"] = False
    few.iloc[:2, few.columns.get_loc("meta:control")] = True
    few_model = clone(model).fit(sim.frame[~held]).adapt(few)
    # changing the values of rows that are not controls changes nothing
    few_changed = few.copy()
    few_changed.iloc[2:, 3:-1] += 10.0
    assert _same_state(
        _fitted_state(few_model),
        _fitted_state(clone(model).fit(sim.frame[~held]).adapt(few_changed)),
    )
    fitted = few_model.adapted_[new]
    assert fitted["n"] == 2
    # two-level shrinkage: the site's shared offset lies between the training sites' mean
    # offset and its controls' mean, and each feature between its own estimate and that offset
    centre = fitted["gamma_bar"]
    assert abs(centre - prior) <= abs(fitted["gamma_hat"].mean() - prior)
    shrink = np.abs(fitted["gamma_star"] - centre)
    raw = np.abs(fitted["gamma_hat"] - centre)
    assert (shrink <= raw + 1e-12).all() and shrink.mean() < 0.5 * raw.mean(), (
        f"2 controls: mean |gamma* - prior| {shrink.mean():.3f} vs |gamma_hat - prior| "
        f"{raw.mean():.3f}"
    )

    many = site_rows.iloc[:60]
    model.adapt(many)
    assert _same_state(state, {k: v for k, v in _fitted_state(model).items()} | {"adapted_": {}})
    adapted = model.adapted_[new]
    assert adapted["n"] == 60
    # more controls, less shrinkage and a better estimate of the site's true effects
    assert (
        np.abs(adapted["gamma_star"] - adapted["gamma_hat"]).mean()
        < np.abs(fitted["gamma_star"] - fitted["gamma_hat"]).mean()
    )
    err_hat = np.abs(fitted["gamma_hat"] - gamma_true).mean()
    err_two = np.abs(fitted["gamma_star"] - gamma_true).mean()
    err_sixty = np.abs(adapted["gamma_star"] - gamma_true).mean()
    assert err_sixty < err_two < err_hat, (err_hat, err_two, err_sixty)
    # the rest of the site, harmonised with the adapted effects, is closer to the truth
    rest = site_rows.iloc[60:]
    out = model.transform(rest)
    truth = sim.truth[held].iloc[60:]
    others = model.transform(sim.frame[~held])
    centre = (others - sim.truth[~held]).mean()
    before = np.abs(rest[sim.features] - truth - centre).to_numpy().mean()
    after = np.abs(out - truth - centre).to_numpy().mean()
    assert after < 0.6 * before, f"new site error vs truth: raw {before:.3f}, adapted {after:.3f}"
    effects = model.site_effects_
    assert set(effects.loc[effects.source == "adapt", "batch"]) == {new}

    no_controls = site_rows.assign(**{"meta:control": False})
    with pytest.raises(HarmonizationError, match=rf"'{new}' have no control scan"):
        clone(model).fit(sim.frame[~held]).adapt(no_controls)


def test_adapt_from_two_controls_beats_no_adaptation(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=900, p=40, k=6, min_site_size=100)
    errors = []
    for new in sim.sites:  # each site in turn is the new hospital
        held = (sim.frame[SITE] == new).to_numpy()
        model = ComBat(new_batches="adapt").fit(sim.frame[~held])
        sizes = model.batch_sizes_ / model.batch_sizes_.sum()
        train = [sim.sites.index(s) for s in model.batches_]
        truth = (sim.gamma[sim.sites.index(new)] - sizes @ sim.gamma[train]) / model.sigma_
        adapted = model.adapt(sim.frame[held].iloc[:2]).adapted_[new]
        errors.append(
            [
                np.abs(model.new_batch_prior_["gamma_bar"] - truth).mean(),  # no adaptation
                np.abs(adapted["gamma_hat"] - truth).mean(),  # the two controls' means
                np.abs(adapted["gamma_star"] - truth).mean(),  # empirical Bayes
            ]
        )
    none, raw, eb = np.mean(errors, axis=0)
    assert eb < 0.7 * min(none, raw), f"mean |error| none {none:.3f}, raw {raw:.3f}, EB {eb:.3f}"


@pytest.mark.parametrize("params", [{"reference_batch": "site00"}, {"eb": False}])
def test_adapt_with_reference_site_or_without_eb(
    rng: np.random.Generator, params: dict[str, Any]
) -> None:
    sim = _sim(rng, n=400, p=20, k=5, min_site_size=40)
    held = (sim.frame[SITE] == "site03").to_numpy()
    model = ComBat(new_batches="adapt", **params).fit(sim.frame[~held])
    # the reference site's hyperparameters are degenerate (all gamma_hat 0, equal delta_hat)
    # and must not shape the prior of a new site
    prior = model.new_batch_prior_
    assert all(np.isfinite(v) for v in prior.values()) and 2 < prior["a"] < 1e3, prior
    model.adapt(sim.frame[held].iloc[:10])
    adapted = model.adapted_["site03"]
    if params.get("eb") is False:
        np.testing.assert_allclose(adapted["gamma_star"], adapted["gamma_hat"])
        np.testing.assert_allclose(adapted["delta_star"], adapted["delta_hat"])
    out = model.transform(sim.frame)
    assert np.isfinite(out.to_numpy()).all()


def test_constant_features_pass_through(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=150, p=8, k=3)
    frame = sim.frame.copy()
    frame["const"] = 3.7
    frame["zeros"] = 0.0
    frame["per_site"] = frame[SITE].map({"site00": 1.0, "site01": 2.0, "site02": 5.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for parametric in (True, False):
            model = ComBat(parametric=parametric).fit(frame)
            out = model.transform(frame)
            assert model.constant_features_ == ["const", "zeros", "per_site"]
            for column in ("const", "zeros", "per_site"):
                assert out[column].equals(frame[column])
            plain = ComBat(parametric=parametric).fit(sim.frame)
            np.testing.assert_allclose(out[sim.features], plain.transform(sim.frame), rtol=1e-10)


def test_missing_covariates(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=100, p=5, k=3)
    with pytest.raises(HarmonizationError, match=r"'meta:age' is not in X.*'age'"):
        ComBat().fit(sim.frame.drop(columns=AGE))
    with_nan = sim.frame.copy()
    with_nan.iloc[[1, 5, 9], with_nan.columns.get_loc(AGE)] = np.nan
    with pytest.raises(HarmonizationError, match=r"'meta:age' is missing.* 3 of 100 rows"):
        ComBat().fit(with_nan)
    model = ComBat().fit(sim.frame)
    with pytest.raises(HarmonizationError, match=r"'meta:age' is missing.* 3 of 100 rows"):
        model.transform(with_nan)
    with pytest.raises(HarmonizationError, match=r"'meta:sex' is not in X"):
        model.transform(sim.frame.drop(columns=SEX))
    no_site = sim.frame.copy()
    no_site.iloc[0, 0] = None
    with pytest.raises(HarmonizationError, match=r"'meta:site' is missing in 1 of 100"):
        model.transform(no_site)


def test_nan_feature_values(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=240, p=10, k=4)
    frame = sim.frame.copy()
    holes = rng.random(len(frame)) < 0.15
    frame.loc[holes, "f001"] = np.nan
    whole_site = (frame[SITE] == "site02").to_numpy()
    frame.loc[whole_site, "f004"] = np.nan
    frame.iloc[3, frame.columns.get_loc("f007")] = np.nan
    # linear covariates: the spline knots would depend on which rows are used
    model = ComBat(spline_covariates=()).fit(frame)
    out = model.transform(frame)
    np.testing.assert_array_equal(out.isna().to_numpy(), frame[sim.features].isna().to_numpy())
    # per-feature estimation ignores the missing rows: the same as fitting that feature alone
    for feature, rows in (("f001", ~holes), ("f004", ~whole_site)):
        j = sim.features.index(feature)
        alone = ComBat(spline_covariates=()).fit(frame.loc[rows, [SITE, AGE, SEX, feature]])
        np.testing.assert_allclose(model.sigma_[j], alone.sigma_[0], rtol=1e-10)
        np.testing.assert_allclose(model.beta_[:, j], alone.beta_[:, 0], rtol=1e-8)
        np.testing.assert_allclose(model.alpha_[j], alone.alpha_[0], rtol=1e-10)
    # features without missing values take the fast path and agree with a complete fit
    complete = ComBat(spline_covariates=()).fit(frame.drop(columns=["f001", "f004", "f007"]))
    kept = [sim.features.index(f) for f in complete.features_]
    np.testing.assert_allclose(model.sigma_[kept], complete.sigma_, rtol=1e-10)
    np.testing.assert_allclose(model.gamma_hat_[:, kept], complete.gamma_hat_, rtol=1e-8)
    # a site without any value of a feature: prior location and scale for it
    i, j = list(model.batches_).index("site02"), sim.features.index("f004")
    assert model.batch_counts_[i, j] == 0
    assert model.gamma_star_[i, j] == pytest.approx(model.gamma_bar_[i])
    assert model.delta_star_[i, j] == pytest.approx(model.b_prior_[i] / (model.a_prior_[i] - 1))
    new_scan = sim.frame[whole_site].iloc[[0]]
    assert np.isfinite(model.transform(new_scan).to_numpy()).all()
    nonparametric = ComBat(spline_covariates=(), parametric=False).fit(frame).transform(frame)
    np.testing.assert_array_equal(nonparametric.isna().to_numpy(), out.isna().to_numpy())


def test_reference_batch_unchanged(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=900, p=20, k=4, min_site_size=200, location_scale=1.0)
    model = ComBat(reference_batch="site01").fit(sim.frame)
    out = model.transform(sim.frame)
    ref_rows = (sim.frame[SITE] == "site01").to_numpy()
    assert out[ref_rows].equals(sim.frame.loc[ref_rows, sim.features])
    i = list(model.batches_).index("site01")
    assert (model.gamma_star_[i] == 0).all() and (model.delta_star_[i] == 1).all()
    # the other sites are moved onto the reference site's location
    gap_before, gap_after = [], []
    for s, site in enumerate(sim.sites):
        rows = (sim.frame[SITE] == site).to_numpy()
        if site == "site01":
            continue
        shift = (out[rows] - sim.truth[rows]).mean().to_numpy()
        gap_after.append(np.abs(shift - sim.gamma[i]).mean())
        gap_before.append(np.abs(sim.gamma[s] - sim.gamma[i]).mean())
    assert np.mean(gap_after) < 0.4 * np.mean(gap_before), (gap_before, gap_after)
    with pytest.raises(HarmonizationError, match="'nowhere' is not among the training sites"):
        ComBat(reference_batch="nowhere").fit(sim.frame)


def test_nonparametric_close_to_parametric(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=400, p=100, k=5, min_site_size=50)
    parametric = ComBat().fit(sim.frame)
    nonparametric = ComBat(parametric=False).fit(sim.frame)
    assert nonparametric.n_iter_ == 0
    gap = np.abs(parametric.gamma_star_ - nonparametric.gamma_star_).mean()
    size = np.abs(parametric.gamma_star_).mean()
    assert gap < 0.05 * size, f"mean |gamma* P - NP| {gap:.4f} vs mean |gamma*| {size:.4f}"
    ratio = np.abs(np.log(parametric.delta_star_ / nonparametric.delta_star_)).mean()
    assert ratio < 0.05, f"mean |log delta* ratio| {ratio:.4f}"


def test_spline_basis() -> None:
    x = np.linspace(8, 85, 200)
    np.testing.assert_allclose(
        natural_spline_basis(x, natural_spline_knots(x, 1))[:, 0], (x - 8) / 77
    )
    knots = natural_spline_knots(x, 4)
    assert knots.size == 5 and knots[0] == 8 and knots[-1] == 85
    outside = natural_spline_basis(np.array([90.0, 100.0, 110.0, 0.0, -10.0, -20.0]), knots)
    steps = np.diff(outside, axis=0)
    np.testing.assert_allclose(steps[0], steps[1])  # linear above the last knot
    np.testing.assert_allclose(steps[3], steps[4])  # and below the first
    inside = natural_spline_basis(x, knots)
    assert inside.shape == (200, 4) and np.linalg.matrix_rank(inside) == 4
    assert natural_spline_knots(np.array([1.0, 1.0, 1.0, 2.0]), 4).tolist() == [1.0, 1.25, 2.0]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"spline_df": 0}, "'spline_df' parameter of ComBat must be an int >= 1"),
        ({"new_batches": "guess"}, "must be 'refuse' or 'adapt'"),
        ({"batch": "site"}, "must name a meta column"),
        ({"covariates": ("meta:age", "age")}, "must name a meta column"),
        ({"covariates": ("meta:site",)}, "cannot also be a covariate"),
        ({"eb": "yes"}, "'eb' parameter of ComBat must be True or False"),
        ({"passthrough_prefixes": ("meta:x",)}, "passthrough_prefixes"),
    ],
)
def test_bad_parameters(rng: np.random.Generator, params: dict[str, Any], message: str) -> None:
    sim = _sim(rng, n=60, p=3, k=3)
    with pytest.raises(HarmonizationError, match=message):
        ComBat(**params).fit(sim.frame)


def test_bad_data(rng: np.random.Generator) -> None:
    sim = _sim(rng, n=60, p=3, k=3)
    frame = sim.frame
    with pytest.raises(HarmonizationError, match=r"at least 2 sites.*'site00'"):
        ComBat().fit(frame.assign(**{SITE: "site00"}))
    with pytest.raises(HarmonizationError, match="needs a pandas DataFrame"):
        ComBat().fit(frame[sim.features].to_numpy())
    with pytest.raises(HarmonizationError, match=r"'note'.* not numeric"):
        ComBat().fit(frame.assign(note="x"))
    with pytest.raises(HarmonizationError, match=r"'f001'.* infinite"):
        ComBat().fit(frame.assign(f001=np.inf))
    with pytest.raises(HarmonizationError, match="duplicated column names"):
        ComBat().fit(pd.concat([frame, frame[["f000"]]], axis=1))
    with pytest.raises(HarmonizationError, match="same value"):
        ComBat().fit(frame.assign(**{SEX: 1.0}))
    confounded = frame.assign(**{SEX: (frame[SITE] == "site01").astype(float)})
    with pytest.raises(HarmonizationError, match=r"cannot separate covariate 'meta:sex'"):
        ComBat().fit(confounded)
    with pytest.raises(HarmonizationError, match="no feature column"):
        ComBat().fit(frame[[SITE, AGE, SEX]])


# ------------------------------------------------------------------------------- real data
def test_fcon1000_site_classification_drops(shared_data: Path) -> None:
    table = pd.read_csv(shared_data / "pcntoolkit-demo" / "fcon1000.csv")
    counts = table["site"].value_counts()
    table = table[table["site"].isin(counts[counts >= 20].index)].reset_index(drop=True)
    features = table.drop(columns=["sub_id", "age", "sex", "site"])
    frame = pd.concat([table[["site", "age", "sex"]].add_prefix(META_PREFIX), features], axis=1)
    y = table["site"].to_numpy()
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.1))
    harmonised = make_pipeline(ComBat(), clone(clf))
    before = balanced_accuracy_score(y, cross_val_predict(clf, features, y, cv=cv))
    after = balanced_accuracy_score(y, cross_val_predict(harmonised, frame, y, cv=cv))
    assert before > 0.6 and after < 0.5 * before, (
        f"fcon1000 site accuracy {before:.2f} -> {after:.2f}"
    )
