"""Optuna tuning inside one outer training set.

The study of each (target, model, scheme, outer fold) is kept in a journal file in the run
directory, so an interrupted fit resumes where it stopped, or in a shared storage
(PostgreSQL / SQLite URL, or a journal file) that several processes or Dask workers use at
once. The sampler is seeded TPE; pruning stops poor trials early: the median rule over the
inner folds' losses, or (multi-fidelity) successive halving / Hyperband over the boosting
rounds of an XGBoost trial's first inner fold.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.metrics import log_loss, mean_absolute_error

from morphml._utils import small_blas
from morphml.exceptions import ConfigError

__all__ = ["PRUNERS", "TuningResult", "predict_scores", "stable_seed", "storage_from", "tune"]

#: pruners :func:`tune` accepts
PRUNERS = ("median", "halving", "hyperband", "none")
# multi-fidelity pruners: the resource is the number of trees of the first inner fold, its
# loss reported every _REPORT_EVERY trees; the first rung is at _MIN_TREES trees
_ROUND_PRUNERS = ("halving", "hyperband")
_REPORT_EVERY = 25
_MIN_TREES = 50
_REDUCTION = 3

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class TuningResult:
    """Best parameters and the out-of-fold predictions they gave on the training set."""

    params: dict[str, Any]
    score: float
    oof: np.ndarray
    n_trials: int


def predict_scores(model: BaseEstimator, X: pd.DataFrame, kind: str) -> np.ndarray:
    """Predictions: values for regression, P(class 1) for classification."""
    if kind == "classification":
        return np.asarray(model.predict_proba(X))[:, 1]
    return np.asarray(model.predict(X), dtype=np.float64)


def _loss(kind: str, y: np.ndarray, pred: np.ndarray) -> float:
    if kind == "classification":
        return float(log_loss(y, np.clip(pred, 1e-6, 1 - 1e-6), labels=[0, 1]))
    return float(mean_absolute_error(y, pred))


def stable_seed(seed: int, *parts: object) -> int:
    """A seed derived from ``seed`` and names (no Python hash randomisation)."""
    text = "|".join(str(p) for p in parts).encode()
    return (seed * 1_000_003 + zlib.crc32(text)) % (2**31 - 1)


def storage_from(spec: str | os.PathLike[str] | None) -> Any:
    """An Optuna storage from a URL or a journal file path (None: in memory).

    ``postgresql://user@host/db`` (or ``postgres://``, ``mysql://``, ``sqlite:///file.db``)
    gives an :class:`optuna.storages.RDBStorage`; anything else is a journal file, shared
    safely by processes on one machine or on a shared file system.

    Examples
    --------
    >>> storage_from(None) is None
    True
    """
    if spec is None:
        return None
    text = os.fspath(spec)
    if "://" in text:
        if text.startswith("postgres://"):  # SQLAlchemy only knows the long scheme name
            text = "postgresql://" + text[len("postgres://") :]
        if text.startswith("postgresql://"):
            text = _postgres_driver(text)
        engine_kwargs = {"pool_pre_ping": True} if not text.startswith("sqlite") else {}
        try:
            return optuna.storages.RDBStorage(text, engine_kwargs=engine_kwargs)
        except ImportError as err:
            raise ConfigError(
                f"storage {text.split('://')[0]}://...: {err}; install 'morphml[postgres]'"
            ) from None
        except Exception as err:  # SQLAlchemy OperationalError etc.: say what, not a trace
            raise ConfigError(
                f"cannot open the Optuna storage {text.split('@')[-1]} "
                f"({type(err).__name__}: {str(err).splitlines()[0][:200]})"
            ) from None
    path = Path(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _postgres_driver(url: str) -> str:
    """Name the installed driver: SQLAlchemy 2.1 defaults to psycopg 3, morphml's
    ``postgres`` extra installs psycopg2."""
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


@dataclass
class _Objective:
    """Inner-fold loss of one set of parameters (picklable, so Dask workers can run it)."""

    build: Callable[[dict[str, Any]], BaseEstimator]
    space: Callable[[optuna.Trial], dict[str, Any]]
    X: pd.DataFrame
    y: np.ndarray
    splits: list[tuple[np.ndarray, np.ndarray]]
    kind: str
    early_stopping_rounds: int | None = None
    pruner: str = "median"
    # per (thread, inner fold): the fitted preprocessing's output and XGBoost's quantised
    # matrices, built by the first trial and reused by the others (never pickled)
    _caches: dict[tuple[int, int], dict[Any, Any]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_caches"] = {}
        return state

    def folds(
        self, params: dict[str, Any], report: Callable[[int, float], bool] | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, int | None]]:
        """Per inner fold: its validation rows, their predictions and the early-stopped
        number of trees (None for models without trees). ``report`` receives the first
        fold's boosting progress (see :func:`morphml.models.fit_early_stopped`)."""
        from morphml.models import fit_early_stopped

        thread = threading.get_ident()  # a Dask worker's threads each keep their own matrices
        for i, (tr, va) in enumerate(self.splits):
            pred, n_trees = fit_early_stopped(
                self.build(params), self.X.iloc[tr], self.y[tr], self.X.iloc[va], self.y[va],
                rounds=self.early_stopping_rounds, kind=self.kind,
                report=report if i == 0 else None, report_every=_REPORT_EVERY,
                cache=self._caches.setdefault((thread, i), {}),
            )  # fmt: skip
            yield va, pred, n_trees

    def evaluate(self, trial: optuna.Trial) -> tuple[float, np.ndarray]:
        oof = np.full(len(self.y), np.nan)
        losses = []
        trees = []
        by_rounds = self.pruner in _ROUND_PRUNERS
        pruned = []

        def report(n_trees: int, loss: float) -> bool:
            trial.report(loss, n_trees)
            if trial.should_prune():
                pruned.append(n_trees)
                return True
            return False

        params = self.space(trial)
        for step, (va, pred, n_trees) in enumerate(
            self.folds(params, report if by_rounds else None)
        ):
            if pruned:  # stopped by the multi-fidelity pruner inside the first fold
                raise optuna.TrialPruned(f"pruned at {pruned[0]} trees")
            oof[va] = pred
            if n_trees is not None:
                trees.append(n_trees)
            losses.append(_loss(self.kind, self.y[va], pred))
            if not by_rounds:  # fold-level reports (the median rule)
                trial.report(float(np.mean(losses)), step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        if trees:  # the refit grows as many trees as the inner folds needed on average
            trial.set_user_attr(_MEASURED, {"n_estimators": round(float(np.mean(trees)))})
        return float(np.mean(losses)), oof


# user attribute of a trial: parameters measured while it ran (early-stopped tree counts)
_MEASURED = "measured_params"


def _sampler_pruner(seed: int, pruner: str) -> tuple[Any, optuna.pruners.BasePruner]:
    from morphml.models import XGB_MAX_TREES

    chosen: optuna.pruners.BasePruner
    if pruner == "median":
        chosen = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    elif pruner == "halving":
        chosen = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=_MIN_TREES, reduction_factor=_REDUCTION
        )
    elif pruner == "hyperband":
        chosen = optuna.pruners.HyperbandPruner(
            min_resource=_MIN_TREES, max_resource=XGB_MAX_TREES, reduction_factor=_REDUCTION
        )
    elif pruner == "none":
        chosen = optuna.pruners.NopPruner()
    else:
        raise ConfigError(f"tuning pruner must be one of {', '.join(PRUNERS)}; got {pruner!r}")
    return optuna.samplers.TPESampler(seed=seed), chosen


