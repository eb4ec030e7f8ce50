"""morphml.registry: a model type or a representation is one entry plus its own code.

A toy k-nearest-neighbours age model and a toy representation (the mean of the features) are
registered here, by one entry each, and go through what the built-in ones go through:
config validation, a pretrain fit with tuning, persistence and reloading, the transfer
comparison and the report summary. Without their entries each of those refuses them.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.neighbors import KNeighborsRegressor

from morphml import registry
from morphml.config import parse_config
from morphml.exceptions import ConfigError, ModelConfigError, UntrustedModelError
from morphml.models import load_model, make_age_model, search_space
from morphml.registry import ModelType, RepresentationType


class ToyKNN(KNeighborsRegressor):
    """A k-nearest-neighbours regressor of a type skops does not trust by itself."""


def toy_knn_steps(
    target: str, params: dict[str, Any], *, random_state: int | None, device: str, n_jobs: int
) -> list[tuple[str, Any]]:
    from sklearn.preprocessing import StandardScaler

    from morphml.models import MedianImputer

    return [
        ("impute", MedianImputer()),
        ("scale", StandardScaler()),
        ("model", ToyKNN(**params)),
    ]


def suggest_toy_knn(trial: Any) -> dict[str, Any]:
    return {"n_neighbors": trial.suggest_int("n_neighbors", 3, 9)}


KNN = ModelType(
    name="knn",
    targets=("age",),
    factory=toy_knn_steps,
    search_space="tests.test_registry:suggest_toy_knn",
    defaults={"age": {"n_neighbors": 5}},
    params=("n_neighbors", "weights"),
    description="k nearest neighbours (a toy)",
    persisted_types=("tests.test_registry:ToyKNN",),
)


class ToyMean(TransformerMixin, BaseEstimator):
    """The mean of the pretrained features of a scan, with age and sex."""

    def __init__(self, *, pretrained: Any = None, covariates: tuple[str, ...] = ()) -> None:
        self.pretrained = pretrained
        self.covariates = covariates

    def fit(self, X: pd.DataFrame, y: Any = None) -> ToyMean:
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        values = X[self.pretrained.feature_ids].to_numpy(np.float64)
        covs = [X[f"meta:{c}"].to_numpy(np.float64) for c in self.covariates if c != "site"]
        return np.column_stack([np.nanmean(values, axis=1), *covs])


MEAN = RepresentationType(
    name="toy_mean",
    needs="pretrain",
    head="scaled",
    block=ToyMean,
    inputs={"pretrained": "pretrained", "covariates": "covariates"},
    description="the mean of the features (a toy)",
    default=False,
)


@pytest.fixture
def knn() -> Iterator[ModelType]:
    """The toy model type, registered for one test and removed after it."""
    registry.register_model_type(KNN)
    try:
        yield KNN
    finally:
        registry.unregister_model_type("knn")


@pytest.fixture
def toy_mean() -> Iterator[RepresentationType]:
    registry.register_representation(MEAN)
    try:
        yield MEAN
    finally:
        registry.unregister_representation("toy_mean")


PRETRAIN = {
    "kind": "pretrain",
    "name": "registry-pretrain",
    "cohort": {"sources": ["pub"], "filters": {"diagnosis": ["control"]}},
    "features": {"atlases": ["aseg", "global"], "measures": ["volume"]},
    "targets": ["age"],
    "models": {"age": ["knn"]},
    "tuning": {"trials": 2, "inner_folds": 2},
    "validation": {"schemes": ["kfold"], "folds": 2, "bootstrap": 100},
    "seed": 1,
    "device": "cpu",
}

TRANSFER = {
    "kind": "transfer",
    "name": "registry-transfer",
    "cohort": {"sources": ["hosp"], "filters": {"diagnosis": ["control", "patient"]}},
    "target": {"name": "diagnosis", "type": "binary", "positive": "patient"},
    "representations": ["raw", "toy_mean"],
    "protocol": {"folds": 2, "repeats": 1, "train_sizes": ["all"], "permutations": 0},
    "components": 0,
    "seed": 2,
}


@dataclass(frozen=True)
class Data:
    db: Path
    root: Path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    """A database of a small simulated pretraining cohort and a small clinical sample."""
    from morphml.db import ingest
    from morphml.simulate import simulate_cohort

    root = tmp_path_factory.mktemp("registry")
    db, key = root / "db.duckdb", root / "key"
    key.write_text("7e57" * 16 + "\n")
    key.chmod(0o600)
    for name, n, sites, seed in (("pub", 70, 2, 11), ("hosp", 50, 2, 12)):
        sim = simulate_cohort(root / name, n_subjects=n, n_sites=sites, seed=seed)
        ingest([root / name], source=name, db=db, key_file=key, on_error="skip",
               participants=sim.participants, column_map=sim.column_map)  # fmt: skip
    return Data(db, root)


def test_builtin_entries_match_the_factories() -> None:
    assert registry.model_names("age") == ("ridge", "xgboost")
    assert registry.model_names("sex") == ("logistic", "elasticnet", "xgboost")
    assert registry.representation_names()[0] == "raw"
    assert "reference_z" not in registry.representation_names(default_only=True)
    assert [r.needs for r in registry.representations() if r.name == "reference_z"] == [
        "reference"
    ]


def test_registry_imports_no_heavy_package() -> None:
    code = (
        "import sys, morphml.config, morphml.registry\n"
        "print(sorted(m for m in ('sklearn', 'xgboost', 'optuna') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert done.stdout.strip() == "[]"


def test_bad_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model_type(registry.model_type("ridge"))
    with pytest.raises(ValueError, match="targets must be among"):
        registry.register_model_type(dataclasses.replace(KNN, targets=("height",)))
    with pytest.raises(ValueError, match="head must be one of"):
        registry.register_representation(dataclasses.replace(MEAN, head="deep"))
    with pytest.raises(ValueError, match="did you mean 'ridge'"):
        registry.model_type("rige")
    assert "knn" not in registry.model_names()
    assert "toy_mean" not in registry.representation_names()


def test_unregistered_toys_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown age model 'knn'"):
        parse_config(PRETRAIN)
    with pytest.raises(ConfigError, match="unknown representation 'toy_mean'"):
        parse_config(TRANSFER)
    with pytest.raises(ModelConfigError, match="Unknown age model 'knn'"):
        make_age_model("knn", etiv_adjust=False, random_state=0)


def test_toy_model_type_validates_fits_persists_and_reloads(
    knn: ModelType, data: Data, tmp_path: Path
) -> None:
    from morphml.pipelines import fit_pretrain

    config = parse_config(PRETRAIN)
    assert config.models == {"age": ["knn"]}  # type: ignore[union-attr]
    assert search_space("knn", "age") is suggest_toy_knn
    with pytest.raises(ModelConfigError, match="Did you mean 'n_neighbors'"):
        make_age_model("knn", {"n_neighbour": 3}, etiv_adjust=False, random_state=0)
    out = tmp_path / "pretrain"
    fit_pretrain(config, db=data.db, out=out)  # type: ignore[arg-type]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["targets"]["age"]["knn"]["kfold"]["mae"] > 0
    model, sidecar = load_model(out / "models" / "age-knn")
    assert sidecar["estimator"] == "tests.test_registry.ToyKNN"
    inner = model.named_steps["model"].regressor_
    assert isinstance(inner, ToyKNN) and 3 <= inner.n_neighbors <= 9
    X = pd.DataFrame(np.ones((2, len(sidecar["feature_ids"]))), columns=sidecar["feature_ids"])
    assert np.isfinite(model.predict(X)).all()
    # the entry is what makes its type trusted: without it the saved file is refused
    registry.unregister_model_type("knn")
    try:
        with pytest.raises(UntrustedModelError, match=r"tests\.test_registry\.ToyKNN"):
            load_model(out / "models" / "age-knn")
    finally:
        registry.register_model_type(KNN)


def test_toy_representation_goes_through_the_transfer_comparison(
    toy_mean: RepresentationType, data: Data, tmp_path: Path
) -> None:
    from morphml.pipelines import fit_pretrain, fit_transfer
    from morphml.reports import summarize

    pretrain = {
        **PRETRAIN,
        "models": {"age": ["ridge"]},
        "tuning": {"trials": 1, "inner_folds": 2},
    }
    fit_pretrain(parse_config(pretrain), db=data.db, out=tmp_path / "pretrain")  # type: ignore[arg-type]
    config = parse_config(TRANSFER)
    assert config.representations == ["raw", "toy_mean"]  # type: ignore[union-attr]
    out = tmp_path / "transfer"
    fit_transfer(config, db=data.db, out=out, pretrained=tmp_path / "pretrain")  # type: ignore[arg-type]
    metrics = json.loads((out / "metrics.json").read_text())
    cell = metrics["transfer"]["toy_mean"]["all"]
    assert 0.0 <= cell["auc"] <= 1.0 and cell["delta_vs_raw"] is not None
    summary = summarize(out)
    assert summary["transfer"]["representations"]["toy_mean"] == toy_mean.description
