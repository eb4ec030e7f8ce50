"""Brain-age and sex models: unfitted pipelines, default parameters and search spaces.

Every factory returns an unfitted :class:`~sklearn.pipeline.Pipeline` whose steps include all
preprocessing that learns from data (eTIV adjustment, imputation, scaling), so nothing can be
fitted on all rows before a split. The first step is always a :class:`FeatureGuard`.
"""

from __future__ import annotations

import difflib
import functools
import json
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from morphml.exceptions import DeviceError
from morphml.models._preprocess import EtivAdjuster, FeatureGuard, MedianImputer, ModelConfigError
from morphml.registry import TARGETS, ModelType, model_names, model_type, resolve

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

__all__ = [
    "AGE_MODELS",
    "SEX_MODELS",
    "XGB_MAX_TREES",
    "DeviceError",
    "default_params",
    "fit_early_stopped",
    "make_age_model",
    "make_sex_model",
    "resolve_device",
    "search_space",
]

#: built-in model names :func:`make_age_model` accepts (``morphml.registry.model_names``
#: also lists model types registered later)
AGE_MODELS = model_names("age")
#: built-in model names :func:`make_sex_model` accepts
SEX_MODELS = model_names("sex")


def _entry(name: str, target: str) -> ModelType:
    if target not in TARGETS:
        raise ModelConfigError(f"target must be 'age' or 'sex'. Got {target!r}.")
    valid = model_names(target)
    if name not in valid:
        close = difflib.get_close_matches(str(name), valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ModelConfigError(
            f"Unknown {target} model {name!r}; expected one of {', '.join(valid)}.{hint}"
        )
    return model_type(name, target)


def default_params(name: str, target: str) -> dict[str, Any]:
    """Default hyper-parameters of a model (a new dict each call).

    Parameters
    ----------
    name : str
        Model name: ``"ridge"`` or ``"xgboost"`` for age; ``"logistic"``, ``"elasticnet"`` or
        ``"xgboost"`` for sex.
    target : {"age", "sex"}
        What the model predicts.

    Returns
    -------
    dict
        Keyword arguments the factories accept in ``params``.

    Examples
    --------
    >>> from morphml.models import default_params
    >>> default_params("ridge", "age")
    {'alpha': 100.0}
    """
    return dict(_entry(name, target).defaults[target])


def xgboost_param_names() -> tuple[str, ...]:
    """The XGBoost parameters a model's ``params`` may set (all but the reserved ones)."""
    from xgboost import XGBRegressor

    reserved = model_type("xgboost").reserved_params
    return tuple(k for k in XGBRegressor().get_params() if k not in reserved)


def _merge_params(
    entry: ModelType, target: str, params: Mapping[str, Any] | None
) -> dict[str, Any]:
    name = entry.name
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ModelConfigError(
            f"params of the {target} model {name!r} must be a dict. Got {type(params).__name__}."
        )
    valid = entry.param_names()
    for key in params:
        if key in entry.reserved_params:
            raise ModelConfigError(
                f"params of the {target} model {name!r} must not set {key!r}; it is set from "
                "the factory's own arguments (device, random_state, n_jobs)."
            )
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ModelConfigError(
                f"Unknown parameter {key!r} for the {target} model {name!r}.{hint} Valid: "
                f"{', '.join(sorted(valid))}."
            )
    return {**entry.defaults[target], **params}


def _check_common(random_state: Any, n_jobs: Any) -> None:
    if random_state is not None and (
        not isinstance(random_state, (int, np.integer)) or isinstance(random_state, bool)
    ):
        raise ModelConfigError(f"random_state must be an int or None. Got {random_state!r}.")
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0:
        raise ModelConfigError(f"n_jobs must be a non-zero int (-1: all cores). Got {n_jobs!r}.")


def _front(etiv_adjust: bool) -> list[tuple[str, Any]]:
    if not isinstance(etiv_adjust, bool):
        raise ModelConfigError(f"etiv_adjust must be True or False. Got {etiv_adjust!r}.")
    steps: list[tuple[str, Any]] = [("guard", FeatureGuard())]
    if etiv_adjust:
        steps.append(("etiv", EtivAdjuster()))
    return steps


def _linear_front() -> list[tuple[str, Any]]:
    return [("impute", MedianImputer()), ("scale", StandardScaler())]


def make_age_model(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    etiv_adjust: bool,
    random_state: int | None,
    device: str = "cpu",
    n_jobs: int = 1,
    log_target: bool = True,
) -> Pipeline:
    """Build an unfitted brain-age regression pipeline.

    ``ridge``: FeatureGuard → [EtivAdjuster] → median imputation → standardisation → Ridge.
    ``xgboost``: FeatureGuard → [EtivAdjuster] → XGBRegressor (``tree_method="hist"``; missing
    values are handled by the trees, so no imputation or scaling).

    With ``log_target=True`` the regressor is wrapped in a
    :class:`~sklearn.compose.TransformedTargetRegressor` that fits log(age) and predicts
    exp(·): ageing effects on morphometry are closer to linear in log-age (on fcon1000, 218
    features, leave-one-site-out, ridge alpha=100: MAE 7.03 -> 6.52 years; 6.40 at alpha=300).
    Ages must then be positive.

    Parameters
    ----------
    name : {"ridge", "xgboost"}
        Model family.
    params : dict, optional
        Hyper-parameters; they override :func:`default_params`. Ridge: ``alpha``. XGBoost:
        any XGBRegressor parameter except those set by the arguments below.
    etiv_adjust : bool
        Whether to adjust volumes and areas for eTIV (needs DataFrame input with canonical
        feature ids, see :class:`EtivAdjuster`).
    random_state : int or None
        Seed passed to XGBoost.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        XGBoost device, resolved by :func:`resolve_device`.
    n_jobs : int, default=1
        XGBoost threads.
    log_target : bool, default=True
        Fit log(age) instead of age.

    Returns
    -------
    Pipeline
        Unfitted; steps ``guard``, optional ``etiv``, ``impute`` and ``scale`` (ridge), and
        ``model``.

    Examples
    --------
    >>> from morphml.models import make_age_model
    >>> model = make_age_model("ridge", {"alpha": 3.0}, etiv_adjust=False, random_state=0)
    >>> [name for name, _ in model.steps]
    ['guard', 'impute', 'scale', 'model']
    """
    entry = _entry(name, "age")
    merged = _merge_params(entry, "age", params)
    _check_common(random_state, n_jobs)
    if not isinstance(log_target, bool):
        raise ModelConfigError(f"log_target must be True or False. Got {log_target!r}.")
    steps = _front(etiv_adjust)
    steps += _model_steps(entry, "age", merged, random_state, device, n_jobs)
    if log_target:
        regressor = TransformedTargetRegressor(
            regressor=steps[-1][1], func=np.log, inverse_func=np.exp
        )
        steps[-1] = ("model", regressor)
    return Pipeline(steps)


def make_sex_model(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    etiv_adjust: bool,
    random_state: int | None,
    device: str = "cpu",
    n_jobs: int = 1,
) -> Pipeline:
    """Build an unfitted sex classification pipeline.

    ``logistic``: FeatureGuard → [EtivAdjuster] → median imputation → standardisation → L2
    logistic regression (lbfgs). ``elasticnet``: the same with an elastic-net penalty (saga,
    ``l1_ratio``). ``xgboost``: FeatureGuard → [EtivAdjuster] → XGBClassifier (``hist``).
    XGBoost needs the classes coded 0 and 1.

    Parameters
    ----------
    name : {"logistic", "elasticnet", "xgboost"}
        Model family.
    params : dict, optional
        Hyper-parameters overriding :func:`default_params` (``C``, ``l1_ratio``, ...).
    etiv_adjust : bool
        Whether to adjust volumes and areas for eTIV. Sex differences in raw volumes are
        mostly head size; adjusting asks what remains beyond it.
    random_state : int or None
        Seed passed to the solver (saga) or to XGBoost.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        XGBoost device, resolved by :func:`resolve_device`.
    n_jobs : int, default=1
        XGBoost threads.

    Returns
    -------
    Pipeline
        Unfitted; the last step is named ``model``.

    Examples
    --------
    >>> from morphml.models import make_sex_model
    >>> model = make_sex_model("elasticnet", {"l1_ratio": 0.2}, etiv_adjust=False,
    ...                        random_state=0)
    >>> model.named_steps["model"].l1_ratio
    0.2
    """
    entry = _entry(name, "sex")
    merged = _merge_params(entry, "sex", params)
    _check_common(random_state, n_jobs)
    steps = _front(etiv_adjust)
    steps += _model_steps(entry, "sex", merged, random_state, device, n_jobs)
    return Pipeline(steps)


def _model_steps(
    entry: ModelType,
    target: str,
    params: dict[str, Any],
    random_state: int | None,
    device: str,
    n_jobs: int,
) -> list[tuple[str, Any]]:
    """The registered factory's steps; the last must be the model, named ``model``."""
    steps = list(
        resolve(entry.factory)(
            target, params, random_state=random_state, device=device, n_jobs=n_jobs
        )
    )
    if not steps or steps[-1][0] != "model":
        raise ModelConfigError(
            f"the factory of model type {entry.name!r} must return steps ending in one named "
            f"'model'. Got {[step[0] for step in steps]}."
        )
    return steps  # fmt: skip


# --- the factories of the built-in model types (morphml.registry names them) -----------------


def ridge_steps(
    target: str, params: dict[str, Any], *, random_state: int | None, device: str, n_jobs: int
) -> list[tuple[str, Any]]:
    """Median imputation, standardisation and :class:`~sklearn.linear_model.Ridge`."""
    return [*_linear_front(), ("model", Ridge(**params))]


def logistic_steps(
    target: str, params: dict[str, Any], *, random_state: int | None, device: str, n_jobs: int
) -> list[tuple[str, Any]]:
    """Median imputation, standardisation and an L2 logistic regression (lbfgs)."""
    model = LogisticRegression(**params, solver="lbfgs", random_state=random_state)
    return [*_linear_front(), ("model", model)]


def elasticnet_steps(
    target: str, params: dict[str, Any], *, random_state: int | None, device: str, n_jobs: int
) -> list[tuple[str, Any]]:
    """Median imputation, standardisation and an elastic-net logistic regression (saga)."""
    model = LogisticRegression(**params, solver="saga", random_state=random_state)
    return [*_linear_front(), ("model", model)]


def xgboost_steps(
    target: str, params: dict[str, Any], *, random_state: int | None, device: str, n_jobs: int
) -> list[tuple[str, Any]]:
    """XGBoost (``hist``) on the features as they are: the trees route missing values."""
    from xgboost import XGBClassifier, XGBRegressor

    cls = XGBRegressor if target == "age" else XGBClassifier
    model = cls(
        tree_method="hist",
        device=resolve_device(device),
        n_jobs=n_jobs,
        random_state=random_state,
        **params,
    )
    return [("model", model)]


def suggest_ridge(trial: BaseTrial) -> dict[str, Any]:
    """Ridge ``alpha``: log-uniform 1e-2–1e4."""
    return {"alpha": trial.suggest_float("alpha", 1e-2, 1e4, log=True)}


def suggest_logistic(trial: BaseTrial) -> dict[str, Any]:
    """Logistic ``C``: log-uniform 1e-4–1e2."""
    return {"C": trial.suggest_float("C", 1e-4, 1e2, log=True)}


def suggest_elasticnet(trial: BaseTrial) -> dict[str, Any]:
    """Elastic-net ``C`` as logistic, ``l1_ratio`` uniform 0–1."""
    return {
        "C": trial.suggest_float("C", 1e-4, 1e2, log=True),
        "l1_ratio": trial.suggest_float("l1_ratio", 0.0, 1.0),
    }


def suggest_xgboost(trial: BaseTrial) -> dict[str, Any]:
    """XGBoost: the number of trees and the tree parameters (see :func:`search_space`)."""
    # Bounded so one fit stays around a second on ~1,000 scans: nested tuning fits a model
    # trials x inner folds x outer folds times (fewer, faster-learning trees instead of
    # thousands of slow ones; the learning-rate range compensates).
    return {
        "n_estimators": trial.suggest_int("n_estimators", 100, 600, step=50),
        **_suggest_xgboost_trees(trial),
    }


def suggest_xgboost_early_stopped(trial: BaseTrial) -> dict[str, Any]:
    """XGBoost with early stopping: the tree parameters, trees capped at ``XGB_MAX_TREES``."""
    # the number of trees is measured by early stopping, not searched
    return {"n_estimators": XGB_MAX_TREES, **_suggest_xgboost_trees(trial)}


def _suggest_xgboost_trees(trial: BaseTrial) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 6),
        "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 20.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 100.0, log=True),
        "reg_alpha": trial.suggest_float("reg_alpha", 1e-3, 10.0, log=True),
    }


