"""``morphml predict``: apply a run's final models to scans in the database."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from morphml.config import CohortSpec, PretrainConfig
from morphml.exceptions import ConfigError
from morphml.features import SITE_PREFIX, FeatureFrame, describe, load_frame
from morphml.rundir import RunDir, read_config, read_manifest

__all__ = ["in_sample_count", "predict_run", "predictions"]


def _check_source(db: str | os.PathLike[str] | None, source: str) -> None:
    """Refuse a --source the database does not hold, in the command line's words."""
    from morphml.db import connect

    with connect(db, read_only=True) as con:
        sources = [str(r[0]) for r in con.execute(
            "SELECT DISTINCT source FROM scans ORDER BY 1").fetchall()]  # fmt: skip
    if source not in sources:
        raise ConfigError(
            f"--source {source}: the database holds no scans of that source (it has: "
            f"{', '.join(sources) or 'no scans'}); ingest them first with "
            f"'morphml ingest PATH --source {source}' or give one of those sources"
        )


def in_sample_count(predictions: pd.DataFrame) -> tuple[int, int]:
    """(scans the run was trained on, all scans) among ``predict_run``'s predictions."""
    if "in_sample" not in predictions.columns:
        return 0, int(predictions["scan_key"].nunique())
    per_scan = predictions.groupby("scan_key")["in_sample"].any()
    return int(per_scan.sum()), len(per_scan)


def predict_run(
    run_dir: str | os.PathLike[str],
    *,
    db: str | os.PathLike[str] | None = None,
    source: str | None = None,
    out: str | os.PathLike[str],
    allow_stale: bool = False,
) -> pd.DataFrame:
    """Predict age and sex for scans with every final model of a run.

    The scans' features must be exactly the ones the models were trained on (a missing or
    extra feature is refused with the lists); a site the models never saw is refused unless
    the run's config says ``new_sites: ignore_site``. A stale run (a person it was trained
    on withdrew) is refused unless ``allow_stale``.

    The result's ``in_sample`` column is True for scans the run's models were trained on:
    their predictions are in-sample (optimistic) and no measure of accuracy. Use
    :func:`in_sample_count` on the result to say so.
    """
    result = predictions(run_dir, db=db, source=source, allow_stale=allow_stale)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result.to_parquet(out_path, index=False)
    return result


def predictions(
    run_dir: str | os.PathLike[str],
    *,
    db: str | os.PathLike[str] | None = None,
    source: str | None = None,
    allow_stale: bool = False,
    command: str = "predict",
) -> pd.DataFrame:
    """The predictions of :func:`predict_run`, not written (one row per scan, target and model;
    ``subject_key``, ``sex`` and ``age`` of each scan included)."""
    from morphml.db import check_stale_run, db_path

    run = Path(run_dir)
    manifest = read_manifest(run, ConfigError, ("feature_ids", "final_models"))
    check_stale_run(run, db_path(db), allow_stale=allow_stale, command=command)
    config = read_config(run, ConfigError)
    if not isinstance(config, PretrainConfig):
        raise ConfigError(
            f"{run}: a {config.kind} run; morphml predict takes a pretrain run's models"
        )
    if source:
        _check_source(db, source)
    cohort = CohortSpec(sources=[source] if source else None, first_session_only=False)
    features = config.features.model_copy(
        update={"max_missing": 1.0, "site_covariates": False, "available_in": None}
    )
    frame = load_frame(db, cohort, features)
    X, sites = _model_input(config, manifest, frame, source)
    rows = [_predict_one(RunDir(run), key, X, frame, sites) for key in manifest["final_models"]]
    result = pd.concat(rows, ignore_index=True)
    # JSON-safe counts of the scans predicted (an external-validation report shows them)
    result.attrs["cohort"] = describe(frame)
    trained_on = set(manifest.get("scan_keys") or [])
    result["in_sample"] = result["scan_key"].isin(trained_on)
    return result


def _model_input(
    config: PretrainConfig, manifest: dict[str, Any], frame: FeatureFrame, source: str | None
) -> tuple[pd.DataFrame, pd.Series]:
    """The features the models were trained on, with the run's site columns (refusing
    missing features and unseen sites), and each scan's site."""
    trained = list(manifest["feature_ids"])
    have = list(frame.feature_ids)
    missing = [f for f in trained if f not in set(have)]
    if missing:
        where = f"source {source!r}" if source else "the scans"
        raise ConfigError(
            f"{where} lacks {len(missing)} of the {len(trained)} features the models were "
            f"trained on: {', '.join(missing)}. Refit with 'features.available_in: "
            f"[{source or 'SOURCE'}]' in the pretrain config to keep only the features "
            "that source has (or ingest the same atlases and software outputs)"
        )
    absent = frame.X[trained].isna().any(axis=1)
    if absent.any():
        gaps = [f for f in trained if frame.X[f].isna().any()]
        raise ConfigError(
            f"{int(absent.sum())} scans miss some of the features the models were trained on "
            f"(e.g. scan {frame.X.index[absent.to_numpy()][0]}; features: {', '.join(gaps)}); "
            "restrict --source, or refit with 'features.available_in' naming the sources "
            "the model is used on"
        )
    X = frame.X[trained].copy()
    site_cols = list(manifest.get("site_covariates", []))
    known_sites = {c[len(SITE_PREFIX) :] for c in site_cols}
    sites = frame.meta["site"].fillna("unknown").astype(str)
    unseen = sorted(set(sites) - known_sites) if site_cols else []
    if unseen and config.new_sites == "refuse":
        raise ConfigError(
            f"sites {unseen} were never seen in training; the models' site terms do not apply. "
            "Set new_sites: ignore_site in the run's config to predict without them, or fit "
            "with features.site_covariates: false for models meant for new sites"
        )
    for col in site_cols:
        X[col] = (sites == col[len(SITE_PREFIX) :]).astype(np.float64)
    if config.harmonize.method == "combat":
        from morphml.features import with_meta

        X = with_meta(X, frame.meta)
    return X, sites


def _predict_one(
    run: RunDir, key: str, X: pd.DataFrame, frame: FeatureFrame, sites: pd.Series
) -> pd.DataFrame:
    """One final model's predictions (``key`` is ``target/label``)."""
    from morphml.models import AgeBiasCorrector, load_model

    target, label = key.split("/", 1)
    model, sidecar = load_model(run.model_stem(target, label))
    columns = list(getattr(model, "feature_names_in_", X.columns))
    Xm = X[columns]
    out_frame = pd.DataFrame(
        {
            "scan_key": X.index,
            "subject_key": frame.meta["subject_key"].to_numpy(),
            "target": target,
            "model": label,
            "site": sites.to_numpy(),
            "sex": frame.meta["sex"].to_numpy(),
        }
    )
    if target != "age":
        out_frame["y_pred"] = np.asarray(model.predict_proba(Xm))[:, 1]
        return out_frame
    pred = np.asarray(model.predict(Xm), dtype=np.float64)
    out_frame["y_pred"] = pred
    age = frame.meta["age"].to_numpy(dtype=np.float64)
    correction = sidecar.get("bias_correction")
    corrected = np.full(len(pred), np.nan)
    known = ~np.isnan(age)
    if correction is None:  # the run could not fit one (fit_bias_correction)
        corrected = pred.copy()
    elif known.any():
        corrector = AgeBiasCorrector.from_dict(correction)
        corrected[known] = corrector.transform(age[known], pred[known])
    out_frame["y_pred_corrected"] = corrected
    out_frame["age"] = age
    return out_frame
