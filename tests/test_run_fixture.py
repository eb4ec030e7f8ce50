"""Run directories written by morphml 0.1.0 still load, predict, report and audit.

``tests/data/run-v0.1.0`` holds a small simulated database (its pseudonym key is a test key:
the data are simulated, no person's) with a pretrain run and a transfer run fitted on it,
written once by :func:`write_fixture`. Never regenerate it to make these tests pass: a failure
means the current code cannot read run directories users already have.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from morphml.audit import audit_run
from morphml.cli import cli
from morphml.pipelines import predict_run
from morphml.reports import render_html, summarize
from morphml.rundir import load_pretrained

FIXTURE = Path(__file__).resolve().parent / "data" / "run-v0.1.0"


def DB_GZ(folder: Path) -> Path:
    return folder / "morphml.duckdb.gz"


#: the test-only pseudonym key the fixture's database was ingested with (simulated data)
KEY = "f17e" * 16

PRETRAIN = {
    "kind": "pretrain",
    "name": "fixture-pretrain",
    "cohort": {"sources": ["public"]},
    "targets": ["age", "sex"],
    "models": {"age": ["ridge", "xgboost"], "sex": ["logistic"]},
    "tuning": {"trials": 2, "inner_folds": 2},
    "validation": {"schemes": ["kfold"], "folds": 3, "bootstrap": 100},
    "seed": 7,
    "device": "cpu",
}
TRANSFER = {
    "kind": "transfer",
    "name": "fixture-transfer",
    "cohort": {"sources": ["hospital"]},
    "target": {"name": "diagnosis", "type": "binary", "positive": "patient"},
    "representations": ["raw", "brain_age_gap", "normative_z"],
    "protocol": {"folds": 3, "repeats": 1, "train_sizes": ["all"], "permutations": 0},
    "components": 3,
    "seed": 7,
}


def write_fixture(folder: Path) -> None:
    """Simulate, ingest, pretrain and transfer into ``folder`` (run from the repository root).

    ``python -m tests.test_run_fixture --write-fixture tests/data/run-v0.1.0``

    The runs are fitted with ``folder`` as the working directory and relative paths, so the
    transfer run's config names its pretrain run as ``pretrain`` (its sibling) and the
    database records both run folders relative to itself: the fixture works wherever it is
    copied.
    """
    from morphml.config import parse_config
    from morphml.db import ingest
    from morphml.pipelines import fit_pretrain, fit_transfer
    from tests.test_transfer import MAP, TARGET_MAP, table

    folder = folder.resolve()
    if folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"{folder} is not empty")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pseudonym.key").write_text(KEY + "\n")
    (folder / "pseudonym.key").chmod(0o600)
    with tempfile.TemporaryDirectory() as tmp:
        # a simulated pretraining cohort (3 sites) and a clinical sample (1 other site) whose
        # patients look 4 years older: a few dozen features, so the database stays small
        public = table(150, ["A", "B", "C"], seed=11)
        public = public.drop(columns=["dx", "score", "response"])
        public.to_csv(Path(tmp) / "public.csv", index=False)
        hospital = table(60, ["H"], seed=12, pattern="ageing", years=4, prefix="H")
        hospital.to_csv(Path(tmp) / "hospital.csv", index=False)
        (Path(tmp) / "map.yaml").write_text(MAP)
        (Path(tmp) / "tmap.yaml").write_text(TARGET_MAP)
        for name, mapping in (("public", "map.yaml"), ("hospital", "tmap.yaml")):
            ingest(
                [Path(tmp) / f"{name}.csv"], column_map=Path(tmp) / mapping, source=name,
                db=folder / "morphml.duckdb", key_file=folder / "pseudonym.key",
            )  # fmt: skip
    here = Path.cwd()
    os.chdir(folder)
    try:
        fit_pretrain(parse_config(PRETRAIN), db="morphml.duckdb", out="pretrain")  # type: ignore[arg-type]
        fit_transfer(
            parse_config(TRANSFER),  # type: ignore[arg-type]
            db="morphml.duckdb",
            out="transfer",
            pretrained="pretrain",
        )
    finally:
        os.chdir(here)
    # DuckDB files are mostly empty blocks: 7.5 MiB that gzip to about 100 kB
    with (folder / "morphml.duckdb").open("rb") as raw, gzip.open(DB_GZ(folder), "wb", 9) as gz:
        shutil.copyfileobj(raw, gz)
    (folder / "morphml.duckdb").unlink()


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A private copy of the fixture (database unpacked, and the runs), free to change."""
    if not DB_GZ(FIXTURE).is_file():
        pytest.fail(f"the committed run fixture is missing: {FIXTURE}")
    folder = Path(shutil.copytree(FIXTURE, tmp_path / "fixture"))
    with gzip.open(DB_GZ(folder), "rb") as gz, (folder / "morphml.duckdb").open("wb") as raw:
        shutil.copyfileobj(gz, raw)
    return folder


