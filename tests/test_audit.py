"""morphml audit: an untouched run reproduces; changed data, withdrawals and edits are named."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from morphml.audit import audit_run
from morphml.audit._audit import _compare_json, _compare_predictions
from morphml.cli import cli
from morphml.config import parse_config
from morphml.db import connect, ingest, withdraw
from morphml.exceptions import AuditError
from morphml.pipelines import fit_pretrain, package_versions
from morphml.simulate import simulate_cohort

CANARY = "zzcanaryaud1t"
CONFIG = {
    "kind": "pretrain",
    "features": {"atlases": ["aseg", "global"], "measures": ["volume"]},
    "models": {"age": ["ridge"], "sex": ["logistic"]},
    "tuning": {"trials": 2, "inner_folds": 2},
    "validation": {"schemes": ["kfold"], "folds": 3, "bootstrap": 100},
    "seed": 3,
    "device": "cpu",
}


@dataclass(frozen=True)
class Fitted:
    db: Path
    key: Path
    run: Path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    root = tmp_path_factory.mktemp("audit")
    simulate_cohort(root / "sim", n_subjects=60, n_sites=3, seed=3, canary=CANARY)
    db, key = root / "db.duckdb", root / "key"
    # a fixed key: pseudonyms, and so the scans' order and the folds, are the same every time
    key.write_text("5eed" * 16 + "\n")
    key.chmod(0o600)
    ingest([root / "sim"], source="sim", db=db, key_file=key, on_error="skip")
    fit_pretrain(parse_config(CONFIG), db=db, out=root / "run")
    return Fitted(db, key, root / "run")


@pytest.fixture
def copies(fitted: Fitted, tmp_path: Path) -> Fitted:
    """A private copy of the database and the run directory, free to change."""
    db = tmp_path / "db.duckdb"
    shutil.copyfile(fitted.db, db)
    return Fitted(db, fitted.key, Path(shutil.copytree(fitted.run, tmp_path / "run")))


def _manifest(run: Path) -> dict[str, object]:
    return json.loads((run / "manifest.json").read_text())


def _audit_cli(run: Path, db: Path, *extra: str) -> tuple[int, str, dict[str, object]]:
    out = run.parent / "audit.json"
    res = CliRunner().invoke(cli, ["audit", str(run), "--db", str(db), "--out", str(out), *extra])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    report = json.loads(out.read_text()) if out.exists() else {}
    return res.exit_code, res.output, report


def _n_runs(db: Path) -> int:
    with connect(db, read_only=True) as con:
        row = con.execute("SELECT count(*) FROM runs").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
def test_untouched_run_reproduces(copies: Fitted) -> None:
    before = _n_runs(copies.db)
    res = CliRunner().invoke(cli, ["audit", str(copies.run), "--db", str(copies.db)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "REPRODUCED" in lines
    report = json.loads((copies.run / "audit.json").read_text())
    assert report["reproduced"] is True and report["verdict"] == "REPRODUCED"
    assert report["tolerance"] == 0.0
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert status == {
        "config": "ok", "database": "ok", "scans": "ok", "packages": "ok", "refit": "ok"
    }  # fmt: skip
    assert "identical" in next(c for c in report["checks"] if c["name"] == "refit")["message"]
    # the re-fit records no run, and nothing identifying reaches the report
    assert _n_runs(copies.db) == before
    text = (copies.run / "audit.json").read_text() + res.output
    assert CANARY not in text and "canary" not in text.lower()
    assert str(copies.run) not in (copies.run / "audit.json").read_text()


def test_changed_value_fails_naming_the_scan(copies: Fitted) -> None:
    manifest = _manifest(copies.run)
    scan = manifest["scan_keys"][7]  # type: ignore[index]
    feature = manifest["feature_ids"][0]  # type: ignore[index]
    with connect(copies.db) as con:
        con.execute(
            "UPDATE measures SET value = value * 1.01 WHERE scan_key = ? AND feature_idx = "
            "(SELECT feature_idx FROM features WHERE feature_id = ?)",
            [scan, feature],
        )
    code, output, report = _audit_cli(copies.run, copies.db)
    assert code == 1, output
    assert "NOT REPRODUCED" in output
    scans = next(c for c in report["checks"] if c["name"] == "scans")  # type: ignore[union-attr]
    assert scans["status"] == "failed"
    assert scans["details"]["changed"] == [scan]
    assert f"1 scan whose stored values changed since the run: {scan}" in output
    assert report["reproduced"] is False
    assert str(report["verdict"]).startswith("NOT REPRODUCED: scans:")


def test_withdrawn_subject_fails_naming_the_withdrawal(copies: Fitted) -> None:
    manifest = _manifest(copies.run)
    scan = manifest["scan_keys"][3]  # type: ignore[index]
    result = withdraw(copies.db, source="sim", pseudonym=scan, key_file=copies.key)
    assert len(result.scrubbed) == 1 and not result.not_scrubbed
    # the withdrawal reached the run folder: the person's pseudonym left every file in it
    for path in copies.run.rglob("*"):
        if path.is_file():
            assert scan.encode() not in path.read_bytes(), path
    code, output, report = _audit_cli(copies.run, copies.db)
    assert code == 1, output
    assert scan not in output
    assert "withdrawal 1 removed 1 scan from this run's files" in output
    assert "the database marks this run stale: subject withdrawn (withdrawal 1)" in output
    checks = {c["name"]: c for c in report["checks"]}  # type: ignore[attr-defined]
    assert checks["scans"]["status"] == "failed"
    assert checks["scans"]["details"]["withdrawals"][0]["withdrawal_id"] == 1
    assert checks["database"]["status"] == "failed"
    assert checks["refit"]["status"] == "skipped"


def test_edited_config_fails_naming_the_key(copies: Fitted) -> None:
    path = copies.run / "config.yaml"
    data = yaml.safe_load(path.read_text())
    data["seed"] = 4
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    code, output, report = _audit_cli(copies.run, copies.db)
    assert code == 1, output
    assert "config.yaml was edited after the run" in output
    assert "seed (run 3, config.yaml 4)" in output
    config = next(c for c in report["checks"] if c["name"] == "config")  # type: ignore[union-attr]
    assert config["status"] == "failed"
    assert set(config["details"]["changed_keys"]) == {"seed"}


def test_edited_config_names_unrecorded_keys_only_by_hash(copies: Fitted) -> None:
    path = copies.run / "config.yaml"
    data = yaml.safe_load(path.read_text())
    data["cohort"]["min_age"] = 18
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = audit_run(copies.run, db=copies.db)
    assert not result.reproduced
    assert "cannot be named" in result.check("config").message
    # the edited cohort is not used to judge the scans: they are still all there
    assert result.check("scans").status == "warning"


@pytest.mark.slow
def test_package_mismatch_is_a_warning_and_results_still_compared(
    copies: Fitted, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = package_versions()

    def other_versions() -> dict[str, str]:
        return {**real, "numpy": "0.0.1"}

    monkeypatch.setattr("morphml.audit._audit.package_versions", other_versions)
    result = audit_run(copies.run, db=copies.db)
    packages = result.check("packages")
    assert packages.status == "warning"
    assert f"numpy {real['numpy']} -> 0.0.1" in packages.message
    assert packages.details["packages"] == {"numpy": {"run": real["numpy"], "now": "0.0.1"}}
    assert result.reproduced and result.verdict == "REPRODUCED"


@pytest.mark.slow
def test_changed_results_fail_naming_predictions_and_metric(copies: Fitted) -> None:
    metrics = json.loads((copies.run / "metrics.json").read_text())
    metrics["targets"]["age"]["ridge"]["kfold"]["mae"] += 0.5
    (copies.run / "metrics.json").write_text(json.dumps(metrics))
    preds = pd.read_parquet(copies.run / "predictions.parquet")
    preds.loc[5, "y_pred"] += 1e-9
    preds.to_parquet(copies.run / "predictions.parquet", index=False)
    workdir = copies.run.parent / "work"
    code, output, report = _audit_cli(copies.run, copies.db, "--workdir", str(workdir))
    assert code == 1, output
    refit = next(c for c in report["checks"] if c["name"] == "refit")  # type: ignore[union-attr]
    assert refit["status"] == "failed"
    assert "predictions.parquet: y_pred differs in 1 of" in refit["message"]
    assert f"scan_key {preds.loc[5, 'scan_key']}" in refit["message"]
    assert "targets.age.ridge.kfold.mae:" in refit["message"]
    assert (workdir / "refit" / "manifest.json").is_file()  # --workdir is kept


def test_missing_manifest_is_one_line_error(tmp_path: Path, fitted: Fitted) -> None:
    (tmp_path / "run").mkdir()
    res = CliRunner().invoke(cli, ["audit", str(tmp_path / "run"), "--db", str(fitted.db)])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0
    assert "no manifest.json" in res.output and "morphml fit" in res.output
    with pytest.raises(AuditError, match=r"no manifest\.json"):
        audit_run(tmp_path / "run", db=fitted.db)


def test_unknown_kind_and_missing_database_are_errors(copies: Fitted, tmp_path: Path) -> None:
    manifest = _manifest(copies.run)
    with pytest.raises(AuditError, match=r"database .*nope\.duckdb does not exist"):
        audit_run(copies.run, db=tmp_path / "nope.duckdb")
    manifest["kind"] = "mystery"
    (copies.run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AuditError, match="run kind 'mystery' cannot be audited"):
        audit_run(copies.run, db=copies.db)
    del manifest["scan_keys"]
    (copies.run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AuditError, match="missing scan_keys"):
        audit_run(copies.run, db=copies.db)


def test_compare_predictions_exact_or_within_tolerance() -> None:
    old = pd.DataFrame(
        {"scan_key": ["a", "b", "c"], "target": ["age"] * 3, "fold": [0, 1, 2],
         "y_pred": [30.0, np.nan, 50.0]}
    )  # fmt: skip
    assert _compare_predictions(old, old.copy(), 0.0) == ""
    nudged = old.copy()
    nudged.loc[2, "y_pred"] += 1e-9
    assert "y_pred differs in 1 of 3 rows (first: scan_key c, target age" in _compare_predictions(
        old, nudged, 0.0
    )
    assert _compare_predictions(old, nudged, 1e-6) == ""
    assert "differs" in _compare_predictions(old, nudged.assign(y_pred=old["y_pred"] + 1), 1e-6)
    relabelled = old.assign(scan_key=["a", "x", "c"])
    assert "scan_key differs in 1 of 3 rows" in _compare_predictions(old, relabelled, 1e-6)
    assert "rows" in _compare_predictions(old, old.iloc[:2], 0.0)
    assert "columns" in _compare_predictions(old, old.drop(columns="fold"), 0.0)


def test_compare_json_names_every_difference() -> None:
    old = {"a": {"mae": 1.0, "ci": [0.5, 1.5], "n": 3}, "b": "x", "gone": 1}
    new = {"a": {"mae": 1.0 + 1e-12, "ci": [0.5, 1.6], "n": 3}, "b": "y", "extra": True}
    diffs = _compare_json(old, new, 0.0)
    assert diffs == [
        "a.mae: 1.0 != 1.000000000001",
        "a.ci[1]: 1.5 != 1.6",
        "b: 'x' != 'y'",
        "gone: missing from the re-fit",
        "extra: only in the re-fit",
    ]
    assert _compare_json(old["a"], new["a"], 0.1) == []
    assert _compare_json({"v": float("nan")}, {"v": float("nan")}, 0.0) == []
    assert _compare_json([1, 2], [1, 2, 3], 0.0) == ["(top level): 2 items != 3 in the re-fit"]
