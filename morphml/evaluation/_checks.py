"""A pretraining config checked against its cohort before any model is fitted.

Everything that can be refused from the config and the data alone is refused here, with a
message naming the config key and the fix; whether the outer splits can be drawn is checked
when they are drawn (:func:`morphml.evaluation.nested_cv_plans`).
"""

from __future__ import annotations

import numpy as np

from morphml.config import PretrainConfig
from morphml.exceptions import ConfigError
from morphml.features import FeatureFrame, target_vector

__all__ = ["check_harmonize", "check_pretrain_data"]


def check_pretrain_data(config: PretrainConfig, frame: FeatureFrame) -> None:
    """Refuse a config its cohort cannot serve (targets, harmonisation, validation).

    Raises
    ------
    ConfigError
        A target has no model or is missing for some scans; too few scans of the rarer sex
        for the folds; ComBat cannot be fitted as configured; leave-site-out on a single
        site; too few subjects for k-fold; an external source the cohort lacks.
    """
    for target in config.targets:
        _check_target(config, frame, target)
    check_harmonize(config, frame)
    validation = config.validation
    sites = frame.meta["site"].fillna("unknown").nunique()
    if "leave_site_out" in validation.schemes and sites < 2:
        raise ConfigError(
            f"validation.schemes has leave_site_out but the cohort has a single site "
            f"({frame.meta['site'].iloc[0]!r})"
        )
    n_subjects = frame.meta["subject_key"].nunique()
    if "kfold" in validation.schemes and n_subjects < validation.folds * 2:
        raise ConfigError(
            f"{n_subjects} subjects are too few for {validation.folds}-fold validation "
            f"(need at least {validation.folds * 2})"
        )
    if "external" in validation.schemes:
        ext = validation.external_source
        if ext is None or ext not in set(frame.meta["source"]):
            raise ConfigError(
                f"validation.external_source {ext!r} is not a source of the cohort "
                f"({sorted(set(frame.meta['source']))})"
            )


def _check_target(config: PretrainConfig, frame: FeatureFrame, target: str) -> None:
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


def check_harmonize(config: PretrainConfig, frame: FeatureFrame) -> None:
    """Refuse a ``harmonize`` section ComBat cannot be fitted with on this cohort."""
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
