"""Reference models from this database, and deviation scores of a database source.

:func:`build_reference` fits a reference of the braincharts form (per feature a warped or plain
Bayesian linear regression on ``1, age, sex, site indicators, B-spline(age)``) on the healthy
controls of chosen sources, so a hospital can publish its reference without publishing any
scan: the file holds coefficients, their covariance, noise variances, warp parameters, site
names and counts, never a scan key, subject key, path or date.

:func:`source_deviations` scores every scan of one source with a reference, new sites adapted
from that source's controls.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from threadpoolctl import threadpool_limits

from morphml._version import __version__
from morphml.config import CohortSpec, FeatureSpec, config_hash
from morphml.exceptions import ConfigError, ReferenceModelError
from morphml.reference._basis import braincharts_knots, common_design
from morphml.reference._blr import BLRFit, fit_blr
from morphml.reference._deviations import MIN_CONTROLS, ReferenceDeviations
from morphml.reference._model import ReferenceModel

__all__ = [
    "ReferenceBuildConfig",
    "build_reference",
    "load_reference_config",
    "source_deviations",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReferenceFeatures(_Strict):
    """Which features get a model (raw values: no row-wise transform is applied)."""

    atlases: list[str] | None = None
    measures: list[str] | None = None
    #: feature ids (glob patterns) left out; by default the QC measures pretraining leaves out
    exclude: list[str] = Field(default_factory=lambda: list(FeatureSpec().exclude))
    #: features missing in more than this fraction of the scans are left out
    max_missing: float = Field(default=0.0, ge=0.0, le=1.0)


class ReferenceBuildConfig(_Strict):
    """``kind: reference``: ``morphml reference build CONFIG``."""

    kind: Literal["reference"]
    #: the reference's name, written into its provenance
    name: str = "reference"
    #: which scans: the healthy controls of the chosen sources (``filters``, e.g.
    #: ``{diagnosis: [control]}``, keep only controls of clinical sources)
    cohort: CohortSpec = Field(default_factory=CohortSpec)
    features: ReferenceFeatures = Field(default_factory=ReferenceFeatures)
    #: sinh-arcsinh warp of each feature (braincharts' form) or none (plain BLR)
    warp: Literal["sinarcsinh", "none"] = "sinarcsinh"
    #: ages the B-spline covers (years) and its number of knots (braincharts: -5, 110, 5)
    age_range: tuple[float, float] = (-5.0, 110.0)
    n_knots: int = Field(default=5, ge=2, le=20)
    #: sites with fewer scans get no indicator of their own (their scans fit the shared
    #: intercept): a site effect from a handful of people would describe those people
    min_site_scans: int = Field(default=10, ge=2)
    #: text written into the reference for whoever uses it
    licence: str = "not stated"
    citation: str = ""


def load_reference_config(path: str | os.PathLike[str]) -> ReferenceBuildConfig:
    """Read and validate a ``kind: reference`` YAML config (unknown keys are errors)."""
    from pathlib import Path

    from morphml._utils import read_yaml
    from morphml.config import validate_model

    p = Path(path)
    data = read_yaml(p, ConfigError, f"{p}: config file not found")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of keys, got {type(data).__name__}")
    if data.get("kind") != "reference":
        raise ConfigError(f"{p}: 'kind' must be 'reference', got {data.get('kind')!r}")
    return validate_model(ReferenceBuildConfig, data, str(p))  # type: ignore[return-value]


def _raw_spec(features: ReferenceFeatures) -> FeatureSpec:
    return FeatureSpec(
        atlases=features.atlases,
        measures=features.measures,
        exclude=list(features.exclude),
        max_missing=features.max_missing,
        log_volumes=False,
        relative_thickness=False,
        site_covariates=False,
    )


def _sex_codes(meta: pd.DataFrame) -> np.ndarray:
    return np.where(meta["sex"] == "M", 1.0, np.where(meta["sex"] == "F", 0.0, np.nan))


def _modelled_features(X: pd.DataFrame, min_scans: int) -> tuple[pd.DataFrame, dict[str, str]]:
    """The features that can be modelled, and why each other one is left out."""
    # a feature without variation among the scans (FreeSurfer writes 0 for the lateralised
    # hypointensities) has no spread to model: left out and listed
    spread = X.std(skipna=True)
    present = X.notna().sum()
    constant = "constant among the training scans"
    left_out = {str(f): constant for f in X.columns if not spread[f] > 0}
    left_out.update(
        {
            str(f): f"only {int(present[f])} scans have it ({min_scans} needed)"
            for f in X.columns
            if present[f] < min_scans and str(f) not in left_out
        }
    )
    X = X.drop(columns=list(left_out))
    if X.shape[1] == 0:
        raise ReferenceModelError(
            f"no selected feature can be modelled: {sorted(set(left_out.values()))}"
        )
    return X, left_out


def _fit_features(X: pd.DataFrame, phi: np.ndarray, *, warped: bool) -> list[BLRFit]:
    """One Bayesian linear regression per feature, on the scans that have it."""
    fits: list[BLRFit] = []
    # thousands of tiny (30 x 30) factorisations: BLAS threads only contend here (one thread
    # was 10x faster on a loaded 2-core machine)
    with threadpool_limits(limits=1):
        for feature in X.columns:
            y = X[feature].to_numpy(np.float64)
            ok = np.isfinite(y)
            fits.append(fit_blr(phi[ok], y[ok], warped=warped))
    return fits


def build_reference(
    config: ReferenceBuildConfig, *, db: str | os.PathLike[str] | None = None
) -> ReferenceModel:
    """Fit a reference model on the database's scans chosen by ``config``.

    Scans without age or sex, or with an age outside ``age_range``, are left out. Every
    feature is fitted on the scans that have it.

    Raises
    ------
    ConfigError
        The cohort is empty or names what the database lacks.
    ReferenceModelError
        Too few scans to fit (fewer than twice the design columns).
    """
    from morphml.features import load_frame

    frame = load_frame(db, config.cohort, _raw_spec(config.features))
    meta = frame.meta
    age = meta["age"].to_numpy(np.float64)
    sex = _sex_codes(meta)
    low, high = config.age_range
    if not low < high:
        raise ConfigError(f"age_range must be (low, high) with low < high; got {low}, {high}")
    usable = np.isfinite(age) & np.isfinite(sex) & (age >= low) & (age <= high)
    X = frame.X.loc[usable]
    age, sex = age[usable], sex[usable]
    site = meta.loc[usable, "site"].fillna("unknown").astype(str).to_numpy()
    counts = pd.Series(site).value_counts()
    sites = sorted(str(s) for s, c in counts.items() if c >= config.min_site_scans)
    knots = braincharts_knots(low, high, config.n_knots)
    common = common_design(age, sex, knots)
    indicators = (
        np.column_stack([(site == s).astype(np.float64) for s in sites])
        if sites
        else (np.empty((len(site), 0)))
    )
    phi = np.column_stack([common[:, :3], indicators, common[:, 3:]])
    d = phi.shape[1]
    if len(X) < 2 * d:
        raise ReferenceModelError(
            f"the cohort has {len(X)} usable scans (age, sex and age in {config.age_range}); a "
            f"reference with {len(sites)} sites needs at least {2 * d}"
        )
    X, left_out = _modelled_features(X, 2 * d)
    fits = _fit_features(X, phi, warped=config.warp == "sinarcsinh")
    subjects = meta.loc[usable, "subject_key"].nunique()
    atlases = sorted({str(f).split(".", 1)[0] for f in X.columns})
    provenance: dict[str, Any] = {
        "source": config.name,
        "format": "morphml",
        "archive_sha256": None,
        "config_sha256": config_hash(config),
        "sources": sorted(str(s) for s in meta.loc[usable, "source"].unique()),
        "n_people": int(subjects),
        "n_scans": len(X),
        "n_sites": len(sites),
        "site_scans": {s: int(counts[s]) for s in sites},
        "atlas": "+".join(atlases),
        "licence": config.licence,
        "citation": config.citation,
        "morphml_version": __version__,
        "sex_coding": "0 female, 1 male",
        "age_units": "years",
        "warp": config.warp,
        "converged": int(sum(f.converged for f in fits)),
        "left_out": left_out,
    }
    return ReferenceModel(
        features=[str(f) for f in X.columns],
        sites=sites,
        knots=knots,
        coef=np.stack([f.coef for f in fits]),
        cov=np.stack([f.cov for f in fits]),
        noise_var=np.array([f.noise_var for f in fits]),
        warp_kind=config.warp,
        warp_params=np.array([[f.epsilon, f.delta] for f in fits]),
        provenance=provenance,
        n_train=np.array([f.n for f in fits]),
    )


def source_deviations(
    reference: ReferenceModel,
    *,
    source: str,
    db: str | os.PathLike[str] | None = None,
    controls: dict[str, list[str]] | None = None,
    new_sites: str = "adapt",
    adaptation: str = "braincharts",
) -> pd.DataFrame:
    """z-scores and centiles of every scan of ``source``, keyed by pseudonymous scan key.

    Sites the reference does not know are adapted from the source's controls: the scans whose
    phenotypes match ``controls`` (``{"diagnosis": ["control"]}``; a scan matching any listed
    phenotype value counts). Without ``controls`` no scan is a control, so new sites follow
    ``new_sites`` (``prior`` scores them with the reference's prior, ``adapt`` refuses them).

    Returns
    -------
    DataFrame
        Index ``scan_key``; ``site``, ``site_status`` (``reference``, ``adapted`` or ``prior``),
        then ``z:<feature>`` and ``centile:<feature>`` per reference feature the source has.
    """
    from morphml.features import load_raw_frame

    frame = load_raw_frame(db, CohortSpec(sources=[source], first_session_only=False))
    present = [f for f in reference.features if f in frame.X.columns]
    if not present:
        raise ReferenceModelError(
            f"source {source!r} has none of the reference's {len(reference.features)} features "
            f"(e.g. {reference.features[0]!r}); is it the same atlas?"
        )
    meta = frame.meta
    is_control = np.zeros(len(meta), dtype=bool)
    for name, allowed in (controls or {}).items():
        if name not in meta.columns:
            known = sorted(c for c in meta.columns if c not in _BASE_META)
            raise ReferenceModelError(
                f"controls: phenotype {name!r} is not in the database (phenotypes: {known})"
            )
        is_control |= meta[name].astype(str).isin([str(a) for a in allowed]).to_numpy()
    covs = pd.DataFrame(
        {
            "age": meta["age"].to_numpy(np.float64),
            "sex": _sex_codes(meta),
            "site": meta["site"].fillna("unknown").astype(str).to_numpy(),
            "control": is_control.astype(int),
        },
        index=meta.index,
    )
    X = frame.X[present]
    if new_sites == "adapt" and adaptation == "braincharts":
        codes = reference.site_codes(covs["site"].to_numpy())
        for name in sorted(set(covs["site"][codes < 0])):
            n = int((covs["control"][covs["site"] == name]).sum())
            if n < MIN_CONTROLS:
                raise ReferenceModelError(
                    f"site {name!r} of source {source!r} is new to the reference and has {n} "
                    f"controls (at least {MIN_CONTROLS} adapt it); name the controls with "
                    "--controls PHENOTYPE=VALUE (e.g. diagnosis=control), or score the site "
                    "with the reference's prior (--new-sites prior)"
                )
    dev = ReferenceDeviations(
        reference, features=present, new_sites=new_sites, adaptation=adaptation
    ).fit(X, meta=covs)
    z = dev.transform(X, meta=covs)
    codes = reference.site_codes(covs["site"].to_numpy())
    status = np.where(
        codes >= 0,
        "reference",
        np.where(covs["site"].isin(list(dev.adapted_)).to_numpy(), "adapted", "prior"),
    )
    from scipy.special import ndtr

    out = pd.DataFrame({"site": covs["site"], "site_status": status}, index=meta.index)
    zs = z.add_prefix("z:")
    cs = pd.DataFrame(ndtr(z.to_numpy()), index=z.index, columns=[f"centile:{f}" for f in present])
    out = pd.concat([out, zs, cs], axis=1)
    out.index.name = "scan_key"
    return out


_BASE_META = {"subject_key", "source", "site", "session", "age", "sex", "software", "version"}
