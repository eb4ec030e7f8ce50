"""``morphml fit``: pretrain brain-age and sex models with leak-free nested evaluation.

For every target, validation scheme and model:

* the outer splits keep each subject's sessions together (k-fold stratified by site,
  leave-site-out, or an external source);
* inside each outer training set, Optuna tunes the model on inner folds (whole sites held out
  after a leave-site-out split) and the tuned pipeline (imputation, scaling, eTIV adjustment
  inside) is refitted on the training set only;
* the brain-age bias correction (``bias_correction.method``: Beheshti or Cole / de Lange) is
  fitted on the *inner out-of-fold* predictions of the training set, never on the test fold;
* test-fold predictions are collected out of fold and scored with bootstrap intervals,
  overall and per site.

Final models are then tuned and refitted on all scans and saved in stable formats. The run
directory records everything an audit needs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from morphml.config import PretrainConfig, config_hash
from morphml.db import connect, record_run
from morphml.evaluation._splits import SCHEME_KEYS, inner_splits, outer_splits
from morphml.evaluation._tuning import predict_scores, stable_seed, tune
from morphml.exceptions import ConfigError
from morphml.features import SITE_PREFIX, FeatureFrame, load_frame, target_vector
from morphml.pipelines._progress import FitProgress, current_progress
from morphml.rundir import (
    PREDICTIONS,
    RunDir,
    build_manifest,
    read_raw_config,
    write_config,
    write_manifest,
    write_metrics,
    write_table,
)

__all__ = ["RunResult", "fit_pretrain"]


@dataclass
class RunResult:
    """Where a run went and what it measured."""

    run_dir: Path
    run_id: str
    metrics: dict[str, Any]


def _model_factory(
    target: str,
    name: str,
    etiv: bool,
    seed: int,
    device: str,
    harmonize: Any = None,
    threads: int = 2,
) -> Any:
    from morphml.models import make_age_model, make_sex_model

    maker = make_age_model if target == "age" else make_sex_model

    def build(params: dict[str, Any]) -> Any:
        model = maker(
            name, params, etiv_adjust=etiv, random_state=seed, device=device, n_jobs=threads
        )
        if harmonize is not None and harmonize.method == "combat":
            model.steps.insert(0, ("harmonize", harmonize_step(harmonize, target)))
        return model

    return build


def harmonize_step(spec: Any, target: str) -> Any:
    """The ComBat step of a model of ``target``: the outcome is never read at transform.

    The outcome is dropped from the covariates unless ``allow_outcome_covariate``; then it
    helps fit ComBat on the training fold but is set to its training mean in every transform.
    """
    from morphml.harmonize import HarmonizeStep

    covariates = [f"meta:{c}" for c in spec.covariates]
    neutral: list[str] = []
    if f"meta:{target}" in covariates:
        if spec.allow_outcome_covariate:
            neutral = [f"meta:{target}"]
        else:
            covariates.remove(f"meta:{target}")
    return HarmonizeStep(
        covariates=tuple(covariates), neutral=tuple(neutral), parametric=spec.parametric,
        spline_df=spec.age_spline_df, reference_batch=spec.reference_site,
        new_batches="refuse" if spec.new_sites == "refuse" else "adapt",
    )  # fmt: skip


def with_meta(X: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """``X`` plus the ``meta:site``, ``meta:age`` and ``meta:sex`` columns ComBat reads."""
    sex, known = target_vector(meta, "sex")
    out = X.copy()
    out["meta:site"] = meta["site"].fillna("unknown").astype(str).to_numpy()
    out["meta:age"] = meta["age"].to_numpy(np.float64)
    out["meta:sex"] = np.where(known, sex, np.nan)
    return out


def _variants(config: PretrainConfig, target: str) -> list[tuple[str, str, bool]]:
    """(label, model name, eTIV-adjusted) per model: sex is reported with and without."""
    out = []
    for name in config.models.get(target) or []:  # type: ignore[call-overload]
        if target == "sex":
            out.append((name, name, False))
            out.append((f"{name}_etiv_adjusted", name, True))
        else:
            out.append((name, name, config.features.etiv_adjust))
    return out


def _check_config(config: PretrainConfig, frame: FeatureFrame) -> None:
    """Everything that can be refused before any model is fitted."""
    for target in config.targets:
        if target not in config.models or not config.models[target]:
            raise ConfigError(f"models: no model listed for target {target!r}")
        y, mask = target_vector(frame.meta, target)
        missing = int((~mask).sum())
        if missing:
            raise ConfigError(
                f"target {target!r} is missing for {missing} of {len(mask)} scans in the cohort; "
                "restrict the cohort (e.g. cohort.min_age, cohort.sources) so every scan has it"
            )
        if target == "sex":
            counts = np.bincount(y.astype(int), minlength=2)
            if counts.min() < config.validation.folds:
                raise ConfigError(
                    f"target sex: {counts.min()} scans of the rarer sex, fewer than "
                    f"validation.folds = {config.validation.folds}"
                )
    _check_harmonize(config, frame)
    sites = frame.meta["site"].fillna("unknown").nunique()
    if "leave_site_out" in config.validation.schemes and sites < 2:
        raise ConfigError(
            f"validation.schemes has leave_site_out but the cohort has a single site "
            f"({frame.meta['site'].iloc[0]!r})"
        )
    n_subjects = frame.meta["subject_key"].nunique()
    if "kfold" in config.validation.schemes and n_subjects < config.validation.folds * 2:
        raise ConfigError(
            f"{n_subjects} subjects are too few for {config.validation.folds}-fold validation "
            f"(need at least {config.validation.folds * 2})"
        )
    for target in config.targets:
        y, _ = target_vector(frame.meta, target)
        stratify = None if target == "age" else _sex_site_labels(frame.meta, y)
        for scheme in config.validation.schemes:
            if scheme == "external":
                continue
            try:
                outer_splits(
                    scheme, frame.meta, folds=config.validation.folds, seed=config.seed,
                    stratify=stratify,
                )  # fmt: skip
            except ValueError as err:
                if isinstance(err, ConfigError):
                    raise
                raise ConfigError(
                    f"too few scans for {config.validation.folds}-fold {scheme} validation of "
                    f"{target} (each fold needs scans of every site and class): {err}"
                ) from None
    if "external" in config.validation.schemes:
        ext = config.validation.external_source
        if ext is None or ext not in set(frame.meta["source"]):
            raise ConfigError(
                f"validation.external_source {ext!r} is not a source of the cohort "
                f"({sorted(set(frame.meta['source']))})"
            )


def _check_harmonize(config: PretrainConfig, frame: FeatureFrame) -> None:
    spec = config.harmonize
    if spec.method == "none":
        return
    if spec.batch != "site":
        raise ConfigError(f"harmonize.batch: only 'site' is supported, got {spec.batch!r}")
    unknown = [c for c in spec.covariates if c not in ("age", "sex")]
    if unknown:
        raise ConfigError(f"harmonize.covariates: {unknown} are not age or sex")
    if "leave_site_out" in config.validation.schemes or "external" in config.validation.schemes:
        raise ConfigError(
            "harmonize.method: combat with leave_site_out/external validation: a held-out "
            "site has no site effect fitted in training. Validate with kfold, or see "
            "benchmarks/eval_harmonise.py for leave-site-out with adaptation from a site's "
            "own controls"
        )
    for col in spec.covariates:
        missing = int(frame.meta[col].isna().sum())
        if missing:
            raise ConfigError(
                f"harmonize.covariates: {col} is missing for {missing} scans; ComBat needs it "
                "for every scan (restrict the cohort)"
            )


def harmonization_diagnostics(
    config: PretrainConfig, X: pd.DataFrame, frame: FeatureFrame
) -> dict[str, Any]:
    """Site separability before and after ComBat (fitted in training folds), for the report."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from morphml.harmonize import HarmonizeStep

    sites = X["meta:site"].to_numpy()
    counts = pd.Series(sites).value_counts()
    keep = np.isin(sites, counts[counts >= 5].index)
    Xk, sk = X.loc[keep], sites[keep]
    features = [c for c in X.columns if not c.startswith(("meta:", SITE_PREFIX))]
    folds = StratifiedKFold(5, shuffle=True, random_state=stable_seed(config.seed, "harm"))
    before: list[float] = []
    after: list[float] = []
    for train, test in folds.split(Xk, sk):
        step = HarmonizeStep(covariates=tuple(f"meta:{c}" for c in config.harmonize.covariates))
        step.fit(Xk.iloc[train])
        for out, (a, b) in (
            (before, (Xk.iloc[train][features], Xk.iloc[test][features])),
            (after, (step.transform(Xk.iloc[train])[features],
                     step.transform(Xk.iloc[test])[features])),
        ):  # fmt: skip
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
            clf.fit(a.fillna(a.median()), sk[train])
            out.append(float((clf.predict(b.fillna(a.median())) == sk[test]).mean()))
    outcome = [c for c in config.harmonize.covariates if c in config.targets]
    warning = None
    if outcome and config.harmonize.allow_outcome_covariate:
        warning = (
            f"the outcome ({', '.join(outcome)}) is a ComBat covariate (allowed by the config): "
            "it is used to fit ComBat on training folds and set to its training mean at "
            "transform, so no test outcome is read, but the harmonised training features "
            "depend on the training outcomes"
        )
    return {
        "method": "combat",
        "covariates": list(config.harmonize.covariates),
        "site_accuracy_before": float(np.mean(before)),
        "site_accuracy_after": float(np.mean(after)),
        "chance": float(counts[counts >= 5].max() / keep.sum()),
        "sites_scored": int((counts >= 5).sum()),
        "warning": warning,
    }


