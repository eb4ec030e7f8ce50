"""``morphml report RUN_DIR``: write a run's self-contained HTML report."""

from __future__ import annotations

import os
from pathlib import Path

import click

from morphml.cli._errors import friendly

__all__ = ["report_command"]


@click.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--out", type=click.Path(path_type=Path), help="HTML file to write [RUN_DIR/report.html]."
)
@click.option(
    "--db",
    type=click.Path(path_type=Path),
    help="Database the run was fitted on, for cohort facts, QC and SHAP [MORPHML_DB].",
)
@click.option(
    "--allow-stale", is_flag=True, help="Report a run marked stale (a withdrawal) anyway."
)
@friendly
def report_command(run_dir: Path, out: Path | None, db: Path | None, allow_stale: bool) -> None:
    """Write the HTML report of a run directory (pretrain or transfer).

    Without --db (or MORPHML_DB) the report uses the run directory alone.
    """
    from morphml.db import check_stale_run
    from morphml.reports import write_report

    if db is None and os.environ.get("MORPHML_DB"):
        db = Path(os.environ["MORPHML_DB"])
    check_stale_run(run_dir, db, allow_stale=allow_stale, command="report")
    written = write_report(run_dir, out=out, db=db)
    click.echo(f"report written to {written}")
