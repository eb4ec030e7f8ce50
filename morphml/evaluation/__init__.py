"""Model evaluation: splits, tuning, metrics with bootstrap intervals, model comparison.

Every function returns a JSON-safe ``dict`` (plain ``int``, ``float``, ``list``, ``str``).
"""

from morphml.evaluation._compare import (
    corrected_resampled_ttest,
    paired_bootstrap_delta,
    permutation_p_value,
)
from morphml.evaluation._confounding import site_confounding
from morphml.evaluation._metrics import (
    brain_age_metrics,
    classification_metrics,
    per_group_metrics,
    regression_metrics,
)
from morphml.evaluation._protocol import (
    Comparison,
    Split,
    compare_representations,
    comparison_headline,
    make_splits,
)
from morphml.evaluation._splits import (
    SCHEME_KEYS,
    inner_splits,
    outer_splits,
    scheme_key,
    scheme_keys_current,
)
from morphml.evaluation._tuning import TuningResult, predict_scores, stable_seed, tune

__all__ = [
    "SCHEME_KEYS",
    "Comparison",
    "Split",
    "TuningResult",
    "brain_age_metrics",
    "classification_metrics",
    "compare_representations",
    "comparison_headline",
    "corrected_resampled_ttest",
    "inner_splits",
    "make_splits",
    "outer_splits",
    "paired_bootstrap_delta",
    "per_group_metrics",
    "permutation_p_value",
    "predict_scores",
    "regression_metrics",
    "scheme_key",
    "scheme_keys_current",
    "site_confounding",
    "stable_seed",
    "tune",
]