def _site_confounding(config: PretrainConfig, frame: FeatureFrame) -> dict[str, Any]:
    """How well site alone predicts age and sex in the training cohort (see
    :func:`morphml.evaluation.site_confounding`); complements the site separability of the
    features that :func:`harmonization_diagnostics` measures."""
    from morphml.evaluation._confounding import site_confounding

    used = any(c.startswith(SITE_PREFIX) for c in frame.X.columns)
    return site_confounding(
        frame.meta, site_covariates=used, seed=stable_seed(config.seed, "site-confounding"),
        n_boot=config.validation.bootstrap, folds=config.validation.folds,
    )  # fmt: skip


def _bias_summary(
    config: PretrainConfig, tuned: dict[str, Any], prefix: str, n_folds: int
) -> dict[str, Any]:
    """The configured bias correction and how many outer folds it could be applied in."""
    method = config.bias_correction.method
    entries = [tuned.get(f"{prefix}{k}", {}).get("bias_correction") for k in range(n_folds)]
    corrected = sum(1 for e in entries if e is not None and e.get("method") != "none")
    slopes = [float(e["slope"]) for e in entries if e is not None and "slope" in e]
    out: dict[str, Any] = {
        "method": method,
        "folds": n_folds,
        "folds_corrected": corrected,
        "uses_true_age": method == "beheshti",
        "fitted_on": "inner out-of-fold predictions of each outer training set",
        "slope_range": [min(slopes), max(slopes)] if slopes else None,
    }
    if method == "cole":
        out["min_slope"] = config.bias_correction.min_slope
    if config.bias_correction.folds is not None:
        out["fitted_on"] = (
            f"out-of-fold predictions of the tuned model refitted on "
            f"{config.bias_correction.folds} inner folds of each outer training set"
        )
    notes = []
    if method == "beheshti":
        notes.append(
            "corrected predictions subtract a line in the known (true) age: the corrected "
            "gap is free of the age bias, but the corrected MAE is not an accuracy of "
            "prediction without age; the uncorrected MAE is"
        )
    if method != "none" and corrected < n_folds:
        notes.append(
            f"{n_folds - corrected} of {n_folds} folds left uncorrected (slope of predicted "
            f"on true age not above min_slope)"
        )
    out["note"] = "; ".join(notes) or None
    return out


