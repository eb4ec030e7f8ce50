"""Feature importance of a pretrain run's XGBoost models: gain, and mean |SHAP| with data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from morphml.reports._names import readable_feature
from morphml.rundir import RunDir

__all__ = ["xgboost_importance"]


def _booster_gain(path: Path) -> tuple[dict[str, float], list[str]]:
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(str(path))
    gain = booster.get_score(importance_type="gain")
    names = list(booster.feature_names or [])
    if names and all(k.startswith("f") and k[1:].isdigit() for k in gain):
        gain = {names[int(k[1:])]: v for k, v in gain.items()}
    # "gain" scores are one number per feature (lists only for multi-output models)
    return {str(k): float(np.mean(v)) for k, v in gain.items()}, names


def _mean_abs_shap(stem: Path, X: pd.DataFrame) -> dict[str, float]:
    """Mean |SHAP| per booster input, from XGBoost's exact tree contributions."""
    import xgboost
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.pipeline import Pipeline

    from morphml.models import load_model

    model, _ = load_model(stem, device="cpu")
    steps = model.steps if isinstance(model, Pipeline) else [("model", model)]
    columns = getattr(model, "feature_names_in_", None)
    Xt: Any = X[[str(c) for c in columns]] if columns is not None else X
    for _, step in steps[:-1]:
        if step is not None and step != "passthrough":
            Xt = step.transform(Xt)
    final = steps[-1][1]
    inner = final.regressor_ if isinstance(final, TransformedTargetRegressor) else final
    booster = inner.get_booster()
    names = list(booster.feature_names or [])
    values = np.asarray(Xt, dtype=np.float64)
    matrix = xgboost.DMatrix(values, feature_names=names or None)
    contribs = np.asarray(booster.predict(matrix, pred_contribs=True), dtype=np.float64)
    mean_abs = np.abs(contribs[:, :-1]).mean(axis=0)  # the last column is the bias
    if not names:
        names = [f"f{i}" for i in range(len(mean_abs))]
    return {str(n): float(v) for n, v in zip(names, mean_abs, strict=True)}


def xgboost_importance(
    run: Path,
    manifest: dict[str, Any],
    X: pd.DataFrame | None = None,
    *,
    top: int = 20,
    max_rows: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Importance tables of every XGBoost final model of a pretrain run.

    Parameters
    ----------
    run : Path
        The run directory.
    manifest : dict
        Its manifest.
    X : DataFrame, optional
        The training matrix of the final models (with ``meta:`` columns for harmonised
        models); given, mean |SHAP| is computed on it.
    top : int
        How many features each table keeps.
    max_rows : int
        Mean |SHAP| is taken over at most this many scans (a seeded random subset beyond;
        exact tree SHAP costs time in proportion to scans x trees x leaves).
    seed : int
        Seed of that subset.

    Returns
    -------
    list of dict
        One entry per model: ``target``, ``model``, ``ranked_by``, ``rows`` (feature id,
        readable name, gain, share of total gain, mean |SHAP|), and ``notes``.
    """
    from morphml.exceptions import MorphmlError

    if X is not None and len(X) > max_rows:
        pick = np.random.default_rng(seed).choice(len(X), max_rows, replace=False)
        X = X.iloc[np.sort(pick)]
    out = []
    for key in manifest.get("final_models") or {}:
        target, label = str(key).split("/", 1)
        stem = RunDir(run).model_stem(target, label)
        try:
            sidecar = json.loads(RunDir(run).model_sidecar(target, label).read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if sidecar.get("estimator_kind") != "xgboost":
            continue
        notes: list[str] = []
        try:
            gain, names = _booster_gain(stem.parent / f"{stem.name}.ubj")
        except (OSError, ValueError) as err:  # XGBoostError is a ValueError
            notes.append(f"the booster could not be read ({type(err).__name__})")
            gain, names = {}, []
        shap: dict[str, float] | None = None
        if X is not None:
            try:
                shap = _mean_abs_shap(stem, X)
            except (MorphmlError, KeyError, ValueError) as err:
                text = str(err).splitlines()[0] if str(err) else type(err).__name__
                for prefix in {str(run.resolve()), str(run)}:  # no absolute paths in reports
                    text = text.replace(prefix, run.name)
                notes.append(f"mean |SHAP| not computed: {text[:200]}")
        total = sum(gain.values()) or 1.0
        features = names or sorted(gain)
        ranked_by = "mean_abs_shap" if shap else "gain"
        score = shap if shap else gain
        order = sorted(features, key=lambda f: (-score.get(f, 0.0), f))[:top]
        rows = [
            {
                "rank": i + 1,
                "feature": f,
                "name": readable_feature(f),
                "gain": gain.get(f, 0.0),
                "gain_share": gain.get(f, 0.0) / total,
                "mean_abs_shap": None if shap is None else shap.get(f, 0.0),
            }
            for i, f in enumerate(order)
        ]
        scale = (
            "log age" if sidecar.get("target_transform") == "log" else
            "log-odds" if sidecar.get("task") == "classification" else "model output"
        )  # fmt: skip
        out.append({
            "target": target, "model": label, "ranked_by": ranked_by, "shap_scale": scale,
            "n_features": len(features), "n_used_in_splits": len(gain),
            "n_scans": None if X is None else len(X), "rows": rows, "notes": notes,
        })  # fmt: skip
    return out
