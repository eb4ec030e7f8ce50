"""Model evaluation: splits, nested CV, tuning, metrics with bootstrap intervals, comparison.

Metrics, comparisons and diagnostics return JSON-safe ``dict``s (plain ``int``, ``float``,
``list``, ``str``); the nested cross-validation returns predictions, parameters and models.
"""

from morphml.evaluation._bias_correction import (
    BiasSettings,
    bias_entry,
    bias_summary,
    fit_bias_correction,
    refit_oof,
)
from morphml.evaluation._checks import check_harmonize, check_pretrain_data
from morphml.evaluation._compare import (
    corrected_resampled_ttest,
    paired_bootstrap_delta,
    permutation_p_value,
)
from morphml.evaluation._confounding import frame_site_confounding, site_confounding
from morphml.evaluation._harmonization import harmonization_diagnostics
from morphml.evaluation._metrics import (
    brain_age_metrics,
    classification_metrics,
    per_group_metrics,
    regression_metrics,
)
from morphml.evaluation._nested import (
    ModelSearch,
    NestedCV,
    NestedCVPlan,
    NestedCVResult,
    SearchPlan,
    StudyStore,
    TunedModel,
    TuningSettings,
    nested_cv_plans,
    parallel_jobs,
    run_tasks,
    sex_site_labels,
    site_columns_for,
)
from morphml.evaluation._protocol import (
    Comparison,
    Split,
    compare_representations,
    comparison_headline,
    make_splits,
)
from morphml.evaluation._scoring import NARROW_AGE_SD, mark_narrow_sites, score_predictions
from morphml.evaluation._splits import (
    SCHEME_KEYS,
    inner_splits,
    outer_splits,
    scheme_key,
    scheme_keys_current,
)
from morphml.evaluation._tuning import TuningResult, predict_scores, stable_seed, tune

__all__ = [
    "NARROW_AGE_SD",
    "SCHEME_KEYS",
    "BiasSettings",
    "Comparison",
    "ModelSearch",
    "NestedCV",
    "NestedCVPlan",
    "NestedCVResult",
    "SearchPlan",
    "Split",
    "StudyStore",
    "TunedModel",
    "TuningResult",
    "TuningSettings",
    "bias_entry",
    "bias_summary",
    "brain_age_metrics",
    "check_harmonize",
    "check_pretrain_data",
    "classification_metrics",
    "compare_representations",
    "comparison_headline",
    "corrected_resampled_ttest",
    "fit_bias_correction",
    "frame_site_confounding",
    "harmonization_diagnostics",
    "inner_splits",
    "make_splits",
    "mark_narrow_sites",
    "nested_cv_plans",
    "outer_splits",
    "paired_bootstrap_delta",
    "parallel_jobs",
    "per_group_metrics",
    "permutation_p_value",
    "predict_scores",
    "refit_oof",
    "regression_metrics",
    "run_tasks",
    "scheme_key",
    "scheme_keys_current",
    "score_predictions",
    "sex_site_labels",
    "site_columns_for",
    "site_confounding",
    "stable_seed",
    "tune",
]
