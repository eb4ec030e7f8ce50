"""``morphml db info|export|upgrade|rewrite``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from morphml.cli._errors import friendly

__all__ = ["db_group"]


@click.group("db")
def db_group() -> None:
    """Inspect, export, upgrade or rewrite the database file."""


@db_group.command("info")
@click.option("--db", type=click.Path(path_type=Path), help="Database file [MORPHML_DB].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@friendly
def db_info(db: Path | None, as_json: bool) -> None:
    """Counts by source, site, software and version, atlas, sex, age range and QC."""
    from morphml.db import database_info, format_info

    info = database_info(db)
    click.echo(json.dumps(info, indent=1) if as_json else format_info(info))


@db_group.command("export")
@click.option("--db", type=click.Path(path_type=Path), help="Database file [MORPHML_DB].")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="FILE.parquet or FILE.csv")  # fmt: skip
@click.option("--atlas", "atlases", multiple=True, help="Only these atlases (repeatable).")
@click.option("--measure", "measures", multiple=True, help="Only these measures (repeatable).")
@click.option("--source", "sources", multiple=True, help="Only these sources (repeatable).")
@friendly
def db_export(
    db: Path | None,
    out: Path,
    atlases: tuple[str, ...],
    measures: tuple[str, ...],
    sources: tuple[str, ...],
) -> None:
    """Write the wide matrix (one row per scan, keyed by pseudonym, with phenotypes)."""
    from morphml.db import export_wide

    result = export_wide(
        db,
        out,
        atlases=list(atlases) or None,
        measures=list(measures) or None,
        sources=list(sources) or None,
    )
    click.echo(
        f"wrote {result.n_rows} scans x {result.n_features} features "
        f"(+{result.n_phenotypes} phenotypes) to {out}"
    )


@db_group.command("upgrade")
@click.option("--db", type=click.Path(path_type=Path), help="Database file [MORPHML_DB].")
@friendly
def db_upgrade(db: Path | None) -> None:
    """Upgrade an older database file to this morphml's schema (one transaction)."""
    from morphml.db import upgrade

    before, after = upgrade(db)
    if before == after:
        click.echo(f"schema version {after}: already current")
    else:
        click.echo(f"upgraded schema version {before} -> {after}")


@db_group.command("rewrite")
@click.option("--db", type=click.Path(path_type=Path), help="Database file [MORPHML_DB].")
@friendly
def db_rewrite(db: Path | None) -> None:
    """Rewrite the file so deleted values cannot be recovered from its free blocks."""
    from morphml.db import rewrite_database

    rewrite_database(db)
    click.echo("database file rewritten")
