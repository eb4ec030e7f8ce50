"""What a small-sample model sees: representations built from a pretrain run.

Every representation is a scikit-learn transformer (``warm_start`` is an estimator, since it
*is* the model) whose input is a DataFrame of the pretrain run's features plus ``meta:``
columns (``meta:age``, ``meta:sex``, ``meta:site``, ``meta:control``). Anything learned from
the small sample (one-hot leaf codes, a new site's offset, site indicators) is learned in
``fit``, so inside a cross-validation it comes from the training fold only. What comes from
the pretrain run (models, normative model, principal axes) is fixed.

Every output ends with the covariates (age, sex and, with several target sites, site
indicators), so each representation is compared with ``raw`` on equal terms.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin, clone
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.utils import ClassifierTags, RegressorTags, _safe_indexing
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from morphml.exceptions import TransferError
from morphml.registry import model_names, model_types, representation_names
from morphml.transfer._normative import NormativeModel
from morphml.transfer._pretrained import META_PREFIX, PretrainedModel, PretrainedRun

__all__ = [
    "REPRESENTATIONS",
    "BrainAgeGap",
    "Components",
    "LeafEmbedding",
    "LinearProjection",
    "NormativeZ",
    "RawFeatures",
    "SexScore",
    "StackedModel",
    "WarmStartBooster",
]

#: built-in representation names in the order they are reported (``morphml.registry``'s
#: ``representation_names`` also lists those registered later)
REPRESENTATIONS = representation_names()


def _meta(X: pd.DataFrame, name: str) -> np.ndarray:
    col = f"{META_PREFIX}{name}"
    if col not in X.columns:
        raise TransferError(f"the target scans lack the covariate {name!r} (column {col!r})")
    return X[col].to_numpy()


def _features(X: pd.DataFrame) -> pd.DataFrame:
    return X.loc[:, [c for c in X.columns if not str(c).startswith(META_PREFIX)]]


def _controls(X: pd.DataFrame) -> np.ndarray:
    col = f"{META_PREFIX}control"
    if col not in X.columns:
        return np.ones(len(X), dtype=bool)
    return X[col].to_numpy(dtype=bool)


class _Covariates(TransformerMixin, BaseEstimator):
    """Age, sex and (with several sites in the training data) site indicators."""

    def __init__(self, *, covariates: tuple[str, ...] = ("age", "sex")) -> None:
        self.covariates = covariates

    def fit(self, X: pd.DataFrame, y: Any = None) -> _Covariates:
        self.sites_ = None
        if "site" in self.covariates:
            sites = np.unique(_meta(X, "site").astype(str))
            self.sites_ = sites[1:] if len(sites) > 1 else sites[:0]
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        cols = [_meta(X, name).astype(np.float64) for name in self.covariates if name != "site"]
        if self.sites_ is not None:
            site = _meta(X, "site").astype(str)
            cols += [(site == s).astype(np.float64) for s in self.sites_]
        return np.column_stack(cols) if cols else np.empty((len(X), 0))


class _Representation(TransformerMixin, BaseEstimator):
    """Base: pretrained inputs plus covariates; subclasses define ``_values``."""

    pretrained: PretrainedRun | None
    covariates: tuple[str, ...]

    def _check(self) -> PretrainedRun:
        if self.pretrained is None:
            raise TransferError(f"{type(self).__name__} needs a pretrain run (pretrained=...)")
        return self.pretrained

    def _fit_extra(self, X: pd.DataFrame, y: Any) -> None:
        """What the representation learns from the training fold (nothing by default)."""

    def _values(self, X: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def fit(self, X: pd.DataFrame, y: Any = None) -> _Representation:
        self._check()
        self.covariates_ = _Covariates(covariates=tuple(self.covariates)).fit(X)
        self._fit_extra(X, y)
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        return np.column_stack([self._values(X), self.covariates_.transform(X)])


class RawFeatures(_Representation):
    """The features themselves: the direct model every transfer result is compared with."""

    def __init__(self, *, pretrained: PretrainedRun | None = None,
                 covariates: tuple[str, ...] = ("age", "sex")) -> None:  # fmt: skip
        self.pretrained = pretrained
        self.covariates = covariates

    def _values(self, X: pd.DataFrame) -> np.ndarray:
        ids = self._check().feature_ids
        return _features(X)[ids].to_numpy(np.float64)


def _age_models(run: PretrainedRun) -> list[PretrainedModel]:
    models = [m for f in model_names("age") if (m := run.get("age", f)) is not None]
    if not models:
        raise TransferError(f"pretrain run {run.run_dir} has no age model")
    return models


class BrainAgeGap(_Representation):
    """The bias-corrected brain-age gap of each pretrained age model, with age as covariate.

    The pretraining bias correction is applied; a target site's own offset is the mean gap of
    the training fold's controls (a new scanner shifts predicted age). Age is always among
    the covariates, since a corrected gap still carries age-related variance.
    """

    def __init__(self, *, pretrained: PretrainedRun | None = None,
                 covariates: tuple[str, ...] = ("age", "sex")) -> None:  # fmt: skip
        self.pretrained = pretrained
        self.covariates = covariates

    def fit(self, X: pd.DataFrame, y: Any = None) -> BrainAgeGap:
        if "age" not in self.covariates:
            self.covariates = ("age", *self.covariates)
        super().fit(X, y)
        return self

    def _gaps(self, X: pd.DataFrame) -> np.ndarray:
        from morphml.models import AgeBiasCorrector

        age = _meta(X, "age").astype(np.float64)
        cols = []
        for model in _age_models(self._check()):
            pred = _cached(model, "score", X)
            correction = model.sidecar.get("bias_correction")
            if correction is not None:
                pred = AgeBiasCorrector.from_dict(correction).transform(age, pred)
            cols.append(pred - age)
        return np.column_stack(cols)

    def _fit_extra(self, X: pd.DataFrame, y: Any) -> None:
        gaps = self._gaps(X)
        site = _meta(X, "site").astype(str) if f"{META_PREFIX}site" in X.columns else None
        controls = _controls(X)
        self.site_offsets_: dict[str, np.ndarray] = {}
        if site is not None:
            for name in np.unique(site):
                rows = (site == name) & controls
                if rows.any():
                    self.site_offsets_[name] = gaps[rows].mean(axis=0)

    def _values(self, X: pd.DataFrame) -> np.ndarray:
        gaps = self._gaps(X)
        if f"{META_PREFIX}site" in X.columns:
            site = _meta(X, "site").astype(str)
            for name, offset in self.site_offsets_.items():
                gaps[site == name] -= offset
        return gaps


class SexScore(_Representation):
    """The pretrained sex models' logits, with and without eTIV adjustment."""

    def __init__(self, *, pretrained: PretrainedRun | None = None,
                 covariates: tuple[str, ...] = ("age", "sex")) -> None:  # fmt: skip
        self.pretrained = pretrained
        self.covariates = covariates

    def _values(self, X: pd.DataFrame) -> np.ndarray:
        run = self._check()
        models = [m for k, m in run.models.items() if k.startswith("sex/")]
        if not models:
            raise TransferError(f"pretrain run {run.run_dir} has no sex model")
        return np.column_stack([_cached(m, "score", X) for m in models])


