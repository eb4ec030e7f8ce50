"""Run configurations: YAML in, validated pydantic models out.

Every model forbids unknown keys; a misspelt key is reported with the closest valid key::

    configs/pretrain.yaml: unknown key 'tunning' at the top level; did you mean 'tuning'?
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from morphml._utils import read_yaml
from morphml.exceptions import ConfigError
from morphml.registry import (
    model_type,
    representation,
    representation_names,
    representations,
)

__all__ = [
    "BiasCorrectionSpec",
    "CohortSpec",
    "FeatureSpec",
    "HarmonizeSpec",
    "PretrainConfig",
    "ProtocolSpec",
    "QCSpec",
    "TargetSpec",
    "TransferConfig",
    "TuningSpec",
    "ValidationSpec",
    "config_hash",
    "load_config",
    "parse_config",
]


Scheme = Literal["kfold", "leave_site_out", "external"]
Target = Literal["age", "sex"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QCSpec(_Strict):
    """Which QC flags exclude a scan (``morphml qc`` stores them)."""

    exclude: list[str] = Field(default_factory=list)


class CohortSpec(_Strict):
    """Which scans a run uses."""

    sources: list[str] | None = None
    #: phenotype name -> allowed values (text phenotypes) e.g. {diagnosis: [control]}
    filters: dict[str, list[str]] = Field(default_factory=dict)
    min_age: float | None = None
    max_age: float | None = None
    qc: QCSpec = Field(default_factory=QCSpec)
    #: with several scans per subject, use only the first session (cross-sectional models)
    first_session_only: bool = True


class FeatureSpec(_Strict):
    """Which features, and the per-scan (row-wise, nothing learned) transforms applied."""

    #: atlases to use; None: every atlas with values (features missing in some scans are then
    #: dropped by ``max_missing``)
    atlases: list[str] | None = None
    measures: list[str] | None = None
    #: feature ids dropped even if selected (e.g. QC measures such as SurfaceHoles)
    exclude: list[str] = Field(
        default_factory=lambda: [
            "global.lh.SurfaceHoles.count",
            "global.rh.SurfaceHoles.count",
            "global.na.SurfaceHoles.count",
        ]
    )
    #: keep only features present in every one of these sources (the sources the model will
    #: be used on, e.g. [ixi]): a feature counts as present in a source when no more than
    #: ``max_missing`` of its scans lack it and it is not zero in all of them
    available_in: list[str] | None = None
    #: features missing in more than this fraction of the cohort's scans are dropped
    max_missing: float = Field(default=0.0, ge=0.0, le=1.0)
    #: regress eTIV out of volumes and areas inside the training folds
    etiv_adjust: bool = False
    #: row-wise log of volumes and areas (no parameters learned)
    log_volumes: bool = True
    #: row-wise thickness divided by the scan's mean cortical thickness (kept as its own feature)
    relative_thickness: bool = True
    #: add one-hot site indicators as covariates (learned only from training folds' sites)
    site_covariates: bool = True
    #: QC measures added as covariate columns ``qc:<name>`` (``euler``: mean Euler number)
    qc_covariates: list[str] = Field(default_factory=list)


class TuningSpec(_Strict):
    """Optuna tuning inside the training folds."""

    trials: int = Field(default=20, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    inner_folds: int = Field(default=3, ge=2)
    pruning: bool = True
    #: how poor trials stop early: the median rule after each inner fold, or multi-fidelity
    #: successive halving / Hyperband over an XGBoost trial's boosting rounds (first inner
    #: fold); ``pruning: false`` switches any of them off
    pruner: Literal["median", "halving", "hyperband", "none"] = "median"
    #: XGBoost: stop adding trees once an inner fold's loss has not improved for this many
    #: rounds (the number of trees is then measured, not searched); null searches it
    early_stopping_rounds: int | None = Field(default=50, ge=1)
    #: processes tuning outer folds (and final models) at once; each XGBoost model then uses
    #: one thread instead of two. Results do not depend on the order folds finish.
    n_jobs: int = Field(default=1, ge=1)


class ValidationSpec(_Strict):
    """Outer validation schemes: every one is reported in metrics.json."""

    schemes: list[Scheme] = Field(default_factory=lambda: list[Scheme](["kfold"]))
    folds: int = Field(default=5, ge=2)
    external_source: str | None = None
    bootstrap: int = Field(default=1000, ge=100)


class HarmonizeSpec(_Strict):
    """Site harmonisation fitted inside the training folds (``method: none`` to switch off)."""

    method: Literal["none", "combat"] = "none"
    #: the batch variable (a scan column such as ``site``)
    batch: str = "site"
    #: covariates whose effects ComBat preserves (``age`` gets a spline basis)
    covariates: list[str] = Field(default_factory=lambda: ["age", "sex"])
    #: empirical-Bayes priors: parametric (Johnson et al. 2007) or non-parametric
    parametric: bool = True
    #: degrees of freedom of the natural-spline basis of age (ComBat-GAM style; 1 = linear)
    age_spline_df: int = Field(default=4, ge=1, le=10)
    #: harmonise every site to this one instead of the pooled grand mean
    reference_site: str | None = None
    #: sites never seen in training: refuse, or adapt from the new site's own controls
    new_sites: Literal["refuse", "adapt"] = "refuse"
    #: allow the outcome among the covariates (the report then warns of leakage)
    allow_outcome_covariate: bool = False


class BiasCorrectionSpec(_Strict):
    """The brain-age bias correction, fitted on inner out-of-fold training predictions."""

    #: beheshti: subtract the fitted gap-on-age line (uses the scan's true age, never divides);
    #: cole: (predicted - intercept) / slope (Cole / de Lange; needs no age, divides by the
    #: slope); none: report the uncorrected predictions in both columns
    method: Literal["beheshti", "cole", "none"] = "beheshti"
    #: cole only: a fold whose slope of predicted on true age is not above this is left
    #: uncorrected (errors would be amplified by 1 / slope)
    min_slope: float = Field(default=0.3, ge=0.0, lt=1.0)
    #: folds of the out-of-fold predictions the correction is fitted on: null uses the tuning's
    #: inner folds (no extra fits); more folds (e.g. 10) give inner models closer to the
    #: refitted one, so the correction over-corrects less (one extra fit per fold)
    folds: int | None = Field(default=None, ge=2)


class PretrainConfig(_Strict):
    """``kind: pretrain``: brain-age and sex models on the pooled database."""

    kind: Literal["pretrain"]
    name: str = "pretrain"
    cohort: CohortSpec = Field(default_factory=CohortSpec)
    features: FeatureSpec = Field(default_factory=FeatureSpec)
    targets: list[Target] = Field(default_factory=lambda: list[Target](["age", "sex"]))
    #: target -> model names (age: ridge, xgboost; sex: logistic, elasticnet, xgboost; and any
    #: model type registered in morphml.registry)
    models: dict[Target, list[str]] = Field(
        default_factory=lambda: dict[Target, list[str]](
            {"age": ["ridge", "xgboost"], "sex": ["logistic", "xgboost"]}
        )
    )
    harmonize: HarmonizeSpec = Field(default_factory=HarmonizeSpec)
    tuning: TuningSpec = Field(default_factory=TuningSpec)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    bias_correction: BiasCorrectionSpec = Field(default_factory=BiasCorrectionSpec)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: how predict treats sites the models never saw: refuse, or predict without site terms
    new_sites: Literal["refuse", "ignore_site"] = "refuse"
    #: ``morphml audit``: absolute and relative tolerance for re-fit results when package
    #: versions, platform or device differ from the run's (same versions on CPU: exact)
    audit_tolerance: float = Field(default=0.0, ge=0.0)

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for target, names in value.items():
            for name in names:
                model_type(name, target)  # an unknown name: ValueError naming the closest
        return value


class TargetSpec(_Strict):
    """The small sample's outcome: a phenotype of the database."""

    #: phenotype name (e.g. diagnosis, response, a symptom scale)
    name: str
    type: Literal["binary", "continuous"] = "binary"
    #: binary: the label of the positive class (e.g. schizophrenia, responder)
    positive: str | None = None
    #: phenotype -> values marking the controls whose scans adapt a new site (binary targets:
    #: the non-positive class when left empty; continuous targets: every training scan)
    controls: dict[str, list[str]] = Field(default_factory=dict)