def search_space(
    name: str, target: str, *, early_stopping: bool = False
) -> Callable[[BaseTrial], dict[str, Any]]:
    """The Optuna search space of a model, as a function of a trial.

    Ridge ``alpha``: log-uniform 1e-2–1e4. Logistic ``C``: log-uniform 1e-4–1e2 (elastic-net
    adds ``l1_ratio`` in 0–1). XGBoost: ``n_estimators`` 100–600 (step 50), ``learning_rate``
    0.02–0.3 (log), ``max_depth`` 2–6, ``min_child_weight`` 1–20 (log), ``subsample`` 0.5–1,
    ``colsample_bytree`` 0.3–1, ``reg_lambda`` 1e-3–100 (log), ``reg_alpha`` 1e-3–10 (log).

    Parameters
    ----------
    name : str
        Model name (see :func:`default_params`).
    target : {"age", "sex"}
        What the model predicts.
    early_stopping : bool, default=False
        XGBoost only: leave ``n_estimators`` out of the search and set it to the cap
        :data:`XGB_MAX_TREES`; :func:`fit_early_stopped` then measures how many trees each
        trial needs.

    Returns
    -------
    callable
        ``suggest(trial) -> dict`` of parameters for the factories' ``params``. Picklable
        (a module-level function).

    Examples
    --------
    >>> import optuna
    >>> from morphml.models import search_space
    >>> trial = optuna.trial.FixedTrial({"alpha": 5.0})
    >>> search_space("ridge", "age")(trial)
    {'alpha': 5.0}
    """
    entry = _entry(name, target)
    if early_stopping and entry.early_stopped_space is not None:
        return resolve(entry.early_stopped_space)
    return resolve(entry.search_space)


