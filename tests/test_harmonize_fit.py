"""ComBat inside the pretraining pipelines: fitted per training fold, outcome kept out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from morphml.config import parse_config
from morphml.db import ingest
from morphml.exceptions import ConfigError, HarmonizationError
from morphml.features import load_frame, with_meta
from morphml.pipelines import fit_pretrain, predict_run
from morphml.pipelines._fit import _model_factory, harmonize_step
from tests.test_fit import MAP, config, synthetic_table

HARM = {"method": "combat", "covariates": ["age", "sex"]}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("harmdb")
    synthetic_table(root / "train.csv", 150, ["A", "B", "C"], seed=1)
    synthetic_table(root / "new.csv", 30, ["D"], seed=2)
    (root / "map.yaml").write_text(MAP)
    path = root / "db.duckdb"
    for name, source in (("train", "train"), ("new", "newsite")):
        ingest([root / f"{name}.csv"], column_map=root / "map.yaml", source=source, db=path,
               key_file=root / "key")  # fmt: skip
    return path


def kfold_config(**harm: object) -> dict[str, object]:
    return config(
        validation={"schemes": ["kfold"], "folds": 3, "bootstrap": 200},
        tuning={"trials": 1, "inner_folds": 2},
        harmonize={**HARM, **harm},
    )


def test_harmonised_run_reports_site_separability_and_predicts(db: Path, tmp_path: Path) -> None:
    result = fit_pretrain(parse_config(kfold_config()), db=db, out=tmp_path / "run")  # type: ignore[arg-type]
    harm = result.metrics["harmonization"]
    assert harm["method"] == "combat" and harm["warning"] is None
    assert 0 <= harm["site_accuracy_after"] <= 1
    assert result.metrics["targets"]["age"]["ridge"]["kfold"]["mae"] < 15
    preds = predict_run(tmp_path / "run", db=db, source="train", out=tmp_path / "p.parquet")
    assert len(preds) > 0
    with pytest.raises((ConfigError, HarmonizationError), match="D"):
        predict_run(tmp_path / "run", db=db, source="newsite", out=tmp_path / "q.parquet")


def test_outcome_is_not_a_covariate_unless_allowed(db: Path) -> None:
    spec = parse_config(kfold_config()).harmonize  # type: ignore[union-attr]
    assert harmonize_step(spec, "age").covariates == ("meta:sex",)
    allowed = parse_config(kfold_config(allow_outcome_covariate=True)).harmonize  # type: ignore[union-attr]
    step = harmonize_step(allowed, "age")
    assert step.covariates == ("meta:age", "meta:sex") and step.neutral == ("meta:age",)


def test_test_outcome_never_reaches_harmonised_features(db: Path) -> None:
    cfg = parse_config(kfold_config(allow_outcome_covariate=True))
    frame = load_frame(db, cfg.cohort, cfg.features)  # type: ignore[union-attr]
    X = with_meta(frame.X, frame.meta)
    train, test = np.arange(100), np.arange(100, len(X))
    step = harmonize_step(cfg.harmonize, "age").fit(X.iloc[train])  # type: ignore[union-attr]
    out = step.transform(X.iloc[test])
    changed = X.iloc[test].copy()
    changed["meta:age"] = changed["meta:age"] + 30.0
    pd.testing.assert_frame_equal(out, step.transform(changed))


def test_combat_is_fitted_on_the_training_fold_only(db: Path) -> None:
    cfg = parse_config(kfold_config())
    frame = load_frame(db, cfg.cohort, cfg.features)  # type: ignore[union-attr]
    X = with_meta(frame.X, frame.meta)
    y = frame.meta["age"].to_numpy()
    build = _model_factory("age", "ridge", False, 0, "cpu", cfg.harmonize)  # type: ignore[union-attr]
    train, test = np.arange(100), np.arange(100, len(X))
    model = build({}).fit(X.iloc[train], y[train])
    wrecked = X.copy()
    feature_cols = [c for c in X.columns if not c.startswith(("meta:", "site="))]
    wrecked.iloc[test, [X.columns.get_loc(c) for c in feature_cols]] *= 3.0
    again = build({}).fit(wrecked.iloc[train], y[train])
    np.testing.assert_allclose(model.predict(X.iloc[:20]), again.predict(wrecked.iloc[:20]))
    assert model.steps[0][0] == "harmonize"


def test_leave_site_out_with_combat_is_refused_before_work(db: Path, tmp_path: Path) -> None:
    bad = config(tuning={"trials": 1, "inner_folds": 2}, harmonize=HARM)
    with pytest.raises(ConfigError, match="held-out site"):
        fit_pretrain(parse_config(bad), db=db, out=tmp_path / "run")  # type: ignore[arg-type]
    assert not (tmp_path / "run").exists()
