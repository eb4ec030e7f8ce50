"""Site-outcome confounding: how well does the site alone predict age and sex?

When sites differ in age range (fcon1000: some sites scanned students, others older adults),
site indicators stand in for age: a model given one-hot site covariates can lower its k-fold
error without learning anything about the brain. :func:`site_confounding` measures how much
of the outcome the site carries, with the simplest model that uses nothing else: each scan
is predicted by the mean outcome of its site in the training folds (what a model of site
one-hots alone converges to), cross-validated with all scans of a subject in the same fold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from morphml.evaluation._metrics import classification_metrics, regression_metrics
from morphml.evaluation._tuning import stable_seed
from morphml.features import SITE_PREFIX, FeatureFrame

__all__ = [
    "AGE_R2_WARN",
    "SEX_AUC_WARN",
    "frame_site_confounding",
    "site_confounding",
    "site_mean_oof",
]

#: site one-hots alone explaining this share of the age variance (cross-validated) is flagged
AGE_R2_WARN = 0.10
#: site one-hots alone separating the sexes with this AUC (cross-validated) is flagged
SEX_AUC_WARN = 0.60


def site_mean_oof(
    values: np.ndarray, sites: np.ndarray, subjects: np.ndarray, *, folds: int, seed: int
) -> np.ndarray:
    """Out-of-fold prediction of ``values`` by the training mean of each scan's site.

    Subjects (all their scans) are assigned to ``folds`` folds at random; a site absent from
    a fold's training part is predicted by that training part's overall mean.
    """
    codes, uniques = pd.factorize(pd.Series(subjects, dtype=object))
    rng = np.random.default_rng(seed)
    fold_of_subject = rng.permutation(len(uniques)) % folds
    fold = fold_of_subject[codes]
    site_codes, _ = pd.factorize(pd.Series(sites, dtype=object))
    n_sites = int(site_codes.max()) + 1
    out = np.empty(len(values), dtype=np.float64)
    for k in range(folds):
        test = fold == k
        train = ~test
        if not test.any():
            continue
        sums = np.bincount(site_codes[train], weights=values[train], minlength=n_sites)
        counts = np.bincount(site_codes[train], minlength=n_sites)
        overall = float(values[train].mean())
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(counts > 0, sums / np.maximum(counts, 1), overall)
        out[test] = means[site_codes[test]]
    return out


def site_confounding(
    meta: pd.DataFrame,
    *,
    site_covariates: bool,
    seed: int,
    n_boot: int = 1000,
    folds: int = 5,
) -> dict[str, Any]:
    """How well site alone predicts age and sex in a cohort, with a warning when it matters.

    Parameters
    ----------
    meta : DataFrame
        One row per scan with ``site``, ``subject_key``, ``age`` and ``sex`` (``M``/``F``;
        other or missing values are left out of the sex score).
    site_covariates : bool
        Whether the models are given one-hot site covariates (the warning is about them).
    seed : int
        Seed of the fold assignment and the bootstrap.
    n_boot : int, default 1000
        Bootstrap resamples (of subjects) for the intervals.
    folds : int, default 5
        Cross-validation folds (subjects kept whole).

    Returns
    -------
    dict
        ``n_sites``, ``site_covariates`` (as given), ``age`` (``r2``, ``r2_ci``, ``mae``,
        ``n``; R² of the cross-validated site-mean prediction: the share of age variance the
        site carries), ``sex`` (``auc``, ``auc_ci``, ``n``; or None with fewer than two
        sexes), ``rule`` (the thresholds), ``warning`` (a sentence, or None) and
        ``confounded`` (whether a threshold is crossed, whatever the covariates).

    Examples
    --------
    >>> meta = pd.DataFrame({
    ...     "site": ["a"] * 30 + ["b"] * 30, "subject_key": [f"s{i}" for i in range(60)],
    ...     "age": [20.0 + i % 5 for i in range(30)] + [70.0 + i % 5 for i in range(30)],
    ...     "sex": ["M", "F"] * 30})
    >>> res = site_confounding(meta, site_covariates=True, seed=0, n_boot=0)
    >>> res["age"]["r2"] > 0.9, res["warning"] is not None
    (True, True)
    """
    sites = meta["site"].fillna("unknown").astype(str).to_numpy()
    subjects = meta["subject_key"].astype(str).to_numpy()
    n_sites = len(set(sites))
    out: dict[str, Any] = {
        "n_sites": n_sites,
        "site_covariates": bool(site_covariates),
        "method": (
            f"each scan predicted by its site's mean in the training part of {folds}-fold "
            "cross-validation (subjects kept whole); intervals: subject bootstrap"
        ),
        "rule": {"age_r2": AGE_R2_WARN, "sex_auc": SEX_AUC_WARN},
        "age": None,
        "sex": None,
        "confounded": False,
        "warning": None,
    }
    if n_sites < 2:
        return out
    age = pd.to_numeric(meta["age"], errors="coerce").to_numpy(np.float64)
    known = np.isfinite(age)
    if known.sum() >= 2 * folds:
        oof = site_mean_oof(age[known], sites[known], subjects[known], folds=folds, seed=seed)
        m = regression_metrics(
            age[known], oof, groups=subjects[known], n_boot=n_boot, random_state=seed
        )
        out["age"] = {"n": int(known.sum()), "r2": m["r2"], "mae": m["mae"]}
        if n_boot:
            out["age"]["r2_ci"] = m["r2_ci"]
    sex = meta["sex"].astype(str).str.upper().to_numpy()
    has_sex = np.isin(sex, ["M", "F"])
    male = (sex == "M").astype(np.float64)
    if has_sex.sum() >= 2 * folds and 0 < male[has_sex].sum() < has_sex.sum():
        oof = site_mean_oof(
            male[has_sex], sites[has_sex], subjects[has_sex], folds=folds, seed=seed + 1
        )
        m = classification_metrics(
            male[has_sex], oof, groups=subjects[has_sex], n_boot=n_boot, random_state=seed
        )
        out["sex"] = {"n": int(has_sex.sum()), "auc": m["auc"]}
        if n_boot:
            out["sex"]["auc_ci"] = m["auc_ci"]
    carried = []
    if out["age"] is not None and out["age"]["r2"] >= AGE_R2_WARN:
        carried.append(f"age (cross-validated R² {out['age']['r2']:.2f})")
    if out["sex"] is not None and out["sex"]["auc"] >= SEX_AUC_WARN:
        carried.append(f"sex (cross-validated AUC {out['sex']['auc']:.2f})")
    out["confounded"] = bool(carried)
    if carried and site_covariates:
        out["warning"] = (
            f"site alone predicts {' and '.join(carried)} in the training cohort, and the "
            "models are given one-hot site covariates: they can stand in for the outcome and "
            "flatter the k-fold results (leave-site-out drops them). Set "
            "features.site_covariates: false, or harmonise with a confound-aware design"
        )
    return out


def frame_site_confounding(
    frame: FeatureFrame, *, seed: int, n_boot: int, folds: int
) -> dict[str, Any]:
    """:func:`site_confounding` of a training cohort, warning about its site covariates.

    Complements the site separability of the features that
    :func:`morphml.evaluation.harmonization_diagnostics` measures. ``seed`` is the run's
    seed (the diagnostic's own is derived from it).
    """
    used = any(c.startswith(SITE_PREFIX) for c in frame.X.columns)
    return site_confounding(
        frame.meta, site_covariates=used, seed=stable_seed(seed, "site-confounding"),
        n_boot=n_boot, folds=folds,
    )  # fmt: skip
