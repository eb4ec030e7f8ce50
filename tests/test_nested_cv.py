"""The nested-CV object of morphml.evaluation: plans drawn once, fit = orchestration only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from morphml.config import parse_config
from morphml.evaluation import (
    ModelSearch,
    NestedCV,
    NestedCVPlan,
    SearchPlan,
    StudyStore,
    nested_cv_plans,
    outer_splits,
)
from morphml.exceptions import ConfigError
from morphml.features import load_frame, target_vector
from morphml.pipelines import fit_pretrain
from morphml.pipelines._fit import _model_factory
from tests.test_fit import config, small_db  # noqa: F401  (the fixture)

VALIDATION = {"schemes": ["kfold", "leave_site_out"], "folds": 3, "bootstrap": 200}


def test_plans_hold_the_outer_splits_of_each_target_and_scheme(small_db: Path) -> None:  # noqa: F811
    cfg = parse_config(config(validation=VALIDATION))
    frame = load_frame(small_db, cfg.cohort, cfg.features)  # type: ignore[union-attr]
    plans = nested_cv_plans(cfg, frame)  # type: ignore[arg-type]
    assert set(plans) == {"age", "sex"}
    assert list(plans["age"]) == ["kfold", "leave_site_out"]
    lso = plans["age"]["leave_site_out"]
    assert len(lso.splits) == 3  # one test fold per site
    for train, test in lso.splits:
        assert len(set(frame.meta["site"].iloc[test])) == 1
        assert not set(frame.meta["site"].iloc[test]) & set(frame.meta["site"].iloc[train])
    expected = outer_splits("kfold", frame.meta, folds=3, seed=7)
    for (a, b), (c, d) in zip(plans["age"]["kfold"].splits, expected, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert plans["sex"]["kfold"].search.kind == "classification"
    assert plans["age"]["kfold"].search.bias.method == "beheshti"
    with pytest.raises(ConfigError, match="too few scans for 40-fold kfold"):
        nested_cv_plans(parse_config(config(validation={"folds": 40})), frame)  # type: ignore[arg-type]


def test_fit_predictions_are_those_of_the_nested_cv_object(
    small_db: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    validation = {"schemes": ["kfold"], "folds": 3, "bootstrap": 200}
    cfg = parse_config(config(validation=validation, targets=["age"]))
    fit_pretrain(cfg, db=small_db, out=tmp_path / "run", record=False)  # type: ignore[arg-type]
    run = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    frame = load_frame(small_db, cfg.cohort, cfg.features)  # type: ignore[union-attr]
    plan = nested_cv_plans(cfg, frame)["age"]["kfold"]  # type: ignore[arg-type]
    from morphml.models import search_space

    search = ModelSearch(
        _model_factory("age", "ridge", False, 7, "cpu"), search_space("ridge", "age"),
        SearchPlan.from_config(cfg, "age"), label="ridge",  # type: ignore[arg-type]
        studies=StudyStore(tmp_path / "studies"),
    )  # fmt: skip
    y, _ = target_vector(frame.meta, "age")
    result = NestedCV(search, plan).run(frame.X, y, frame.meta)
    pd.testing.assert_frame_equal(result.predictions, run, check_exact=True)
    assert list(result.folds) == [f"age/ridge/kfold/fold{k}" for k in range(3)]
    assert len(result.models) == 3 and result.seconds >= 0
    summary = result.bias_summary(plan.search.bias)
    assert summary["folds"] == 3 and summary["folds_corrected"] == 3


def test_a_plan_is_frozen() -> None:
    plan = NestedCVPlan("kfold", (), SearchPlan("age", 0))
    with pytest.raises(AttributeError):
        plan.scheme = "external"  # type: ignore[misc]
