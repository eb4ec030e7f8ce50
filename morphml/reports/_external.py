"""The summary of an external-validation folder (``morphml evaluate``) for its report.

The folder is laid out like a pretrain run (``metrics.json`` under the scheme ``external``,
``predictions.parquet``), so the pretrain summary's tables and figures are reused; what
differs is said here: the header names the evaluated run and source, the cohort is the
validation source's, and the TRIPOD+AI items for external validation (objectives, data,
partitioning, updating, differences from the development data, performance) are filled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from morphml.config import PretrainConfig, parse_config
from morphml.exceptions import MorphmlError, ReportError
from morphml.reports._cohort import SEX_LABELS
from morphml.reports._summary import (
    _age_points,
    _cell,
    _header,
    _per_site,
    _performance,
    _read_json,
    json_safe,
    model_label,
)
from morphml.rundir import RunDir

__all__ = ["EXTERNAL_KIND", "summarize_external"]

#: the ``kind`` of an external-validation folder's manifest and summary
EXTERNAL_KIND = "external_validation"


def summarize_external(run: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Summarise an external-validation folder written by ``morphml evaluate``."""
    from morphml._utils import read_yaml
    from morphml.evaluation import stable_seed
    from morphml.reports._summary import _per_sex, _read_predictions, _sex_curves, _skeleton
    from morphml.reports._tripod import tripod_items

    raw = read_yaml(RunDir(run).config, ReportError, f"{run}: no config.yaml in the folder")
    try:
        config = parse_config(raw, source=f"{run.name}/config.yaml")
    except MorphmlError as err:
        raise ReportError(str(err)) from None
    if not isinstance(config, PretrainConfig):
        raise ReportError(f"{run}: config.yaml is not a pretrain config")
    metrics = _read_json(RunDir(run).metrics, "the evaluation did not finish")
    preds = _read_predictions(run)
    evaluated = dict(manifest.get("evaluated") or {})
    per_sex, per_sex_note = _per_sex(preds, config)
    header = _header(run, manifest, config)
    header["evaluated_run"] = evaluated.get("run")
    header["evaluated_run_id"] = evaluated.get("run_id")
    header["validation_source"] = evaluated.get("source")
    section: dict[str, Any] = {
        "targets": list(config.targets),
        "external": {
            "source": evaluated.get("source"),
            "run": evaluated.get("run"),
            "training_cohort": _counts(evaluated.get("training_cohort") or {}),
        },
        "validation": {
            "schemes": ["external"],
            "external_source": evaluated.get("source"),
            "bootstrap": evaluated.get("bootstrap") or config.validation.bootstrap,
        },
        "tuning": {},
        "performance": _performance(metrics),
        "per_site": _per_site(metrics),
        "per_sex": per_sex,
        "per_sex_note": per_sex_note,
        "final_models": {"models": []},
        "age_points": []
        if preds is None
        else _age_points(preds, stable_seed(config.seed, "report-points")),
        "sex_curves": [] if preds is None else _sex_curves(preds),
    }
    summary = _skeleton(EXTERNAL_KIND, header, manifest, config)
    summary["pretrain"] = section
    summary["warnings"] = []
    items = tripod_items(summary)
    facts = _external_facts(summary, metrics)
    for item in items:
        text = facts.get(item["item"])
        if text is None:
            continue
        item["text"] = text
        partial = "for the authors" in text or "(authors)" in text
        item["status"] = "partial" if partial else "run"
    summary["tripod"] = items
    out: dict[str, Any] = json_safe(summary)
    return out


def _counts(cohort: dict[str, Any]) -> dict[str, Any]:
    return {
        "n_scans": cohort.get("n_scans"),
        "n_subjects": cohort.get("n_subjects"),
        "sources": cohort.get("sources") or {},
        "n_sites": len(cohort.get("sites") or {}),
        "age": cohort.get("age") or {},
        "sex": {SEX_LABELS.get(k, k): v for k, v in (cohort.get("sex") or {}).items()},
    }


def _age_text(age: dict[str, Any]) -> str:
    if age.get("min") is None or age.get("max") is None:
        return "age not recorded"
    mean = f", mean {age['mean']:.1f}" if age.get("mean") is not None else ""
    return f"age {age['min']:.1f}–{age['max']:.1f} years{mean}"


