"""``morphml audit RUN_DIR``: re-fit a run and say whether it reproduces (exit 0) or not (1)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from morphml.cli._errors import friendly
from morphml.exceptions import AuditError

__all__ = ["audit"]


@click.command("audit")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--db", type=click.Path(path_type=Path), help="Database file [MORPHML_DB].")
@click.option(
    "--out", type=click.Path(path_type=Path), help="Write audit.json here [RUN_DIR/audit.json]."
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    help="Re-fit into this new directory and keep it (default: a temporary one).",
)
@click.option(
    "--always-refit", is_flag=True, help="Re-fit even when the config or data checks failed."
)
@click.option("--json", "as_json", is_flag=True, help="Print audit.json instead of the report.")
@friendly
def audit(
    run_dir: Path,
    db: Path | None,
    out: Path | None,
    workdir: Path | None,
    always_refit: bool,
    as_json: bool,
) -> None:
    """Check a run's scans, config and packages, re-fit it, and compare the results.

    Exits 0 when the run is reproduced, 1 when it is not, 2 when the audit cannot run.
    """
    from morphml.audit import audit_run

    result = audit_run(run_dir, db=db, workdir=workdir, always_refit=always_refit)
    report = result.to_dict()
    target = out if out is not None else run_dir / "audit.json"
    try:
        target.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    except OSError as err:
        raise AuditError(
            f"cannot write {target} ({err.strerror or err}); give another file with --out"
        ) from None
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        for line in result.lines():
            click.echo(line)
        click.echo(f"audit written to {target}")
    click.get_current_context().exit(0 if result.reproduced else 1)
