"""Nested cross-validation: an inner tuning inside an outer cross-validation.

The composition is scikit-learn's (a search estimator inside ``cross_validate``), spelt out
so that every step stays inside the training part of each outer split:

* a :class:`NestedCVPlan` holds one outer validation of one target, built once from the
  config: its scheme, its outer splits (drawn once; subjects kept whole), the tuning and
  bias-correction settings and the run's seed;
* a :class:`ModelSearch` is the inner search of one model: Optuna tunes it on inner folds of
  a training set (:func:`morphml.evaluation.tune`; whole sites held out after a leave-site-out
  split), refits the best parameters on that training set, and fits the brain-age bias
  correction on out-of-fold training predictions;
* :class:`NestedCV` runs a search in every outer fold (in several processes when
  ``tuning.n_jobs`` says so) and returns the test folds' out-of-fold predictions, each fold's
  parameters and the time taken.

Every seed is derived from the run's seed and the fold's name, so a fold's result does not
depend on the order folds finish in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from morphml.config import PretrainConfig, TuningSpec
from morphml.evaluation._bias_correction import (
    BiasSettings,
    bias_entry,
    bias_summary,
    fit_bias_correction,
    refit_oof,
)
from morphml.evaluation._splits import SCHEME_KEYS, inner_splits, outer_splits
from morphml.evaluation._tuning import TuningResult, predict_scores, stable_seed, tune
from morphml.exceptions import ConfigError
from morphml.features import SITE_PREFIX, FeatureFrame, target_vector

__all__ = [
    "ModelSearch",
    "NestedCV",
    "NestedCVPlan",
    "NestedCVResult",
    "SearchPlan",
    "StudyStore",
    "TunedModel",
    "TuningSettings",
    "nested_cv_plans",
    "parallel_jobs",
    "run_tasks",
    "sex_site_labels",
    "site_columns_for",
]

Split = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class TuningSettings:
    """How each model is tuned (the config's ``tuning`` section)."""

    trials: int = 20
    timeout: float | None = None
    inner_folds: int = 3
    pruning: bool = True
    pruner: str = "median"
    early_stopping_rounds: int | None = 50
    n_jobs: int = 1

    @classmethod
    def from_spec(cls, spec: TuningSpec) -> TuningSettings:
        """The settings of a config's ``tuning`` section."""
        return cls(
            trials=spec.trials, timeout=spec.timeout, inner_folds=spec.inner_folds,
            pruning=spec.pruning, pruner=spec.pruner,
            early_stopping_rounds=spec.early_stopping_rounds, n_jobs=spec.n_jobs,
        )  # fmt: skip


@dataclass(frozen=True)
class SearchPlan:
    """How every model of one target is tuned, refitted and bias-corrected."""

    target: str
    seed: int
    tuning: TuningSettings = field(default_factory=TuningSettings)
    bias: BiasSettings = field(default_factory=BiasSettings)

    @property
    def kind(self) -> str:
        """``regression`` (age) or ``classification`` (sex)."""
        return "regression" if self.target == "age" else "classification"

    @classmethod
    def from_config(cls, config: PretrainConfig, target: str) -> SearchPlan:
        """The search plan of ``target`` in a pretraining config."""
        return cls(
            target=target,
            seed=config.seed,
            tuning=TuningSettings.from_spec(config.tuning),
            bias=BiasSettings.from_spec(config.bias_correction),
        )


@dataclass(frozen=True)
class NestedCVPlan:
    """One outer validation of one target: scheme, outer splits and the inner search's plan."""

    scheme: str
    splits: tuple[Split, ...]
    search: SearchPlan

    @property
    def key(self) -> str:
        """The scheme's key in ``metrics.json`` and ``predictions.parquet``."""
        return SCHEME_KEYS[self.scheme]


def sex_site_labels(meta: pd.DataFrame, y: np.ndarray) -> np.ndarray:
    """Outer k-fold strata of a sex model: site and sex (the sex alone for a lone scan)."""
    sites = meta["site"].fillna("unknown").astype(str).to_numpy()
    labels = np.array([f"{s}|{int(v)}" for s, v in zip(sites, y, strict=True)])
    counts = pd.Series(labels).value_counts()
    rare = set(counts[counts < 2].index)
    # strata with a single scan cannot be split: fall back to the sex label for them
    return np.array([f"*|{lab.split('|')[1]}" if lab in rare else lab for lab in labels])


def nested_cv_plans(
    config: PretrainConfig, frame: FeatureFrame
) -> dict[str, dict[str, NestedCVPlan]]:
    """Target -> scheme -> plan: every outer split of a pretraining config, drawn once.

    Raises
    ------
    ConfigError
        A k-fold or leave-site-out split cannot be drawn (too few scans of a site or class).
    """
    validation = config.validation
    plans: dict[str, dict[str, NestedCVPlan]] = {}
    for target in config.targets:
        search = SearchPlan.from_config(config, target)
        y, _ = target_vector(frame.meta, target)
        stratify = None if target == "age" else sex_site_labels(frame.meta, y)
        plans[target] = {}
        for scheme in validation.schemes:
            try:
                splits = outer_splits(
                    scheme, frame.meta, folds=validation.folds, seed=config.seed,
                    external_source=validation.external_source, stratify=stratify,
                )  # fmt: skip
            except ValueError as err:
                if isinstance(err, ConfigError) or scheme == "external":
                    raise
                raise ConfigError(
                    f"too few scans for {validation.folds}-fold {scheme} validation of "
                    f"{target} (each fold needs scans of every site and class): {err}"
                ) from None
            plans[target][scheme] = NestedCVPlan(scheme, tuple(splits), search)
    return plans


@dataclass(frozen=True)
class StudyStore:
    """Where the Optuna studies live (journal files in ``directory``, or a shared storage
    under run-specific names) and which Dask cluster runs their trials."""

    directory: Path | None = None
    storage: str | None = None
    scheduler: Any = None
    prefix: str = ""

    def args(self, file: str, name: str) -> dict[str, Any]:
        """Keyword arguments of :func:`tune` for the study ``name`` (journal ``file``)."""
        where: dict[str, Any]
        if self.storage is not None:
            where = {"storage": self.storage, "study_name": f"{self.prefix}-{name}"}
        else:
            journal = None if self.directory is None else self.directory / f"{file}.journal"
            where = {"storage_path": journal, "study_name": name}
        return {**where, "client": self.scheduler}


def parallel_jobs(n_jobs: int, studies: StudyStore, tasks: int) -> int:
    """Processes for independent tunings (1 when a Dask cluster runs the trials)."""
    if studies.scheduler is not None:
        return 1
    return max(1, min(n_jobs, tasks))


def run_tasks(jobs: int, function: Callable[..., Any], tasks: list[tuple[Any, ...]]) -> list[Any]:
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


def site_columns_for(X: pd.DataFrame, train: np.ndarray, test: np.ndarray) -> pd.DataFrame:
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


@dataclass
class TunedModel:
    """A model tuned on inner folds and refitted on its whole training set."""

    model: Any
    result: TuningResult
    #: the brain-age bias correction (age models; None when none could be fitted)
    corrector: Any = None

    @property
    def params(self) -> dict[str, Any]:
        """The tuned parameters."""
        return self.result.params


@dataclass(frozen=True)
class _Stage:
    """One tuning: the scheme its inner folds follow, and the names of its seeds and study."""

    scheme: str
    prefix: str  # of the seed names: "" in outer folds, "final-" for the final model
    tags: tuple[object, ...]
    journal: str
    study: str
    key: str


@dataclass(frozen=True)
class ModelSearch:
    """The inner search of one model: tune on inner folds, refit, fit the bias correction.

    Parameters
    ----------
    build : callable
        ``build(params)`` -> an unfitted scikit-learn estimator.
    space : callable
        ``space(trial)`` -> parameters (an Optuna search space).
    plan : SearchPlan
    label : str
        The model's name in the run (``ridge``, ``logistic_etiv_adjusted``, ...).
    studies : StudyStore
    trial_callbacks : callable, optional
        ``trial_callbacks(study_key)`` -> Optuna callbacks, called in the process that tunes
        (a module-level function, so that it travels to worker processes).
    """

    build: Callable[[dict[str, Any]], Any]
    space: Callable[[Any], dict[str, Any]]
    plan: SearchPlan
    label: str
    studies: StudyStore = field(default_factory=StudyStore)
    trial_callbacks: Callable[[str], list[Any]] | None = None

    def fit_final(self, X: pd.DataFrame, y: np.ndarray, meta: pd.DataFrame) -> TunedModel:
        """Tune on k-fold inner folds of all scans and refit on all of them."""
        name = f"{self.plan.target}-{self.label}-final"
        stage = _Stage(
            "kfold", "final-", (self.plan.target, self.label), name, name,
            f"{self.plan.target}/{self.label}/final",
        )  # fmt: skip
        return self._fit(X, y, meta, np.arange(len(meta)), stage)

    def _outer_stage(self, scheme: str, k: int) -> _Stage:
        target, label = self.plan.target, self.label
        return _Stage(
            scheme, "", (target, label, scheme, k), f"{target}-{label}-{scheme}",
            f"{target}-{label}-{scheme}-fold{k}", f"{target}/{label}/{scheme}/fold{k}",
        )  # fmt: skip

    def _fit(
        self, X: pd.DataFrame, y: np.ndarray, meta: pd.DataFrame, rows: np.ndarray, stage: _Stage
    ) -> TunedModel:
        """Tune on inner folds of ``rows`` (``X`` holds those rows), refit, bias-correct."""
        plan, tuning = self.plan, self.plan.tuning
        seed = plan.seed
        inner = inner_splits(
            stage.scheme, meta, rows, folds=tuning.inner_folds,
            seed=stable_seed(seed, f"{stage.prefix}inner", *stage.tags),
            stratify=None if plan.target == "age" else y.astype(int),
        )  # fmt: skip
        result = tune(
            self.build, self.space, X, y[rows], inner, kind=plan.kind, trials=tuning.trials,
            timeout=tuning.timeout, seed=stable_seed(seed, f"{stage.prefix}tpe", *stage.tags),
            **self.studies.args(stage.journal, stage.study),
            pruning=tuning.pruning, pruner=tuning.pruner,
            early_stopping_rounds=tuning.early_stopping_rounds,
            callbacks=[] if self.trial_callbacks is None else self.trial_callbacks(stage.key),
        )  # fmt: skip
        model = self.build(result.params).fit(X, y[rows])
        tuned = TunedModel(model, result)
        if plan.target == "age":
            oof = np.asarray(result.oof, dtype=np.float64)
            if plan.bias.refits:
                splits = inner_splits(
                    stage.scheme, meta, rows, folds=plan.bias.folds,  # type: ignore[arg-type]
                    seed=stable_seed(seed, f"{stage.prefix}bias", *stage.tags),
                )  # fmt: skip
                oof = refit_oof(self.build, result.params, X, y[rows], splits)
            tuned.corrector = fit_bias_correction(plan.bias, y[rows], oof)
        return tuned


@dataclass
class NestedCVResult:
    """What a nested cross-validation of one model under one scheme gave."""

    #: out-of-fold test predictions (rows of ``predictions.parquet``)
    predictions: pd.DataFrame
    #: ``target/model/scheme/fold<k>`` -> params, inner_loss, trials (and bias_correction)
    folds: dict[str, dict[str, Any]]
    #: the tuned, refitted model of each outer fold, in fold order
    models: list[Any]
    #: wall-clock seconds of the whole outer loop
    seconds: float

    def bias_summary(self, settings: BiasSettings) -> dict[str, Any]:
        """The bias correction over the outer folds (see :func:`bias_summary`)."""
        return bias_summary(settings, [e.get("bias_correction") for e in self.folds.values()])


@dataclass(frozen=True)
class NestedCV:
    """An inner :class:`ModelSearch` inside the outer cross-validation of a :class:`NestedCVPlan`.

    Examples
    --------
    >>> cv = NestedCV(search, plan)  # doctest: +SKIP
    >>> result = cv.run(X, y, meta)  # doctest: +SKIP
    >>> result.predictions[["y_true", "y_pred"]]  # doctest: +SKIP
    """

    search: ModelSearch
    plan: NestedCVPlan

    def run(self, X: pd.DataFrame, y: np.ndarray, meta: pd.DataFrame) -> NestedCVResult:
        """Tune, refit and predict every outer fold (``X``, ``y`` and ``meta`` row-aligned)."""
        started = time.perf_counter()
        tasks = [
            (self, X, y, meta, train, test, k) for k, (train, test) in enumerate(self.plan.splits)
        ]
        jobs = parallel_jobs(self.search.plan.tuning.n_jobs, self.search.studies, len(tasks))
        done = run_tasks(jobs, _outer_fold, tasks)
        return NestedCVResult(
            predictions=pd.concat([fold for _, _, fold, _ in done], ignore_index=True),
            folds={key: entry for key, entry, _, _ in done},
            models=[model for _, _, _, model in done],
            seconds=round(time.perf_counter() - started, 1),
        )


def _outer_fold(
    cv: NestedCV,
    X: pd.DataFrame,
    y: np.ndarray,
    meta: pd.DataFrame,
    train: np.ndarray,
    test: np.ndarray,
    k: int,
) -> tuple[str, dict[str, Any], pd.DataFrame, Any]:
    """Tune on the training part of one outer split, refit, predict its test part."""
    search, scheme = cv.search, cv.plan.scheme
    target = search.plan.target
    stage = search._outer_stage(scheme, k)
    Xtr = site_columns_for(X, train, test)
    tuned = search._fit(Xtr, y, meta, train, stage)
    result = tuned.result
    entry = {"params": result.params, "inner_loss": result.score, "trials": result.n_trials}
    pred = predict_scores(tuned.model, X.iloc[test][Xtr.columns], search.plan.kind)
    fold = pd.DataFrame(
        {
            "scan_key": X.index[test],
            "subject_key": meta["subject_key"].to_numpy()[test],
            "site": meta["site"].to_numpy()[test],
            "sex": meta["sex"].to_numpy()[test],
            "target": target,
            "model": search.label,
            "scheme": SCHEME_KEYS[scheme],
            "fold": k,
            "y_true": y[test],
            "y_pred": pred,
        }
    )
    if target == "age":
        corrector = tuned.corrector
        fold["y_pred_corrected"] = (
            corrector.transform(y[test], pred) if corrector is not None else pred
        )
        entry["bias_correction"] = bias_entry(search.plan.bias, corrector)
    return stage.key, entry, fold, tuned.model