class Components:
    """Principal axes of the pretraining scans: a fitted scaler and PCA, shared, never copied."""

    def __init__(self, scaler: Any, pca: Any) -> None:
        self.scaler = scaler
        self.pca = pca

    def __deepcopy__(self, memo: dict[int, Any]) -> Components:
        return self

    def __repr__(self) -> str:
        return f"Components(n={self.pca.n_components_})"


class LinearProjection(_Representation):
    """The pretrained linear models' scores and the pretraining cohort's leading components.

    ``components`` is a :class:`Components` fitted on the pretraining scans.
    """

    def __init__(self, *, pretrained: PretrainedRun | None = None, components: Any = None,
                 covariates: tuple[str, ...] = ("age", "sex")) -> None:  # fmt: skip
        self.pretrained = pretrained
        self.components = components
        self.covariates = covariates

    def _values(self, X: pd.DataFrame) -> np.ndarray:
        run = self._check()
        cols = [
            _cached(m, "score", X)
            for f in (m.name for m in model_types() if m.linear)
            for m in [run.get("age", f) or run.get("sex", f)]
            if m is not None
        ]
        out = [np.column_stack(cols)] if cols else []
        if self.components is not None:
            scaler, pca = self.components.scaler, self.components.pca
            values = _features(X)[run.feature_ids].to_numpy(np.float64)
            values = np.where(np.isnan(values), scaler.mean_, values)
            out.append(pca.transform(scaler.transform(values)))
        if not out:
            raise TransferError("linear_projection needs a linear pretrained model or components")
        return np.column_stack(out)


