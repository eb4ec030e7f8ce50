"""Brain-age statistics: the bias correction by config, site confounding, narrow-age sites.

The fcon1000 test fits a ridge brain-age model with leave-site-out validation on the real
table (1,078 people, 23 sites) and checks that the default (Beheshti) correction cannot make
the error worse, where the Cole correction of earlier runs nearly doubled it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from morphml.config import parse_config
from morphml.db import ingest
from morphml.evaluation._confounding import AGE_R2_WARN, site_confounding, site_mean_oof
from morphml.evaluation._splits import SCHEME_KEYS
from morphml.exceptions import ConfigError
from morphml.pipelines import fit_pretrain, predict_run
from tests.test_fit import MAP, config, synthetic_table

REPO = Path(__file__).resolve().parents[1]
#: the corrected leave-site-out MAE may exceed the uncorrected one by at most this (years)
MAE_MARGIN = 0.25


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three training sites (source ``train``), as in test_fit."""
    root = tmp_path_factory.mktemp("statsdb")
    synthetic_table(root / "train.csv", 150, ["A", "B", "C"], seed=1)
    (root / "map.yaml").write_text(MAP)
    db = root / "db.duckdb"
    ingest([root / "train.csv"], column_map=root / "map.yaml", source="train", db=db,
           key_file=root / "key")  # fmt: skip
    return db


def _age_result(run: Path, scheme: str) -> dict[str, object]:
    metrics = json.loads((run / "metrics.json").read_text())
    result: dict[str, object] = metrics["targets"]["age"]["ridge"][SCHEME_KEYS[scheme]]
    return result


@pytest.mark.parametrize("method", ["beheshti", "cole", "none"])
def test_bias_correction_method_is_chosen_by_config(
    small_db: Path, tmp_path: Path, method: str
) -> None:
    cfg = parse_config(
        config(
            targets=["age"], models={"age": ["ridge"]},
            validation={"schemes": ["kfold"], "folds": 3, "bootstrap": 100},
            bias_correction={"method": method},
        )
    )  # fmt: skip
    run = tmp_path / "run"
    fit_pretrain(cfg, db=small_db, out=run)
    result = _age_result(run, "kfold")
    bias = result["bias_correction"]
    assert isinstance(bias, dict)
    assert bias["method"] == method and bias["folds"] == 3
    assert bias["uses_true_age"] is (method == "beheshti")
    preds = pd.read_parquet(run / "predictions.parquet")
    if method == "none":
        assert bias["folds_corrected"] == 0
        np.testing.assert_array_equal(preds["y_pred_corrected"], preds["y_pred"])
        assert not (run / "models" / "age-ridge.json").read_text().count("bias_correction")
    else:
        assert bias["folds_corrected"] == 3
        assert (preds["y_pred_corrected"] != preds["y_pred"]).all()
        sidecar = json.loads((run / "models" / "age-ridge.json").read_text())
        assert sidecar["bias_correction"]["method"] == method
    # corrected and uncorrected side by side, with the gap-age correlation of each
    for key in ("mae", "mae_corrected", "gap_age_r", "gap_age_r_corrected"):
        assert np.isfinite(result[key])  # type: ignore[arg-type]
    out = predict_run(run, db=small_db, source="train", out=tmp_path / "p.parquet")
    age = out[out["target"] == "age"]
    if method == "none":
        np.testing.assert_array_equal(age["y_pred_corrected"], age["y_pred"])
    else:
        assert age["y_pred_corrected"].between(0, 120).all()


def test_an_unknown_bias_method_is_refused() -> None:
    with pytest.raises((ConfigError, ValidationError), match="bias_correction"):
        parse_config(config(bias_correction={"method": "linear"}))
    with pytest.raises((ConfigError, ValidationError), match="bias_correction"):
        parse_config(config(bias_correction={"method": "cole", "slope": 0.2}))


def test_a_run_with_an_old_linear_beheshti_sidecar_predicts_as_before(
    small_db: Path, tmp_path: Path
) -> None:
    """Sidecars written before the methods were named say 'linear-beheshti' for Cole's
    formula; such a run predicts ``(pred - intercept) / slope`` as it always did."""
    cfg = parse_config(
        config(
            targets=["age"], models={"age": ["ridge"]},
            validation={"schemes": ["kfold"], "folds": 3, "bootstrap": 100},
        )
    )  # fmt: skip
    run = tmp_path / "run"
    fit_pretrain(cfg, db=small_db, out=run)
    path = run / "models" / "age-ridge.json"
    sidecar = json.loads(path.read_text())
    sidecar["bias_correction"] = {
        "method": "linear-beheshti", "formula": "corrected = (predicted - intercept) / slope",
        "intercept": 12.0, "slope": 0.75, "n_samples": 150, "age_range": [20.0, 80.0],
        "min_slope": 0.05,
    }  # fmt: skip
    path.write_text(json.dumps(sidecar))
    out = predict_run(run, db=small_db, source="train", out=tmp_path / "p.parquet")
    age = out[out["target"] == "age"]
    np.testing.assert_allclose(age["y_pred_corrected"], (age["y_pred"] - 12.0) / 0.75)


