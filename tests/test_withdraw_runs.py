"""Withdrawal reaches the run folders: nothing of the person is left in any file a run wrote.

Plant canaries (simulated cohort with identifying strings), fit, withdraw one person, then
search every file under the run folder for their pseudonyms and their values, as text and as
IEEE-754 bytes. Stale runs are then refused by ``predict`` and ``report`` unless
``--allow-stale``, and ``audit`` explains the difference.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from morphml.cli import cli
from morphml.config import parse_config
from morphml.db import check_stale_run, connect, ingest, withdraw
from morphml.exceptions import StaleRunError
from morphml.features import load_frame
from morphml.pipelines import fit_pretrain
from morphml.simulate import simulate_cohort

CANARY = "zzcanarywdr4w"
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
    root: Path
    db: Path
    key: Path
    run: Path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    root = tmp_path_factory.mktemp("withdraw-runs")
    simulate_cohort(root / "sim", n_subjects=60, n_sites=3, seed=5, canary=CANARY)
    db, key = root / "db.duckdb", root / "key"
    ingest([root / "sim"], source="sim", db=db, key_file=key, on_error="skip")
    fit_pretrain(parse_config(CONFIG), db=db, out=root / "run")
    return Fitted(root, db, key, root / "run")


@pytest.fixture
def copy(fitted: Fitted, tmp_path: Path) -> Fitted:
    """The database and the run folder side by side in a fresh folder (the runs table keeps
    the folder relative to the database, so the copy's withdrawal scrubs the copy)."""
    shutil.copyfile(fitted.db, tmp_path / "db.duckdb")
    shutil.copytree(fitted.run, tmp_path / "run")
    return Fitted(tmp_path, tmp_path / "db.duckdb", fitted.key, tmp_path / "run")


def _person(db: Path, scan: str) -> tuple[str, list[str], list[float], list[float]]:
    """Subject pseudonym, scan pseudonyms, ages and feature values of the scan's person."""
    with connect(db, read_only=True) as con:
        (subject,) = con.execute(
            "SELECT subject_key FROM scans WHERE scan_key = ?", [scan]
        ).fetchone() or ("",)
        scans = [
            r[0]
            for r in con.execute(
                "SELECT scan_key FROM scans WHERE subject_key = ?", [subject]
            ).fetchall()
        ]
        ages = [
            float(r[0])
            for r in con.execute(
                "SELECT age FROM scans WHERE subject_key = ? AND age IS NOT NULL", [subject]
            ).fetchall()
        ]
        values = [
            float(r[0])
            for r in con.execute(
                "SELECT value FROM measures WHERE scan_key IN (SELECT scan_key FROM scans "
                "WHERE subject_key = ?)",
                [subject],
            ).fetchall()
        ]
    return str(subject), scans, ages, values  # fmt: skip


def _others(db: Path, subject: str) -> set[float]:
    """Every age and value of the other people: a number one of them shares is no trace."""
    with connect(db, read_only=True) as con:
        rows = con.execute(
            "SELECT age FROM scans WHERE subject_key <> ? AND age IS NOT NULL UNION ALL "
            "SELECT m.value FROM measures m JOIN scans s USING (scan_key) "
            "WHERE s.subject_key <> ?",
            [subject, subject],
        ).fetchall()
    return {float(r[0]) for r in rows}


def _medians(db: Path, run: Path) -> set[float]:
    """The cohort medians of the run's columns (raw and as the model saw them).

    A median of an odd number of people is one person's value: imputers keep it, and it
    stays in the model file after a withdrawal as an aggregate of the cohort. Those values are
    not searched for; every other value of the person must be gone.
    """
    config = parse_config(CONFIG)
    frame = load_frame(db, config.cohort, config.features)
    raw = load_frame(
        db, config.cohort, config.features.model_copy(
            update={"log_volumes": False, "relative_thickness": False})
    )  # fmt: skip
    out: set[float] = set()
    for X in (frame.X, raw.X):
        out.update(float(v) for v in X.median(numeric_only=True).to_numpy())
    return out


def _files(run: Path) -> list[Path]:
    return sorted(p for p in run.rglob("*") if p.is_file())


def test_withdrawal_leaves_nothing_of_the_person_in_the_run_folder(copy: Fitted) -> None:
    manifest = json.loads((copy.run / "manifest.json").read_text())
    scan = manifest["scan_keys"][7]
    subject, scans, ages, values = _person(copy.db, scan)
    assert ages and values
    shared = _medians(copy.db, copy.run) | _others(copy.db, subject)
    # before: the run folder names the person and holds their age (the test can fail)
    blob = b"".join(p.read_bytes() for p in _files(copy.run))
    assert scan.encode() in blob
    predictions = pd.read_parquet(copy.run / "predictions.parquet")
    assert scan in set(predictions["scan_key"])

    result = CliRunner(env={"MORPHML_KEY_FILE": str(copy.key)}).invoke(
        cli, ["withdraw", "--pseudonym", scan, "--db", str(copy.db), "--source", "sim"]
    )
    assert result.exit_code == 0, result.output
    assert "scrubbed" in result.output and "predictions.parquet" in result.output

    needles: list[tuple[str, bytes]] = [(k, k.encode()) for k in (subject, *scans)]
    own = [v for v in (*ages, *values) if v not in shared]
    assert len(own) > 100  # hundreds of the person's numbers are theirs alone
    for number in own:
        needles.append((f"{number!r} (IEEE-754)", struct.pack("<d", number)))
        if len(repr(number).replace("-", "").replace(".", "")) >= 7:  # distinctive as text
            needles.append((repr(number), repr(number).encode()))
    for path in _files(copy.run):
        data = path.read_bytes()
        for what, needle in needles:
            assert needle not in data, f"{path.relative_to(copy.run)} still holds {what}"
    after = pd.read_parquet(copy.run / "predictions.parquet")
    assert len(after) == len(predictions) - int(predictions["scan_key"].isin(scans).sum())
    manifest = json.loads((copy.run / "manifest.json").read_text())
    (record,) = manifest["withdrawals"]
    assert record["withdrawal_id"] == 1 and record["n_scans_removed"] == len(scans)
    assert "predictions.parquet" in record["files_rewritten"]
    assert len(manifest["scan_keys"]) == len(set(manifest["scan_keys"]))
    assert CANARY not in (copy.run / "manifest.json").read_text()


def test_a_scrubbed_run_is_refused_by_predict_and_report_unless_allowed(copy: Fitted) -> None:
    scan = json.loads((copy.run / "manifest.json").read_text())["scan_keys"][2]
    withdraw(copy.db, source="sim", pseudonym=scan, key_file=copy.key)
    with pytest.raises(StaleRunError, match="subject withdrawn"):
        check_stale_run(copy.run, copy.db, command="predict")
    runner = CliRunner(env={"MORPHML_KEY_FILE": str(copy.key)})
    out = copy.root / "p.parquet"
    refused = runner.invoke(cli, ["predict", str(copy.run), "--db", str(copy.db), "--out",
                                  str(out)])  # fmt: skip
    assert refused.exit_code == 2 and "--allow-stale" in refused.stderr
    assert not out.exists()
    allowed = runner.invoke(cli, ["predict", str(copy.run), "--db", str(copy.db), "--out",
                                  str(out), "--allow-stale"])  # fmt: skip
    assert allowed.exit_code == 0, allowed.output
    assert scan not in set(pd.read_parquet(out)["scan_key"])
    # without a database the manifest alone tells
    report = runner.invoke(cli, ["report", str(copy.run), "--out", str(copy.root / "r.html")])
    assert report.exit_code == 2 and "withdrawal 1 removed 1 scans" in report.stderr


def test_an_unreachable_run_folder_stops_the_withdrawal_unless_allowed(
    copy: Fitted, tmp_path: Path
) -> None:
    scan = json.loads((copy.run / "manifest.json").read_text())["scan_keys"][4]
    moved = tmp_path / "elsewhere"
    copy.run.rename(moved)
    runner = CliRunner(env={"MORPHML_KEY_FILE": str(copy.key)})
    args = ["withdraw", "--pseudonym", scan, "--db", str(copy.db), "--source", "sim"]
    refused = runner.invoke(cli, args)
    assert refused.exit_code == 2
    assert str(copy.run) in refused.stderr and "Nothing was changed" in refused.stderr
    with connect(copy.db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM scans WHERE scan_key = ?", [scan]).fetchone() == (
            1,
        )
    done = runner.invoke(cli, [*args, "--allow-unreachable"])
    assert done.exit_code == 0, done.output
    assert "NOT scrubbed" in done.output and str(copy.run) in done.output
    # the folder that moved still holds the person: the user was told to delete it
    assert scan.encode() in (moved / "manifest.json").read_bytes()


def test_runs_record_their_folder_relative_to_the_database(fitted: Fitted) -> None:
    with connect(fitted.db, read_only=True) as con:
        rows = con.execute("SELECT run_dir FROM runs").fetchall()
    assert rows == [("run",)]
    assert np.all([not Path(r[0]).is_absolute() for r in rows])
