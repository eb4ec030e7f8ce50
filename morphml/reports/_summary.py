"""``summarize(run_dir)``: everything a report shows about a run, as one JSON-safe dict.

The summary holds counts, metrics with intervals and the few numbers its figures are drawn
from (out-of-fold predictions without their scan keys, ROC points, calibration bins). It never
holds a scan or subject key, nor the absolute path of the run or the database: the run is
named by its folder's name only.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from morphml._version import __version__
from morphml.config import PretrainConfig, TransferConfig, parse_config
from morphml.exceptions import DatabaseError, MorphmlError, ReportError
from morphml.registry import representation
from morphml.reports._cohort import (
    SEX_LABELS,
    age_histogram,
    cohort_from_db,
    cohort_from_manifest,
)
from morphml.reports._names import atlas_description
from morphml.reports._reference import reference_section
from morphml.rundir import RunDir

__all__ = ["FORMAT", "summarize"]

#: version of the summary's layout
FORMAT = 1
#: most points a scatter plot of predictions keeps (a seeded subsample beyond)
MAX_POINTS = 4000
#: most points a ROC or precision-recall curve keeps
MAX_CURVE = 300

#: (key in metrics.json, label) of brain-age metrics, in table order
AGE_METRICS = (
    ("mae", "MAE (years)"),
    ("rmse", "RMSE (years)"),
    ("r2", "R²"),
    ("r", "r"),
    ("bias", "mean gap (years)"),
    ("mae_corrected", "MAE, bias-corrected"),
    ("gap_age_r", "gap–age r"),
    ("gap_age_r_corrected", "gap–age r, bias-corrected"),
)
#: (key in metrics.json, label) of sex-classification metrics
SEX_METRICS = (
    ("auc", "AUC"),
    ("balanced_accuracy", "balanced accuracy"),
    ("brier", "Brier score"),
    ("calibration_slope", "calibration slope"),
    ("calibration_intercept", "calibration intercept"),
)


def representation_description(name: str) -> str:
    """What a transfer representation feeds the small model (its registry entry's
    description; the name itself for one no longer registered)."""
    try:
        return representation(name).description
    except ValueError:
        return name


# --- small helpers --------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars made plain and NaN/inf made None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def _scheme(key: object) -> str:
    """A scheme as the config, the CLI and metrics.json name it (old runs' ``cv``: kfold)."""
    from morphml.evaluation import scheme_key

    return scheme_key(key)


def model_label(name: str) -> str:
    """``logistic_etiv_adjusted`` -> ``logistic (eTIV-adjusted)``."""
    if name.endswith("_etiv_adjusted"):
        return f"{name.removesuffix('_etiv_adjusted')} (eTIV-adjusted)"
    return name


def _cell(metrics: dict[str, Any], key: str) -> dict[str, Any]:
    ci = metrics.get(f"{key}_ci")
    return {"value": metrics.get(key), "ci": list(ci) if isinstance(ci, (list, tuple)) else None}


def _table(columns: list[tuple[str, str]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"columns": [{"key": k, "label": label} for k, label in columns], "rows": rows}


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path.parent}: no {path.name}; {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: cannot be read as JSON ({err})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_run(run: Path) -> tuple[dict[str, Any], PretrainConfig | TransferConfig, dict[str, Any]]:
    if not run.exists():
        raise ReportError(f"{run} does not exist; give a run directory written by 'morphml fit'")
    if not run.is_dir():
        raise ReportError(f"{run} is not a directory; give a run directory written by morphml fit")
    manifest = _read_json(
        RunDir(run).manifest, "expected a run directory written by 'morphml fit'"
    )
    kind = manifest.get("kind")
    if kind not in ("pretrain", "transfer"):
        raise ReportError(
            f"{RunDir(run).manifest}: run kind {kind!r} has no report; expected pretrain or "
            "transfer"
        )
    from morphml._utils import read_yaml

    raw = read_yaml(RunDir(run).config, ReportError, f"{run}: no config.yaml in the run folder")
    try:
        config = parse_config(raw, source=f"{run.name}/config.yaml")
    except MorphmlError as err:
        raise ReportError(str(err)) from None
    if config.kind != kind:
        raise ReportError(
            f"{run}: config.yaml is a {config.kind} config but the manifest says {kind}"
        )
    metrics = _read_json(RunDir(run).metrics, "the run did not finish (no metrics.json)")
    return manifest, config, metrics


def _config_view(config: PretrainConfig | TransferConfig) -> dict[str, Any]:
    """The resolved config, with the pretrain run's path cut to its folder's name."""
    data = config.model_dump(mode="json")
    if data.get("pretrained"):
        data["pretrained"] = Path(str(data["pretrained"])).name
    if data.get("reference"):
        data["reference"] = Path(str(data["reference"])).name
    return data


def _thin(x: np.ndarray, y: np.ndarray, limit: int) -> tuple[list[float], list[float]]:
    if len(x) > limit:
        keep = np.unique(np.linspace(0, len(x) - 1, limit).round().astype(int))
        x, y = x[keep], y[keep]
    return [round(float(v), 4) for v in x], [round(float(v), 4) for v in y]


# --- header, features -----------------------------------------------------------------------


def _header(
    run: Path, manifest: dict[str, Any], config: PretrainConfig | TransferConfig
) -> dict[str, Any]:
    header = {
        "name": run.name,
        "config_name": config.name,
        "kind": manifest["kind"],
        "run_id": manifest.get("run_id"),
        "morphml_version": manifest.get("morphml_version"),
        "report_morphml_version": __version__,
        "config_hash": manifest.get("config_hash"),
        "feature_matrix_hash": manifest.get("feature_matrix_hash"),
        "git_commit": manifest.get("git_commit"),
        "device": manifest.get("device"),
        "seed": (manifest.get("seeds") or {}).get("seed"),
        "platform": manifest.get("platform") or {},
        "packages": manifest.get("packages") or {},
        "seconds": manifest.get("seconds"),
        **_timing(manifest.get("seconds")),
    }
    if manifest.get("pretrained"):
        pre = dict(manifest["pretrained"])
        if pre.get("directory"):
            pre["directory"] = Path(str(pre["directory"])).name
        header["pretrained"] = pre
    return header


def _timing(seconds: Any) -> dict[str, Any]:
    """Wall-clock time in words: the total, and each tuning (``age/ridge/kfold 29 s``)."""
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        return {"seconds_total": float(seconds), "seconds_text": _duration(float(seconds)),
                "seconds_parts": []}  # fmt: skip
    if not isinstance(seconds, dict):
        return {"seconds_total": None, "seconds_text": None, "seconds_parts": []}
    parts: list[dict[str, Any]] = []
    for key, value in seconds.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        pieces = str(key).split("/")
        if len(pieces) == 3:
            pieces[2] = _scheme(pieces[2])
        parts.append({"what": "/".join(pieces), "seconds": float(value),
                      "text": _duration(float(value))})  # fmt: skip
    total = float(sum(p["seconds"] for p in parts)) if parts else None
    return {"seconds_total": total, "seconds_text": None if total is None else _duration(total),
            "seconds_parts": parts}  # fmt: skip


def _duration(seconds: float) -> str:
    """``42 s``, ``12.5 min``, ``2.1 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _features(manifest: dict[str, Any], config: PretrainConfig | TransferConfig) -> dict[str, Any]:
    ids = [str(f) for f in manifest.get("feature_ids") or []]
    atlases = Counter(f.split(".", 1)[0] for f in ids)
    measures = Counter(f.rsplit(".", 1)[-1] for f in ids if f.count(".") == 3)
    out: dict[str, Any] = {
        "n_features": len(ids),
        "atlases": {a: n for a, n in sorted(atlases.items())},
        "atlas_descriptions": {a: atlas_description(a) for a in sorted(atlases)},
        "measures": {m: n for m, n in sorted(measures.items())},
        "site_covariates": [str(c) for c in manifest.get("site_covariates") or []],
    }
    if isinstance(config, PretrainConfig):
        spec = config.features
        out["spec"] = {
            "atlases": spec.atlases, "measures": spec.measures, "exclude": list(spec.exclude),
            "max_missing": spec.max_missing, "etiv_adjust": spec.etiv_adjust,
            "log_volumes": spec.log_volumes, "relative_thickness": spec.relative_thickness,
            "site_covariates": spec.site_covariates, "qc_covariates": list(spec.qc_covariates),
        }  # fmt: skip
    return out


# --- pretrain -------------------------------------------------------------------------------


def _performance(metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for target, models in (metrics.get("targets") or {}).items():
        spec = AGE_METRICS if target == "age" else SEX_METRICS
        rows = []
        for model, schemes in models.items():
            for scheme, m in schemes.items():
                row: dict[str, Any] = {
                    "model": model_label(model), "model_key": model,
                    "scheme": _scheme(scheme), "scheme_key": scheme,
                    "n": m.get("n"),
                }  # fmt: skip
                if target == "sex":
                    row["n_pos"] = m.get("n_pos")
                if target == "age" and m.get("bias_correction"):
                    row["correction"] = _correction_label(m["bias_correction"])
                for key, _ in spec:
                    row[key] = _cell(m, key)
                rows.append(row)
        columns = [("model", "model"), ("scheme", "validation"), ("n", "scans")]
        if target == "sex":
            columns.append(("n_pos", "male"))
        extra = []
        if target == "age" and any(r.get("correction") for r in rows):
            extra = [("correction", "bias correction")]
        out[target] = _table([*columns, *spec, *extra], rows)
    return out


def _correction_label(bias: dict[str, Any]) -> str:
    """How the corrected columns of a brain-age row were made, in a few words."""
    method = str(bias.get("method"))
    if method == "none":
        return "none"
    text = {"beheshti": "Beheshti (uses the known age)", "cole": "Cole / de Lange"}.get(
        method, method
    )
    folds, done = bias.get("folds"), bias.get("folds_corrected")
    if folds is not None and done is not None and done < folds:
        text += f"; {folds - done} of {folds} folds uncorrected (slope too small)"
    return text


def _per_site(metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for target, models in (metrics.get("targets") or {}).items():
        keys = (
            [("mae", "MAE (years)"), ("r2", "R²"), ("r", "r"), ("bias", "mean gap (years)")]
            if target == "age"
            else [("auc", "AUC"), ("balanced_accuracy", "balanced accuracy"),
                  ("brier", "Brier score")]
        )  # fmt: skip
        rows = []
        for model, schemes in models.items():
            for scheme, m in schemes.items():
                for site, g in (m.get("per_site") or {}).items():
                    row = _group_row(model, scheme, "site", site, g, keys)
                    if g.get("r2_meaningful") is False:  # narrow age range: R² hidden
                        row["r2"] = None
                        row["note"] = "; ".join(filter(None, [row["note"], g.get("r2_note")]))
                    rows.append(row)
        columns = [("model", "model"), ("scheme", "validation"), ("site", "site"), ("n", "scans")]
        out[target] = _table([*columns, *keys, ("note", "note")], rows)
    return out


def _group_row(
    model: str,
    scheme: Any,
    column: str,
    label: str,
    g: dict[str, Any],
    keys: list[tuple[str, str]],
) -> dict[str, Any]:
    """One table row of a subgroup's metrics (empty cells when the group was skipped)."""
    row: dict[str, Any] = {
        "model": model_label(model), "scheme": _scheme(scheme),
        column: label, "n": g.get("n"), "note": g.get("skipped") or "",
    }  # fmt: skip
    for key, _ in keys:
        row[key] = _cell(g, key) if "skipped" not in g else None
    return row


def _per_sex(
    preds: pd.DataFrame | None, config: PretrainConfig
) -> tuple[dict[str, Any] | None, str | None]:
    """Brain-age accuracy within each sex, from the out-of-fold predictions."""
    from morphml.evaluation import per_group_metrics, stable_seed

    if preds is None or "sex" not in preds.columns:
        return None, "the predictions hold no sex column"
    age = preds[preds["target"] == "age"]
    if age.empty:
        return None, "the run has no brain-age model (a sex model has no accuracy within a sex)"
    keys = [("mae", "MAE (years)"), ("mae_corrected", "MAE, bias-corrected"), ("r2", "R²"),
            ("bias", "mean gap (years)"), ("gap_age_r", "gap–age r")]  # fmt: skip
    rows = []
    for (model, scheme), group in age.groupby(["model", "scheme"], sort=False):
        sex = group["sex"].map(lambda v: SEX_LABELS.get(v, "unknown")).to_numpy()
        corrected = group.get("y_pred_corrected")
        result = per_group_metrics(
            "brain_age", group["y_true"].to_numpy(np.float64),
            group["y_pred"].to_numpy(np.float64), sex,
            corrected=None if corrected is None else corrected.to_numpy(np.float64),
            groups=group["subject_key"].to_numpy(), n_boot=config.validation.bootstrap,
            random_state=stable_seed(config.seed, "report-per-sex", str(model), str(scheme)),
        )  # fmt: skip
        for label, g in result.items():
            rows.append(_group_row(str(model), scheme, "sex", label, g, keys))
    columns = [("model", "model"), ("scheme", "validation"), ("sex", "sex"), ("n", "scans")]
    return _table([*columns, *keys, ("note", "note")], rows), None


def _age_points(preds: pd.DataFrame, seed: int) -> list[dict[str, Any]]:
    out = []
    rng = np.random.default_rng(seed)
    for (model, scheme), group in preds[preds["target"] == "age"].groupby(
        ["model", "scheme"], sort=False
    ):
        y = group["y_true"].to_numpy(np.float64)
        p = group["y_pred"].to_numpy(np.float64)
        c = group["y_pred_corrected"].to_numpy(np.float64) if "y_pred_corrected" in group else p
        n = len(y)
        if n > MAX_POINTS:
            keep = np.sort(rng.choice(n, MAX_POINTS, replace=False))
            y, p, c = y[keep], p[keep], c[keep]
        out.append({
            "model": model_label(str(model)), "scheme": _scheme(scheme),
            "n": n, "n_shown": len(y),
            "y_true": [round(float(v), 2) for v in y],
            "y_pred": [round(float(v), 2) for v in p],
            "y_pred_corrected": [round(float(v), 2) for v in c],
        })  # fmt: skip
    return out


def _sex_curves(preds: pd.DataFrame) -> list[dict[str, Any]]:
    from sklearn.metrics import precision_recall_curve, roc_curve

    out = []
    for (model, scheme), group in preds[preds["target"] == "sex"].groupby(
        ["model", "scheme"], sort=False
    ):
        y = group["y_true"].to_numpy(np.float64).astype(int)
        p = np.clip(group["y_pred"].to_numpy(np.float64), 0.0, 1.0)
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        precision, recall, _ = precision_recall_curve(y, p)
        edges = np.linspace(0.0, 1.0, 11)
        bins = np.clip(np.digitize(p, edges[1:-1]), 0, 9)
        mean_pred, frac_pos, counts = [], [], []
        for b in range(10):
            inside = bins == b
            if inside.sum() == 0:
                continue
            mean_pred.append(round(float(p[inside].mean()), 4))
            frac_pos.append(round(float(y[inside].mean()), 4))
            counts.append(int(inside.sum()))
        roc_x, roc_y = _thin(fpr, tpr, MAX_CURVE)
        pr_x, pr_y = _thin(recall[::-1], precision[::-1], MAX_CURVE)
        out.append({
            "model": model_label(str(model)), "scheme": _scheme(scheme),
            "n": len(y), "prevalence": float(y.mean()),
            "roc": {"fpr": roc_x, "tpr": roc_y},
            "pr": {"recall": pr_x, "precision": pr_y},
            "calibration": {"mean_pred": mean_pred, "frac_pos": frac_pos, "n": counts},
        })  # fmt: skip
    return out


def _final_models(run: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for key, entry in (manifest.get("final_models") or {}).items():
        target, label = str(key).split("/", 1)
        sidecar: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):  # a model without sidecar shows less
            sidecar = json.loads(RunDir(run).model_sidecar(target, label).read_text("utf-8"))
        bias = sidecar.get("bias_correction")
        rows.append({
            "target": target, "model": model_label(label),
            "estimator": str(sidecar.get("estimator", "")).rsplit(".", 1)[-1],
            "files": [Path(str(f)).name for f in entry.get("files") or []],
            "params": entry.get("params") or {},
            "n_training_scans": sidecar.get("n_training_scans"),
            "bias_correction": None if bias is None else {
                "slope": bias.get("slope"), "intercept": bias.get("intercept"),
                # sidecars before the methods were named: 'linear-beheshti' computed Cole's
                "method": "cole" if bias.get("method") == "linear-beheshti"
                else bias.get("method"),
            },
        })  # fmt: skip
    return {"models": rows}


def _tuning(manifest: dict[str, Any], config: PretrainConfig) -> dict[str, Any]:
    trials = [int(v.get("trials", 0)) for v in (manifest.get("tuning") or {}).values()]
    return {
        "sampler": "Optuna TPE (seeded)",
        "trials": config.tuning.trials,
        "timeout": config.tuning.timeout,
        "inner_folds": config.tuning.inner_folds,
        "pruning": config.tuning.pruning,
        "early_stopping_rounds": config.tuning.early_stopping_rounds,
        "n_studies": len(trials),
        "trials_run": {"min": min(trials), "max": max(trials)} if trials else None,
    }


def _folds_by_scheme(manifest: dict[str, Any], preds: pd.DataFrame | None) -> dict[str, int]:
    """Outer folds each scheme had (leave-site-out: one per site), as the run recorded them."""
    folds: dict[str, set[str]] = {}
    for key in manifest.get("tuning") or {}:  # "age/ridge/leave_site_out/fold3"
        parts = str(key).split("/")
        if len(parts) == 4 and parts[3].startswith("fold"):
            folds.setdefault(_scheme(parts[2]), set()).add(parts[3])
    if not folds and preds is not None and {"scheme", "fold"} <= set(preds.columns):
        for scheme, group in preds.groupby("scheme", sort=False):
            folds[_scheme(scheme)] = {str(f) for f in group["fold"].unique()}
    return {scheme: len(names) for scheme, names in folds.items()}


def _skeleton(
    kind: str,
    header: dict[str, Any],
    manifest: dict[str, Any],
    config: PretrainConfig | TransferConfig,
) -> dict[str, Any]:
    """A summary's keys in their order, with what the manifest and config give; the parts
    of each kind of run fill the rest."""
    return {
        "format": FORMAT,
        "kind": kind,
        "run": header,
        "config": _config_view(config),
        "cohort": cohort_from_manifest(manifest),
        "qc": None,
        "database": None,
        "features": _features(manifest, config),
        "harmonization": None,
        "pretrain": None,
        "transfer": None,
        "importance": [],
        "importance_note": None,
    }


def _read_predictions(run: Path) -> pd.DataFrame | None:
    """The run's out-of-fold predictions; None when it wrote none."""
    path = RunDir(run).predictions
    if not path.is_file():
        return None
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise ReportError(f"{path}: cannot be read ({err})") from None


def _pretrain(
    run: Path, manifest: dict[str, Any], config: PretrainConfig, metrics: dict[str, Any]
) -> tuple[dict[str, Any], pd.DataFrame | None]:
    from morphml.evaluation import stable_seed

    preds = _read_predictions(run)
    per_sex, per_sex_note = _per_sex(preds, config)
    section: dict[str, Any] = {
        "targets": list(config.targets),
        "validation": {
            "schemes": list(config.validation.schemes),
            "folds": config.validation.folds,
            "external_source": config.validation.external_source,
            "bootstrap": config.validation.bootstrap,
            "folds_by_scheme": _folds_by_scheme(manifest, preds),
        },
        "tuning": _tuning(manifest, config),
        "performance": _performance(metrics),
        "per_site": _per_site(metrics),
        "per_sex": per_sex,
        "per_sex_note": per_sex_note,
        "final_models": _final_models(run, manifest),
        "bias_method": config.bias_correction.method,
        "age_points": [] if preds is None else _age_points(
            preds, stable_seed(config.seed, "report-points")
        ),
        "sex_curves": [] if preds is None else _sex_curves(preds),
    }  # fmt: skip
    return section, preds


def _pretrain_training_matrix(
    db: str | os.PathLike[str], config: PretrainConfig, manifest: dict[str, Any]
) -> tuple[pd.DataFrame, bool]:
    """The final models' training matrix as the run built it, and whether it still matches."""
    from morphml.features import load_frame

    frame = load_frame(db, config.cohort, config.features)
    matches = frame.data_hash() == manifest.get("feature_matrix_hash")
    keep = frame.X.index.isin(list(manifest.get("scan_keys") or []))
    frame = frame.subset(keep)
    X = frame.X
    if config.harmonize.method == "combat":
        from morphml.features import with_meta

        X = with_meta(frame.X, frame.meta)
    return X, matches


def _age_histogram_from_predictions(preds: pd.DataFrame | None) -> dict[str, Any] | None:
    if preds is None or "sex" not in preds.columns:
        return None
    age = preds[preds["target"] == "age"]
    if age.empty:
        return None
    first = age[(age["model"] == age["model"].iloc[0]) & (age["scheme"] == age["scheme"].iloc[0])]
    first = first.drop_duplicates("scan_key")
    sex = first["sex"].map(lambda v: SEX_LABELS.get(v, "unknown")).to_numpy()
    return age_histogram(first["y_true"].to_numpy(np.float64), sex)


# --- transfer -------------------------------------------------------------------------------


def _size_key(size: str) -> tuple[int, float]:
    return (1, 0.0) if str(size) == "all" else (0, float(size))


def _transfer(
    run: Path, manifest: dict[str, Any], config: TransferConfig, metrics: dict[str, Any]
) -> dict[str, Any]:
    transfer = metrics.get("transfer") or {}
    selected = metrics.get("selected") or {}
    main = str(selected.get("metric") or ("auc" if config.target.type == "binary" else "r2"))
    extra = [] if main == "auc" else ["mae"]
    label = {"auc": "AUC", "r2": "R²", "mae": "MAE"}
    rows = []
    curves: dict[str, Any] = {}
    # metrics.json is written with sorted keys: show raw first, then the config's order, and
    # training sizes by number with "all" last
    order = [r for r in config.representations if r in transfer]
    order += sorted(set(transfer) - set(order))
    for name in order:
        sizes = transfer[name]
        curve: dict[str, list[Any]] = {"labels": [], "n_train_scans": [], "mean": [], "lo": [],
                                       "hi": []}  # fmt: skip
        for size in sorted(sizes, key=_size_key):
            cell = sizes[size]
            row: dict[str, Any] = {
                "representation": name, "n_train": size,
                "n_train_scans": cell.get("n_train_scans"), "n_splits": cell.get("n_splits"),
                main: _cell(cell, main),
                "delta": None if name == "raw" else {
                    "value": cell.get("delta_vs_raw"), "ci": cell.get("delta_ci")},
                "delta_p": None if name == "raw" else cell.get("delta_p"),
                "selected": name == selected.get("representation")
                and str(size) == str(selected.get("n_train")),
            }  # fmt: skip
            for key in extra:
                row[key] = _cell(cell, key)
            rows.append(row)
            ci = cell.get(f"{main}_ci") or [None, None]
            curve["labels"].append(str(size))
            curve["n_train_scans"].append(cell.get("n_train_scans"))
            curve["mean"].append(cell.get(main))
            curve["lo"].append(ci[0])
            curve["hi"].append(ci[1])
        curves[name] = curve
    columns = [
        ("representation", "representation"), ("n_train", "training size"),
        ("n_train_scans", "training scans"), ("n_splits", "splits"),
        (main, f"{label[main]} (95% CI)"), *[(k, f"{label[k]} (95% CI)") for k in extra],
        ("delta", f"Δ{label[main]} vs raw (95% CI)"), ("delta_p", "p (Δ)"),
    ]  # fmt: skip
    target = dict(metrics.get("target") or {})
    n_pos = target.get("n_positive")
    n = target.get("n_scans")
    return {
        "target": {
            "name": config.target.name, "type": config.target.type,
            "positive": config.target.positive, "controls": dict(config.target.controls),
            "n_scans": n, "n_positive": n_pos,
            "n_negative": None if n_pos is None or n is None else int(n) - int(n_pos),
            "sites": target.get("sites") or [], "new_sites": target.get("new_sites") or [],
        },
        "metric": main,
        "metric_label": label[main],
        "table": _table(columns, rows),
        "learning_curve": curves,
        "selected": selected,
        "headline": _headline(metrics),
        "permutation": _permutation_view(metrics.get("permutation")),
        "permutation_p": metrics.get("permutation_p"),
        "protocol": config.protocol.model_dump(mode="json"),
        "covariates": list(config.covariates),
        "components": config.components,
        "representations": {name: representation_description(name) for name in order},
        "seconds": metrics.get("seconds") or {},
        "reference": reference_section(run),
    }  # fmt: skip


def _headline(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The selected representation's Δ vs raw (rebuilt for runs written before the key)."""
    from morphml.evaluation import comparison_headline as headline

    if metrics.get("headline"):
        return dict(metrics["headline"])
    try:
        return headline(metrics)
    except (KeyError, TypeError, ValueError):  # an incomplete metrics.json shows no headline
        return None


def _permutation_view(perm: dict[str, Any] | None) -> dict[str, Any] | None:
    """The permutation result with what it tests and its floor (also for older runs)."""
    if not perm:
        return None
    out = dict(perm)
    n = out.get("permutations")
    if isinstance(n, int) and n > 0 and "p_floor" not in out:
        out["p_floor"] = 1.0 / (n + 1)
        p = out.get("p")
        out["at_floor"] = isinstance(p, (int, float)) and p <= out["p_floor"] * (1 + 1e-9)
    out.setdefault("tests", "against chance")
    return out


# --- the summary ----------------------------------------------------------------------------


def summarize(
    run_dir: str | os.PathLike[str], db: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Summarise a run directory for its report: a JSON-safe dict.

    Parameters
    ----------
    run_dir : path-like
        A run directory written by ``morphml fit`` (``kind: pretrain`` or ``kind: transfer``).
    db : path-like, optional
        The database the run was fitted on. Given, the summary adds cohort facts counted from
        it (ages by sex, QC flags and exclusions), the run's stale status, and mean |SHAP| of
        XGBoost models on their training matrix. Not given, the database is not opened.

    Returns
    -------
    dict
        Keys ``format``, ``kind``, ``run`` (header facts), ``config`` (resolved, paths cut to
        names), ``cohort``, ``qc``, ``database``, ``features``, ``harmonization``, ``warnings``,
        ``pretrain`` or ``transfer``, ``importance`` and ``tripod``. It holds no scan or
        subject key and no absolute path.

    Raises
    ------
    ReportError
        When ``run_dir`` is missing or not a run directory, its files cannot be read, or its
        kind has no report.
    DatabaseError
        When ``db`` is given but cannot be opened.

    Examples
    --------
    >>> from morphml.reports import summarize  # doctest: +SKIP
    >>> summary = summarize("runs/pretrain", db="morphml.duckdb")  # doctest: +SKIP
    >>> summary["pretrain"]["performance"]["age"]["rows"][0]["mae"]  # doctest: +SKIP
    {'value': 6.31, 'ci': [6.02, 6.63]}
    """
    from morphml.reports._external import EXTERNAL_KIND, read_manifest_kind, summarize_external
    from morphml.reports._tripod import tripod_items

    run = Path(run_dir)
    kind, raw_manifest = read_manifest_kind(run)
    if kind == EXTERNAL_KIND and raw_manifest is not None:
        return summarize_external(run, raw_manifest)
    manifest, config, metrics = _read_run(run)
    summary = _skeleton(manifest["kind"], _header(run, manifest, config), manifest, config)
    warnings = [] if db is None else _database_part(summary, db, manifest, config)
    warnings += _config_warnings(manifest, config)
    if isinstance(config, PretrainConfig):
        warnings += _pretrain_part(summary, run, manifest, config, metrics, db)
    else:
        warnings += _transfer_part(summary, run, manifest, config, metrics)
    summary["warnings"] = warnings
    summary["tripod"] = tripod_items(summary)
    out: dict[str, Any] = json_safe(summary)
    return out


def _database_part(
    summary: dict[str, Any],
    db: str | os.PathLike[str],
    manifest: dict[str, Any],
    config: PretrainConfig | TransferConfig,
) -> list[str]:
    """Fill the cohort facts counted from the database; its warnings."""
    try:
        facts, qc, record = cohort_from_db(
            db, str(manifest.get("run_id")), list(manifest.get("scan_keys") or []),
            config.cohort,
        )  # fmt: skip
    except (ReportError, DatabaseError):
        raise
    except MorphmlError as err:
        raise ReportError(f"the database does not fit this run's cohort: {err}") from None
    summary["cohort"], summary["qc"], summary["database"] = facts, qc, record
    warnings: list[str] = []
    if record["stale"]:
        warnings.append(
            f"The run is marked stale in the database ({record['reason']}): its results "
            "can no longer be reproduced from this database."
        )
    if not record["recorded"]:
        warnings.append(
            "The run is not recorded in this database: was it fitted on another database?"
        )
    if record["n_scans_missing"]:
        warnings.append(
            f"{record['n_scans_missing']} of the run's scans are no longer in the database; "
            "cohort facts count the scans still there."
        )
    return warnings


def _config_warnings(
    manifest: dict[str, Any], config: PretrainConfig | TransferConfig
) -> list[str]:
    """Warnings from the run's choices: a stale pretrain run used, the outcome in ComBat."""
    warnings: list[str] = []
    stale = (manifest.get("pretrained") or {}).get("stale")
    if stale:
        warnings.append(
            f"The pretrain run this transfer used was stale ({stale}) and was used anyway "
            "(--allow-stale)."
        )
    spec = config.harmonize
    if spec.allow_outcome_covariate:
        outcome = (
            [t for t in config.targets if t in spec.covariates]
            if isinstance(config, PretrainConfig)
            else [config.target.name] if config.target.name in spec.covariates else []
        )  # fmt: skip
        warnings.append(
            "harmonize.allow_outcome_covariate is true: the outcome "
            f"({', '.join(outcome) or 'when listed among the covariates'}) was a ComBat "
            "covariate. ComBat was fitted on training folds with the training outcomes and the "
            "outcome set to its training mean at transform, so no test outcome was read, but "
            "the harmonised features depend on the training outcomes."
        )
    return warnings


def _pretrain_part(
    summary: dict[str, Any],
    run: Path,
    manifest: dict[str, Any],
    config: PretrainConfig,
    metrics: dict[str, Any],
    db: str | os.PathLike[str] | None,
) -> list[str]:
    """Fill a pretrain run's harmonisation, performance and importance; its warnings."""
    from morphml.evaluation import stable_seed
    from morphml.reports._importance import xgboost_importance

    warnings: list[str] = []
    spec = config.harmonize
    harm = metrics.get("harmonization")
    if harm or spec.method != "none":
        summary["harmonization"] = {
            "method": spec.method, "covariates": list(spec.covariates),
            "parametric": spec.parametric, "age_spline_df": spec.age_spline_df,
            "reference_site": spec.reference_site,
            "allow_outcome_covariate": spec.allow_outcome_covariate,
            "diagnostics": harm,
        }  # fmt: skip
    confounding = metrics.get("site_confounding") or {}
    summary["features"]["site_confounding"] = confounding or None
    if confounding.get("warning"):
        warnings.append(f"Site–outcome confounding: {confounding['warning']}.")
    section, preds = _pretrain(run, manifest, config, metrics)
    summary["pretrain"] = section
    if summary["cohort"].get("age_histogram") is None:
        summary["cohort"]["age_histogram"] = _age_histogram_from_predictions(preds)
    X = None
    if db is not None:
        X, matches = _pretrain_training_matrix(db, config, manifest)
        summary["database"]["feature_matrix_matches"] = matches
        if not matches:
            warnings.append(
                "The database's feature matrix for this cohort no longer hashes to the "
                "run's feature_matrix_hash (scans changed, withdrawn or added): mean |SHAP| "
                "is computed on the data as they are now. Run 'morphml audit'."
            )
    summary["importance"] = xgboost_importance(
        run, manifest, X, seed=stable_seed(config.seed, "report-shap")
    )
    if summary["importance"] and X is None:
        summary["importance_note"] = (
            "Mean |SHAP| needs the training data: give the database (--db) to add it."
        )
    return warnings


def _transfer_part(
    summary: dict[str, Any],
    run: Path,
    manifest: dict[str, Any],
    config: TransferConfig,
    metrics: dict[str, Any],
) -> list[str]:
    """Fill a transfer run's comparison and harmonisation; its warnings."""
    spec = config.harmonize
    summary["transfer"] = _transfer(run, manifest, config, metrics)
    if spec.method != "none" or summary["transfer"]["target"]["new_sites"]:
        summary["harmonization"] = {
            "method": spec.method, "new_sites": spec.new_sites,
            "new_target_sites": summary["transfer"]["target"]["new_sites"],
            "allow_outcome_covariate": spec.allow_outcome_covariate, "diagnostics": None,
        }  # fmt: skip
    sel = summary["transfer"]["selected"]
    if not sel:
        return []
    return [
        f"The selected representation ({sel.get('representation')}) was chosen as the "
        f"best of {len(summary['transfer']['learning_curve'])} on the same splits; its "
        "score is not adjusted for that selection, and the permutation p-value, when "
        "computed, is for this representation alone."
    ]