#: the most trees an early-stopped XGBoost trial may grow
XGB_MAX_TREES = 2000


def fit_early_stopped(
    model: Any,
    X: Any,
    y: np.ndarray,
    X_val: Any,
    y_val: np.ndarray,
    *,
    rounds: int | None,
    kind: str,
    report: Callable[[int, float], bool] | None = None,
    report_every: int = 25,
    cache: dict[Any, Any] | None = None,
) -> tuple[np.ndarray, int | None]:
    """Fit a pipeline on ``(X, y)`` and predict ``X_val``; XGBoost stops adding trees early.

    For an XGBoost pipeline with ``rounds`` set, the preprocessing steps are fitted on
    ``(X, y)`` only and applied to ``X_val``; trees are then added until the loss on the
    validation rows (RMSE of the fitted target, log loss for classification) has not improved
    for ``rounds`` rounds, and ``X_val`` is predicted with the trees up to the best round.
    Other models are simply fitted. The validation rows choose the number of trees, so use
    them only where they are also the rows that score the parameters (inner tuning folds),
    never an outer test fold.

    Parameters
    ----------
    model : Pipeline or estimator
        Unfitted, e.g. from :func:`make_age_model` or :func:`make_sex_model` (fitted in
        place unless early stopping runs).
    X, y : training rows
    X_val, y_val : validation rows
    rounds : int or None
        Early-stopping patience; None fits the model as configured.
    kind : {"regression", "classification"}
        What to predict: values, or P(class 1).
    report : callable, optional
        With early stopping: called as ``report(trees, loss)`` every ``report_every`` trees
        with the lowest validation loss reached so far (the early-stopping metric); training
        stops when it returns True (a multi-fidelity pruner's verdict).
    report_every : int, default=25
        Trees between two calls of ``report``.
    cache : dict, optional
        With early stopping: keeps the fitted preprocessing's output and XGBoost's quantised
        matrices (the training rows' ``QuantileDMatrix`` and the validation rows' built with
        it as ``ref``, so both share one set of histogram cuts) under a key made of the
        preprocessing steps' parameters, the number of bins and the target transform. Pass
        one dict per (training rows, validation rows) pair: the trials of a tuning then
        build them once per inner fold instead of once per trial. The trees, predictions
        and tree counts are those of a fit without the cache.

    Returns
    -------
    predictions : ndarray
        For ``X_val``.
    n_trees : int or None
        The best number of trees (None unless early stopping ran).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from morphml.models import fit_early_stopped, make_age_model
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    >>> age = 40 + 10 * X["a"].to_numpy() + rng.normal(size=200)
    >>> model = make_age_model("xgboost", {"n_estimators": 500}, etiv_adjust=False,
    ...                        random_state=0)
    >>> pred, trees = fit_early_stopped(model, X[:150], age[:150], X[150:], age[150:],
    ...                                 rounds=20, kind="regression")
    >>> pred.shape, trees < 500
    ((50,), True)
    """
    from xgboost import XGBModel

    pipeline = isinstance(model, Pipeline)
    final = model.steps[-1][1] if pipeline else model
    wrapped = isinstance(final, TransformedTargetRegressor)
    booster = final.regressor if wrapped else final
    if rounds is None or not isinstance(booster, XGBModel):
        return _scores(model.fit(X, y), X_val, kind), None
    front = Pipeline(model.steps[:-1]) if pipeline and len(model.steps) > 1 else None
    key = (_steps_key(front), booster.max_bin, repr(booster.missing), booster.n_jobs,
           booster.device, final.func if wrapped else None)  # fmt: skip
    data = None if cache is None else cache.get(key)
    if data is None:
        data = _QuantisedFold.build(front, booster, X, y, X_val, y_val, final if wrapped else None)
        if cache is not None:
            cache[key] = data
    trained = data.train(booster, rounds, report, report_every)
    # predict with the trees up to the best round, as XGBoost's own predict does
    pred = trained.inplace_predict(
        data.X_val, iteration_range=(0, trained.best_iteration + 1), missing=booster.missing
    )
    pred = np.asarray(pred, dtype=np.float64)
    if wrapped:
        pred = np.asarray(final.inverse_func(pred), dtype=np.float64)
    return pred, int(trained.best_iteration) + 1


