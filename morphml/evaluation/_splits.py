"""Outer and inner splits: subjects stay whole, sites are stratified or held out."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut, StratifiedGroupKFold

from morphml.exceptions import ConfigError

__all__ = ["SCHEME_KEYS", "inner_splits", "outer_splits", "scheme_key", "scheme_keys_current"]

#: validation scheme -> key in metrics.json, predictions.parquet and manifest.json: one
#: vocabulary everywhere (the config's, the CLI's and the report's)
SCHEME_KEYS = {"kfold": "kfold", "leave_site_out": "leave_site_out", "external": "external"}
#: keys run directories written before morphml 0.2 used
LEGACY_SCHEME_KEYS = {"cv": "kfold"}


def scheme_key(key: object) -> str:
    """The current name of a scheme key read from a run directory (``cv`` -> ``kfold``)."""
    return LEGACY_SCHEME_KEYS.get(str(key), str(key))


def scheme_keys_current(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics.json`` of a pretrain run with legacy scheme keys renamed (a new dict)."""
    targets = metrics.get("targets")
    if not isinstance(targets, dict):
        return metrics
    renamed = {
        target: {
            model: {scheme_key(k): v for k, v in schemes.items()}
            if isinstance(schemes, dict) else schemes
            for model, schemes in models.items()
        }
        if isinstance(models, dict) else models
        for target, models in targets.items()
    }  # fmt: skip
    return {**metrics, "targets": renamed}


Split = tuple[np.ndarray, np.ndarray]


def outer_splits(
    scheme: str,
    meta: pd.DataFrame,
    *,
    folds: int,
    seed: int,
    external_source: str | None = None,
    stratify: np.ndarray | None = None,
) -> list[Split]:
    """Outer train/test index pairs (positions into ``meta``).

    ``kfold``: stratified by site (or by ``stratify``), all sessions of a subject in one fold;
    ``leave_site_out``: one site per test fold; ``external``: train on every other source,
    test on ``external_source``.
    """
    n = len(meta)
    subjects = meta["subject_key"].to_numpy()
    sites = meta["site"].fillna("unknown").astype(str).to_numpy()
    if scheme == "kfold":
        n_subjects = len(set(subjects))
        if n_subjects < folds:
            raise ConfigError(
                f"validation.folds = {folds} but the cohort has only {n_subjects} subjects; "
                "use fewer folds"
            )
        labels = stratify if stratify is not None else sites
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            # small sites cannot be spread over every fold; that is expected, not a problem
            warnings.filterwarnings("ignore", message="The least populated class")
            return [
                (np.asarray(tr), np.asarray(te))
                for tr, te in splitter.split(np.zeros(n), labels, subjects)
            ]
    if scheme == "leave_site_out":
        n_sites = len(set(sites))
        if n_sites < 2:
            raise ConfigError(
                f"leave_site_out needs at least 2 sites; the cohort has {n_sites} "
                f"({sorted(set(sites))[0] if n_sites else 'none'})"
            )
        logo = LeaveOneGroupOut()
        return [
            (np.asarray(tr), np.asarray(te)) for tr, te in logo.split(np.zeros(n), groups=sites)
        ]
    if scheme == "external":
        if not external_source:
            raise ConfigError("validation.external_source is required for the external scheme")
        sources = meta["source"].to_numpy()
        test = np.flatnonzero(sources == external_source)
        train = np.flatnonzero(sources != external_source)
        if len(test) == 0:
            raise ConfigError(
                f"validation.external_source {external_source!r} has no scans in the cohort "
                f"(sources: {sorted(set(sources))})"
            )
        if len(train) == 0:
            raise ConfigError("the external scheme needs scans from another source to train on")
        return [(train, test)]
    raise ConfigError(f"unknown validation scheme {scheme!r}")


def inner_splits(
    scheme: str,
    meta: pd.DataFrame,
    train: np.ndarray,
    *,
    folds: int,
    seed: int,
    stratify: np.ndarray | None = None,
) -> list[Split]:
    """Tuning folds inside one outer training set (positions into ``train``).

    After a leave-site-out outer split the inner folds hold out whole sites too, so tuning
    rewards what the outer test measures: generalisation to an unseen site.
    """
    sub = meta.iloc[train]
    subjects = sub["subject_key"].to_numpy()
    sites = sub["site"].fillna("unknown").astype(str).to_numpy()
    n = len(sub)
    if scheme in ("leave_site_out", "external") and len(set(sites)) >= folds:
        splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        return [
            (np.asarray(a), np.asarray(b)) for a, b in splitter.split(np.zeros(n), groups=sites)
        ]
    labels = stratify[train] if stratify is not None else sites
    n_subjects = len(set(subjects))
    k = min(folds, n_subjects)
    if k < 2:
        raise ConfigError("too few subjects in a training fold to tune (need at least 2)")
    skf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        return [
            (np.asarray(a), np.asarray(b)) for a, b in skf.split(np.zeros(n), labels, subjects)
        ]
