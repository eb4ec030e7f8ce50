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

This module orchestrates: the nested cross-validation itself (plans, inner search, outer
folds), the checks, diagnostics, bias correction and scoring live in :mod:`morphml.evaluation`.
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

import pandas as pd

from morphml.config import PretrainConfig, config_hash
from morphml.db import connect, record_run
from morphml.evaluation import (
    ModelSearch,
    NestedCV,
    NestedCVPlan,
    NestedCVResult,
    SearchPlan,
    StudyStore,
    check_pretrain_data,
    frame_site_confounding,
    harmonization_diagnostics,
    nested_cv_plans,
    parallel_jobs,
    run_tasks,
    score_predictions,
)
from morphml.exceptions import ConfigError
from morphml.features import (
    SITE_PREFIX,
    FeatureFrame,
    load_frame,
    target_vector,
    with_meta,
)
from morphml.pipelines._progress import FitProgress, TrialCounter, current_progress
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
    check_pretrain_data(config, frame)
    plans = nested_cv_plans(config, frame)  # the outer splits, drawn once
    device = resolve_device(config.device)
    _check_resume(run_dir, config, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config)
    # shared storages name the studies per run (config, data, run directory): stable on resume
    run_tag = uuid.uuid5(uuid.NAMESPACE_URL, f"{frame.data_hash()}|{run_dir.resolve()}").hex
    studies = StudyStore(
        RunDir(run_dir).studies, storage, scheduler, f"{config_hash(config)[:8]}-{run_tag[:8]}"
    )
    X, metrics = _diagnostics(config, frame)
    tracker = (
        FitProgress(_n_studies(config, plans) * config.tuning.trials, config.tuning.trials)
        if progress else None
    )  # fmt: skip
    with tracker or contextlib.nullcontext():
        final, predictions, tuned, seconds = _fit_all(
            _Run(config, frame, X, device, run_dir, studies), plans, metrics, tracker
        )
    run_id = uuid.uuid4().hex[:16]
    _write_run(run_dir, run_id, config, frame, X, device, metrics, predictions,
               {"tuning": tuned, "final_models": final, "seconds": seconds})  # fmt: skip
    if record:  # audits re-fit with record=False: the database is only read
        with connect(db) as con:
            record_run(con, run_id, "pretrain", config_hash(config), list(frame.X.index), run_dir)
    return RunResult(run_dir, run_id, metrics)


@dataclass(frozen=True)
class _Run:
    """What every step of one fit shares: the config, its cohort and where results go."""

    config: PretrainConfig
    frame: FeatureFrame
    X: pd.DataFrame
    device: str
    run_dir: Path
    studies: StudyStore


