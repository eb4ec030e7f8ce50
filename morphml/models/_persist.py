"""Saving and loading fitted models in stable formats, with a JSON sidecar. Never pickle.

Files written by :func:`save_model` for a path stem ``out/age``:

* XGBoost models: ``age.ubj`` (the booster, XGBoost's own format) and, when there is
  preprocessing or a target transform around it, ``age.preprocess.skops`` (the fitted
  pipeline with the booster left out).
* scikit-learn linear pipelines: ``age.skops`` and ``age.coef.json`` (every number of the
  model in plain JSON, enough to recompute predictions without morphml).
* always ``age.json``: the sidecar (estimator, feature ids, morphml and library versions,
  file checksums, plus the caller's metadata). It is written last.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import skops.io as sio
from sklearn.base import BaseEstimator, is_classifier
from sklearn.compose import TransformedTargetRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils.validation import check_is_fitted

from morphml._version import __version__
from morphml.exceptions import ModelFileError, UntrustedModelError
from morphml.models._estimators import resolve_device
from morphml.models._preprocess import (
    EtivAdjuster,
    FeatureGuard,
    MedianImputer,
    ModelConfigError,
)
from morphml.registry import model_types, resolve

__all__ = [
    "FORMAT_VERSION",
    "TRUSTED_TYPES",
    "ModelFileError",
    "UntrustedModelError",
    "load_model",
    "save_model",
    "trusted_types",
]

#: version of the file layout and sidecar schema; bumped when old readers could misread files
FORMAT_VERSION = 1
_FORMAT = "morphml-model"


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# skops already trusts most scikit-learn and numpy types; what it reports as untrusted must be
# on this list or among the persisted types of a registered model type (morphml.registry).
# Names are computed from the classes so they follow scikit-learn's module layout.
_BASE_TRUSTED: frozenset[str] = frozenset(
    {
        _dotted(cls)
        for cls in (
            FeatureGuard,
            EtivAdjuster,
            MedianImputer,
            Pipeline,
            TransformedTargetRegressor,
            FunctionTransformer,
            SimpleImputer,
            StandardScaler,
        )
    }
    | {"numpy.dtype", "numpy.log", "numpy.exp"}
    # ComBat steps of harmonised models (imported by name: harmonize imports models' errors)
    | {"morphml.harmonize._combat.ComBat", "morphml.harmonize._step.HarmonizeStep"}
    | {_dotted(t) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_, np.str_)}
)


def trusted_types() -> frozenset[str]:
    """The types a skops model file may hold: morphml's own and the pipeline steps, plus the
    persisted types of every model type registered now (see :mod:`morphml.registry`)."""
    registered = {
        _dotted(resolve(ref)) for entry in model_types() for ref in entry.persisted_types
    }
    return _BASE_TRUSTED | registered


#: :func:`trusted_types` of the built-in model types
TRUSTED_TYPES: frozenset[str] = trusted_types()

_XGB_CLASSES = {
    "xgboost.sklearn.XGBRegressor": "XGBRegressor",
    "xgboost.sklearn.XGBClassifier": "XGBClassifier",
}

_RESERVED_KEYS = frozenset(
    {
        "format",
        "format_version",
        "morphml_version",
        "estimator_kind",
        "estimator",
        "steps",
        "task",
        "target_transform",
        "feature_ids",
        "n_features",
        "files",
        "xgboost_params",
        "library_versions",
    }
)


def _path(stem: Path, suffix: str) -> Path:
    # not Path.with_suffix: stems may contain dots ("age.v2")
    return stem.parent / f"{stem.name}{suffix}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _final_and_inner(model: Any) -> tuple[Any, Any]:
    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    inner = final.regressor_ if isinstance(final, TransformedTargetRegressor) else final
    return final, inner


def _is_xgboost(estimator: Any) -> bool:
    try:
        from xgboost import XGBModel
    except ImportError:  # pragma: no cover - xgboost is a dependency
        return False
    return isinstance(estimator, XGBModel)


def _target_transform(final: Any) -> str | None:
    if not isinstance(final, TransformedTargetRegressor):
        return None
    if final.transformer is None and final.func is np.log and final.inverse_func is np.exp:
        return "log"
    if final.transformer is None and final.func is None and final.inverse_func is None:
        return "identity"
    return "custom"


def _json_safe_params(params: Mapping[str, Any]) -> dict[str, Any]:
    safe: dict[str, Any] = {}
    for key, value in params.items():
        if value is None or isinstance(value, (bool, str)):
            safe[key] = value
        elif isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value):
            safe[key] = value.item() if isinstance(value, np.generic) else value
    return safe


def _floats(values: Any) -> list[Any]:
    array = np.asarray(values, dtype=float)
    return [None if not np.isfinite(v) else float(v) for v in array.ravel()]


def _coefficients(model: Any) -> dict[str, Any] | None:
    """Every number of a linear pipeline as plain JSON, or None when it has unknown steps."""
    final, inner = _final_and_inner(model)
    if not isinstance(inner, (Ridge, LogisticRegression)):
        return None
    steps_out: list[dict[str, Any]] = []
    pre = model.steps[:-1] if isinstance(model, Pipeline) else []
    names: list[str] | None = None
    for name, step in pre:
        if step == "passthrough" or step is None:
            continue
        if isinstance(step, FeatureGuard):
            entry: dict[str, Any] = {"type": "FeatureGuard"}
        elif isinstance(step, EtivAdjuster):
            entry = {
                "type": "EtivAdjuster",
                "method": step.method,
                "etiv_column": step.etiv_column,
                "keep_etiv": step.keep_etiv,
                "etiv_mean": step.etiv_mean_,
                "columns": [str(c) for c in step.columns_],
                "slopes": _floats(step.slopes_),
            }
        elif isinstance(step, (SimpleImputer, MedianImputer)):
            entry = {
                "type": type(step).__name__,
                "strategy": step.strategy,
                "statistics": _floats(step.statistics_),
            }
        elif isinstance(step, StandardScaler):
            entry = {
                "type": "StandardScaler",
                "mean": _floats(step.mean_) if step.mean_ is not None else None,
                "scale": _floats(step.scale_) if step.scale_ is not None else None,
            }
        else:
            return None
        entry["step"] = name
        entry["features_in"] = None if names is None else list(names)
        names = [str(c) for c in step.get_feature_names_out(names)]
        entry["features_out"] = list(names)
        steps_out.append(entry)
    classes = getattr(inner, "classes_", None)
    if classes is not None:
        formula = (
            "logit = intercept + sum(coef[0] * z) where z is the output of the steps, in "
            "order; P(classes[1]) = 1 / (1 + exp(-logit))"
        )
    else:
        formula = (
            "prediction = inverse_target(intercept + sum(coef * z)) where z is the output of "
            "the steps, in order (StandardScaler: z = (x - mean) / scale)"
        )
    return {
        "estimator": _dotted(type(inner)),
        "steps": steps_out,
        "features": names,
        "coef": np.atleast_2d(np.asarray(inner.coef_, dtype=float)).tolist(),
        "intercept": np.atleast_1d(np.asarray(inner.intercept_, dtype=float)).tolist(),
        "classes": None if classes is None else np.asarray(classes).tolist(),
        "target_transform": _target_transform(final),
        "formula": formula,
    }


def _library_versions() -> dict[str, str]:
    import sklearn

    versions = {"scikit-learn": sklearn.__version__, "numpy": np.__version__}
    versions["skops"] = getattr(sio, "__version__", "") or _dist_version("skops")
    try:
        import xgboost

        versions["xgboost"] = xgboost.__version__
    except ImportError:  # pragma: no cover
        pass
    return versions


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _xgb_skeleton(model: Any) -> Any | None:
    """The fitted model with the booster taken out (None for a bare XGBoost model)."""
    final, _ = _final_and_inner(model)
    if isinstance(final, TransformedTargetRegressor):
        shell = copy.copy(final)
        shell.regressor = None
        shell.regressor_ = None
    else:
        shell = "passthrough"
    if isinstance(model, Pipeline):
        return Pipeline([*model.steps[:-1], (model.steps[-1][0], shell)])
    return None if shell == "passthrough" else shell


def save_model(model: Any, path_stem: Path | str, *, sidecar: Mapping[str, Any]) -> list[Path]:
    """Save a fitted model in stable formats with a JSON sidecar.

    Parameters
    ----------
    model : estimator
        A fitted model, usually a pipeline from :func:`make_age_model` or
        :func:`make_sex_model`. XGBoost models are recognised as the final step of a pipeline,
        or the ``regressor_`` of a :class:`~sklearn.compose.TransformedTargetRegressor`.
    path_stem : Path
        Where to write, without suffix: ``out/age`` gives ``out/age.json`` and friends. The
        folder is created if needed; existing files of the same names are replaced.
    sidecar : dict
        JSON-serialisable metadata stored in the sidecar beside morphml's own keys (atlas,
        FreeSurfer versions, training-data hash, ...). Must not reuse morphml's keys.

    Returns
    -------
    list of Path
        The files written; the sidecar ``<stem>.json`` is last.

    Raises
    ------
    ModelConfigError
        The sidecar is not JSON-serialisable or reuses a reserved key.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from morphml.models import load_model, make_age_model, save_model
    >>> X = np.random.default_rng(0).normal(size=(30, 3)); age = 40 + 10 * X[:, 0] ** 2
    >>> model = make_age_model("ridge", {}, etiv_adjust=False, random_state=0).fit(X, age)
    >>> stem = pathlib.Path(tempfile.mkdtemp()) / "age"
    >>> [p.name for p in save_model(model, stem, sidecar={"atlas": "aparc"})]
    ['age.skops', 'age.coef.json', 'age.json']
    >>> loaded, meta = load_model(stem)
    >>> bool(np.array_equal(loaded.predict(X), model.predict(X))), meta["atlas"]
    (True, 'aparc')
    """
    check_is_fitted(model)
    _check_sidecar(sidecar)
    stem = Path(path_stem)
    meta, inner, skeleton, coefficients = _describe(model)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = _write_files(stem, meta, inner, skeleton, coefficients)
    meta["files"] = {path.name: _sha256(path) for path in written}
    sidecar_path = _path(stem, ".json")
    document = {**dict(sidecar), **meta}
    sidecar_path.write_text(
        json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8"
    )
    written.append(sidecar_path)
    return written


def _check_sidecar(sidecar: Any) -> None:
    """The caller's sidecar is a JSON-serialisable dict that reuses none of morphml's keys."""
    if not isinstance(sidecar, Mapping):
        raise ModelConfigError(f"sidecar must be a dict. Got {type(sidecar).__name__}.")
    clash = sorted(set(sidecar) & _RESERVED_KEYS)
    if clash:
        raise ModelConfigError(
            f"sidecar keys {clash} are reserved for morphml; rename them (reserved: "
            f"{', '.join(sorted(_RESERVED_KEYS))})."
        )
    try:
        json.dumps(dict(sidecar), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ModelConfigError(
            f"sidecar must be JSON-serialisable (str, numbers, lists, dicts): {exc}"
        ) from exc


def _describe(model: Any) -> tuple[dict[str, Any], Any, Any, dict[str, Any] | None]:
    """morphml's sidecar keys (but ``files``), the inner estimator, what skops saves (the
    model, or an XGBoost model's skeleton) and the plain coefficients of a linear model."""
    final, inner = _final_and_inner(model)
    feature_ids = getattr(model, "feature_names_in_", None)
    meta: dict[str, Any] = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "morphml_version": __version__,
        "estimator": _dotted(type(inner)),
        "steps": (
            [[name, _dotted(type(step))] for name, step in model.steps]
            if isinstance(model, Pipeline)
            else [[None, _dotted(type(model))]]
        ),
        "task": "classification" if is_classifier(model) else "regression",
        "target_transform": _target_transform(final),
        "feature_ids": None if feature_ids is None else [str(c) for c in feature_ids],
        "n_features": int(getattr(model, "n_features_in_", 0)) or None,
        "library_versions": _library_versions(),
    }
    if _is_xgboost(inner):
        meta["estimator_kind"] = "xgboost"
        meta["xgboost_params"] = _json_safe_params(inner.get_params())
        return meta, inner, _xgb_skeleton(model), None
    meta["estimator_kind"] = "skops"
    return meta, inner, model, _coefficients(model)


