"""Does ComBat remove site effects and keep biology? Simulated data and fcon1000.

1. Simulated scans with known site effects (ComBat's own model, quadratic age curve): RMS
   error against the site-free truth before and after ComBat, cross-validated site
   classification accuracy before and after, ridge brain-age MAE with and without ComBat.
2. fcon1000 (``pcntoolkit-demo/fcon1000.csv``: 1,078 scans, 23 sites): site classification
   (5-fold stratified CV, logistic regression, ComBat with age + sex fitted inside the training
   folds) before and after; ridge brain-age MAE (log-age target, standardised features, ComBat
   with sex only, since age is the outcome) with and without ComBat, in 5-fold CV and in
   leave-site-out CV where the held-out site is adapted with ``ComBat.adapt`` from a random
   half of its scans (its controls) and both arms are scored on the other half.

The brain-age tables have a third arm, "ComBat age-free": ComBat estimated with age + sex on
the training scans (and on the new site's controls, whose ages are known), then applied to
every scan with age set to the training mean, so the scored scans' ages are never used. The
site offsets are then removed exactly and the site scales pivot around the feature's mean
instead of its age-specific mean; with sex only, ComBat instead removes the age differences
between sites along with the site effects (fcon1000's sites differ widely in age).

Everything learned (ComBat, scaling, ridge penalty) is fitted inside the training folds.

Usage: python benchmarks/eval_harmonise.py [--fcon PATH] [--seed 0] [--blas-threads N]
       [--skip-simulation] [--skip-fcon]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import accuracy_score, balanced_accuracy_score, mean_absolute_error
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from morphml.harmonize import META_PREFIX, ComBat
from morphml.harmonize._simulate import simulate_site_effects

SITE, AGE, SEX = f"{META_PREFIX}site", f"{META_PREFIX}age", f"{META_PREFIX}sex"
#: default location of the shared data, beside the repository
DEFAULT_FCON = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "pcntoolkit-demo"
    / "fcon1000.csv"
)
#: not morphometry: the scan id, the outcome/covariates, and the Euler number (a QC measure)
NON_FEATURES = ("sub_id", "age", "sex", "site", "avg_en")
ALPHAS = np.logspace(-2, 4, 25)


class _AgeFreeComBat(TransformerMixin, BaseEstimator):
    """ComBat estimated with age + sex, applied with age fixed at the training mean."""

    def __init__(self, new_batches: str = "refuse") -> None:
        self.new_batches = new_batches

    def fit(self, X: pd.DataFrame, y: Any = None) -> _AgeFreeComBat:
        self.mean_age_ = float(X[AGE].mean())
        self.combat_ = ComBat(new_batches=self.new_batches).fit(X)
        return self

    def adapt(self, X: pd.DataFrame) -> _AgeFreeComBat:
        # the new site's controls: their ages are known and used
        self.combat_.adapt(X)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return self.combat_.transform(X.assign(**{AGE: self.mean_age_}))


def _site_classifier() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))


def _age_model(log_target: bool) -> Any:
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS))
    if not log_target:
        return ridge
    return TransformedTargetRegressor(ridge, func=np.log, inverse_func=np.exp)


def _harmonised(model: Any, combat: Any) -> Any:
    """``model`` with ComBat as its first step (inside the log-target wrapper, if any)."""
    if isinstance(model, TransformedTargetRegressor):
        inner = model.regressor
        return TransformedTargetRegressor(
            Pipeline([("combat", combat), *clone(inner).steps]),
            func=model.func,
            inverse_func=model.inverse_func,
        )
    return Pipeline([("combat", combat), *clone(model).steps])


def _site_accuracy(
    frame: pd.DataFrame, features: list[str], cv: Any, combat: ComBat
) -> dict[str, float]:
    sites = frame[SITE].to_numpy()
    raw = cross_val_predict(_site_classifier(), frame[features], sites, cv=cv)
    harmonised = make_pipeline(combat, _site_classifier())
    after = cross_val_predict(harmonised, frame, sites, cv=cv)
    counts = pd.Series(sites).value_counts()
    return {
        "balanced accuracy before": balanced_accuracy_score(sites, raw),
        "balanced accuracy after": balanced_accuracy_score(sites, after),
        "accuracy before": accuracy_score(sites, raw),
        "accuracy after": accuracy_score(sites, after),
        "chance (balanced)": 1.0 / counts.size,
        "chance (majority)": float(counts.iloc[0] / counts.sum()),
    }


def _print(title: str, rows: dict[str, float], unit: str = "") -> None:
    print(f"\n{title}")
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        print(f"  {key:<{width}}  {value:8.3f}{unit}")


# ------------------------------------------------------------------------------ simulation
def simulation(seed: int) -> None:
    sim = simulate_site_effects(2000, 200, 10, random_state=seed, age_confounding=0.5)
    frame, features = sim.frame, sim.features
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    sites = frame[SITE].to_numpy()
    print(
        f"\n=== Simulated: {len(frame)} scans x {len(features)} features, {len(sim.sites)} sites "
        "(ComBat's model, quadratic age curve, site ages partly confounded) ==="
    )
    # out-of-fold harmonised values (ComBat fitted on the other folds) against the truth
    harmonised = pd.DataFrame(index=frame.index, columns=features, dtype=float)
    for train, test in cv.split(frame, sites):
        model = ComBat().fit(frame.iloc[train])
        harmonised.iloc[test] = model.transform(frame.iloc[test]).to_numpy()
    truth = sim.truth - sim.truth.mean()
    raw = frame[features]

    def rms(values: pd.DataFrame) -> float:
        return float(np.sqrt((((values - values.mean()) - truth) ** 2).to_numpy().mean()))

    sd = float(np.sqrt(((sim.truth - sim.truth.mean()) ** 2).to_numpy().mean()))
    _print(
        "RMS error vs site-free truth (deviations from each feature's mean; out-of-fold)",
        {"raw": rms(raw), "ComBat": rms(harmonised), "(RMS of the truth itself)": sd},
    )
    _print(
        "Site classification, 5-fold (logistic regression; ComBat age+sex in training folds)",
        _site_accuracy(frame, features, cv, ComBat()),
    )
    age = frame[AGE].to_numpy()
    plain = cross_val_predict(_age_model(False), frame[features], age, cv=cv.split(frame, sites))
    combat = _harmonised(_age_model(False), ComBat(covariates=(SEX,)))
    after = cross_val_predict(combat, frame.drop(columns=AGE), age, cv=cv.split(frame, sites))
    free = _harmonised(_age_model(False), _AgeFreeComBat())
    age_free = cross_val_predict(free, frame, age, cv=cv.split(frame, sites))
    _print(
        "Ridge age MAE, 5-fold (age is the outcome: ComBat with sex only, or age-free)",
        {
            "raw": mean_absolute_error(age, plain),
            "ComBat (sex)": mean_absolute_error(age, after),
            "ComBat age-free": mean_absolute_error(age, age_free),
        },
        " y",
    )


# -------------------------------------------------------------------------------- fcon1000
def fcon(path: Path, seed: int) -> None:
    table = pd.read_csv(path)
    counts = table["site"].value_counts()
    small = counts[counts < 10]
    table = table[~table["site"].isin(small.index)].reset_index(drop=True)
    features = [c for c in table.columns if c not in NON_FEATURES]
    meta = table[["site", "age", "sex"]].add_prefix(META_PREFIX)
    frame = pd.concat([meta, table[features]], axis=1)
    sites = frame[SITE].to_numpy()
    print(
        f"\n=== fcon1000 ({path.name}): {len(frame)} scans x {len(features)} features, "
        f"{frame[SITE].nunique()} sites (left out, fewer than 10 scans: "
        f"{', '.join(f'{s} ({n})' for s, n in small.items()) or 'none'}) ==="
    )
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    t0 = time.perf_counter()
    _print(
        "Site classification, 5-fold stratified (logistic regression; ComBat age+sex in "
        "training folds)",
        _site_accuracy(frame, features, cv, ComBat()),
    )
    print(f"  ({time.perf_counter() - t0:.0f} s)")

    age = frame[AGE].to_numpy()
    without_age = frame.drop(columns=AGE)
    arms: dict[str, tuple[Any, pd.DataFrame]] = {
        "raw": (_age_model(True), frame[features]),
        "ComBat (sex)": (_harmonised(_age_model(True), ComBat(covariates=(SEX,))), without_age),
        "ComBat age-free": (_harmonised(_age_model(True), _AgeFreeComBat()), frame),
    }
    _print(
        "Ridge age MAE, 5-fold stratified by site (log-age target; ComBat fitted in training "
        "folds)",
        {
            name: mean_absolute_error(age, cross_val_predict(model, X, age, cv=cv.split(X, sites)))
            for name, (model, X) in arms.items()
        },
        " y",
    )

    # leave-site-out: the held-out site is adapted from half of its scans, scored on the rest
    rng = np.random.default_rng(seed)
    adapting: dict[str, tuple[Any, pd.DataFrame]] = {
        "raw": arms["raw"],
        "ComBat (sex) + adapt": (
            _harmonised(_age_model(True), ComBat(covariates=(SEX,), new_batches="adapt")),
            without_age,
        ),
        "ComBat age-free + adapt": (
            _harmonised(_age_model(True), _AgeFreeComBat(new_batches="adapt")),
            frame,
        ),
    }
    rows = []
    for site in sorted(frame[SITE].unique()):
        held = np.flatnonzero(sites == site)
        train = np.flatnonzero(sites != site)
        shuffled = rng.permutation(held)
        controls, scored = shuffled[: held.size // 2], shuffled[held.size // 2 :]
        row: dict[str, Any] = {"site": site, "controls": controls.size, "scored": scored.size}
        for name, (model, X) in adapting.items():
            fitted = clone(model).fit(X.iloc[train], age[train])
            if name != "raw":
                fitted.regressor_.named_steps["combat"].adapt(X.iloc[controls])
            row[name] = mean_absolute_error(age[scored], fitted.predict(X.iloc[scored]))
        rows.append(row)
    table_lso = pd.DataFrame(rows).set_index("site")
    weights = table_lso["scored"] / table_lso["scored"].sum()
    _print(
        "Ridge age MAE, leave-site-out (held-out site adapted from a random half of its scans; "
        "every arm scored on the other half; scan-weighted mean over sites)",
        {name: float((table_lso[name] * weights).sum()) for name in adapting},
        " y",
    )
    for name in list(adapting)[1:]:
        better = int((table_lso[name] < table_lso["raw"]).sum())
        print(f"  {name} better than raw on {better} of {len(table_lso)} held-out sites")
    with pd.option_context("display.float_format", "{:.2f}".format, "display.width", 140):
        print(table_lso.to_string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fcon", type=Path, default=DEFAULT_FCON,
                        help=f"fcon1000.csv (default: {DEFAULT_FCON})")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="limit BLAS threads (helps on busy shared machines)")  # fmt: skip
    parser.add_argument("--skip-simulation", action="store_true")
    parser.add_argument("--skip-fcon", action="store_true")
    args = parser.parse_args()
    if not args.skip_fcon and not args.fcon.is_file():
        raise SystemExit(f"{args.fcon}: no such file (give --fcon PATH or --skip-fcon)")
    t0 = time.perf_counter()
    with threadpool_limits(args.blas_threads):
        if not args.skip_simulation:
            simulation(args.seed)
        if not args.skip_fcon:
            fcon(args.fcon, args.seed)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