def _steps_key(front: Pipeline | None) -> str:
    """The preprocessing steps and their parameters, as text (a cache key)."""
    if front is None:
        return ""
    return repr([(name, type(step).__name__, sorted(step.get_params(deep=True).items(), key=str))
                 for name, step in front.steps])  # fmt: skip


class _QuantisedFold:
    """One pair of training and validation rows prepared for early-stopped XGBoost fits: the
    preprocessing fitted on the training rows, and the quantised matrices of both."""

    def __init__(self, X_val: Any, dtrain: Any, dval: Any) -> None:
        self.X_val = X_val
        self.dtrain = dtrain
        self.dval = dval

    @classmethod
    def build(
        cls, front: Pipeline | None, booster: Any, X: Any, y: np.ndarray, X_val: Any,
        y_val: np.ndarray, target: TransformedTargetRegressor | None,
    ) -> _QuantisedFold:  # fmt: skip
        """Fit ``front`` on the training rows, transform both, and quantise them as
        XGBoost's scikit-learn ``fit`` does (``QuantileDMatrix``, validation rows with the
        training rows' cuts)."""
        from xgboost import QuantileDMatrix

        Xt, Xv = X, X_val
        if front is not None:
            front = clone(front)
            Xt = front.fit_transform(X, y)
            Xv = front.transform(X_val)
        yt, yv = (target.func(y), target.func(y_val)) if target is not None else (y, y_val)
        common = {
            "missing": booster.missing,
            "nthread": booster.n_jobs,
            "max_bin": booster.max_bin,
        }
        dtrain = QuantileDMatrix(Xt, yt, **common)
        dval = QuantileDMatrix(Xv, yv, ref=dtrain, **common)
        return cls(Xv, dtrain, dval)

    def train(
        self, booster: Any, rounds: int, report: Callable[[int, float], bool] | None,
        report_every: int,
    ) -> Any:  # fmt: skip
        """Train ``booster``'s parameters with early stopping on the validation rows, as its
        ``fit(..., eval_set=[validation rows])`` would."""
        import xgboost

        params = booster.get_xgb_params()
        if isinstance(booster.eval_metric, str):
            params["eval_metric"] = booster.eval_metric
        callbacks = [_round_reporter(report, report_every)] if report is not None else None
        return xgboost.train(
            params, self.dtrain, booster.get_num_boosting_rounds(),
            evals=[(self.dval, "validation_0")], early_stopping_rounds=rounds,
            callbacks=callbacks, verbose_eval=False,
        )  # fmt: skip


