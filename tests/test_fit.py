"""morphml fit / predict: run directories, determinism, leakage, bad configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from morphml.cli import cli
from morphml.config import parse_config
from morphml.db import connect, ingest
from morphml.evaluation import ModelSearch, NestedCV, NestedCVPlan, SearchPlan, StudyStore
from morphml.exceptions import ConfigError
from morphml.features import load_frame
from morphml.pipelines import fit_pretrain, predict_run

REGIONS = ["bankssts", "cuneus", "fusiform", "insula", "lingual", "precuneus", "superiorfrontal"]
ASEG = ["Left-Hippocampus", "Right-Hippocampus", "Left-Thalamus", "Left-Lateral-Ventricle"]


def synthetic_table(path: Path, n: int, sites: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 80, n)
    male = rng.random(n) < 0.5
    site = rng.choice(sites, n)
    etiv = 1.45e6 + 1.5e5 * male + rng.normal(0, 8e4, n)
    data: dict[str, object] = {"sub_id": [f"P{i:04d}" for i in range(n)], "age": age.round(2)}
    data["sex"] = male.astype(int)
    for hemi in ("lh", "rh"):
        for region in REGIONS:
            data[f"{hemi}_{region}_thickness"] = (
                3.0 - 0.012 * (age - 50) + rng.normal(0, 0.08, n)
            ).round(3)
        data[f"{hemi}_MeanThickness_thickness"] = (2.6 - 0.01 * (age - 50)).round(4)
    for struct in ASEG:
        base = 4000 * (etiv / 1.5e6) * (1 - 0.004 * (age - 50))
        data[struct] = (base + rng.normal(0, 150, n)).round(1)
    data["EstimatedTotalIntraCranialVol"] = etiv.round(1)
    data["site"] = site
    pd.DataFrame(data).to_csv(path, index=False)


MAP = "id: sub_id\nage: age\nsex: {column: sex, coding: {0: female, 1: male}}\nsite: site\n"


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fitdb")
    synthetic_table(root / "train.csv", 150, ["A", "B", "C"], seed=1)
    synthetic_table(root / "new.csv", 30, ["D"], seed=2)
    (root / "map.yaml").write_text(MAP)
    db = root / "db.duckdb"
    key = root / "key"
    ingest([root / "train.csv"], column_map=root / "map.yaml", source="train", db=db,
           key_file=key)  # fmt: skip
    ingest([root / "new.csv"], column_map=root / "map.yaml", source="newsite", db=db,
           key_file=key)  # fmt: skip
    return db


def config(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "kind": "pretrain",
        "cohort": {"sources": ["train"]},
        "targets": ["age", "sex"],
        "models": {"age": ["ridge"], "sex": ["logistic"]},
        "tuning": {"trials": 3, "inner_folds": 3},
        "validation": {"schemes": ["kfold", "leave_site_out"], "folds": 3, "bootstrap": 200},
        "seed": 7,
        "device": "cpu",
    }
    base.update(overrides)
    return base


def test_run_directory_and_metrics_shape(small_db: Path, tmp_path: Path) -> None:
    result = fit_pretrain(parse_config(config()), db=small_db, out=tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.yaml", "manifest.json", "metrics.json", "predictions.parquet"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    age = metrics["targets"]["age"]["ridge"]
    assert set(age) == {"kfold", "leave_site_out"}
    assert age["kfold"]["mae"] < 6 and len(age["kfold"]["mae_ci"]) == 2
    assert {"mae_corrected", "gap_age_r", "gap_age_r_corrected", "per_site"} <= set(age["kfold"])
    sex = metrics["targets"]["sex"]
    assert {"logistic", "logistic_etiv_adjusted"} == set(sex)
    for key in ("auc", "auc_ci", "balanced_accuracy", "brier", "calibration_slope",
                "calibration_intercept"):  # fmt: skip
        assert key in sex["logistic"]["kfold"], key
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["feature_matrix_hash"] and manifest["config_hash"]
    assert len(manifest["scan_keys"]) == 150
    assert manifest["packages"]["morphml"]
    preds = pd.read_parquet(run / "predictions.parquet")
    assert preds["scan_key"].str.startswith("scan-").all()
    assert not any("P0" in str(v) for v in preds.astype(str).to_numpy().ravel())
    files = {p.name for p in (run / "models").iterdir()}
    assert {"age-ridge.json", "age-ridge.skops", "sex-logistic.json"} <= files
    with connect(small_db) as con:
        runs = con.execute("SELECT run_id, stale FROM runs").fetchall()
        linked = con.execute(
            "SELECT count(*) FROM run_scans WHERE run_id = ?", [result.run_id]
        ).fetchone()
    assert (result.run_id, False) in runs
    assert linked == (150,)


def test_same_seed_same_results(small_db: Path, tmp_path: Path) -> None:
    cfg = parse_config(config(validation={"schemes": ["kfold"], "folds": 3, "bootstrap": 200}))
    a = fit_pretrain(cfg, db=small_db, out=tmp_path / "a")
    b = fit_pretrain(cfg, db=small_db, out=tmp_path / "b")
    ma = {k: v for k, v in a.metrics.items() if k != "run_id"}
    mb = {k: v for k, v in b.metrics.items() if k != "run_id"}
    assert ma == mb
    pa_ = pd.read_parquet(tmp_path / "a" / "predictions.parquet")
    pb = pd.read_parquet(tmp_path / "b" / "predictions.parquet")
    pd.testing.assert_frame_equal(pa_, pb)


def test_outer_folds_in_two_processes_give_the_sequential_results(
    small_db: Path, tmp_path: Path
) -> None:
    validation = {"schemes": ["kfold"], "folds": 3, "bootstrap": 200}
    serial = fit_pretrain(parse_config(config(validation=validation)), db=small_db,
                          out=tmp_path / "serial", record=False)  # fmt: skip
    tuning = {"trials": 3, "inner_folds": 3, "n_jobs": 2}
    parallel = fit_pretrain(parse_config(config(validation=validation, tuning=tuning)),
                            db=small_db, out=tmp_path / "parallel", record=False)  # fmt: skip
    a = pd.read_parquet(tmp_path / "serial" / "predictions.parquet")
    b = pd.read_parquet(tmp_path / "parallel" / "predictions.parquet")
    pd.testing.assert_frame_equal(a, b, rtol=1e-9)  # BLAS threads may reorder sums
    ma = json.loads((tmp_path / "serial" / "manifest.json").read_text())
    mb = json.loads((tmp_path / "parallel" / "manifest.json").read_text())
    assert ma["tuning"] == mb["tuning"]  # every fold chose the same parameters
    assert ma["final_models"] == mb["final_models"]
    assert serial.metrics["targets"]["age"]["ridge"]["kfold"]["mae"] == pytest.approx(
        parallel.metrics["targets"]["age"]["ridge"]["kfold"]["mae"], rel=1e-9
    )


def test_progress_lines_name_each_tuning(
    small_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = parse_config(config(validation={"schemes": ["kfold"], "folds": 3, "bootstrap": 200}))
    fit_pretrain(cfg, db=small_db, out=tmp_path / "run", record=False, progress=True)
    err = capsys.readouterr().err
    for key in ("age/ridge/kfold", "sex/logistic/kfold", "sex/logistic_etiv_adjusted/kfold"):
        assert f"{key}: tuned and scored in" in err
    assert "final models" in err
    seconds = json.loads((tmp_path / "run" / "manifest.json").read_text())["seconds"]
    assert set(seconds) == {
        "age/ridge/kfold", "sex/logistic/kfold", "sex/logistic_etiv_adjusted/kfold",
        "age/ridge/final", "sex/logistic/final", "sex/logistic_etiv_adjusted/final",
    }  # fmt: skip


def test_predict_new_scans_and_refusals(small_db: Path, tmp_path: Path) -> None:
    cfg = parse_config(config(validation={"schemes": ["kfold"], "folds": 3, "bootstrap": 200}))
    fit_pretrain(cfg, db=small_db, out=tmp_path / "run")
    out = predict_run(tmp_path / "run", db=small_db, source="train", out=tmp_path / "p.parquet")
    assert set(out["model"]) == {"ridge", "logistic", "logistic_etiv_adjusted"}
    assert out.loc[out["target"] == "age", "y_pred"].between(10, 100).all()
    assert out["in_sample"].all()  # the run was trained on every scan of source "train"
    with pytest.raises(ConfigError, match=r"sites \['D'\] were never seen"):
        predict_run(tmp_path / "run", db=small_db, source="newsite", out=tmp_path / "q.parquet")
    # the command line warns about in-sample predictions, and names an unknown --source in its
    # own words (not the config's)
    runner = CliRunner()
    args = ["predict", str(tmp_path / "run"), "--db", str(small_db), "--out"]
    result = runner.invoke(cli, [*args, str(tmp_path / "r.parquet"), "--source", "train"])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "in-sample" in result.stderr
    result = runner.invoke(cli, [*args, str(tmp_path / "s.parquet"), "--source", "hospital"])
    assert result.exit_code == 2
    assert "--source hospital: the database holds no scans of that source" in result.stderr
    assert "cohort.sources" not in result.stderr


def test_cli_fit_and_bad_configs(small_db: Path, tmp_path: Path) -> None:
    runner = CliRunner()

    def run(cfg: dict[str, object], name: str) -> tuple[int, str]:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        result = runner.invoke(
            cli, ["fit", str(path), "--db", str(small_db), "--out", str(tmp_path / name)]
        )
        return result.exit_code, result.output

    code, out = run({**config(), "tunning": {}}, "typo")
    assert code == 2 and "did you mean 'tuning'" in out
    code, out = run(config(cohort={"sources": ["train"], "min_age": 200}), "empty")
    assert code == 2 and "cohort is empty" in out
    code, out = run(config(cohort={"sources": ["newsite"]}), "onesite")
    assert code == 2 and "single site" in out
    code, out = run(config(validation={"schemes": ["kfold"], "folds": 40}), "fewfolds")
    assert code == 2 and "too few" in out
    for name in ("typo", "empty", "onesite", "fewfolds"):
        assert not (tmp_path / name).exists()  # refused before any work


def test_target_missing_for_some_scans_is_refused(tmp_path: Path) -> None:
    synthetic_table(tmp_path / "t.csv", 60, ["A", "B"], seed=3)
    table = pd.read_csv(tmp_path / "t.csv")
    table.loc[:4, "age"] = np.nan
    table.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "map.yaml").write_text(MAP)
    db = tmp_path / "db.duckdb"
    ingest([tmp_path / "t.csv"], column_map=tmp_path / "map.yaml", source="train", db=db,
           key_file=tmp_path / "key")  # fmt: skip
    with pytest.raises(ConfigError, match="target 'age' is missing for 5 of 60 scans"):
        fit_pretrain(parse_config(config()), db=db, out=tmp_path / "run")


def _frame_and_split(small_db: Path) -> tuple[object, np.ndarray, np.ndarray]:
    cfg = parse_config(config())
    frame = load_frame(small_db, cfg.cohort, cfg.features)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(frame.meta))
    return frame, np.sort(order[:110]), np.sort(order[110:])


def _run_split(frame: object, X: pd.DataFrame, y: np.ndarray, train: np.ndarray,
               test: np.ndarray, tmp: Path) -> pd.DataFrame:  # fmt: skip
    from morphml.models import make_age_model, search_space

    cfg = parse_config(config())

    def build(params: dict[str, object]) -> object:
        return make_age_model("ridge", params, etiv_adjust=False, random_state=0, device="cpu")

    search = ModelSearch(
        build, search_space("ridge", "age"), SearchPlan.from_config(cfg, "age"),  # type: ignore[arg-type]
        label="ridge", studies=StudyStore(tmp / "studies"),
    )  # fmt: skip
    plan = NestedCVPlan("kfold", ((train, test),), search.plan)
    return NestedCV(search, plan).run(X, y, frame.meta).predictions  # type: ignore[attr-defined]


def test_a_leak_inside_the_training_fold_does_not_inflate_test_metrics(
    small_db: Path, tmp_path: Path
) -> None:
    frame, train, test = _frame_and_split(small_db)
    y = frame.meta["age"].to_numpy()  # type: ignore[attr-defined]
    X = frame.X.copy()  # type: ignore[attr-defined]
    clean = _run_split(frame, X, y, train, test, tmp_path / "clean")
    rng = np.random.default_rng(1)
    leak = rng.normal(50, 15, len(y))
    leak[train] = y[train] + rng.normal(0, 0.5, len(train))  # a near-copy of age, train only
    X["aseg.na.Leak.volume"] = leak
    leaky = _run_split(frame, X, y, train, test, tmp_path / "leaky")
    mae_clean = np.mean(np.abs(clean["y_pred"] - clean["y_true"]))
    mae_leaky = np.mean(np.abs(leaky["y_pred"] - leaky["y_true"]))
    assert mae_leaky >= mae_clean - 0.25  # the leak cannot help on the test fold


def test_test_fold_values_never_reach_scaling_or_bias_correction(
    small_db: Path, tmp_path: Path
) -> None:
    frame, train, test = _frame_and_split(small_db)
    y = frame.meta["age"].to_numpy().copy()  # type: ignore[attr-defined]
    X = frame.X.copy()  # type: ignore[attr-defined]
    base = _run_split(frame, X, y, train, test, tmp_path / "a")
    # wreck every test scan but the first: features x100, ages +500
    X2 = X.copy()
    y2 = y.copy()
    wreck = test[1:]
    X2.iloc[wreck, : len(frame.feature_ids)] *= 100  # type: ignore[attr-defined]
    y2[wreck] += 500
    moved = _run_split(frame, X2, y2, train, test, tmp_path / "b")
    first = test[0]
    row_a = base[base["scan_key"] == X.index[first]]
    row_b = moved[moved["scan_key"] == X.index[first]]
    assert row_a["y_pred"].item() == row_b["y_pred"].item()
    assert row_a["y_pred_corrected"].item() == row_b["y_pred_corrected"].item()


def test_predict_refuses_missing_features(small_db: Path, tmp_path: Path) -> None:
    import shutil

    db = tmp_path / "db.duckdb"
    shutil.copy(small_db, db)
    key = small_db.parent / "key"
    synthetic_table(tmp_path / "thin.csv", 20, ["A"], seed=5)
    thin = pd.read_csv(tmp_path / "thin.csv").drop(
        columns=["lh_cuneus_thickness", "Left-Thalamus"]
    )
    thin["sub_id"] = [f"T{i}" for i in range(len(thin))]
    thin.to_csv(tmp_path / "thin.csv", index=False)
    (tmp_path / "map.yaml").write_text(MAP)
    ingest([tmp_path / "thin.csv"], column_map=tmp_path / "map.yaml", source="thin", db=db,
           key_file=key)  # fmt: skip
    cfg = parse_config(config(validation={"schemes": ["kfold"], "folds": 3, "bootstrap": 200}))
    fit_pretrain(cfg, db=db, out=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"lacks 2 of the .*features\.available_in") as info:
        predict_run(tmp_path / "run", db=db, source="thin", out=tmp_path / "p.parquet")
    assert "aparc.lh.cuneus.thickness" in str(info.value)