def _diagnostics(
    config: PretrainConfig, frame: FeatureFrame
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The model matrix (with the ``meta:`` columns ComBat reads, when harmonising) and the
    cohort's diagnostics: site separability before/after ComBat, site confounding."""
    X = frame.X
    metrics: dict[str, Any] = {"targets": {}}
    if config.harmonize.method == "combat":
        X = with_meta(frame.X, frame.meta)
        metrics["harmonization"] = harmonization_diagnostics(
            X, config.harmonize, targets=list(config.targets), seed=config.seed
        )
    metrics["site_confounding"] = frame_site_confounding(
        frame, seed=config.seed, n_boot=config.validation.bootstrap,
        folds=config.validation.folds,
    )  # fmt: skip
    return X, metrics


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


def _n_studies(config: PretrainConfig, plans: dict[str, dict[str, NestedCVPlan]]) -> int:
    """Optuna studies a fit runs: one per outer fold of each model and scheme, one per final
    model (for the progress counter)."""
    return sum(
        len(_variants(config, target)) * (sum(len(p.splits) for p in by_scheme.values()) + 1)
        for target, by_scheme in plans.items()
    )


def _search(run: _Run, target: str, label: str, name: str, etiv: bool) -> ModelSearch:
    """The inner search of one model of ``target``, as the config describes it."""
    from morphml.models import search_space

    config = run.config
    build = _model_factory(
        target, name, etiv, config.seed, run.device, config.harmonize, _threads(config)
    )
    space = search_space(
        name, target, early_stopping=config.tuning.early_stopping_rounds is not None
    )
    return ModelSearch(
        build, space, SearchPlan.from_config(config, target), label=label,
        studies=run.studies, trial_callbacks=_trial_counter(),
    )  # fmt: skip


def _fit_all(
    run: _Run,
    plans: dict[str, dict[str, NestedCVPlan]],
    metrics: dict[str, Any],
    tracker: FitProgress | None,
) -> tuple[dict[str, Any], list[pd.DataFrame], dict[str, Any], dict[str, float]]:
    """Every nested cross-validation and the final models (the body of :func:`fit_pretrain`)."""
    config, meta = run.config, run.frame.meta
    predictions: list[pd.DataFrame] = []
    tuned: dict[str, Any] = {}
    seconds: dict[str, float] = {}  # wall-clock time of each tuning, for the manifest
    for target in config.targets:
        y, _ = target_vector(meta, target)
        metrics["targets"][target] = {}
        for label, name, etiv in _variants(config, target):
            search = _search(run, target, label, name, etiv)
            scored: dict[str, Any] = {}
            for plan in plans[target].values():
                cv = NestedCV(search, plan).run(run.X, y, meta)
                key = f"{target}/{label}/{plan.key}"
                _record(cv, key, tuned, seconds, tracker)
                predictions.append(cv.predictions)
                scored[plan.key] = _scored(config, plan, cv)
            metrics["targets"][target][label] = scored
    if tracker is not None:
        tracker.line("  final models: tuning and refitting on all scans")
    final = _final_models(run, seconds)
    return final, predictions, tuned, seconds


def _record(
    cv: NestedCVResult,
    key: str,
    tuned: dict[str, Any],
    seconds: dict[str, float],
    tracker: FitProgress | None,
) -> None:
    """Keep one nested CV's fold entries and time for the manifest; advance the progress."""
    tuned.update(cv.folds)
    if tracker is not None:
        for fold in cv.folds:
            tracker.study_done(fold)
    seconds[key] = cv.seconds
    if tracker is not None:
        tracker.finished(key, seconds[key])


def _scored(config: PretrainConfig, plan: NestedCVPlan, cv: NestedCVResult) -> dict[str, Any]:
    """The metrics of one nested CV's out-of-fold predictions (and its bias correction)."""
    target = plan.search.target
    out = score_predictions(
        target, cv.predictions, n_boot=config.validation.bootstrap, seed=config.seed
    )
    if target == "age":
        out["bias_correction"] = cv.bias_summary(plan.search.bias)
    return out


def _threads(config: PretrainConfig) -> int:
    """XGBoost threads per model under the thread policy: the cores divided among the
    ``tuning.n_jobs`` processes (all cores when tunings run one at a time)."""
    from morphml._utils._threads import worker_threads

    return worker_threads(config.tuning.n_jobs)


def _trial_counter() -> TrialCounter | None:
    """The progress counter's Optuna callbacks (for tunings here or in worker processes)
    when this fit reports progress."""
    tracker = current_progress()
    return None if tracker is None else tracker.trial_counter()


def _final_models(run: _Run, seconds: dict[str, float] | None = None) -> dict[str, Any]:
    """Tune and refit every model on all scans; save them with a sidecar (and put each
    model's wall-clock seconds in ``seconds``)."""
    config = run.config
    models_dir = RunDir(run.run_dir).models
    if models_dir.exists():
        shutil.rmtree(models_dir)
    models_dir.mkdir()
    out: dict[str, Any] = {}
    tasks = [
        (run, _search(run, target, label, name, etiv), etiv)
        for target in config.targets
        for label, name, etiv in _variants(config, target)
    ]
    tracker = current_progress()
    jobs = parallel_jobs(config.tuning.n_jobs, run.studies, len(tasks))
    for key, entry, elapsed in run_tasks(jobs, _final_model, tasks):
        out[key] = entry
        if seconds is not None:
            seconds[f"{key}/final"] = elapsed
        if tracker is not None:
            tracker.study_done(f"{key}/final")
    return out


def _final_model(run: _Run, search: ModelSearch, etiv: bool) -> tuple[str, dict[str, Any], float]:
    """Tune and refit one model on all scans; save it with its sidecar."""
    from morphml.models import save_model

    started = time.perf_counter()
    frame, X, target = run.frame, run.X, search.plan.target
    y, _ = target_vector(frame.meta, target)
    fitted = search.fit_final(X, y, frame.meta)
    sidecar: dict[str, Any] = {
        "target": target,
        "model": search.label,
        "params": fitted.params,
        "etiv_adjusted": etiv,
        "atlases": sorted({f.split(".", 1)[0] for f in frame.feature_ids}),
        "software_versions": sorted(
            {
                f"{s} {v}"
                for s, v in zip(frame.meta["software"], frame.meta["version"], strict=True)
            }
        ),
        "training_data_hash": frame.data_hash(),
        "n_training_scans": len(y),
        "site_covariates": [c for c in X.columns if c.startswith(SITE_PREFIX)],
        "feature_transforms": {
            "log_volumes": run.config.features.log_volumes,
            "relative_thickness": run.config.features.relative_thickness,
        },
    }
    if target == "age" and fitted.corrector is not None:
        sidecar["bias_correction"] = fitted.corrector.to_dict()
    stem = RunDir(run.run_dir).model_stem(target, search.label)
    files = save_model(fitted.model, stem, sidecar=sidecar)
    entry = {"files": [str(f.relative_to(run.run_dir)) for f in files], "params": fitted.params}
    return f"{target}/{search.label}", entry, round(time.perf_counter() - started, 1)