def test_site_mean_prediction_is_out_of_fold() -> None:
    sites = np.array(["a"] * 6 + ["b"] * 6)
    subjects = np.array([f"s{i}" for i in range(12)])
    values = np.arange(12, dtype=float)
    oof = site_mean_oof(values, sites, subjects, folds=3, seed=0)
    for i in range(12):
        # never the scan's own value in its site's mean
        same = (sites == sites[i]) & (np.arange(12) != i)
        assert values[same].min() <= oof[i] <= values[same].max() or oof[i] == pytest.approx(
            values[np.arange(12) != i].mean()
        )
    # a subject's scans share a fold: its other session never predicts it
    subjects2 = np.array(["s0", "s0"] + [f"s{i}" for i in range(1, 11)])
    values2 = np.r_[100.0, 100.0, np.zeros(10)]
    oof2 = site_mean_oof(values2, np.array(["a"] * 12), subjects2, folds=3, seed=0)
    assert oof2[0] == oof2[1] == 0.0


def test_site_confounding_warns_only_when_site_covariates_carry_age(
    rng: np.random.Generator,
) -> None:
    n = 300
    site = rng.choice(["young", "old", "mixed"], n)
    age = np.where(site == "young", rng.uniform(18, 30, n), rng.uniform(20, 80, n))
    age = np.where(site == "old", rng.uniform(60, 85, n), age)
    meta = pd.DataFrame({
        "site": site, "subject_key": [f"p{i}" for i in range(n)], "age": age,
        "sex": rng.choice(["M", "F"], n),
    })  # fmt: skip
    res = site_confounding(meta, site_covariates=True, seed=1, n_boot=200)
    assert res["age"]["r2"] > 0.5 and res["confounded"]
    assert res["age"]["r2_ci"][0] > AGE_R2_WARN
    assert 0.35 < res["sex"]["auc"] < 0.65  # sex is not site-dependent here
    assert "site covariates" in res["warning"] and "age" in res["warning"]
    quiet = site_confounding(meta, site_covariates=False, seed=1, n_boot=0)
    assert quiet["confounded"] and quiet["warning"] is None
    balanced = meta.assign(age=rng.uniform(20, 80, n))
    res = site_confounding(balanced, site_covariates=True, seed=1, n_boot=0)
    assert res["age"]["r2"] < AGE_R2_WARN and res["warning"] is None
    single = site_confounding(meta.assign(site="one"), site_covariates=True, seed=1)
    assert single["age"] is None and single["warning"] is None


def test_fit_reports_site_confounding_and_narrow_age_sites(tmp_path: Path) -> None:
    """Metrics carry how well site predicts age; per-site R² is marked where ages are narrow,
    and the report hides it there with the reason."""
    from morphml.reports import render_html, summarize

    synthetic_table(tmp_path / "t.csv", 150, ["A", "B", "C"], seed=3)
    table = pd.read_csv(tmp_path / "t.csv")
    narrow = table["site"] == "C"
    table.loc[narrow, "age"] = np.linspace(30, 34, int(narrow.sum())).round(2)  # SD ~ 1.2 y
    table.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "map.yaml").write_text(MAP)
    db = tmp_path / "db.duckdb"
    ingest([tmp_path / "t.csv"], column_map=tmp_path / "map.yaml", source="train", db=db,
           key_file=tmp_path / "key")  # fmt: skip
    cfg = parse_config(
        config(
            targets=["age"], models={"age": ["ridge"]},
            features={"site_covariates": True},
            validation={"schemes": ["kfold"], "folds": 3, "bootstrap": 100},
        )
    )  # fmt: skip
    run = tmp_path / "run"
    fit_pretrain(cfg, db=db, out=run)
    metrics = json.loads((run / "metrics.json").read_text())
    conf = metrics["site_confounding"]
    assert conf["site_covariates"] is True and conf["n_sites"] == 3
    assert conf["age"]["r2"] > AGE_R2_WARN and conf["warning"]
    per_site = metrics["targets"]["age"]["ridge"][SCHEME_KEYS["kfold"]]["per_site"]
    assert per_site["C"]["r2_meaningful"] is False and per_site["C"]["age_sd"] < 5
    assert per_site["A"]["r2_meaningful"] is True
    summary = summarize(run)
    rows = {r["site"]: r for r in summary["pretrain"]["per_site"]["age"]["rows"]}
    assert rows["C"]["r2"] is None and "not a meaningful" in rows["C"]["note"]
    assert rows["A"]["r2"]["value"] == pytest.approx(per_site["A"]["r2"])
    assert any("Site–outcome confounding" in w for w in summary["warnings"])
    age_rows = summary["pretrain"]["performance"]["age"]["rows"]
    assert age_rows[0]["correction"].startswith("Beheshti (uses the known age)")
    html = render_html(summary)
    assert "Site alone predicts age with cross-validated R²" in html
    assert "Beheshti (uses the known age): slope" in html