def _write_files(
    stem: Path,
    meta: dict[str, Any],
    inner: Any,
    skeleton: Any,
    coefficients: dict[str, Any] | None,
) -> list[Path]:
    """The model files (not the sidecar) in the order the sidecar lists them."""
    written: list[Path] = []
    if meta["estimator_kind"] == "xgboost":
        booster_path = _path(stem, ".ubj")
        inner.save_model(str(booster_path))
        written.append(booster_path)
        if skeleton is not None:
            pre_path = _path(stem, ".preprocess.skops")
            sio.dump(skeleton, pre_path, compression=zipfile.ZIP_DEFLATED)
            written.append(pre_path)
        return written
    skops_path = _path(stem, ".skops")
    sio.dump(skeleton, skops_path, compression=zipfile.ZIP_DEFLATED)
    written.append(skops_path)
    if coefficients is not None:
        coef_path = _path(stem, ".coef.json")
        coef_path.write_text(
            json.dumps(coefficients, indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
        written.append(coef_path)
    return written


def _major(version: str) -> int | None:
    match = re.match(r"^\s*(\d+)\.", str(version))
    return int(match.group(1)) if match else None


def _read_sidecar(stem: Path) -> dict[str, Any]:
    path = _path(stem, ".json")
    if not path.is_file():
        raise ModelFileError(
            f"{path}: model sidecar not found; expected the files written by "
            "morphml.models.save_model for this path stem."
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: not a JSON model sidecar ({exc}).") from exc
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise ModelFileError(
            f'{path}: not a morphml model sidecar (expected "format": "{_FORMAT}").'
        )
    written_by = str(document.get("morphml_version", ""))
    major, ours = _major(written_by), _major(__version__)
    if major is None:
        raise ModelFileError(f"{path}: morphml_version {written_by!r} is not a version number.")
    if ours is not None and major > ours:
        raise ModelFileError(
            f"{path}: written by morphml {written_by}, a newer major version than this morphml "
            f"{__version__}; upgrade morphml to load it."
        )
    fmt = document.get("format_version")
    if not isinstance(fmt, int) or fmt > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {fmt!r} is newer than this morphml reads "
            f"({FORMAT_VERSION}); upgrade morphml to load it."
        )
    for key in ("estimator_kind", "estimator", "files"):
        if key not in document:
            raise ModelFileError(f"{path}: sidecar has no {key!r} entry.")
    return document


def _checked_file(stem: Path, suffix: str, sidecar: Mapping[str, Any]) -> Path:
    path = _path(stem, suffix)
    expected = sidecar["files"].get(path.name)
    if expected is None:
        raise ModelFileError(f"{_path(stem, '.json')}: sidecar does not list {path.name}.")
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found (listed in the sidecar).")
    if _sha256(path) != expected:
        raise ModelFileError(
            f"{path}: contents changed since the model was saved (sha256 differs from the "
            "sidecar); refusing to load it. Restore the original file or save the model again."
        )
    return path


def _load_skops(path: Path) -> Any:
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # skops raises several types for damaged archives
        raise ModelFileError(f"{path}: not a readable skops file ({exc}).") from exc
    trusted = trusted_types()
    refused = sorted(t for t in untrusted if t not in trusted)
    if refused:
        raise UntrustedModelError(
            f"{path}: refusing to load types outside morphml's allow-list: "
            f"{', '.join(refused)}. morphml only loads scikit-learn, numpy and morphml model "
            "types; inspect the file with skops.io.get_untrusted_types and load it yourself "
            "only if you trust its origin."
        )
    try:
        return sio.load(path, trusted=untrusted)
    except Exception as exc:
        raise ModelFileError(f"{path}: skops could not load the model ({exc}).") from exc


def _load_xgboost(stem: Path, sidecar: Mapping[str, Any], device: str) -> Any:
    import xgboost

    class_name = _XGB_CLASSES.get(str(sidecar["estimator"]))
    if class_name is None:
        raise ModelFileError(
            f"{_path(stem, '.json')}: unknown XGBoost estimator {sidecar['estimator']!r}; "
            f"expected one of {', '.join(sorted(_XGB_CLASSES))}."
        )
    cls = getattr(xgboost, class_name)
    params = dict(sidecar.get("xgboost_params") or {})
    params["device"] = resolve_device(device)
    booster_path = _checked_file(stem, ".ubj", sidecar)
    booster = cls(**params)
    try:
        booster.load_model(str(booster_path))
    except xgboost.core.XGBoostError as exc:
        raise ModelFileError(f"{booster_path}: XGBoost could not read it ({exc}).") from exc
    if _path(stem, ".preprocess.skops").name not in sidecar["files"]:
        return booster
    skeleton = _load_skops(_checked_file(stem, ".preprocess.skops", sidecar))
    final = skeleton.steps[-1][1] if isinstance(skeleton, Pipeline) else skeleton
    if isinstance(final, TransformedTargetRegressor):
        final.regressor = cls(**params)
        final.regressor_ = booster
    elif isinstance(skeleton, Pipeline) and final == "passthrough":
        skeleton.steps[-1] = (skeleton.steps[-1][0], booster)
    else:
        raise ModelFileError(
            f"{_path(stem, '.preprocess.skops')}: unexpected structure (final step "
            f"{type(final).__name__}); expected the booster's place to be empty."
        )
    return skeleton


def load_model(path_stem: Path | str, *, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """Load a model saved by :func:`save_model`.

    skops files are opened only when every type they contain is trusted by skops or on
    :func:`trusted_types`; file checksums must match the sidecar.

    Parameters
    ----------
    path_stem : Path
        The stem given to :func:`save_model`.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Device for XGBoost predictions (see :func:`resolve_device`).

    Returns
    -------
    model : estimator
        The fitted model.
    sidecar : dict
        The sidecar document (morphml's keys and the caller's metadata).

    Raises
    ------
    ModelFileError
        Missing or changed files, a newer morphml major version or file format.
    UntrustedModelError
        A skops file holds a type outside the allow-list.

    Examples
    --------
    See :func:`save_model`.
    """
    stem = Path(path_stem)
    sidecar = _read_sidecar(stem)
    model: BaseEstimator
    if sidecar["estimator_kind"] == "xgboost":
        model = _load_xgboost(stem, sidecar, device)
    elif sidecar["estimator_kind"] == "skops":
        model = _load_skops(_checked_file(stem, ".skops", sidecar))
    else:
        raise ModelFileError(
            f"{_path(stem, '.json')}: unknown estimator_kind {sidecar['estimator_kind']!r}; "
            "expected 'xgboost' or 'skops'."
        )
    expected = sidecar.get("feature_ids")
    found = getattr(model, "feature_names_in_", None)
    if expected is not None and (found is None or [str(c) for c in found] != expected):
        raise ModelFileError(
            f"{_path(stem, '.json')}: the loaded model's feature ids differ from the sidecar's "
            "feature_ids; the files do not belong together."
        )
    return model, sidecar