class NormativeZ(_Representation):
    """Deviation of every feature from the pretraining cohort's norm for that age and sex.

    ``normative`` is a :class:`NormativeModel` fitted on the pretraining scans. In ``fit``,
    target sites the norm never saw are adapted from the training fold's controls; a new site
    with no control in the training fold keeps the prior (offset 0, scale 1).
    """

    def __init__(self, *, pretrained: PretrainedRun | None = None,
                 normative: NormativeModel | None = None,
                 covariates: tuple[str, ...] = ("age", "sex")) -> None:  # fmt: skip
        self.pretrained = pretrained
        self.normative = normative
        self.covariates = covariates

    def _norm_inputs(self, X: pd.DataFrame) -> tuple[np.ndarray, ...]:
        values = _features(X)[self._check().feature_ids].to_numpy(np.float64)
        return values, _meta(X, "age"), _meta(X, "sex"), _meta(X, "site")

    def _fit_extra(self, X: pd.DataFrame, y: Any) -> None:
        if self.normative is None:
            raise TransferError("normative_z needs a fitted normative model (normative=...)")
        # share what was learned from the pretraining cohort; adapt a private copy
        norm = self.normative.adapted_copy()
        controls = _controls(X)
        values, age, sex, site = self._norm_inputs(X)
        rows = controls & ~np.isin(site.astype(str), norm.sites_)
        norm.adapt(values[rows], age[rows], sex[rows], site[rows])
        self.normative_ = norm

    def _values(self, X: pd.DataFrame) -> np.ndarray:
        values, age, sex, site = self._norm_inputs(X)
        # A new site without controls in this training fold (small learning-curve subsamples
        # often lack them) gets the shrinkage prior, offset 0 and scale 1, which is what the
        # empirical-Bayes estimate gives with no data; nothing of the test fold is used.
        z = self.normative_.zscores(values, age, sex, site, unknown="prior")
        return np.clip(z, -10, 10)


class LeafEmbedding(TransformerMixin, BaseEstimator):
    """Which leaf of each pretrained tree a scan falls in, one-hot (sparse), plus covariates.

    The one-hot code is learned on the training fold (a leaf no training scan reached is all
    zeros); covariates are standardised on the training fold. Feed it to a sparse L2 model.
    """

    def __init__(self, *, pretrained: PretrainedRun | None = None,
                 covariates: tuple[str, ...] = ("age", "sex")) -> None:  # fmt: skip
        self.pretrained = pretrained
        self.covariates = covariates

    def _models(self) -> list[PretrainedModel]:
        if self.pretrained is None:
            raise TransferError("LeafEmbedding needs a pretrain run (pretrained=...)")
        models = [
            m for k, m in self.pretrained.models.items() if k in ("age/xgboost", "sex/xgboost")
        ]
        if not models:
            raise TransferError(
                f"pretrain run {self.pretrained.run_dir} has no XGBoost model to take leaves from"
            )
        return models

    def _leaves(self, X: pd.DataFrame) -> np.ndarray:
        return np.column_stack([_cached(m, "leaves", X) for m in self._models()])

    def _keys(self, X: pd.DataFrame) -> np.ndarray:
        # one integer per (tree, leaf): leaf node ids are far below 2**31
        leaves = self._leaves(X).astype(np.int64)
        return np.arange(leaves.shape[1], dtype=np.int64) * _LEAF_STRIDE + leaves

    def fit(self, X: pd.DataFrame, y: Any = None) -> LeafEmbedding:
        # The (tree, leaf) pairs the training fold reaches, sorted: one column each. A
        # vectorised one-hot code (OneHotEncoder handles its thousands of columns one by one
        # in Python and dominated the whole transfer comparison).
        self.codes_ = np.unique(self._keys(X))
        self.covariates_ = _Covariates(covariates=tuple(self.covariates)).fit(X)
        self.scaler_ = StandardScaler().fit(self.covariates_.transform(X))
        return self

    def transform(self, X: pd.DataFrame) -> sp.csr_matrix:
        keys = self._keys(X)
        pos = np.searchsorted(self.codes_, keys)
        clipped = np.minimum(pos, len(self.codes_) - 1)
        seen = self.codes_[clipped] == keys  # a leaf no training scan reached: all zeros
        rows = np.broadcast_to(np.arange(len(keys))[:, None], keys.shape)[seen]
        onehot = sp.csr_matrix(
            (np.ones(int(seen.sum())), (rows, pos[seen])), shape=(len(keys), len(self.codes_))
        )
        cov = self.scaler_.transform(self.covariates_.transform(X))
        return sp.hstack([onehot, sp.csr_matrix(cov)], format="csr")