class ProtocolSpec(_Strict):
    """Repeated stratified nested cross-validation on the small sample."""

    folds: int = Field(default=5, ge=2)
    repeats: int = Field(default=20, ge=1)
    #: training-set sizes of the learning curve ("all" = the whole training fold)
    train_sizes: list[int | Literal["all"]] = Field(
        default_factory=lambda: list[int | Literal["all"]]([20, 40, 80, "all"])
    )
    inner_folds: int = Field(default=3, ge=2)
    #: label permutations for the selected representation's p-value against chance (0: none).
    #: 200 puts the floor 1/(B+1) at 0.005 and the Monte-Carlo SE of a p near 0.05 at 0.015;
    #: each permutation costs permutation_repeats x folds fits of one representation (COBRE,
    #: 5 folds: 1,000 fits, against 3,600 for the comparison table)
    permutations: int = Field(default=200, ge=0)
    #: repeats of the k-fold run per permutation. The observed score is the table's (mean over
    #: all ``repeats``); a null of fewer repeats is wider, so p is then conservative
    permutation_repeats: int = Field(default=1, ge=1)
    #: parallel worker threads for the comparison
    n_jobs: int = Field(default=1, ge=1)


class TransferConfig(_Strict):
    """``kind: transfer``: small-sample models compared with and without pretraining."""

    kind: Literal["transfer"]
    name: str = "transfer"
    #: the pretrain run directory (``morphml fit --pretrained`` overrides it)
    pretrained: str | None = None
    cohort: CohortSpec = Field(default_factory=CohortSpec)
    target: TargetSpec
    #: covariates every representation carries: age, sex, site
    covariates: list[Literal["age", "sex", "site"]] = Field(
        default_factory=lambda: list[Literal["age", "sex", "site"]](["age", "sex"])
    )
    #: target sites the pretraining never saw: refuse, or adapt from their controls
    harmonize: HarmonizeSpec = Field(
        default_factory=lambda: HarmonizeSpec(method="none", new_sites="adapt")
    )
    #: names of registered representations (morphml.registry); default: every one that
    #: needs no other input than the pretrain run
    representations: list[str] = Field(
        default_factory=lambda: list(representation_names(default_only=True))
    )
    protocol: ProtocolSpec = Field(default_factory=ProtocolSpec)
    #: principal components of the pretraining cohort in linear_projection
    components: int = Field(default=10, ge=0)
    #: a reference model folder (``morphml reference import/build --out``) whose z-scores the
    #: representation ``reference_z`` feeds the small model (see README, "Using a published
    #: reference model"); relative paths are relative to the working directory
    reference: str | None = None
    #: how ``reference_z`` adapts a site the reference never saw from the training fold's
    #: controls: the braincharts recipe, or empirical-Bayes shrinkage toward the reference's sites
    reference_adaptation: Literal["braincharts", "shrunk"] = "braincharts"
    seed: int = 0

    @model_validator(mode="after")
    def _reference_pairs(self) -> TransferConfig:
        takers = [r.name for r in representations() if r.needs == "reference"]
        needing = [name for name in self.representations if name in takers]
        if needing and not self.reference:
            raise ValueError(
                f"representations: {needing[0]!r} needs 'reference: PATH' (a reference model "
                "folder from 'morphml reference import ARCHIVE --format braincharts --out PATH')"
            )
        if self.reference and not needing:
            names = " or ".join(repr(name) for name in takers)
            raise ValueError(
                f"'reference' is set but {names} is not among the representations; add "
                "it (or remove 'reference')"
            )
        return self

    @field_validator("representations")
    @classmethod
    def _raw_first(cls, value: list[str]) -> list[str]:
        for name in value:
            representation(name)  # an unknown name: ValueError naming the closest
        if "raw" not in value:
            raise ValueError(
                "representations must include 'raw' (every result is compared with it)"
            )
        return ["raw", *[v for v in dict.fromkeys(value) if v != "raw"]]


