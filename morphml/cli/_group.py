"""The ``morphml`` command: parse arguments, call the public API, print, set the exit code.

Every error morphml raises on purpose is printed as one line on stderr and the command exits
with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import click

from morphml._utils._lazy import LazyCommand, LazyGroup
from morphml._version import __version__
from morphml.cli._db import db_group
from morphml.cli._demo import demo
from morphml.cli._evaluate import evaluate
from morphml.cli._fit import fit
from morphml.cli._ingest import ingest
from morphml.cli._predict import predict
from morphml.cli._readers import example, features, inspect
from morphml.cli._simulate import simulate
from morphml.cli._withdraw import withdraw

__all__ = ["cli", "main"]


# Every command lives in its own module of this package. The commands of this registry are
# imported only when they run (so that --help and --version answer at once). One line each,
# sorted: name, module, click object, the first sentence of its docstring
# (tests/test_cli_startup.py checks that the two agree). The commands added to the group below
# it import only click at module level; click lists them itself.
# --- command registry ---
_LAZY_COMMANDS = {
    "audit": LazyCommand("morphml.cli._audit", "audit", "Check a run's scans, config and packages, re-fit it, and compare the results."),  # noqa: E501
    "deviations": LazyCommand("morphml.cli._reference", "deviations_command", "z-scores and centiles from a reference model for every scan of a source."),  # noqa: E501
    "process": LazyCommand("morphml.cli._process", "process_command", "Run FastSurfer or FreeSurfer on every T1w scan of BIDS_DIR (resumable)."),  # noqa: E501
    "qc": LazyCommand("morphml.cli._qc", "qc_command", "Flag scans failing QC (Euler number, missing/zero/negative values, thickness range, multivariate outliers per site) and store the flags with their reasons."),  # noqa: E501
    "reference": LazyCommand("morphml.cli._reference", "reference_group", "Reference models: import a published one, build one from this database, inspect one."),  # noqa: E501
    "report": LazyCommand("morphml.cli._report", "report_command", "Write the HTML report of a run directory (pretrain or transfer)."),  # noqa: E501
}  # fmt: skip
# --- end of command registry ---


@click.group(
    cls=LazyGroup,
    lazy_commands=_LAZY_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", prog_name="morphml")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def cli(debug: bool) -> None:
    """morphml: brain-morphometry machine learning from FreeSurfer / FastSurfer outputs."""


for _command in (inspect, features, example, ingest, simulate, withdraw, db_group, fit, predict,
                 evaluate, demo):  # fmt: skip
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``morphml`` console script."""
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="morphml")
