"""What morphml can fit: one entry per model type and per transfer representation.

Config validation, model factories, search spaces, persistence, the transfer heads and the
reports read these entries instead of keeping their own lists of names. Adding a model type
is one :class:`ModelType` entry here (or a :func:`register_model_type` call) plus the code
it names; adding a representation is one :class:`RepresentationType` entry plus its class.

Code is referenced lazily, as ``"module:attribute"`` strings resolved on use (or as the
objects themselves), so importing this module (and :mod:`morphml.config`, which does) loads
neither scikit-learn, XGBoost nor Optuna.

Examples
--------
>>> from morphml.registry import model_names, representation_names
>>> model_names("age")
('ridge', 'xgboost')
>>> representation_names()[:3]
('raw', 'brain_age_gap', 'sex_score')
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "HEAD_KINDS",
    "TARGETS",
    "ModelType",
    "RepresentationType",
    "model_names",
    "model_type",
    "model_types",
    "register_model_type",
    "register_representation",
    "representation",
    "representation_names",
    "representations",
    "resolve",
    "unregister_model_type",
    "unregister_representation",
]

#: what a pretrain model predicts
TARGETS = ("age", "sex")
#: how the small model on a representation is built (see ``morphml.transfer.HeadFactory``):
#: ``scaled`` imputes, standardises and fits an L2 model on the block; ``sparse`` fits the L2
#: model on the block as it is (one-hot leaves); ``own_scale`` too, with penalties for values
#: on a reference's own scale; ``warm_start`` grows boosting rounds on the pretrained model
#: (no block); ``stacked`` stacks the other representations of the run
HEAD_KINDS = ("scaled", "sparse", "own_scale", "warm_start", "stacked")

#: code referenced by a registry entry: ``"package.module:attribute"`` or the object itself
Ref = str | Callable[..., Any]


def resolve(ref: Ref) -> Any:
    """The object a ``"module:attribute"`` reference names (objects are returned as they are).

    Examples
    --------
    >>> from morphml.registry import resolve
    >>> resolve("math:sqrt")(4.0)
    2.0
    """
    if not isinstance(ref, str):
        return ref
    module, _, attribute = ref.partition(":")
    if not module or not attribute:
        raise ValueError(f"registry reference {ref!r} must read 'package.module:attribute'")
    target: Any = importlib.import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


@dataclass(frozen=True)
class ModelType:
    """A pretrain model type: what it predicts, how it is built, tuned, saved and described.

    Parameters
    ----------
    name : str
        The name configs use (``models: {age: [name]}``).
    targets : tuple of {"age", "sex"}
        What it can predict.
    factory : str or callable
        ``factory(target, params, *, random_state, device, n_jobs) -> list of (name, step)``:
        the steps after morphml's feature guard (and eTIV adjustment), the last one named
        ``"model"``. ``params`` are the merged hyper-parameters.
    search_space : str or callable
        ``suggest(trial) -> dict`` of parameters (Optuna) for tuning.
    defaults : mapping
        Target -> default hyper-parameters.
    params : tuple of str, or str or callable
        The parameter names ``params`` may set, or a reference to a function returning them.
    description : str
        One line for reports and error messages.
    persisted_types : tuple of str
        ``"module:Class"`` references of the types its saved (skops) files hold beyond those
        skops and morphml trust already; loading refuses any other.
    reserved_params : tuple of str
        Parameters set from the factory's own arguments, never through ``params``.
    early_stopped_space : str or callable, optional
        The search space when tuning stops adding trees early (the number of trees is then
        measured, not searched); None: the model has no early stopping.
    linear : bool
        Its score is linear in the (standardised) features: ``linear_projection`` then uses
        it as a projection.
    """

    name: str
    targets: tuple[str, ...]
    factory: Ref
    search_space: Ref
    defaults: Mapping[str, Mapping[str, Any]]
    params: tuple[str, ...] | Ref
    description: str
    persisted_types: tuple[str, ...] = ()
    reserved_params: tuple[str, ...] = ()
    early_stopped_space: Ref | None = None
    linear: bool = False

    def param_names(self) -> tuple[str, ...]:
        """The parameters ``params`` may set."""
        if isinstance(self.params, tuple):
            return self.params
        return tuple(resolve(self.params)())


@dataclass(frozen=True)
class RepresentationType:
    """A transfer representation: what it needs, its feature block, its head, its description.

    Parameters
    ----------
    name : str
        The name configs use (``representations: [name]``).
    needs : {"pretrain", "reference"}
        Its pretraining source: the pretrain run, or a reference model (``reference: PATH``).
    head : str
        How the small model on it is built, one of :data:`HEAD_KINDS`.
    description : str
        What it feeds the small model, for reports.
    block : str or callable, optional
        The class (or factory) of its feature block, a scikit-learn transformer; None for
        heads with no block (``warm_start``, ``stacked``).
    inputs : mapping
        Keyword of ``block`` -> the ``HeadFactory`` attribute passed to it (``pretrained``,
        ``covariates``, ``normative``, ``components``, ``reference``, ...).
    options : mapping
        Extra settings of the head (``warm_start``: ``variant``).
    default : bool
        Whether a transfer config without ``representations`` compares it.
    """

    name: str
    needs: Literal["pretrain", "reference"]
    head: str
    description: str
    block: Ref | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    default: bool = True


_XGB_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "n_estimators": 500,
        "learning_rate": 0.05,
        "max_depth": 4,
        "min_child_weight": 1.0,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
        "reg_alpha": 0.0,
        # 64 histogram bins per feature instead of 256: on 5,300 scans x 1,000 features a
        # tree takes 12 ms instead of 33 ms (depth 4, 2 threads), with the same validation error
        "max_bin": 64,
    }
)
_EST = "morphml.models._estimators"

_MODEL_TYPES: dict[str, ModelType] = {
    entry.name: entry
    for entry in (
        ModelType(
            name="ridge",
            targets=("age",),
            factory=f"{_EST}:ridge_steps",
            search_space=f"{_EST}:suggest_ridge",
            # fcon1000 (218 features, leave-one-site-out, log target): MAE 7.3 y at alpha=10,
            # 6.5 at 100
            defaults={"age": {"alpha": 100.0}},
            params=("alpha",),
            description="ridge regression on imputed, standardised features",
            persisted_types=("sklearn.linear_model:Ridge",),
            linear=True,
        ),
        ModelType(
            name="logistic",
            targets=("sex",),
            factory=f"{_EST}:logistic_steps",
            search_space=f"{_EST}:suggest_logistic",
            defaults={"sex": {"C": 1.0, "max_iter": 1000}},
            params=("C", "class_weight", "max_iter", "tol"),
            description="L2 logistic regression on imputed, standardised features",
            persisted_types=("sklearn.linear_model:LogisticRegression",),
            linear=True,
        ),
        ModelType(
            name="elasticnet",
            targets=("sex",),
            factory=f"{_EST}:elasticnet_steps",
            search_space=f"{_EST}:suggest_elasticnet",
            defaults={"sex": {"C": 1.0, "l1_ratio": 0.5, "max_iter": 5000}},
            params=("C", "l1_ratio", "class_weight", "max_iter", "tol"),
            description="elastic-net logistic regression on imputed, standardised features",
            persisted_types=("sklearn.linear_model:LogisticRegression",),
            linear=True,
        ),
        ModelType(
            name="xgboost",
            targets=("age", "sex"),
            factory=f"{_EST}:xgboost_steps",
            search_space=f"{_EST}:suggest_xgboost",
            defaults={"age": _XGB_DEFAULTS, "sex": _XGB_DEFAULTS},
            params=f"{_EST}:xgboost_param_names",
            description="gradient-boosted trees (XGBoost, hist) on the features as they are",
            reserved_params=("tree_method", "device", "random_state", "n_jobs", "callbacks"),
            early_stopped_space=f"{_EST}:suggest_xgboost_early_stopped",
        ),
    )
}

_REP = "morphml.transfer._representations"
_PRE = {"pretrained": "pretrained", "covariates": "covariates"}

_REPRESENTATIONS: dict[str, RepresentationType] = {
    entry.name: entry
    for entry in (
        RepresentationType(
            name="raw", needs="pretrain", head="scaled", block=f"{_REP}:RawFeatures",
            inputs=_PRE, description="the morphometric features themselves (the baseline "
            "every other is compared with)",
        ),
        RepresentationType(
            name="brain_age_gap", needs="pretrain", head="scaled", block=f"{_REP}:BrainAgeGap",
            inputs=_PRE,
            description="the pretrained brain-age model's gap (predicted minus true age)",
        ),
        RepresentationType(
            name="sex_score", needs="pretrain", head="scaled", block=f"{_REP}:SexScore",
            inputs=_PRE, description="the pretrained sex model's score",
        ),
        RepresentationType(
            name="leaf_embedding", needs="pretrain", head="sparse",
            block=f"{_REP}:LeafEmbedding", inputs=_PRE,
            description="the leaves the pretrained XGBoost trees put each scan in",
        ),
        RepresentationType(
            name="warm_start", needs="pretrain", head="warm_start",
            options={"variant": "continue"},
            description="XGBoost trees grown on top of the pretrained model",
        ),
        RepresentationType(
            name="warm_start_base_margin", needs="pretrain", head="warm_start",
            options={"variant": "base_margin"},
            description="XGBoost with the pretrained prediction as base margin",
        ),
        RepresentationType(
            name="normative_z", needs="pretrain", head="scaled", block=f"{_REP}:NormativeZ",
            inputs={**_PRE, "normative": "normative"},
            description="deviations from a normative model of the pretraining cohort "
            "(z-scores)",
        ),
        RepresentationType(
            name="reference_z", needs="reference", head="own_scale",
            block="morphml.transfer._reference:ReferenceZ",
            inputs={"reference": "reference", "adaptation": "reference_adaptation",
                    "new_sites": "reference_new_sites", "covariates": "covariates"},
            description="deviations from a published reference model (z-scores on its own "
            "scale, with counts of extreme deviations)",
            default=False,
        ),
        RepresentationType(
            name="linear_projection", needs="pretrain", head="scaled",
            block=f"{_REP}:LinearProjection", inputs={**_PRE, "components": "components"},
            description="principal components of the pretraining cohort",
        ),
        RepresentationType(
            name="stacked", needs="pretrain", head="stacked",
            description="all the above stacked",
        ),
    )
}  # fmt: skip


def _unknown(kind: str, name: object, valid: tuple[str, ...]) -> ValueError:
    close = difflib.get_close_matches(str(name), valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}{hint} (choose from {', '.join(valid)})")


def _add(table: dict[str, Any], entry: Any, what: str, replace: bool) -> Any:
    if entry.name in table and not replace:
        raise ValueError(f"{what} {entry.name!r} is already registered")
    table[entry.name] = entry
    return entry


def model_types(target: str | None = None) -> tuple[ModelType, ...]:
    """Every registered model type (of ``target`` when given), in registration order."""
    return tuple(m for m in _MODEL_TYPES.values() if target is None or target in m.targets)


def model_names(target: str | None = None) -> tuple[str, ...]:
    """The names of :func:`model_types`."""
    return tuple(m.name for m in model_types(target))


def model_type(name: str, target: str | None = None) -> ModelType:
    """The entry of a model type (that predicts ``target`` when given).

    Raises
    ------
    ValueError
        No such model type (for ``target``); the message names the closest and the valid ones.
    """
    entry = _MODEL_TYPES.get(name)
    if entry is None or (target is not None and target not in entry.targets):
        what = "model type" if target is None else f"{target} model"
        raise _unknown(what, name, model_names(target))
    return entry


def register_model_type(entry: ModelType, *, replace: bool = False) -> ModelType:
    """Add a model type (``replace=True`` swaps an entry of the same name); returns it.

    Examples
    --------
    >>> from morphml.registry import model_type, register_model_type
    >>> register_model_type(model_type("ridge"), replace=True).name
    'ridge'
    """
    if not isinstance(entry, ModelType):
        raise TypeError(f"expected a ModelType, got {type(entry).__name__}")
    unknown = sorted(set(entry.targets) - set(TARGETS))
    if not entry.targets or unknown:
        raise ValueError(f"model type {entry.name!r}: targets must be among {TARGETS}")
    return _add(_MODEL_TYPES, entry, "model type", replace)


def unregister_model_type(name: str) -> ModelType:
    """Remove a model type; returns its entry."""
    return _MODEL_TYPES.pop(model_type(name).name)


def representations() -> tuple[RepresentationType, ...]:
    """Every registered representation, in the order results are reported."""
    return tuple(_REPRESENTATIONS.values())


def representation_names(*, default_only: bool = False) -> tuple[str, ...]:
    """The names of :func:`representations` (only those compared by default when asked)."""
    return tuple(r.name for r in _REPRESENTATIONS.values() if r.default or not default_only)


def representation(name: str) -> RepresentationType:
    """The entry of a representation.

    Raises
    ------
    ValueError
        No such representation; the message names the closest and the valid ones.
    """
    entry = _REPRESENTATIONS.get(name)
    if entry is None:
        raise _unknown("representation", name, representation_names())
    return entry


def register_representation(
    entry: RepresentationType, *, replace: bool = False
) -> RepresentationType:
    """Add a representation (reported after those already registered); returns it."""
    if not isinstance(entry, RepresentationType):
        raise TypeError(f"expected a RepresentationType, got {type(entry).__name__}")
    if entry.head not in HEAD_KINDS:
        raise ValueError(
            f"representation {entry.name!r}: head must be one of {', '.join(HEAD_KINDS)}"
        )
    if entry.needs not in ("pretrain", "reference"):
        raise ValueError(f"representation {entry.name!r}: needs must be pretrain or reference")
    return _add(_REPRESENTATIONS, entry, "representation", replace)


def unregister_representation(name: str) -> RepresentationType:
    """Remove a representation; returns its entry."""
    return _REPRESENTATIONS.pop(representation(name).name)