def fit_pretrain(
    config: PretrainConfig,
    *,
    db: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str],
    resume: bool = True,
    record: bool = True,
    storage: str | None = None,
    scheduler: Any = None,
    progress: bool = False,
) -> RunResult:
    """Run a pretraining config and write its run directory.

    Parameters
    ----------
    config : PretrainConfig
    db : path-like, optional
        The database (``MORPHML_DB`` / ``morphml.duckdb`` by default).
    out : path-like
        The run directory; an interrupted run in it is resumed when ``resume``.
    record : bool, default True
        Record the run and its scans in the database's ``runs`` table.
    storage : str, optional
        Keep the Optuna studies in this storage (``postgresql://...``, ``sqlite:///...``)
        instead of journal files in the run directory.
    scheduler : str or distributed.Client, optional
        Run the tuning trials on this Dask cluster's workers (they share each study).
    progress : bool, default False
        Report progress on standard error: a bar counting trials with the time left on a
        terminal, plain lines (each finished tuning, and every 30 s) otherwise.
    """
    from morphml.models import resolve_device

    run_dir = Path(out)
    frame = load_frame(db, config.cohort, config.features)
    _check_config(config, frame)
    device = resolve_device(config.device)
    _check_resume(run_dir, config, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config)
    # shared storages name the studies per run (config, data, run directory): stable on resume
    run_tag = uuid.uuid5(uuid.NAMESPACE_URL, f"{frame.data_hash()}|{run_dir.resolve()}").hex
    studies = _Studies(storage, scheduler, f"{config_hash(config)[:8]}-{run_tag[:8]}")
    X = frame.X
    metrics: dict[str, Any] = {"targets": {}}
    if config.harmonize.method == "combat":
        X = with_meta(frame.X, frame.meta)
        metrics["harmonization"] = harmonization_diagnostics(config, X, frame)
    metrics["site_confounding"] = _site_confounding(config, frame)
    tracker = (
        FitProgress(_n_studies(config, frame) * config.tuning.trials, config.tuning.trials)
        if progress else None
    )  # fmt: skip
    with tracker or contextlib.nullcontext():
        final, predictions, tuned, seconds = _fit_all(
            config, frame, X, device, run_dir, studies, metrics, tracker
        )
    run_id = uuid.uuid4().hex[:16]
    _write_run(run_dir, run_id, config, frame, X, device, metrics, predictions,
               {"tuning": tuned, "final_models": final, "seconds": seconds})  # fmt: skip
    if record:  # audits re-fit with record=False: the database is only read
        with connect(db) as con:
            record_run(con, run_id, "pretrain", config_hash(config), list(frame.X.index), run_dir)
    return RunResult(run_dir, run_id, metrics)


