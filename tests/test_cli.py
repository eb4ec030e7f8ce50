"""The morphml command line: thin, one-line errors, JSON output."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from morphml import __version__
from morphml.cli import cli
from tests.conftest import SHARED_DATA

SOICHI = SHARED_DATA / "freesurfer-stats-tests/subjects/soichi"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_version() -> None:
    code, out, _ = run("--version")
    assert code == 0
    assert __version__ in out


def test_inspect_subject_json() -> None:
    code, out, _ = run("inspect", str(SOICHI), "--json")
    assert code == 0
    obj = json.loads(out)
    assert obj["software"] == "FreeSurfer"
    assert obj["version"] == "7.0.0"
    assert obj["features"]["aseg.na.Left-Thalamus.volume"] > 0
    assert "hayashis" not in out and "nid00762" not in out  # user and host of the real file


def test_inspect_file_text() -> None:
    code, out, _ = run("inspect", str(SOICHI / "stats" / "lh.aparc.stats"))
    assert code == 0
    assert "FreeSurfer 7.0.0" in out
    assert "aparc" in out


def test_inspect_bad_input_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "aseg.stats"
    bad.write_bytes(b"")
    code, _, err = run("inspect", str(bad))
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "empty file" in err
    assert "Traceback" not in err
    code, _, err = run("inspect", str(tmp_path / "nobody"))
    assert code == 2 and "no such directory" in err


def test_features_prints_aliases() -> None:
    code, out, _ = run("features", "--aliases")
    assert code == 0
    assert "Left-Thalamus-Proper -> Left-Thalamus" in out
    code, out, _ = run("features", "--atlas", "aparc", "--json")
    rows = json.loads(out)
    assert any(r["name"] == "aparc.lh.superiorfrontal.thickness" for r in rows)
    code, _, err = run("features", "--atlas", "nope")
    assert code == 2 and "unknown atlas" in err


def test_example_then_inspect(tmp_path: Path) -> None:
    code, out, _ = run("example", str(tmp_path / "sub"), "--software", "fastsurfer")
    assert code == 0 and "stats files" in out
    code, out, _ = run("inspect", str(tmp_path / "sub"), "--json")
    obj = json.loads(out)
    assert obj["software"] == "FastSurfer"
    assert "aseg_dkt" in obj["atlases"] and "cerebnet" in obj["atlases"]
