"""``morphml demo``: the whole job on a simulated cohort, no data, no network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from morphml.cli import cli


@pytest.mark.slow
def test_demo_runs_end_to_end_and_its_reports_open(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        cli, ["demo", "--out", str(out), "--subjects", "120", "--hospital-subjects", "70"]
    )
    assert result.exit_code == 0, result.output
    assert "report:" in result.output and "open the report in a browser" in result.output
    reports = sorted((out / "reports").glob("*.html"))
    assert [p.name for p in reports] == ["pretrain.html", "transfer.html"]

    pretrain = json.loads((out / "runs" / "pretrain" / "metrics.json").read_text())
    assert set(pretrain["targets"]) == {"age", "sex"}
    transfer = json.loads((out / "runs" / "transfer" / "metrics.json").read_text())
    assert "raw" in transfer["transfer"] and len(transfer["transfer"]) > 1
    assert transfer["target"]["n_positive"] > 0

    # nothing of the simulated people's original ids reaches a report
    participants = (out / "data" / "hospital" / "participants.tsv").read_text().splitlines()
    ids = [line.split("\t")[0] for line in participants[1:]]
    for report in reports:
        html = report.read_text()
        assert not [i for i in ids if i in html]
        assert str(tmp_path) not in html

    from tests._browser import check_in_browser

    for report in reports:
        check_in_browser(report, tmp_path / f"{report.stem}.png")


def test_demo_refuses_a_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "not empty" in result.output
    assert (tmp_path / "keep.txt").read_text() == "x"


def test_demo_refuses_too_few_subjects(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "d"), "--subjects", "10"])
    assert result.exit_code == 2
    assert "--subjects" in result.output