def _check_resume(run_dir: Path, config: PretrainConfig, resume: bool) -> None:
    """Refuse a non-empty ``out`` unless it is an interrupted run of this very config."""
    if run_dir.exists() and any(run_dir.iterdir()):
        if not resume or not RunDir(run_dir).config.exists():
            raise ConfigError(f"{run_dir} exists and is not an interrupted run of this config")
        if read_raw_config(run_dir, ConfigError) != config.model_dump(mode="json"):
            raise ConfigError(f"{run_dir} holds a run of another config; choose another --out")


def _write_run(
    run_dir: Path,
    run_id: str,
    config: PretrainConfig,
    frame: FeatureFrame,
    X: pd.DataFrame,
    device: str,
    metrics: dict[str, Any],
    predictions: list[pd.DataFrame],
    results: dict[str, Any],
) -> None:
    """Predictions, metrics and manifest of a finished pretrain run (its config is already
    there: an interrupted run resumes from it)."""
    write_table(run_dir, PREDICTIONS, pd.concat(predictions, ignore_index=True))
    metrics["run_id"] = run_id
    write_metrics(run_dir, metrics)
    manifest = build_manifest(
        "pretrain", run_id, config=config, frame=frame, feature_ids=frame.feature_ids,
        device=device, site_covariates=[c for c in X.columns if c.startswith(SITE_PREFIX)],
        results=results,
    )  # fmt: skip
    write_manifest(run_dir, manifest)


def _n_studies(config: PretrainConfig, frame: FeatureFrame) -> int:
    """Optuna studies a fit runs: one per outer fold of each model and scheme, one per final
    model (for the progress counter)."""
    n_sites = int(frame.meta["site"].fillna("unknown").astype(str).nunique())
    folds = {"kfold": config.validation.folds, "leave_site_out": n_sites, "external": 1}
    per_model = sum(folds.get(s, 1) for s in config.validation.schemes) + 1  # + final model
    return sum(len(_variants(config, t)) for t in config.targets) * per_model