def _manifest(run: Path) -> dict[str, object]:
    return json.loads((run / "manifest.json").read_text(encoding="utf-8"))


def test_pretrain_run_still_loads_and_transfer_names_it(copy: Path) -> None:
    run = load_pretrained(copy / "pretrain")
    assert run.run_id == _manifest(copy / "pretrain")["run_id"]
    assert sorted(run.models) == [
        "age/ridge",
        "age/xgboost",
        "sex/logistic",
        "sex/logistic_etiv_adjusted",
    ]
    assert run.feature_ids == _manifest(copy / "pretrain")["feature_ids"]
    pretrained = _manifest(copy / "transfer")["pretrained"]
    assert isinstance(pretrained, dict) and pretrained["run_id"] == run.run_id
    # the training cohort is still there, scan for scan
    frame = run.training_frame(copy / "morphml.duckdb")
    assert sorted(frame.X.index) == sorted(_manifest(copy / "pretrain")["scan_keys"])  # type: ignore[arg-type]


def test_pretrain_run_still_predicts(copy: Path) -> None:
    db = copy / "morphml.duckdb"
    result = predict_run(copy / "pretrain", db=db, source="public", out=copy / "p1.parquet")
    assert set(result["model"]) == {"ridge", "xgboost", "logistic", "logistic_etiv_adjusted"}
    assert set(result["target"]) == {"age", "sex"}
    stored = pd.read_parquet(copy / "pretrain" / "predictions.parquet")
    trained = set(stored["scan_key"])
    assert trained <= set(result["scan_key"])
    assert result.loc[result["scan_key"].isin(trained), "in_sample"].all()
    assert result["y_pred"].notna().all()
    # the same models give the same predictions every time
    again = predict_run(copy / "pretrain", db=db, source="public", out=copy / "p2.parquet")
    pd.testing.assert_frame_equal(result, again)
    pd.testing.assert_frame_equal(pd.read_parquet(copy / "p1.parquet"), result)


@pytest.mark.parametrize("name", ["pretrain", "transfer"])
def test_runs_still_report(copy: Path, name: str) -> None:
    summary = summarize(copy / name, db=copy / "morphml.duckdb")
    run_id = _manifest(copy / name)["run_id"]
    assert summary["kind"] == name and summary["run"]["run_id"] == run_id
    html = render_html(summary)
    assert "<html" in html.lower() and str(run_id) in html
    assert str(copy) not in html


@pytest.mark.slow
def test_pretrain_run_still_audits_as_reproduced(copy: Path) -> None:
    out = copy / "audit.json"
    res = CliRunner().invoke(
        cli, ["audit", str(copy / "pretrain"), "--db", str(copy / "morphml.duckdb"),
              "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "REPRODUCED" in res.output.splitlines()
    report = json.loads(out.read_text())
    assert report["verdict"] == "REPRODUCED" and report["tolerance"] == 0.0
    status = {c["name"]: c["status"] for c in report["checks"]}
    # the database rebuilds the stored data hash, and the re-fit gives identical results
    # (other package versions than the fixture's are a warning, results still compared)
    assert status.pop("packages") in ("ok", "warning")
    assert status == {"config": "ok", "database": "ok", "scans": "ok", "refit": "ok"}


@pytest.mark.slow
def test_transfer_run_still_audits_as_reproduced(copy: Path) -> None:
    result = audit_run(copy / "transfer", db=copy / "morphml.duckdb")
    assert result.verdict == "REPRODUCED", result.verdict
    status = {c.name: c.status for c in result.checks}
    assert status["scans"] == "ok" and status["config"] == "ok" and status["database"] == "ok"
    assert status["refit"] == "ok"


if __name__ == "__main__":  # regenerate the fixture: see write_fixture
    if sys.argv[1:2] == ["--write-fixture"] and len(sys.argv) == 3:
        write_fixture(Path(sys.argv[2]))
    else:
        raise SystemExit("usage: python -m tests.test_run_fixture --write-fixture DIRECTORY")
