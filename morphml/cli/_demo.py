"""``morphml demo``: simulate, ingest, pretrain, transfer and report."""

from __future__ import annotations

from pathlib import Path

import click

from morphml.cli._errors import friendly

__all__ = ["demo"]


@click.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("morphml-demo"),
    show_default=True,
    help="A new or empty folder for everything the demo writes.",
)
@click.option("--subjects", type=int, default=400, show_default=True,
              help="People in the simulated public cohort.")  # fmt: skip
@click.option("--hospital-subjects", type=int, default=160, show_default=True,
              help="People in the simulated hospital cohort (controls and patients).")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@friendly
def demo(out: Path, subjects: int, hospital_subjects: int, seed: int) -> None:
    """Simulate, ingest, pretrain, transfer and report, with no data and no network."""
    from morphml.pipelines import run_demo

    result = run_demo(
        out, subjects=subjects, hospital_subjects=hospital_subjects, seed=seed, echo=click.echo
    )
    for line in result.lines:
        click.echo(f"  {line}")
    steps = ", ".join(f"{name} {sec:.0f} s" for name, sec in result.seconds.items())
    click.echo(f"done in {sum(result.seconds.values()):.0f} s ({steps})")
    click.echo(f"database: {result.db}")
    for report in result.reports:
        click.echo(f"report:   {report}")
    click.echo(f"open the report in a browser: file://{result.reports[-1].resolve()}")
