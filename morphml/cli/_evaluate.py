"""``morphml evaluate RUN_DIR``: external validation on another source."""

from __future__ import annotations

from pathlib import Path

import click

from morphml.cli._errors import friendly
from morphml.cli._fit import echo_pretrain_metrics

__all__ = ["evaluate"]


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--source", required=True, help="The source to validate on (never trained on).")
@click.option("--db", type=click.Path(path_type=Path), help="Database file [MORPHML_DB].")
@click.option("--out", type=click.Path(path_type=Path), help="Folder [RUN/external-SOURCE].")
@click.option("--allow-stale", is_flag=True, help="Evaluate a run someone it used withdrew from.")
@friendly
def evaluate(
    run_dir: Path, source: str, db: Path | None, out: Path | None, allow_stale: bool
) -> None:
    """External validation: score a pretrain run's final models on another source."""
    from morphml.pipelines import evaluate_run

    result = evaluate_run(run_dir, source=source, db=db, out=out, allow_stale=allow_stale)
    click.echo(f"external validation on {source}: written to {result.out_dir}")
    echo_pretrain_metrics(result.metrics)