@pytest.mark.slow
def test_fcon1000_leave_site_out_correction_never_worse(shared_data: Path, tmp_path: Path) -> None:
    """Real data: fcon1000, ridge, leave-site-out (23 folds). The Cole formula fitted on
    inner out-of-fold predictions nearly doubled this MAE (6.2 -> 10.2 years) and put
    people past 200 years; the default must not make it worse."""
    db = tmp_path / "db.duckdb"
    ingest(
        [shared_data / "pcntoolkit-demo" / "fcon1000.csv"],
        column_map=REPO / "configs" / "maps" / "fcon1000.yaml",
        source="fcon1000", db=db, key_file=tmp_path / "key",
    )  # fmt: skip
    cfg = parse_config({
        "kind": "pretrain", "cohort": {"sources": ["fcon1000"]},
        "features": {"atlases": ["a2009s", "aseg", "global"], "site_covariates": False},
        "targets": ["age"], "models": {"age": ["ridge"]},
        "tuning": {"trials": 2, "inner_folds": 3},
        "validation": {"schemes": ["leave_site_out"], "bootstrap": 100},
        "seed": 0, "device": "cpu",
    })  # fmt: skip
    run = tmp_path / "run"
    fit_pretrain(cfg, db=db, out=run, record=False)
    result = _age_result(run, "leave_site_out")
    assert result["bias_correction"]["folds"] == 23  # type: ignore[index]
    mae, corrected = float(result["mae"]), float(result["mae_corrected"])  # type: ignore[arg-type]
    assert corrected <= mae + MAE_MARGIN, (mae, corrected)
    # the gap no longer falls with age (uncorrected r is about -0.65)
    assert abs(float(result["gap_age_r_corrected"])) < abs(float(result["gap_age_r"]))  # type: ignore[arg-type]
    preds = pd.read_parquet(run / "predictions.parquet")
    gap = preds["y_pred_corrected"] - preds["y_true"]
    raw_gap = preds["y_pred"] - preds["y_true"]
    # plausible: no corrected gap beyond the largest uncorrected one plus 30 years, no age < 0
    assert (preds["y_pred_corrected"] > 0).all()
    assert gap.abs().max() <= raw_gap.abs().max() + 30.0
    # site alone predicts age in fcon1000: the metrics say so
    conf = json.loads((run / "metrics.json").read_text())["site_confounding"]
    assert conf["confounded"] and conf["age"]["r2"] > 0.3 and conf["warning"] is None


def test_audit_refits_a_config_written_before_bias_correction_with_cole(tmp_path: Path) -> None:
    """Runs fitted before the key existed used Cole with min_slope 0.05: the audit's re-fit
    must do the same; a config that states a method keeps it."""
    import hashlib

    import yaml

    from morphml.audit._audit import _check_config

    raw = parse_config(config()).model_dump(mode="json")
    del raw["bias_correction"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    manifest = {
        "config_hash": hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()
    }
    resolved, check = _check_config(tmp_path, manifest)
    assert check.status == "warning" and "bias_correction" in check.message
    assert resolved.bias_correction.method == "cole"
    assert resolved.bias_correction.min_slope == 0.05
    stated = parse_config(config(bias_correction={"method": "beheshti"}))
    raw = stated.model_dump(mode="json")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    manifest = {
        "config_hash": hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()
    }
    resolved, check = _check_config(tmp_path, manifest)
    assert check.status == "ok" and resolved.bias_correction.method == "beheshti"


def test_bias_correction_on_more_folds_refits_the_tuned_model(
    small_db: Path, tmp_path: Path
) -> None:
    def fit(bias: dict[str, object], out: Path) -> pd.DataFrame:
        cfg = parse_config(
            config(
                targets=["age"], models={"age": ["ridge"]},
                validation={"schemes": ["leave_site_out"], "folds": 3, "bootstrap": 100},
                bias_correction=bias,
            )
        )  # fmt: skip
        fit_pretrain(cfg, db=small_db, out=out)
        return pd.read_parquet(out / "predictions.parquet")

    # leave-site-out with 3 sites: 2 training sites, the tuning's inner folds hold one out
    base = fit({"method": "beheshti"}, tmp_path / "a")
    more = fit({"method": "beheshti", "folds": 2}, tmp_path / "b")
    np.testing.assert_array_equal(base["y_pred"], more["y_pred"])  # same tuned models
    bias = _age_result(tmp_path / "b", "leave_site_out")["bias_correction"]
    assert "refitted on 2 inner folds" in bias["fitted_on"]  # type: ignore[index]
    # the tuning used 3 inner folds (subjects), the correction 2 (sites): other lines
    assert not np.allclose(base["y_pred_corrected"], more["y_pred_corrected"])
