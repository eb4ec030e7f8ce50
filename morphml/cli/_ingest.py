"""``morphml ingest``: FreeSurfer/FastSurfer folders or tables into the database."""

from __future__ import annotations

from pathlib import Path

import click

from morphml.cli._errors import friendly

__all__ = ["ingest"]


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--db", type=click.Path(path_type=Path), help="Database file [MORPHML_DB].")
@click.option("--source", required=True, help="Name of the data source (pseudonyms use it).")
@click.option("--participants", type=click.Path(path_type=Path), help="Participants table.")
@click.option("--map", "column_map", type=click.Path(path_type=Path), help="YAML column map.")
@click.option(
    "--key-file", type=click.Path(path_type=Path), help="Pseudonym key [MORPHML_KEY_FILE]."
)
@click.option("--jobs", type=int, default=1, show_default=True, help="Parser processes.")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True)
@click.option(
    "--linkage-out",
    type=click.Path(path_type=Path),
    help="Write original id <-> pseudonym here (for the linkage manager only).",
)
@click.option("--allow-reenrol", is_flag=True, help="Accept people who withdrew earlier.")
@click.option("--scheduler", help="Parse on this Dask scheduler (tcp://host:8786), not --jobs.")
@friendly
def ingest(
    paths: tuple[Path, ...],
    db: Path | None,
    source: str,
    participants: Path | None,
    column_map: Path | None,
    key_file: Path | None,
    jobs: int,
    on_error: str,
    linkage_out: Path | None,
    allow_reenrol: bool,
    scheduler: str | None,
) -> None:
    """Ingest FreeSurfer/FastSurfer folders or tables into the database (one transaction)."""
    from morphml import ingest as run_ingest
    from morphml.db import db_path

    target = db_path(db)
    created = not target.exists()
    summary = run_ingest(  # what morphml.ingest does: QC inside the ingest's transaction
        list(paths),
        source=source,
        db=db,
        participants=participants,
        column_map=column_map,
        key_file=key_file,
        jobs=jobs,
        on_error=on_error,
        linkage_out=linkage_out,
        allow_reenrol=allow_reenrol,
        progress=True,
        scheduler=scheduler,
    )
    for line in summary.lines():
        click.echo(line)
    if created:  # say where: without --db and MORPHML_DB it is the current folder
        click.echo(f"created a new database {target.resolve()}")
