"""Models: preprocessing, brain-age and sex estimators, age-bias correction, persistence."""

from morphml.models._bias import AgeBiasCorrector, BiasCorrectionError
from morphml.models._estimators import (
    AGE_MODELS,
    SEX_MODELS,
    XGB_MAX_TREES,
    DeviceError,
    default_params,
    fit_early_stopped,
    make_age_model,
    make_sex_model,
    resolve_device,
    search_space,
)
from morphml.models._persist import (
    FORMAT_VERSION,
    ModelFileError,
    UntrustedModelError,
    load_model,
    save_model,
)
from morphml.models._preprocess import (
    EtivAdjuster,
    FeatureGuard,
    FeatureMismatchError,
    MedianImputer,
    ModelConfigError,
    ModelInputError,
    check_feature_names,
)

__all__ = [
    "AGE_MODELS",
    "FORMAT_VERSION",
    "SEX_MODELS",
    "XGB_MAX_TREES",
    "AgeBiasCorrector",
    "BiasCorrectionError",
    "DeviceError",
    "EtivAdjuster",
    "FeatureGuard",
    "FeatureMismatchError",
    "MedianImputer",
    "ModelConfigError",
    "ModelFileError",
    "ModelInputError",
    "UntrustedModelError",
    "check_feature_names",
    "default_params",
    "fit_early_stopped",
    "load_model",
    "make_age_model",
    "make_sex_model",
    "resolve_device",
    "save_model",
    "search_space",
]