def _fit_all(
    config: PretrainConfig,
    frame: FeatureFrame,
    X: pd.DataFrame,
    device: str,
    run_dir: Path,
    studies: _Studies,
    metrics: dict[str, Any],
    tracker: FitProgress | None,
) -> tuple[dict[str, Any], list[pd.DataFrame], dict[str, Any], dict[str, float]]:
    """Every outer loop and the final models (the body of :func:`fit_pretrain`)."""
    predictions: list[pd.DataFrame] = []
    tuned: dict[str, Any] = {}
    seconds: dict[str, float] = {}  # wall-clock time of each tuning, for the manifest
    for target in config.targets:
        y, _ = target_vector(frame.meta, target)
        kind = "regression" if target == "age" else "classification"
        stratify = None if target == "age" else _sex_site_labels(frame.meta, y)
        metrics["targets"][target] = {}
        for label, name, etiv in _variants(config, target):
            from morphml.models import search_space

            build = _model_factory(
                target, name, etiv, config.seed, device, config.harmonize, _threads(config)
            )
            space = search_space(
                name, target, early_stopping=config.tuning.early_stopping_rounds is not None
            )
            result: dict[str, Any] = {}
            for scheme in config.validation.schemes:
                splits = outer_splits(
                    scheme,
                    frame.meta,
                    folds=config.validation.folds,
                    seed=config.seed,
                    external_source=config.validation.external_source,
                    stratify=stratify,
                )
                started = time.perf_counter()
                preds = _outer_loop(
                    config, frame, X, y, splits, scheme, target, label, kind, build, space,
                    run_dir, tuned, studies,
                )  # fmt: skip
                key = f"{target}/{label}/{SCHEME_KEYS[scheme]}"
                seconds[key] = round(time.perf_counter() - started, 1)
                if tracker is not None:
                    tracker.finished(key, seconds[key])
                predictions.append(preds)
                result[SCHEME_KEYS[scheme]] = _score(config, target, preds, frame)
                if target == "age":
                    result[SCHEME_KEYS[scheme]]["bias_correction"] = _bias_summary(
                        config, tuned, f"{target}/{label}/{scheme}/fold", len(splits)
                    )
            metrics["targets"][target][label] = result
    if tracker is not None:
        tracker.line("  final models: tuning and refitting on all scans")
    final = _final_models(config, frame, X, device, run_dir, studies, seconds)
    return final, predictions, tuned, seconds


def _sex_site_labels(meta: pd.DataFrame, y: np.ndarray) -> np.ndarray:
    sites = meta["site"].fillna("unknown").astype(str).to_numpy()
    labels = np.array([f"{s}|{int(v)}" for s, v in zip(sites, y, strict=True)])
    counts = pd.Series(labels).value_counts()
    rare = set(counts[counts < 2].index)
    # strata with a single scan cannot be split: fall back to the sex label for them
    return np.array([f"*|{lab.split('|')[1]}" if lab in rare else lab for lab in labels])


@dataclass(frozen=True)
class _Studies:
    """Where the Optuna studies live (journal files in the run directory, or a shared storage
    under run-specific names) and which Dask cluster runs their trials."""

    storage: str | None = None
    scheduler: Any = None
    prefix: str = ""

    def args(self, journal: Path, name: str) -> dict[str, Any]:
        where: dict[str, Any] = (
            {"storage_path": journal, "study_name": name}
            if self.storage is None
            else {"storage": self.storage, "study_name": f"{self.prefix}-{name}"}
        )
        return {**where, "client": self.scheduler}


def _jobs(config: PretrainConfig, studies: _Studies | None, tasks: int) -> int:
    """Processes for independent tunings (1 when a Dask cluster runs the trials)."""
    if studies is not None and studies.scheduler is not None:
        return 1
    return max(1, min(config.tuning.n_jobs, tasks))


def _threads(config: PretrainConfig) -> int:
    """XGBoost threads per model under the thread policy: the cores divided among the
    ``tuning.n_jobs`` processes (all cores when tunings run one at a time)."""
    from morphml._utils._threads import worker_threads

    return worker_threads(config.tuning.n_jobs)


def _trial_callbacks(study_key: str) -> list[Any]:
    """The progress counter's Optuna callback when this process reports progress."""
    tracker = current_progress()
    return [] if tracker is None else [tracker.trial_callback(study_key)]


def _run_tasks(jobs: int, function: Any, tasks: list[tuple[Any, ...]]) -> list[Any]:
    """``function(*task)`` for every task, in order; in ``jobs`` processes when above 1.

    Every task has its own seeds and its own study, so the results are those of a
    sequential run whatever order the processes finish in.
    """
    if jobs == 1:
        return [function(*task) for task in tasks]
    from joblib import Parallel, delayed

    from morphml._utils._threads import in_worker, worker_threads

    # thread policy: every process's BLAS/OpenMP pools limited to cores // jobs
    run = in_worker(function, worker_threads(jobs), "processes")
    return list(Parallel(n_jobs=jobs)(delayed(run)(*task) for task in tasks))


