"""``morphml evaluate``: external validation of a pretrain run on a source it never saw.

The run's final models predict every scan of the source (the same code path as
``morphml predict``); the predictions are scored with the metrics and bootstrap intervals of
``morphml fit`` (:func:`morphml.evaluation.score_predictions`: MAE, r, R², bias-corrected MAE,
gap–age r; AUC, balanced accuracy, Brier, calibration), overall, per site and per sex. Nothing
is refitted: the bias correction is the one the run fitted on its own training data.

The evaluation folder is laid out like a run folder (``metrics.json`` with the scheme key
``external``, ``predictions.parquet``, ``manifest.json`` of kind ``external_validation``,
the run's ``config.yaml``), so ``morphml report`` renders it with the same code.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from morphml.config import PretrainConfig
from morphml.db import connect, record_run
from morphml.exceptions import ConfigError
from morphml.rundir import (
    METRICS,
    PREDICTIONS,
    RunDir,
    copy_config,
    manifest_header,
    read_config,
    read_manifest,
    write_manifest,
    write_metrics,
    write_table,
)

__all__ = ["EvaluationResult", "evaluate_run"]


@dataclass
class EvaluationResult:
    """Where an external validation went and what it measured."""

    out_dir: Path
    metrics: dict[str, Any]


def evaluate_run(
    run_dir: str | os.PathLike[str],
    *,
    source: str,
    db: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    allow_stale: bool = False,
) -> EvaluationResult:
    """Score a pretrain run's final models on a source it was not trained on.

    Parameters
    ----------
    run_dir : path-like
        A pretrain run directory (``morphml fit``).
    source : str
        The database source to validate on. It must share no scan and no person with the
        run's training scans.
    db : path-like, optional
        The database (``MORPHML_DB`` / ``morphml.duckdb`` by default).
    out : path-like, optional
        The evaluation folder; ``RUN/external-SOURCE`` by default.
    allow_stale : bool, default False
        Evaluate a run that someone it was trained on has withdrawn from (refused otherwise).

    Returns
    -------
    EvaluationResult

    Raises
    ------
    ConfigError
        Not a pretrain run; the source is one the run trained on, or shares people with its
        training scans; the source lacks features the models need (listed, with the
        ``features.available_in`` fix); the source lacks age or sex for every scan.
    """
    from morphml.pipelines._predict import predictions

    run = Path(run_dir)
    manifest, config = _open_run(run, source)
    preds = predictions(run, db=db, source=source, allow_stale=allow_stale, command="evaluate")
    _refuse_overlap(db, manifest, preds, source)
    out_dir = Path(out) if out is not None else run / f"external-{source}"
    if out_dir.exists() and any(out_dir.iterdir()) and not RunDir(out_dir).is_run():
        raise ConfigError(f"{out_dir} exists and is not an evaluation folder; choose --out")
    cohort = preds.attrs.get("cohort") or {}
    metrics, table = _score_external(config, preds, source)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_table(out_dir, PREDICTIONS, table)
    eval_id = uuid.uuid4().hex[:16]
    metrics["run_id"] = eval_id
    write_metrics(out_dir, metrics)
    copy_config(run, out_dir)
    write_manifest(
        out_dir, _evaluation_manifest(eval_id, run, manifest, config, table, cohort, source)
    )
    # recorded like a run, so that a withdrawal finds this folder and scrubs it too
    with connect(db) as con:
        record_run(
            con, eval_id, "external_validation", str(manifest.get("config_hash") or ""),
            sorted(set(table["scan_key"])), out_dir,
        )  # fmt: skip
    return EvaluationResult(out_dir, metrics)


def _open_run(run: Path, source: str) -> tuple[dict[str, Any], PretrainConfig]:
    """The pretrain run's manifest and config; refuse a source it was trained on."""
    manifest = read_manifest(run, ConfigError, ("feature_ids", "final_models"))
    config = read_config(run, ConfigError)
    if not isinstance(config, PretrainConfig):
        raise ConfigError(f"{run}: a {config.kind} run; morphml evaluate takes a pretrain run")
    trained_sources = set((manifest.get("cohort") or {}).get("sources") or {})
    if source in trained_sources:
        raise ConfigError(
            f"source {source!r} is one the run was trained on ({sorted(trained_sources)}); "
            "external validation needs a source the models never saw (its k-fold and "
            f"leave-site-out results are in the run's own {METRICS})"
        )
    return manifest, config