def _external_facts(summary: dict[str, Any], metrics: dict[str, Any]) -> dict[str, str]:
    """The TRIPOD+AI items an external validation answers (or answers in part)."""
    from morphml.reports._tripod import _fmt

    pre = summary["pretrain"]
    ext = pre["external"]
    source, run_name = ext.get("source"), ext.get("run")
    train = ext.get("training_cohort") or {}
    cohort = summary.get("cohort") or {}
    feats = summary.get("features") or {}
    targets = " and ".join(
        {"age": "brain age", "sex": "sex"}.get(t, t) for t in pre.get("targets") or []
    )
    facts: dict[str, str] = {}
    facts["1"] = (
        f"External validation of {targets} models (pretrain run {run_name}) on the source "
        f"{source}. Wording of the title: for the authors."
    )
    facts["4"] = (
        f"Evaluate the final {targets} models of pretrain run {run_name}, unchanged, on "
        f"{source}, a source they were not developed on. Clinical objectives: for the authors."
    )
    facts["5a"] = (
        f"Development data: {_src(train.get('sources'))}; validation data: {source} "
        f"({cohort.get('n_scans')} scans of {cohort.get('n_subjects')} people). Rationale "
        "and representativeness: for the authors."
    )
    facts["10"] = (
        f"Every scan of {source} with the features, age and sex the models need "
        f"({cohort.get('n_scans')} scans); no sample-size calculation was made (authors)."
    )
    facts["12a"] = (
        f"The final models were fitted on all development scans of run {run_name}; "
        f"{source} was used only to evaluate them (no refitting, tuning or recalibration on "
        "it). morphml refuses a validation source that shares a scan or a person "
        "(pseudonym or identical stats files) with the training scans."
    )
    facts["12e"] = (
        "Brain age: MAE, RMSE, R², r, mean gap, bias-corrected MAE and gap–age r; sex: AUC, "
        "balanced accuracy at 0.5, Brier score, calibration slope and intercept; 95% "
        f"bootstrap intervals over people ({pre['validation'].get('bootstrap')} resamples), "
        "as in the development run."
    )
    facts["12f"] = (
        "No updating: the models and the brain-age bias correction are the ones fitted on the "
        "development data."
    )
    facts["12g"] = (
        f"Predictions by the saved final models of run {run_name} (morphml predict's code "
        "path), on the same row-wise feature transforms."
    )
    facts["16"] = (
        f"Development: {train.get('n_scans')} scans, {train.get('n_sites')} sites, "
        f"{_age_text(train.get('age') or {})}; validation: {cohort.get('n_scans')} scans, "
        f"{len(cohort.get('sites') or {})} site(s), {_age_text(cohort.get('age') or {})}. "
        f"Predictors: the {feats.get('n_features')} features of the run"
        + (
            " (restricted by features.available_in to those the validation source has)"
            if (summary.get("config") or {}).get("features", {}).get("available_in")
            else ""
        )
        + ". Differences in outcome definition or setting: for the authors."
    )
    facts["20c"] = (
        f"Age and sex: development {_age_text(train.get('age') or {})}, sex "
        f"{_src(train.get('sex'))}; validation {_age_text(cohort.get('age') or {})}, sex "
        f"{_src(cohort.get('sex'))}. Predictor distributions: for the authors."
    )
    lines = []
    for target, models in (metrics.get("targets") or {}).items():
        for model, schemes in models.items():
            m = schemes.get("external") or {}
            key = "mae" if target == "age" else "auc"
            lines.append(
                f"{target} {model_label(model)}: {key.upper()} "
                + _fmt(_cell(m, key))
                + f" (n = {m.get('n')})"
            )
    facts["23a"] = (
        "; ".join(lines) + ". By site and sex: see Performance by site and sex."
        if lines
        else "No metrics."
    )
    facts["23b"] = "See Performance by site (sites with fewer than 10 scans are not scored)."
    facts["24"] = "No model updating was done."
    return facts


def _src(mapping: Any) -> str:
    if not mapping:
        return "?"
    return ", ".join(f"{k} {v}" for k, v in dict(mapping).items())


def read_manifest_kind(run: Path) -> tuple[str | None, dict[str, Any] | None]:
    """The ``kind`` of a folder's manifest.json, and the manifest (None when unreadable)."""
    try:
        manifest = json.loads(RunDir(run).manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None, None
    if not isinstance(manifest, dict):
        return None, None
    return manifest.get("kind"), manifest