def _outer_loop(
    config: PretrainConfig,
    frame: FeatureFrame,
    X: pd.DataFrame,
    y: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    scheme: str,
    target: str,
    label: str,
    kind: str,
    build: Any,
    space: Any,
    run_dir: Path,
    tuned: dict[str, Any],
    studies: _Studies | None = None,
) -> pd.DataFrame:
    tasks = [
        (config, frame, X, y, train, test, k, scheme, target, label, kind, build, space,
         run_dir, studies)
        for k, (train, test) in enumerate(splits)
    ]  # fmt: skip
    rows = []
    tracker = current_progress()
    for key, entry, fold in _run_tasks(_jobs(config, studies, len(tasks)), _outer_fold, tasks):
        tuned[key] = entry
        rows.append(fold)
        if tracker is not None:
            tracker.study_done(key)
    return pd.concat(rows, ignore_index=True)


def _outer_fold(
    config: PretrainConfig,
    frame: FeatureFrame,
    X: pd.DataFrame,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    k: int,
    scheme: str,
    target: str,
    label: str,
    kind: str,
    build: Any,
    space: Any,
    run_dir: Path,
    studies: _Studies | None,
) -> tuple[str, dict[str, Any], pd.DataFrame]:
    """Tune on the training part of one outer split, refit, predict its test part."""
    inner = inner_splits(
        scheme,
        frame.meta,
        train,
        folds=config.tuning.inner_folds,
        seed=stable_seed(config.seed, "inner", target, label, scheme, k),
        stratify=None if target == "age" else y.astype(int),
    )
    Xtr = _site_columns_for(X, train, test)
    result = tune(
        build,
        space,
        Xtr,
        y[train],
        inner,
        kind=kind,
        trials=config.tuning.trials,
        timeout=config.tuning.timeout,
        seed=stable_seed(config.seed, "tpe", target, label, scheme, k),
        **(studies or _Studies()).args(
            run_dir / "studies" / f"{target}-{label}-{scheme}.journal",
            f"{target}-{label}-{scheme}-fold{k}",
        ),
        pruning=config.tuning.pruning,
        pruner=config.tuning.pruner,
        early_stopping_rounds=config.tuning.early_stopping_rounds,
        callbacks=_trial_callbacks(f"{target}/{label}/{scheme}/fold{k}"),
    )
    entry = {"params": result.params, "inner_loss": result.score, "trials": result.n_trials}
    model = build(result.params).fit(Xtr, y[train])
    Xte = X.iloc[test][Xtr.columns]
    pred = predict_scores(model, Xte, kind)
    fold = pd.DataFrame(
        {
            "scan_key": X.index[test],
            "subject_key": frame.meta["subject_key"].to_numpy()[test],
            "site": frame.meta["site"].to_numpy()[test],
            "sex": frame.meta["sex"].to_numpy()[test],
            "target": target,
            "model": label,
            "scheme": SCHEME_KEYS[scheme],
            "fold": k,
            "y_true": y[test],
            "y_pred": pred,
        }
    )
    if target == "age":
        oof = _bias_oof(
            config, frame.meta, scheme, train, build, result, Xtr, y[train],
            stable_seed(config.seed, "bias", target, label, scheme, k),
        )  # fmt: skip
        corrector = _bias_corrector(config, y[train], oof)
        fold["y_pred_corrected"] = (
            corrector.transform(y[test], pred) if corrector is not None else pred
        )
        entry["bias_correction"] = _bias_entry(config, corrector)
    return f"{target}/{label}/{scheme}/fold{k}", entry, fold


def _bias_corrector(config: PretrainConfig, age: np.ndarray, oof: np.ndarray) -> Any:
    """The bias correction fitted on out-of-fold training predictions, or None.

    None when ``bias_correction.method`` is ``none``, and for the Cole correction when the
    predictions barely track age (slope not above ``min_slope``): dividing by that slope
    would amplify noise. The corrected prediction is then the uncorrected one, and the final
    model's sidecar carries no correction (``morphml predict`` then reports the uncorrected
    age in both columns). The Beheshti correction divides by nothing and always applies.
    """
    from morphml.models import AgeBiasCorrector, BiasCorrectionError

    spec = config.bias_correction
    if spec.method == "none":
        return None
    try:
        return AgeBiasCorrector(method=spec.method, min_slope=spec.min_slope).fit(age, oof)
    except BiasCorrectionError:
        return None


