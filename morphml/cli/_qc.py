"""``morphml qc``: compute and store the QC flags of a database's scans, print a summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from morphml.cli._errors import UsageError, friendly

__all__ = ["qc_command"]


def _parse_settings(settings: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in settings:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(
                f"--set {item!r}: expected NAME=VALUE, e.g. --set euler_absolute=-300"
            )
        try:
            out[name.strip()] = float(raw)
        except ValueError:
            raise UsageError(f"--set {item!r}: {raw!r} is not a number") from None
    return out


@click.command("qc")
@click.option("--db", type=click.Path(path_type=Path), help="Database file [MORPHML_DB].")
@click.option("--source", "sources", multiple=True, help="Only scans of this source (repeatable).")
@click.option("--rule", "rules", multiple=True, help="Only this rule (repeatable; default: all).")
@click.option(
    "--thresholds",
    "thresholds_file",
    type=click.Path(path_type=Path),
    help="YAML mapping of threshold names to values.",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override one threshold (repeatable; after --thresholds).",
)
@click.option(
    "--list",
    "list_scans",
    is_flag=True,
    help="Also list every flag with its reason (--json always does).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@friendly
def qc_command(
    db: Path | None,
    sources: tuple[str, ...],
    rules: tuple[str, ...],
    thresholds_file: Path | None,
    settings: tuple[str, ...],
    list_scans: bool,
    as_json: bool,
) -> None:
    """Flag scans failing QC (Euler number, missing/zero/negative values, thickness range,
    multivariate outliers per site) and store the flags with their reasons."""
    from morphml.qc import qc_database, read_thresholds

    thresholds: dict[str, Any] = {}
    if thresholds_file is not None:
        thresholds.update(read_thresholds(thresholds_file))
    thresholds.update(_parse_settings(settings))
    report = qc_database(
        db,
        sources=list(sources) or None,
        thresholds=thresholds,
        rules=list(rules) or None,
    )
    if as_json:
        click.echo(json.dumps(report.summary(), indent=1))
        return
    for line in report.lines(list_scans=list_scans):
        click.echo(line)
