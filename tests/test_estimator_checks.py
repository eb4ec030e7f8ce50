"""scikit-learn's generic estimator checks over every morphml estimator class and pipeline.

Every class of ``morphml/`` deriving from scikit-learn's ``BaseEstimator`` is here, except two
private helpers (``transfer._representations._Covariates``, ``transfer._heads._FoldSearch``,
the base of the two searches checked below) and ``_Representation``, the base of the
representations checked below. A check known to fail is listed, with its reason, in
``_expected_failed_checks``; the lists are strict (``xfail_strict=True``), so a listed check that
starts passing fails the test and must be taken off its list.

Most failures have one cause: the estimator reads what it needs by name from a DataFrame (the
site and covariates from ``meta:`` columns, a pretrain run's features by their ids, a reference
model's features) or needs fixed knowledge (a pretrain run, a reference model) that the checks'
unnamed random arrays cannot carry. Those estimators are tested on real inputs in
``test_combat.py``, ``test_harmonize_fit.py``, ``test_transfer*.py`` and ``test_reference.py``;
here they are held to the parts of the API that need no data (construction, ``get_params`` /
``set_params``, cloning, not-fitted errors, tags).

Not checked: pipelines with ``log_target=True`` (the default of ``make_age_model``): the checks
fit regressors on negative targets, whose log is undefined. The same pipelines are checked with
``log_target=False``; the log target itself is scikit-learn's ``TransformedTargetRegressor``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from xgboost import XGBClassifier, XGBRegressor

from morphml.harmonize import ComBat, HarmonizeStep
from morphml.models import (
    AgeBiasCorrector,
    EtivAdjuster,
    FeatureGuard,
    MedianImputer,
    make_age_model,
    make_sex_model,
)
from morphml.reference import ReferenceDeviations
from morphml.transfer import (
    BrainAgeGap,
    LeafEmbedding,
    LinearProjection,
    NormativeZ,
    RawFeatures,
    ReferenceZ,
    SexScore,
    StackedModel,
    WarmStartBooster,
    WarmStartClassifier,
    WarmStartRegressor,
)
from morphml.transfer._heads import PenaltySearch, RoundsSearch

# small and fast, but able to fit the checks' toy data (check_regressors_train wants R² > 0.5)
_XGB_SMALL = {"n_estimators": 10, "learning_rate": 0.3, "max_depth": 3}

_REPRESENTATIONS = (
    RawFeatures,
    BrainAgeGap,
    SexScore,
    LinearProjection,
    NormativeZ,
    LeafEmbedding,
)

ESTIMATORS = [
    FeatureGuard(),
    MedianImputer(),
    # by position, so it takes the checks' arrays (by name it needs canonical feature ids,
    # tested in test_models.py)
    EtivAdjuster(etiv_column=0, columns="all"),
    AgeBiasCorrector(),
    ComBat(),
    HarmonizeStep(),
    *(cls() for cls in _REPRESENTATIONS),
    ReferenceZ(),
    ReferenceDeviations(),
    WarmStartBooster(),
    WarmStartClassifier(),
    WarmStartRegressor(kind="regression"),
    StackedModel(estimators=[("logistic", LogisticRegression())]),
    StackedModel(estimators=[("ridge", Ridge())], kind="regression"),
    PenaltySearch(
        make_pipeline(StandardScaler(), LogisticRegression()), values=(0.1, 1.0),
        cv=StratifiedKFold(3),
    ),
    PenaltySearch(
        make_pipeline(StandardScaler(), Ridge()), param="alpha", values=(1.0, 10.0), cv=KFold(3),
        kind="regression",
    ),
    RoundsSearch(WarmStartClassifier(), values=(1, 2), cv=StratifiedKFold(3)),
    make_age_model("ridge", {}, etiv_adjust=False, random_state=0, log_target=False),
    make_age_model("xgboost", _XGB_SMALL, etiv_adjust=False, random_state=0, log_target=False),
    make_sex_model("logistic", {}, etiv_adjust=False, random_state=0),
    make_sex_model("elasticnet", {}, etiv_adjust=False, random_state=0),
    make_sex_model("xgboost", _XGB_SMALL, etiv_adjust=False, random_state=0),
]  # fmt: skip


def _listed(names: Iterable[str], reason: str) -> dict[str, str]:
    return dict.fromkeys(sorted(names), reason)


#: the checks that fit on the checks' random arrays (every estimator that cannot fails these)
_FIT_CHECKS = frozenset({
    "check_complex_data", "check_dict_unchanged", "check_dont_overwrite_parameters",
    "check_dtype_object", "check_estimator_sparse_array", "check_estimator_sparse_matrix",
    "check_estimator_sparse_tag", "check_estimators_dtypes",
    "check_estimators_empty_data_messages", "check_estimators_fit_returns_self",
    "check_estimators_nan_inf", "check_estimators_overwrite_params", "check_estimators_pickle",
    "check_f_contiguous_array_estimator", "check_fit2d_1feature", "check_fit2d_1sample",
    "check_fit2d_predict1d", "check_fit_check_is_fitted", "check_fit_idempotent",
    "check_fit_score_takes_y", "check_methods_sample_order_invariance",
    "check_methods_subset_invariance", "check_n_features_in", "check_n_features_in_after_fitting",
    "check_pipeline_consistency", "check_positive_only_tag_during_fit",
    "check_readonly_memmap_input",
})  # fmt: skip
#: the same, run for transformers only
_TRANSFORMER_FIT_CHECKS = frozenset({
    "check_transformer_data_not_an_array", "check_transformer_general",
    "check_transformer_preserve_dtypes",
})  # fmt: skip
#: run for transformers that accept missing values instead of this one
_NAN_CHECK = frozenset({"check_estimators_nan_inf"})

_NEEDS_META = (
    "ComBat reads each scan's site and covariates from the 'meta:' columns of a DataFrame "
    "(meta:site, meta:age, meta:sex) and refuses anything else; the checks' unnamed arrays "
    "carry no site, so there is no site effect to estimate"
)
_NEEDS_PRETRAINED = (
    "fit needs a pretrain run (pretrained=...: its fitted models) and a DataFrame with the run's "
    "feature ids and 'meta:' columns; the checks can give neither, so fit refuses"
)
_NEEDS_REFERENCE = (
    "fit needs a reference model (reference=...) and a DataFrame whose columns are canonical "
    "feature ids with age, sex and site beside them (a reference knows features by name, "
    "never by position); the checks can give neither, so fit refuses"
)
_NEEDS_FRAME_ROWS = (
    "selects the rows of its inner folds with DataFrame.iloc: its input is always the transfer "
    "DataFrame of a head pipeline, never an array"
)
_ETIV_POSITIVE = (
    "eTIV (here column 0) must be finite and positive in every row (a head size of zero or "
    "less is a data error and is refused); these checks' random data put negative values there"
)
_TWO_VECTORS = (
    "fit(age, predicted) and transform(age, predicted) take the two vectors the correction is "
    "about, not fit(X, y) / transform(X); test_models.py tests it directly"
)

_FAILURES: dict[type, dict[str, str]] = {
    EtivAdjuster: _listed(
        {
            "check_estimators_dtypes",
            "check_estimators_fit_returns_self",
            "check_estimators_overwrite_params",
            "check_estimators_pickle",
            "check_n_features_in_after_fitting",
            "check_pipeline_consistency",
            "check_readonly_memmap_input",
            *_TRANSFORMER_FIT_CHECKS,
        },
        _ETIV_POSITIVE,
    ),
    AgeBiasCorrector: _listed(
        (_FIT_CHECKS - {"check_fit2d_1feature"})
        | _TRANSFORMER_FIT_CHECKS
        | {"check_fit1d", "check_transformers_unfitted"},
        _TWO_VECTORS,
    ),
    ComBat: _listed(_FIT_CHECKS - _NAN_CHECK | _TRANSFORMER_FIT_CHECKS, _NEEDS_META),
    HarmonizeStep: _listed(_FIT_CHECKS - _NAN_CHECK | _TRANSFORMER_FIT_CHECKS, _NEEDS_META),
    **{
        cls: _listed(_FIT_CHECKS | _TRANSFORMER_FIT_CHECKS, _NEEDS_PRETRAINED)
        for cls in _REPRESENTATIONS
    },
    ReferenceZ: _listed(_FIT_CHECKS | _TRANSFORMER_FIT_CHECKS, _NEEDS_REFERENCE),
    ReferenceDeviations: _listed(_FIT_CHECKS | _TRANSFORMER_FIT_CHECKS, _NEEDS_REFERENCE),
    WarmStartBooster: _listed(_FIT_CHECKS, _NEEDS_PRETRAINED),
    WarmStartClassifier: _listed(
        _FIT_CHECKS
        | {
            "check_classifier_data_not_an_array",
            "check_classifiers_classes",
            "check_classifiers_one_label",
            "check_classifiers_regression_target",
            "check_classifiers_train",
            "check_decision_proba_consistency",
            "check_requires_y_none",
            "check_supervised_y_2d",
        },
        _NEEDS_PRETRAINED,
    ),
    WarmStartRegressor: _listed(
        _FIT_CHECKS
        | {
            "check_regressor_data_not_an_array",
            "check_regressors_int",
            "check_regressors_no_decision_function",
            "check_regressors_train",
            "check_requires_y_none",
            "check_supervised_y_2d",
        },
        _NEEDS_PRETRAINED,
    ),
}


def _search_failures(estimator: PenaltySearch | RoundsSearch) -> dict[str, str]:
    passing = {"check_fit2d_1sample"}  # refused before any row is indexed (too few for the folds)
    if estimator.kind == "classification":
        passing.add("check_complex_data")  # refused by the stratified splitter before indexing
    failures = _listed(_FIT_CHECKS - passing | {"check_fit1d"}, _NEEDS_FRAME_ROWS)
    failures["check_estimators_unfitted"] = (
        "predicting before fit raises AttributeError (no best_estimator_), not NotFittedError"
    )
    return failures


_PIPELINE_STEPS = (
    "scikit-learn's Pipeline fits the step objects it holds in place, so its `steps` parameter "
    "changes during fit (scikit-learn marks the same check as failing for Pipeline)"
)
_PIPELINE_FAILURES = {
    "check_estimators_overwrite_params": _PIPELINE_STEPS,
    "check_dont_overwrite_parameters": _PIPELINE_STEPS,
    "check_estimators_nan_inf": (
        "missing values are imputed (linear models) or handled by the trees (XGBoost) by "
        "design, but Pipeline does not pass the allow_nan tag of its first step on"
    ),
}

_XGB_LABELS = (
    "XGBClassifier only accepts classes coded 0..k-1 (callers code sex as 0/1); the check uses "
    "other labels"
)
_XGB_CLASSIFIER_FAILURES = {
    "check_estimators_dtypes": _XGB_LABELS,
    "check_classifier_data_not_an_array": _XGB_LABELS,
    "check_classifiers_classes": _XGB_LABELS,
    "check_fit2d_1sample": _XGB_LABELS,
    "check_fit2d_1feature": _XGB_LABELS,
    "check_classifiers_regression_target": (
        "XGBoost's error for a continuous target does not use the word 'continuous'"
    ),
    "check_classifiers_multilabel_output_format_predict": (
        "XGBClassifier.predict returns floats for multilabel targets"
    ),
    "check_supervised_y_2d": (
        "XGBClassifier accepts a column-vector y without a DataConversionWarning"
    ),
}
_XGB_REGRESSOR_FAILURES = {
    "check_regressor_multioutput": "XGBoost predicts in float32 (upstream behaviour)",
}


def _pipeline_failures(estimator: Pipeline) -> dict[str, str]:
    failures = dict(_PIPELINE_FAILURES)
    final = estimator.steps[-1][1]
    if isinstance(final, XGBClassifier):
        failures.update(_XGB_CLASSIFIER_FAILURES)
    elif isinstance(final, XGBRegressor):
        failures.update(_XGB_REGRESSOR_FAILURES)
    return failures


def _expected_failed_checks(estimator: Any) -> dict[str, str]:
    if isinstance(estimator, Pipeline):
        return _pipeline_failures(estimator)
    if isinstance(estimator, PenaltySearch | RoundsSearch):
        return _search_failures(estimator)
    return dict(_FAILURES.get(type(estimator), {}))


# strict: a listed check that starts passing must be taken off its list
@parametrize_with_checks(
    ESTIMATORS, expected_failed_checks=_expected_failed_checks, xfail_strict=True
)
def test_sklearn_compatible(estimator: Any, check: Any) -> None:
    check(estimator)


def test_every_estimator_class_is_checked() -> None:
    """A new estimator class in morphml must join ESTIMATORS (or the docstring's exceptions)."""
    import importlib
    import inspect
    import pkgutil

    from sklearn.base import BaseEstimator

    import morphml

    private = {"_Covariates", "_Representation", "_FoldSearch"}
    found = set()
    for info in pkgutil.walk_packages(morphml.__path__, "morphml."):
        if ".cli" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == info.name and issubclass(cls, BaseEstimator):
                found.add(name)
    checked = {type(e).__name__ for e in ESTIMATORS if not isinstance(e, Pipeline)}
    assert found - private - checked == set()