def _pruner_name(pruning: bool, pruner: str | None) -> str:
    """The pruner in force: ``pruning=False`` switches any pruner off."""
    return "none" if not pruning else (pruner or "median")


def _optimize(
    objective: _Objective,
    storage_spec: str,
    study_name: str,
    seed: int,
    n_trials: int,
    timeout: float | None,
    pruner_name: str,
) -> dict[int, np.ndarray]:
    """Run trials of a shared study (on a Dask worker); return the out-of-fold predictions
    of the trials it completed."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler, pruner = _sampler_pruner(seed, pruner_name)
    study = optuna.load_study(
        study_name=study_name, storage=storage_from(storage_spec), sampler=sampler,
        pruner=pruner,
    )  # fmt: skip
    oofs: dict[int, np.ndarray] = {}

    def run(trial: optuna.Trial) -> float:
        loss, oof = objective.evaluate(trial)
        oofs[trial.number] = oof
        return loss

    study.optimize(run, n_trials=n_trials, timeout=timeout, gc_after_trial=False)
    return oofs


def tune(
    build: Callable[[dict[str, Any]], BaseEstimator],
    space: Callable[[optuna.Trial], dict[str, Any]],
    X: pd.DataFrame,
    y: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    *,
    kind: str,
    trials: int,
    timeout: float | None,
    seed: int,
    storage_path: Path | None = None,
    study_name: str,
    pruning: bool = True,
    pruner: str | None = None,
    storage: str | os.PathLike[str] | None = None,
    client: Any = None,
    early_stopping_rounds: int | None = None,
    callbacks: list[Callable[[Any, Any], None]] | None = None,
) -> TuningResult:
    """Minimise the inner-fold loss (MAE, or log loss for classification) over ``space``.

    Returns the best parameters and the out-of-fold predictions of the training set made
    with them (used to fit the brain-age bias correction without touching the test fold).

    Parameters
    ----------
    pruning : bool, default=True
        False runs every trial to the end, whatever ``pruner`` says.
    pruner : {"median", "halving", "hyperband", "none"}, optional
        How poor trials are stopped early (default ``"median"``): ``"median"`` compares the
        running mean inner-fold loss with the median of earlier trials after each inner
        fold; ``"halving"`` (successive halving) and ``"hyperband"`` are multi-fidelity:
        an XGBoost trial with ``early_stopping_rounds`` reports its first inner fold's best
        validation loss every 25 trees, and only the best third of the trials reaching 50,
        150, 450, ... trees grows further (Hyperband runs several such brackets). Models
        without boosting rounds are not pruned by them.
    early_stopping_rounds : int, optional
        XGBoost models stop adding trees once an inner validation fold's loss has not improved
        for this many rounds (see :func:`morphml.models.fit_early_stopped`); the returned
        ``n_estimators`` is the mean of the inner folds' best counts. Pair it with
        ``search_space(..., early_stopping=True)``.
    callbacks : list of callables, optional
        Optuna callbacks ``(study, trial)`` called after each trial run in this process
        (progress counters; not called for trials run on Dask workers).
    storage_path : Path, optional
        A journal file holding the study (an interrupted tuning resumes from it).
    storage : str or path-like, optional
        Instead of ``storage_path``: an Optuna storage URL (``postgresql://...``,
        ``sqlite:///...``) or a journal file, e.g. shared by several machines.
    client : distributed.Client, optional
        Run the trials on this Dask cluster's workers, all working on the one study in the
        shared storage (which is then required). Trial numbers and counts stay exact; the
        parameters tried depend on the order the workers finish, so results are not
        bit-for-bit those of a single process.
    """
    spec = _storage_spec(study_name, storage_path, storage, client)
    pruner_name = _pruner_name(pruning, pruner)
    sampler, chosen = _sampler_pruner(seed, pruner_name)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage_from(spec),
        sampler=sampler,
        pruner=chosen,
        direction="minimize",
        load_if_exists=True,
    )
    objective = _Objective(build, space, X, y, splits, kind, early_stopping_rounds, pruner_name)
    done = len([t for t in study.trials if t.state.is_finished()])
    remaining = max(trials - done, 0)
    oofs: dict[int, np.ndarray] = {}
    if remaining and client is not None:
        oofs = _optimize_on_dask(
            client, objective, str(spec), study_name, seed, remaining, timeout, pruner_name
        )
        study = optuna.load_study(study_name=study_name, storage=storage_from(spec))
    elif remaining:
        with small_blas(*X.shape):  # small solves: one BLAS thread (see small_blas)
            oofs = _run_trials(study, objective, remaining, timeout, callbacks)
    with small_blas(*X.shape):
        return _best_of(study, objective, oofs, study_name)


def _storage_spec(
    study_name: str,
    storage_path: Path | None,
    storage: str | os.PathLike[str] | None,
    client: Any,
) -> str | os.PathLike[str] | None:
    """Where the study lives (None: in memory); refuses two storages, or Dask without one."""
    if storage_path is not None and storage is not None:
        raise ConfigError(f"tuning {study_name}: give storage_path or storage, not both")
    spec = os.fspath(storage_path) if storage_path is not None else storage
    if client is not None and spec is None:
        raise ConfigError(
            f"tuning {study_name}: running trials on Dask workers needs a shared study "
            "storage (--storage postgresql://... or a journal file)"
        )
    return spec


def _run_trials(
    study: optuna.Study,
    objective: _Objective,
    n_trials: int,
    timeout: float | None,
    callbacks: list[Callable[[Any, Any], None]] | None,
) -> dict[int, np.ndarray]:
    """Run ``n_trials`` more trials in this process; the out-of-fold predictions of each."""
    oofs: dict[int, np.ndarray] = {}

    def run(trial: optuna.Trial) -> float:
        loss, oof = objective.evaluate(trial)
        oofs[trial.number] = oof
        return loss

    study.optimize(run, n_trials=n_trials, timeout=timeout, gc_after_trial=False,
                   callbacks=list(callbacks or []))  # fmt: skip
    return oofs


def _best_of(
    study: optuna.Study, objective: _Objective, oofs: dict[int, np.ndarray], study_name: str
) -> TuningResult:
    """The best trial's parameters, loss and out-of-fold predictions (refitted when the
    trial ran in an earlier, interrupted process)."""
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(f"tuning {study_name}: no trial completed (timeout too short?)")
    best = study.best_trial
    oof = oofs.get(best.number)
    if oof is None:  # the best trial ran in an earlier, interrupted process: redo its fits
        searched = objective.space(optuna.trial.FixedTrial(best.params))  # type: ignore[arg-type]
        oof = np.full(len(objective.y), np.nan)
        for va, pred, _ in objective.folds(searched):
            oof[va] = pred
    params = _params_of(best, objective.space)
    score = float(best.value) if best.value is not None else float("nan")
    return TuningResult(params=params, score=score, oof=oof, n_trials=len(completed))


def _optimize_on_dask(
    client: Any,
    objective: _Objective,
    spec: str,
    study_name: str,
    seed: int,
    remaining: int,
    timeout: float | None,
    pruner_name: str,
) -> dict[int, np.ndarray]:
    """Split the remaining trials over the cluster's worker threads: each task runs its share
    of the one study (so the total is exact) with its own seeded sampler."""
    from morphml.scale import dask_client

    with dask_client(client) as dc:
        workers = dc.scheduler_info().get("workers", {})
        slots = max(sum(int(w.get("nthreads", 1)) for w in workers.values()), 1)
        n_tasks = min(slots, remaining)
        shares = [remaining // n_tasks + (1 if i < remaining % n_tasks else 0)
                  for i in range(n_tasks)]  # fmt: skip
        [shared] = dc.scatter([objective], broadcast=True)
        futures = [
            dc.submit(
                _optimize,
                shared,
                spec,
                study_name,
                stable_seed(seed, "worker", i),
                share,
                timeout,
                pruner_name,
                pure=False,
            )
            for i, share in enumerate(shares)
        ]
        oofs: dict[int, np.ndarray] = {}
        for part in dc.gather(futures):
            oofs.update(part)
    return oofs


def _params_of(
    trial: optuna.trial.FrozenTrial, space: Callable[[optuna.Trial], dict[str, Any]]
) -> dict[str, Any]:
    """The parameters the space built for this trial (spaces may derive values from trial
    suggestions, so replay the space on a fixed trial), with those the trial measured."""
    fixed = optuna.trial.FixedTrial(trial.params)
    params = space(fixed)  # type: ignore[arg-type]
    params.update(trial.user_attrs.get(_MEASURED, {}))
    return params