def _bias_oof(
    config: PretrainConfig,
    meta: pd.DataFrame,
    scheme: str,
    train: np.ndarray,
    build: Any,
    result: Any,
    X: pd.DataFrame,
    y: np.ndarray,
    seed: int,
) -> np.ndarray:
    """Out-of-fold predictions of the training set that the bias correction is fitted on.

    The tuning's inner out-of-fold predictions of the best parameters, or, with
    ``bias_correction.folds``, those of the best parameters refitted on that many inner
    folds (whole sites held out after a leave-site-out split, as in tuning).
    """
    spec = config.bias_correction
    if spec.folds is None or spec.method == "none":
        return np.asarray(result.oof, dtype=np.float64)
    splits = inner_splits(scheme, meta, train, folds=spec.folds, seed=seed)
    oof = np.full(len(y), np.nan)
    for fit_rows, held in splits:
        model = build(result.params).fit(X.iloc[fit_rows], y[fit_rows])
        oof[held] = predict_scores(model, X.iloc[held], "regression")
    return oof


def _bias_entry(config: PretrainConfig, corrector: Any) -> dict[str, Any]:
    """What one fold's correction was (for the manifest and the metrics' summary)."""
    if corrector is None:
        return {"method": "none", "configured": config.bias_correction.method}
    return {
        "method": corrector.method,
        "intercept": corrector.intercept_,
        "slope": corrector.slope_,
    }


def _site_columns_for(X: pd.DataFrame, train: np.ndarray, test: np.ndarray) -> pd.DataFrame:
    """The training matrix with the site indicators that can be used for this split.

    When every test site also appears in training, the indicators of the training sites are
    kept (constant ones dropped). When a test site was never seen (leave-site-out, external),
    no site term can apply to it, and predicting with all indicators at zero would put those
    scans at an arbitrary baseline: all site indicators are dropped for that split.
    """
    site_cols = [c for c in X.columns if c.startswith(SITE_PREFIX)]
    Xtr = X.iloc[train]
    if not site_cols:
        return Xtr
    seen = Xtr[site_cols].to_numpy().any(axis=0)
    test_sites = X.iloc[test][site_cols].to_numpy()
    unseen_test = (test_sites[:, ~seen] > 0).any()
    if unseen_test:
        return Xtr.drop(columns=site_cols)
    constant = [c for c in site_cols if Xtr[c].nunique() <= 1]
    return Xtr.drop(columns=constant)


def _score(
    config: PretrainConfig, target: str, preds: pd.DataFrame, frame: FeatureFrame | None = None
) -> dict[str, Any]:
    from morphml.evaluation._metrics import (
        brain_age_metrics,
        classification_metrics,
        per_group_metrics,
    )

    n_boot = config.validation.bootstrap
    seed = stable_seed(config.seed, "bootstrap", target)
    groups = preds["subject_key"].to_numpy()
    y = preds["y_true"].to_numpy()
    p = preds["y_pred"].to_numpy()
    out: dict[str, Any]
    if target == "age":
        out = dict(brain_age_metrics(
            y, p, preds["y_pred_corrected"].to_numpy(), groups=groups, n_boot=n_boot,
            random_state=seed,
        ))  # fmt: skip
        out["per_site"] = per_group_metrics(
            "regression", y, p, preds["site"].astype(str).to_numpy(), n_boot=n_boot,
            random_state=seed,
        )  # fmt: skip
        _mark_narrow_sites(out["per_site"], preds)
    else:
        out = dict(classification_metrics(y, p, groups=groups, n_boot=n_boot, random_state=seed))
        out["per_site"] = per_group_metrics(
            "classification", y, p, preds["site"].astype(str).to_numpy(), n_boot=n_boot,
            random_state=seed,
        )  # fmt: skip
    return out


#: within a site whose ages have a smaller SD (years), R² is not a meaningful accuracy
NARROW_AGE_SD = 5.0


def _mark_narrow_sites(per_site: dict[str, Any], preds: pd.DataFrame) -> None:
    """Add ``age_sd`` and ``r2_meaningful`` to each site's brain-age metrics.

    R² compares the error with the variance of age *within the site*: at a site whose people
    are all 20-25, a 4-year MAE gives a hugely negative R² although the predictions are as
    good as elsewhere. R² is marked not meaningful where the site's age SD is below
    ``NARROW_AGE_SD`` years (the report then hides it); MAE and mean gap stay meaningful.
    """
    sd = preds.groupby(preds["site"].astype(str))["y_true"].std(ddof=1)
    for site, entry in per_site.items():
        value = sd.get(site)
        if value is None or not np.isfinite(value):
            continue
        entry["age_sd"] = float(value)
        if "skipped" not in entry:
            entry["r2_meaningful"] = bool(value >= NARROW_AGE_SD)
            if value < NARROW_AGE_SD:
                entry["r2_note"] = (
                    f"age SD {value:.1f} < {NARROW_AGE_SD:g} years: R² within so narrow an "
                    "age range is not a meaningful accuracy"
                )