_LEAF_STRIDE = np.int64(2**31)


def _logistic_grad(pred: np.ndarray, dtrain: Any) -> tuple[np.ndarray, np.ndarray]:
    p = 1.0 / (1.0 + np.exp(-pred))
    return p - dtrain.get_label(), np.maximum(p * (1.0 - p), 1e-6)


def _squared_grad(pred: np.ndarray, dtrain: Any) -> tuple[np.ndarray, np.ndarray]:
    return pred - dtrain.get_label(), np.ones_like(pred)


class WarmStartBooster(BaseEstimator):
    """Continue boosting a pretrained booster on the small sample.

    ``variant="continue"``: new trees are added to the pretrained age (or sex) booster; the
    pretrained trees' output, centred on the training fold, is the starting score, so the
    new trees learn what ageing does not explain (``booster_`` holds the new trees; the
    pretrained trees enter as the base margin, which is the same model).
    ``variant="base_margin"``: a fresh booster starts from the pretrained output rescaled by a
    one-variable logistic (or linear) fit on the training fold. Losses are written out
    (logistic or squared) so the pretrained booster's own objective does not matter.
    """

    def __init__(self, *, pretrained: PretrainedRun | None = None, source: str = "age",
                 variant: str = "continue", kind: str = "classification", n_rounds: int = 30,
                 learning_rate: float = 0.05, max_depth: int = 2,
                 random_state: int | None = 0) -> None:  # fmt: skip
        self.pretrained = pretrained
        self.source = source
        self.variant = variant
        self.kind = kind
        self.n_rounds = n_rounds
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.random_state = random_state

    def _model(self) -> PretrainedModel:
        if self.pretrained is None:
            raise TransferError("WarmStartBooster needs a pretrain run (pretrained=...)")
        model = self.pretrained.get(self.source, "xgboost")
        if model is None:
            raise TransferError(
                f"pretrain run {self.pretrained.run_dir} has no {self.source} XGBoost model "
                "to warm-start from"
            )
        return model

    def _trees(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        model = self._model()
        return _cached(model, "booster_input", X), _cached(model, "tree_sum", X)

    def _dmatrix(self, inputs: np.ndarray, **kwargs: Any) -> Any:
        import xgboost as xgb

        # from an array with the booster's feature names: pandas input costs more than the
        # boosting itself at these sample sizes
        model = self._model()
        names = model.__dict__.get("_feature_names")
        if names is None:  # read once per pretrained model (XGBoost rebuilds the list)
            names = model.booster_parts()[1].get_booster().feature_names
            model.__dict__["_feature_names"] = names
        return xgb.DMatrix(inputs, feature_names=names, **kwargs)

    def fit(self, X: pd.DataFrame, y: Any) -> WarmStartBooster:
        import xgboost as xgb

        if self.variant not in ("continue", "base_margin"):
            raise TransferError(
                f"variant must be 'continue' or 'base_margin'. Got {self.variant!r}."
            )
        if self.kind not in ("classification", "regression"):
            raise TransferError(
                f"kind must be 'classification' or 'regression'. Got {self.kind!r}."
            )
        yv = np.asarray(y, dtype=np.float64)
        inputs, trees = self._trees(X)
        self.tree_mean_ = float(trees.mean())
        self.tree_sd_ = float(trees.std()) or 1.0
        classify = self.kind == "classification"
        if classify:
            self.classes_ = np.unique(yv)
            prior = float(np.clip(yv.mean(), 1e-3, 1 - 1e-3))
            start = np.log(prior / (1 - prior))
        else:
            start = float(yv.mean())
        params = {
            "eta": self.learning_rate,
            "max_depth": self.max_depth,
            "seed": 0 if self.random_state is None else int(self.random_state),
            "nthread": 1,
            # no row subsampling: XGBoost draws it from a per-thread random stream that its
            # seed does not reset between trainings, so results would depend on which fits
            # ran before on the same thread (seen: two identical fits disagreed)
            "subsample": 1.0,
            "base_score": 0.5,
        }
        obj = _logistic_grad if classify else _squared_grad
        if self.variant == "continue":
            # Continuing to boost the pretrained booster = new trees fitted to the gradients
            # at the pretrained trees' output. That output is the (cached) starting margin of
            # a booster holding only the new trees: the same model, without copying and
            # re-evaluating hundreds of pretrained trees in every fit.
            self.offset_ = start - self.tree_mean_
            self.slope_ = 1.0
            margin = self.offset_ + trees
            dtrain = self._dmatrix(inputs, label=yv, base_margin=margin)
            self.booster_ = xgb.train(params, dtrain, self.n_rounds, obj=obj)
        else:
            z = (trees - self.tree_mean_) / self.tree_sd_
            if classify:
                from sklearn.linear_model import LogisticRegression

                fit1 = LogisticRegression(C=1.0).fit(z.reshape(-1, 1), yv)
                self.slope_, self.offset_ = float(fit1.coef_[0, 0]), float(fit1.intercept_[0])
            else:
                slope, icpt = np.polyfit(z, yv, 1)
                self.slope_, self.offset_ = float(slope), float(icpt)
            margin = self.offset_ + self.slope_ * z
            dtrain = self._dmatrix(inputs, label=yv, base_margin=margin)
            self.booster_ = xgb.train(params, dtrain, self.n_rounds, obj=obj)
        return self

    def decision_function(self, X: pd.DataFrame, *, rounds: int | None = None) -> np.ndarray:
        """The margin (logit or value); ``rounds`` uses only the first new trees."""
        check_is_fitted(self)
        inputs, trees = self._trees(X)
        if self.variant == "continue":
            margin = self.offset_ + trees
        else:
            margin = self.offset_ + self.slope_ * (trees - self.tree_mean_) / self.tree_sd_
        out = self.booster_.predict(
            self._dmatrix(inputs, base_margin=margin),
            output_margin=True,
            iteration_range=(0, rounds or self.booster_.num_boosted_rounds()),
        )
        return np.asarray(out, dtype=np.float64)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        score = self.decision_function(X)
        if self.kind == "classification":
            return (score > 0).astype(np.float64)
        return score


class WarmStartClassifier(ClassifierMixin, WarmStartBooster):
    """:class:`WarmStartBooster` for a binary target (scikit-learn's classifier tag)."""


class WarmStartRegressor(RegressorMixin, WarmStartBooster):
    """:class:`WarmStartBooster` for a continuous target (scikit-learn's regressor tag)."""


def _score(model: Any, X: pd.DataFrame, kind: str) -> np.ndarray:
    if kind == "classification":
        return np.asarray(model.decision_function(X), dtype=np.float64)
    return np.asarray(model.predict(X), dtype=np.float64)


def _classifies(model: Any) -> bool:
    return bool(model.kind == "classification")


class StackedModel(BaseEstimator):
    """A cross-validated meta-model over several small-sample models.

    The base models' out-of-fold scores on the training data (``cv`` inner folds) train a
    ridge-penalised logistic (or linear) meta-model; the base models are then refitted on
    all the training data. Nothing of a test fold reaches any step.
    """

    def __init__(self, *, estimators: list[tuple[str, Any]] | None = None,
                 kind: str = "classification", cv: int = 3,
                 random_state: int | None = 0) -> None:  # fmt: skip
        self.estimators = estimators
        self.kind = kind
        self.cv = cv
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, y: Any) -> StackedModel:
        from sklearn.linear_model import LogisticRegression, Ridge

        if not self.estimators:
            raise TransferError("stacked needs at least one base representation")
        X = self._checked_input(X, reset=True)
        yv = column_or_1d(y, warn=True)
        classify = self.kind == "classification"
        if classify:
            _check_binary(yv)
        splitter = (
            StratifiedKFold(self.cv, shuffle=True, random_state=self.random_state)
            if classify
            else KFold(self.cv, shuffle=True, random_state=self.random_state)
        )
        oof = np.zeros((len(yv), len(self.estimators)))
        for train, test in splitter.split(np.zeros(len(yv)), yv if classify else None):
            for j, (_, est) in enumerate(self.estimators):
                fitted = clone(est).fit(_safe_indexing(X, train), yv[train])
                oof[test, j] = _score(fitted, _safe_indexing(X, test), self.kind)
        self.scaler_ = StandardScaler().fit(oof)
        meta = LogisticRegression(C=1.0) if classify else Ridge(alpha=1.0)
        self.meta_ = meta.fit(self.scaler_.transform(oof), yv)
        self.fitted_ = [clone(est).fit(X, yv) for _, est in self.estimators]
        if classify:
            self.classes_ = self.meta_.classes_
        return self

    def _checked_input(self, X: Any, *, reset: bool) -> Any:
        # The transfer input is a DataFrame of features and ``meta:`` columns (text among
        # them), handed as it is to the base models, which validate their own columns.
        if isinstance(X, pd.DataFrame):
            validate_data(self, X, reset=reset, skip_check_array=True)
            return X
        return validate_data(self, X, reset=reset, dtype=None, ensure_all_finite=False)

    def _base_scores(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self)
        X = self._checked_input(X, reset=False)
        cols = [_score(m, X, self.kind) for m in self.fitted_]
        return self.scaler_.transform(np.column_stack(cols))

    @available_if(_classifies)
    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        scores = self._base_scores(X)
        return np.asarray(self.meta_.decision_function(scores), dtype=np.float64)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        scores = self._base_scores(X)
        return np.asarray(self.meta_.predict(scores))

    def score(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> float:
        """Accuracy (classification) or R² (regression) of :meth:`predict`, as scikit-learn's."""
        from sklearn.metrics import accuracy_score, r2_score

        metric = accuracy_score if self.kind == "classification" else r2_score
        return float(metric(y, self.predict(X), sample_weight=sample_weight))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        if self.kind == "classification":  # a binary outcome (the base scores are margins)
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags(multi_class=False)
        else:
            tags.estimator_type = "regressor"
            tags.regressor_tags = RegressorTags()
        return tags

    @property
    def weights_(self) -> dict[str, float]:
        coef = np.ravel(self.meta_.coef_)
        return {name: float(w) for (name, _), w in zip(self.estimators or [], coef, strict=True)}


def _check_binary(y: np.ndarray) -> None:
    check_classification_targets(y)
    if type_of_target(y) != "binary":
        raise TransferError(
            "Only binary classification is supported by StackedModel(kind='classification'): "
            f"y has {np.unique(y).size} classes. Code the outcome as 0/1, or use "
            "kind='regression' for a continuous outcome."
        )


def _cached(model: PretrainedModel, what: str, X: pd.DataFrame) -> Any:
    """A pretrained model's output per scan, memoised on the scan's exact feature values.

    Pretrained outputs depend on nothing learned from the small sample, yet the comparison
    protocol asks for them thousands of times; the key is the row's bytes, so a changed value
    is never served a stale result.
    """
    cache: dict[tuple[str, bytes, str], Any] = model.__dict__.setdefault("_cache", {})
    cols = model.columns
    numeric = [c for c in cols if not c.startswith(("site=", META_PREFIX))]
    values = np.ascontiguousarray(X[numeric].to_numpy(np.float64))
    # ComBat inside a pretrained model also reads site, age and sex (``meta:`` columns)
    meta = [c for c in cols if c.startswith(META_PREFIX)]
    labels = X[meta].astype(str).agg("\x1f".join, axis=1).tolist() if meta else [""] * len(X)
    keys = [(what, row.tobytes(), label) for row, label in zip(values, labels, strict=True)]
    todo = [i for i, k in enumerate(keys) if k not in cache]
    if todo:
        sub = X.iloc[todo]
        if what == "score":
            result: Any = model.score(sub)
        elif what == "leaves":
            result = model.leaves(sub)
        elif what == "booster_input":
            result = np.asarray(model.booster_input(sub), dtype=np.float64)
        elif what == "tree_sum":
            result = model.tree_sum(sub)
        else:  # pragma: no cover - internal names only
            raise ValueError(what)
        for i, row in zip(todo, result, strict=True):
            cache[keys[i]] = row
    return np.asarray([cache[k] for k in keys])
