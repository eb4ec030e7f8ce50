"""``morphml predict RUN_DIR``: predictions of a run's final models."""

from __future__ import annotations

from pathlib import Path

import click

from morphml.cli._errors import friendly

__all__ = ["predict"]


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--db", type=click.Path(path_type=Path), help="Database file [MORPHML_DB].")
@click.option("--source", help="Only scans of this source.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="FILE.parquet")
@click.option("--allow-stale", is_flag=True, help="Accept a run marked stale (a withdrawal).")
@friendly
def predict(
    run_dir: Path, db: Path | None, source: str | None, out: Path, allow_stale: bool
) -> None:
    """Predict age and sex for scans in the database with a run's final models."""
    from morphml import predict as predict_scans
    from morphml.pipelines import in_sample_count

    result = predict_scans(run_dir, db=db, source=source, out=out, allow_stale=allow_stale)
    click.echo(f"wrote {len(result)} predictions to {out}")
    seen, n_scans = in_sample_count(result)
    if seen:
        click.echo(
            f"morphml: warning: {seen} of {n_scans} scans were in the run's training data: their "
            "predictions are in-sample (optimistic, no measure of accuracy; the run's "
            "predictions.parquet holds the out-of-fold ones). Column in_sample marks them.",
            err=True,
        )
