"""``morphml simulate``: a simulated multi-site cohort as real stats folders."""

from __future__ import annotations

from pathlib import Path

import click

from morphml.cli._errors import UsageError, friendly

__all__ = ["simulate"]


@click.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--subjects", type=int, default=500, show_default=True)
@click.option("--sites", type=int, default=6, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--layout",
    type=click.Choice(["freesurfer", "fastsurfer", "mixed"]),
    default="mixed",
    show_default=True,
)
@friendly
def simulate(out: Path, subjects: int, sites: int, seed: int, layout: str) -> None:
    """Write a simulated multi-site cohort as real stats folders plus participants.tsv."""
    from morphml.simulate import simulate_cohort

    try:
        summary = simulate_cohort(
            out, n_subjects=subjects, n_sites=sites, seed=seed, layout=layout
        )
    except (FileExistsError, ValueError) as err:
        raise UsageError(str(err)) from None
    click.echo(
        f"wrote {summary.n_subjects} subjects, {summary.n_scans} scans "
        f"({summary.n_longitudinal} longitudinal), {summary.n_files} stats files to {out}"
    )
    for line in summary.sites:
        click.echo(f"  {line}")
    click.echo(
        f"planted on purpose: {len(summary.corrupt_files)} corrupt files and "
        f"{len(summary.qc_failures)} QC failures; ingest with --on-error skip to record the "
        "corrupt scans and keep the rest. Ground truth: "
        f"{summary.truth}"
    )