def _round_reporter(report: Callable[[int, float], bool], every: int) -> Any:
    """An XGBoost training callback passing the best validation loss so far to ``report``
    every ``every`` trees (and stopping training when it returns True)."""
    from xgboost.callback import TrainingCallback

    class _Reporter(TrainingCallback):
        def __init__(self) -> None:
            super().__init__()
            self.best = float("inf")

        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            [history] = evals_log.values()  # the one validation set
            losses = list(history.values())[-1]  # XGBoost stops on the last metric
            latest = losses[-1]
            self.best = min(self.best, float(latest[0] if isinstance(latest, tuple) else latest))
            trees = epoch + 1
            return trees % every == 0 and bool(report(trees, self.best))

    return _Reporter()


def _scores(estimator: Any, X: Any, kind: str) -> np.ndarray:
    """Values for regression, P(class 1) for classification."""
    if kind == "classification":
        return np.asarray(estimator.predict_proba(X))[:, 1]
    return np.asarray(estimator.predict(X), dtype=np.float64)


@functools.cache
def _cuda_problem() -> str | None:
    """Why XGBoost cannot train on a CUDA GPU here, or None when it can (probed once)."""
    import xgboost

    if not xgboost.build_info().get("USE_CUDA", False):
        return "this XGBoost build has no CUDA support"
    # Without a GPU, XGBoost warns and silently trains on the CPU, so the resulting booster's
    # device is checked rather than relying on an exception.
    data = xgboost.DMatrix(np.arange(8.0).reshape(4, 2), label=np.arange(4.0))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            booster = xgboost.train(
                {"device": "cuda", "tree_method": "hist", "verbosity": 0},
                data,
                num_boost_round=1,
            )
        config = json.loads(booster.save_config())
        used = str(config["learner"]["generic_param"].get("device", ""))
    except xgboost.core.XGBoostError as exc:
        return f"XGBoost failed on device='cuda': {str(exc).splitlines()[0]}"
    if not used.startswith("cuda"):
        return "no CUDA GPU is visible to XGBoost"
    return None


def resolve_device(device: str) -> str:
    """Resolve the XGBoost device.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"} or "cuda:<n>"
        ``"auto"`` gives ``"cuda"`` when XGBoost can train on an NVIDIA GPU here (checked once
        per process with a tiny training run) and ``"cpu"`` otherwise.

    Returns
    -------
    str
        ``"cpu"`` or a CUDA device string.

    Raises
    ------
    DeviceError
        ``"cuda"`` was requested but no usable GPU was found.

    Examples
    --------
    >>> from morphml.models import resolve_device
    >>> resolve_device("cpu")
    'cpu'
    """
    if device == "cpu":
        return "cpu"
    if device == "auto":
        return "cuda" if _cuda_problem() is None else "cpu"
    if isinstance(device, str) and (device == "cuda" or device.startswith("cuda:")):
        problem = _cuda_problem()
        if problem is not None:
            raise DeviceError(
                f"device={device!r} was requested but XGBoost cannot use a CUDA GPU here "
                f"({problem}). Use device='auto' to fall back to the CPU, or device='cpu'."
            )
        return device
    raise ModelConfigError(f"device must be 'auto', 'cpu' or 'cuda'. Got {device!r}.")