_KINDS: dict[str, type[_Strict]] = {"pretrain": PretrainConfig, "transfer": TransferConfig}


def _closest_key(model: type[BaseModel], loc: tuple[Any, ...], key: str) -> str | None:
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if current is None:
            return None
    fields = list(getattr(current, "model_fields", {}))
    close = difflib.get_close_matches(key, fields, n=1, cutoff=0.5)
    return close[0] if close else None


def parse_config(data: Any, *, source: str = "config") -> PretrainConfig | TransferConfig:
    """Validate a config mapping (as loaded from YAML)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys, got {type(data).__name__}")
    kind = data.get("kind")
    if kind not in _KINDS:
        raise ConfigError(f"{source}: 'kind' must be one of {sorted(_KINDS)}, got {kind!r}")
    model = _KINDS[kind]
    return validate_model(model, data, source)  # type: ignore[return-value]


def validate_model(model: type[BaseModel], data: dict[str, Any], source: str) -> BaseModel:
    """``model.model_validate(data)`` with pydantic's first error as one :class:`ConfigError`
    line: an unknown key names the closest valid one; a check across keys gives its message."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(first["loc"])
        where = ".".join(str(p) for p in loc[:-1]) or "the top level"
        if first["type"] == "extra_forbidden":
            key = str(loc[-1])
            close = _closest_key(model, loc[:-1], key)
            hint = f"; did you mean {close!r}?" if close else ""
            raise ConfigError(f"{source}: unknown key {key!r} at {where}{hint}") from None
        path = ".".join(str(p) for p in loc)
        if not path:  # a check across keys (model validator): the message names them
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"{source}: {msg}") from None
        raise ConfigError(f"{source}: {path}: {first['msg']}") from None


def load_config(path: str | os.PathLike[str]) -> PretrainConfig | TransferConfig:
    """Read and validate a YAML config file (``yaml.safe_load``)."""
    p = Path(path)
    data = read_yaml(p, ConfigError, f"{p}: config file not found")
    return parse_config(data, source=str(p))


def config_hash(config: BaseModel) -> str:
    """SHA-256 of the resolved config (canonical JSON), for manifests and audits."""
    blob = json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()