def _final_models(
    config: PretrainConfig,
    frame: FeatureFrame,
    X: pd.DataFrame,
    device: str,
    run_dir: Path,
    studies: _Studies | None = None,
    seconds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Tune and refit every model on all scans; save them with a sidecar (and put each
    model's wall-clock seconds in ``seconds``)."""
    models_dir = run_dir / "models"
    if models_dir.exists():
        shutil.rmtree(models_dir)
    models_dir.mkdir()
    out: dict[str, Any] = {}
    versions = sorted(
        {f"{s} {v}" for s, v in zip(frame.meta["software"], frame.meta["version"], strict=True)}
    )
    atlases = sorted({f.split(".", 1)[0] for f in frame.feature_ids})
    tasks = [
        (config, frame, X, target, label, name, etiv, device, run_dir, studies, versions, atlases)
        for target in config.targets
        for label, name, etiv in _variants(config, target)
    ]  # fmt: skip
    tracker = current_progress()
    for key, entry, elapsed in _run_tasks(_jobs(config, studies, len(tasks)), _final_model, tasks):
        out[key] = entry
        if seconds is not None:
            seconds[f"{key}/final"] = elapsed
        if tracker is not None:
            tracker.study_done(f"{key}/final")
    return out


def _final_model(
    config: PretrainConfig,
    frame: FeatureFrame,
    X: pd.DataFrame,
    target: str,
    label: str,
    name: str,
    etiv: bool,
    device: str,
    run_dir: Path,
    studies: _Studies | None,
    versions: list[str],
    atlases: list[str],
) -> tuple[str, dict[str, Any], float]:
    """Tune and refit one model on all scans; save it with its sidecar."""
    from morphml.models import save_model, search_space

    started = time.perf_counter()
    y, _ = target_vector(frame.meta, target)
    kind = "regression" if target == "age" else "classification"
    all_idx = np.arange(len(frame.meta))
    build = _model_factory(
        target, name, etiv, config.seed, device, config.harmonize, _threads(config)
    )
    space = search_space(
        name, target, early_stopping=config.tuning.early_stopping_rounds is not None
    )
    inner = inner_splits(
        "kfold",
        frame.meta,
        all_idx,
        folds=config.tuning.inner_folds,
        seed=stable_seed(config.seed, "final-inner", target, label),
        stratify=None if target == "age" else y.astype(int),
    )
    result = tune(
        build,
        space,
        X,
        y,
        inner,
        kind=kind,
        trials=config.tuning.trials,
        timeout=config.tuning.timeout,
        seed=stable_seed(config.seed, "final-tpe", target, label),
        **(studies or _Studies()).args(
            run_dir / "studies" / f"{target}-{label}-final.journal",
            f"{target}-{label}-final",
        ),
        pruning=config.tuning.pruning,
        pruner=config.tuning.pruner,
        early_stopping_rounds=config.tuning.early_stopping_rounds,
        callbacks=_trial_callbacks(f"{target}/{label}/final"),
    )
    model = build(result.params).fit(X, y)
    sidecar: dict[str, Any] = {
        "target": target,
        "model": label,
        "params": result.params,
        "etiv_adjusted": etiv,
        "atlases": atlases,
        "software_versions": versions,
        "training_data_hash": frame.data_hash(),
        "n_training_scans": len(y),
        "site_covariates": [c for c in X.columns if c.startswith(SITE_PREFIX)],
        "feature_transforms": {
            "log_volumes": config.features.log_volumes,
            "relative_thickness": config.features.relative_thickness,
        },
    }
    if target == "age":
        oof = _bias_oof(
            config, frame.meta, "kfold", all_idx, build, result, X, y,
            stable_seed(config.seed, "final-bias", target, label),
        )  # fmt: skip
        corrector = _bias_corrector(config, y, oof)
        if corrector is not None:
            sidecar["bias_correction"] = corrector.to_dict()
    stem = run_dir / "models" / f"{target}-{label}"
    files = save_model(model, stem, sidecar=sidecar)
    entry = {"files": [str(f.relative_to(run_dir)) for f in files], "params": result.params}
    return f"{target}/{label}", entry, round(time.perf_counter() - started, 1)
