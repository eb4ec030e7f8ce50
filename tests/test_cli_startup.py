"""``morphml --help`` and ``--version`` import no heavy package; lazy commands still work."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from morphml.cli import _LAZY_COMMANDS, cli

#: packages that take most of a second or more to import; none may load for --help/--version
HEAVY = ("numpy", "pandas", "sklearn", "scipy", "xgboost", "optuna", "dask", "distributed",
         "duckdb", "pyarrow", "matplotlib", "jinja2", "skops", "pydantic")  # fmt: skip


def _modules_after(*argv: str) -> set[str]:
    """The top-level modules loaded after running ``morphml ARGV`` in a fresh interpreter."""
    code = (
        "import sys, json\n"
        "from morphml.cli import main\n"
        "try:\n"
        f"    main({list(argv)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stderr.write(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("argv", [("--version",), ("--help",), ("qc", "--help")])
def test_help_and_version_import_no_heavy_package(argv: tuple[str, ...]) -> None:
    loaded = _modules_after(*argv)
    if argv == ("qc", "--help"):  # a command's own help imports its module, not the others
        assert "xgboost" not in loaded and "optuna" not in loaded
        return
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in (*_LAZY_COMMANDS, "ingest", "fit", "predict", "db", "demo"):
        assert f"  {name} " in result.stdout, name


@pytest.mark.parametrize("name", sorted(_LAZY_COMMANDS))
def test_registry_help_matches_the_command(name: str) -> None:
    entry = _LAZY_COMMANDS[name]
    command = entry.load()
    assert isinstance(command, click.Command)
    assert command.name == name
    assert entry.short_help == command.get_short_help_str(limit=10_000)


def test_lazy_command_runs() -> None:
    result = CliRunner().invoke(cli, ["report", "--help"])
    assert result.exit_code == 0
    assert "RUN_DIR" in result.stdout
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.stderr
