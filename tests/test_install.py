"""What installing morphml brings: Dask is an extra, and its absence is said in one line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from morphml.cli import cli
from morphml.exceptions import ConfigError
from morphml.scale import dask_client, require_dask

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _project() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    with PYPROJECT.open("rb") as fh:
        return dict(tomllib.load(fh)["project"])


def test_dask_is_an_extra_the_tests_install() -> None:
    project = _project()
    core = " ".join(project["dependencies"])
    assert "dask" not in core and "distributed" not in core
    extras = project["optional-dependencies"]
    assert any(d.startswith("distributed") for d in extras["scale"])
    assert any(d.startswith("dask-jobqueue") for d in extras["scale"])
    assert any("scale" in d for d in extras["test"])  # so CI runs the Dask tests


def test_missing_dask_is_one_line_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # "import distributed" fails
    with pytest.raises(ConfigError, match=r"^--scheduler needs Dask, .*'morphml\[scale\]'$"):
        require_dask("--scheduler")
    with pytest.raises(ConfigError, match=r"^--scheduler needs Dask"), dask_client("tcp://x:1"):
        pass
    with pytest.raises(ConfigError, match=r"^a local Dask cluster needs Dask"), dask_client():
        pass
    # the command line: one line on stderr, exit status 2, no traceback
    bids = tmp_path / "bids" / "sub-01" / "anat"
    bids.mkdir(parents=True)
    (bids / "sub-01_T1w.nii.gz").write_bytes(b"")
    result = CliRunner().invoke(
        cli, ["process", str(tmp_path / "bids"), "--out", str(tmp_path / "out"),
              "--executable", sys.executable, "--fs-license", str(PYPROJECT)],
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "a local Dask cluster needs Dask" in result.stderr
    assert "morphml[scale]" in result.stderr and "Traceback" not in result.stderr