def _score_external(
    config: PretrainConfig, preds: pd.DataFrame, source: str
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics of every final model on the source, and the scored predictions."""
    from morphml.evaluation import score_predictions

    preds = preds.copy()
    preds["scheme"] = "external"
    preds["fold"] = 0
    metrics: dict[str, Any] = {"targets": {}, "source": source}
    kept: list[pd.DataFrame] = []
    for (target, label), group in preds.groupby(["target", "model"], sort=False):
        group = group.copy()
        if target == "age":
            group["y_true"] = group["age"].to_numpy(np.float64)
        else:
            group["y_true"] = (group["sex"] == "M").to_numpy(np.float64)
            group.loc[~group["sex"].isin(["M", "F"]), "y_true"] = np.nan
        known = group["y_true"].notna().to_numpy()
        if not known.any():
            raise ConfigError(
                f"source {source!r}: no scan has {target}, so the {target} models cannot be "
                "scored; ingest it with a map that names the column"
            )
        group = group.loc[known]
        kept.append(group)
        scored = score_predictions(
            str(target), group, n_boot=config.validation.bootstrap, seed=config.seed
        )
        scored["per_sex"] = _per_sex(config, str(target), group)
        scored["n_unknown_target"] = int((~known).sum())
        metrics["targets"].setdefault(str(target), {})[str(label)] = {"external": scored}
    table = pd.concat(kept, ignore_index=True)
    table.attrs = {}
    return metrics, table


def _evaluation_manifest(
    eval_id: str,
    run: Path,
    manifest: dict[str, Any],
    config: PretrainConfig,
    table: pd.DataFrame,
    cohort: dict[str, Any],
    source: str,
) -> dict[str, Any]:
    """The evaluation folder's manifest: the run's provenance, and what was evaluated."""
    from morphml.evaluation import stable_seed

    out = manifest_header(eval_id, "external_validation")
    out["seeds"] = {"seed": config.seed, "bootstrap": stable_seed(config.seed, "bootstrap")}
    for key in ("config_hash", "feature_matrix_hash", "feature_ids", "site_covariates",
                "final_models", "git_commit"):  # fmt: skip
        out[key] = manifest.get(key)
    out["scan_keys"] = sorted(set(table["scan_key"]))
    out["cohort"] = cohort
    out["evaluated"] = {
        "source": source,
        "run": run.name,
        "run_id": manifest.get("run_id"),
        "training_cohort": manifest.get("cohort"),
        "bootstrap": config.validation.bootstrap,
    }
    return out


def _per_sex(config: PretrainConfig, target: str, group: pd.DataFrame) -> dict[str, Any]:
    """Brain-age accuracy within each sex (a sex model has no accuracy within one sex)."""
    from morphml.evaluation import per_group_metrics, stable_seed

    if target != "age":
        return {}
    labels = group["sex"].map({"F": "female", "M": "male"}).fillna("unknown")
    return per_group_metrics(
        "brain_age",
        group["y_true"].to_numpy(np.float64),
        group["y_pred"].to_numpy(np.float64),
        labels.to_numpy(),
        corrected=group["y_pred_corrected"].to_numpy(np.float64),
        groups=group["subject_key"].to_numpy(),
        n_boot=config.validation.bootstrap,
        random_state=stable_seed(config.seed, "external-per-sex"),
    )


def _refuse_overlap(
    db: str | os.PathLike[str] | None,
    manifest: dict[str, Any],
    preds: pd.DataFrame,
    source: str,
) -> None:
    """The source must share no scan and no person (subject key) with the training scans."""
    training = list(manifest.get("scan_keys") or [])
    scans = set(preds["scan_key"])
    shared_scans = scans & set(training)
    with connect(db, read_only=True) as con:
        rows = con.execute(
            "SELECT DISTINCT subject_key FROM scans WHERE scan_key IN (SELECT unnest(?))",
            [training],
        ).fetchall()
        # the same scan ingested again under another source: same files, other pseudonyms
        copies = con.execute(
            "SELECT DISTINCT e.scan_key FROM files e JOIN files t USING (content_hash) "
            "WHERE e.scan_key IN (SELECT unnest(?)) AND t.scan_key IN (SELECT unnest(?))",
            [sorted(scans), training],
        ).fetchall()
    people = {str(r[0]) for r in rows}
    shared_scans |= {str(r[0]) for r in copies}
    shared_people = set(preds["subject_key"]) & people
    shared_people |= set(preds.loc[preds["scan_key"].isin(shared_scans), "subject_key"])
    if shared_scans or shared_people:
        raise ConfigError(
            f"source {source!r} shares {len(shared_people)} people ({len(shared_scans)} scans, "
            "by pseudonym or identical stats files) with the run's training scans; external "
            "validation needs people the models never saw: ingest the new people under their "
            "own source, without the training people"
        )
