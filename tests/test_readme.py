"""The README's commands run as written.

Every ``morphml ...`` line of README.md's shell blocks is parsed by the current command line
(names, options, choices, required arguments), every config, map or data file it names exists,
and the Python block compiles. The quick commands of the tutorial (simulate, ingest, db info,
qc) then run as written against the shared data in a temporary home; the fit, predict, report
and audit steps take most of an hour on the full configs, so CI runs ``predict --source
hospital`` as written against a pretrain run of the same config with fewer trials and models
(same cohort and features), and parses the rest.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from morphml.cli import cli
from tests.conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def code_blocks(text: str, language: str) -> list[str]:
    """The bodies of the README's fenced blocks in ``language``."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def shell_commands(block: str) -> list[list[str]]:
    """The commands of a shell block: continuation lines joined, comments dropped, split on
    ``&&``, each as its words."""
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in [*words, "&&"]:
            if word == "&&":
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(word)
    return commands


def morphml_commands() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    return [
        cmd[1:]
        for block in code_blocks(text, "bash")
        for cmd in shell_commands(block)
        if cmd[0] == "morphml"
    ]


def _resolve(ctx: click.Context, args: list[str]) -> None:
    """Parse ``args`` into the command they name, down to the leaf, without running it."""
    command = ctx.command
    if isinstance(command, click.Group):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        assert rest, f"{ctx.command_path}: no command given"
        name, sub, sub_args = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        with sub.make_context(name, sub_args, parent=ctx) as child:
            _resolve(child, sub_args)


def parse(args: list[str]) -> None:
    with cli.make_context("morphml", list(args)) as ctx:
        _resolve(ctx, list(args))


def test_readme_has_the_tutorials_commands() -> None:
    names = {cmd[0] for cmd in morphml_commands()}
    assert {"demo", "ingest", "fit", "predict", "report", "audit", "db", "qc"} <= names


@pytest.mark.parametrize("args", morphml_commands(), ids=lambda a: " ".join(a)[:60])
def test_readme_command_parses(args: list[str]) -> None:
    parse(args)  # raises click's usage error on an unknown option, choice or command


@pytest.mark.parametrize("args", morphml_commands(), ids=lambda a: " ".join(a)[:60])
def test_readme_files_exist(args: list[str]) -> None:
    for word in args:
        if word.startswith(("configs/", "../shared/")):
            assert (ROOT / word).exists(), f"README names {word}, which does not exist"
            if word.endswith((".yaml", ".yml")):
                assert isinstance(yaml.safe_load((ROOT / word).read_text()), dict), word


def test_readme_python_compiles() -> None:
    for block in code_blocks(README.read_text(encoding="utf-8"), "python"):
        compile(block, "README.md", "exec")


def test_a_wrong_command_would_fail() -> None:
    with pytest.raises(click.UsageError):
        parse(["fit", "configs/pretrain-fcon1000.yaml", "--outt", "runs/x"])
    with pytest.raises(click.UsageError):
        parse(["qc", "[--json]"])


# --- running the tutorial's quick commands as written ---------------------------------------


def _tutorial(home: Path) -> list[tuple[list[str], dict[str, str]]]:
    """The tutorial's commands with the environment its ``export`` lines set (``$HOME`` is
    ``home``; ``/tmp/`` paths move under it)."""
    text = README.read_text(encoding="utf-8")
    env: dict[str, str] = {}
    out = []
    for block in code_blocks(text, "bash"):
        for cmd in shell_commands(block):
            words = [w.replace("$HOME", str(home)).replace("/tmp/", f"{home}/tmp/") for w in cmd]
            if words[0] == "export":
                name, _, value = words[1].partition("=")
                env[name] = value
            elif words[0] == "morphml" and env:
                out.append((words[1:], dict(env)))
    return out


def _invoke(args: list[str], env: dict[str, str]) -> Any:
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, f"morphml {' '.join(args)}:\n{result.output}"
    return result


@pytest.mark.slow
def test_readme_tutorial_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA}")
    monkeypatch.chdir(ROOT)
    steps = _tutorial(tmp_path)
    assert steps, "no tutorial commands after the export lines"
    env = steps[0][1]
    assert not Path(env["MORPHML_DB"]).parent.exists()  # ingest creates the database's folder
    quick = {"simulate", "ingest", "db", "qc"}
    ran = set()
    fit_args: list[str] = []
    for args, env in steps:
        if args[0] in quick:
            _invoke(args, env)
            ran.add(args[0])
        elif args[0] == "fit" and "--pretrained" not in args:
            fit_args = args
        elif args[0] == "predict":
            # the README's pretrain config with 2 trials and linear models only: same cohort
            # and features, so predict meets exactly what the full run would need
            config = yaml.safe_load((ROOT / fit_args[1]).read_text())
            config["models"] = {"age": ["ridge"], "sex": ["logistic"]}
            config["tuning"] = {"trials": 2, "inner_folds": 2}
            config["validation"] = {"schemes": ["kfold"], "folds": 2, "bootstrap": 100}
            quick_config = tmp_path / "pretrain-quick.yaml"
            quick_config.write_text(yaml.safe_dump(config))
            run_dir = args[1]  # predict RUN_DIR ...
            out = tmp_path / run_dir
            _invoke(["fit", str(quick_config), "--out", str(out)], env)
            predict = [str(out) if a == run_dir else a for a in args]
            predict[predict.index("--out") + 1] = str(tmp_path / "predictions.parquet")
            result = _invoke(predict, env)
            assert "predictions to" in result.output
            ran.add("predict")
            break
    assert {"ingest", "db", "qc", "predict"} <= ran, ran
