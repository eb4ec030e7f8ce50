"""``morphml process``: BIDS T1w images to FastSurfer / FreeSurfer stats folders."""

from __future__ import annotations

from pathlib import Path

import click

from morphml.cli._errors import UsageError, friendly

__all__ = ["process_command"]


def _gpus(value: str | None) -> tuple[int, ...] | str:
    if value is None or value.strip() == "":
        return ()
    if value.strip() == "visible":
        return "visible"
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise UsageError(
            f"--gpus must be comma-separated GPU indices (0,1) or 'visible', got {value!r}"
        ) from None


@click.command("process")
@click.argument("bids_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Derivatives folder (one sub-X_ses-Y folder per scan).")  # fmt: skip
@click.option("--engine", type=click.Choice(["fastsurfer", "freesurfer"]), default="fastsurfer",
              show_default=True)  # fmt: skip
@click.option("--runner", type=click.Choice(["native", "apptainer", "docker"]), default="native",
              show_default=True)  # fmt: skip
@click.option("--gpus", help="GPU indices for FastSurfer segmentations (0,1) or 'visible'.")
@click.option("--jobs", type=int, default=1, show_default=True,
              help="Surface reconstructions / recon-all runs at once (CPU slots).")  # fmt: skip
@click.option("--threads", type=int, default=1, show_default=True,
              help="Threads per engine process (--threads / -openmp).")  # fmt: skip
@click.option("--workers", type=int, default=1, show_default=True, help="Local Dask workers.")
@click.option("--cluster", type=click.Choice(["local", "slurm"]), default="local",
              show_default=True)  # fmt: skip
@click.option("--cluster-config", type=click.Path(path_type=Path),
              help="SLURM settings (YAML) for --cluster slurm.")  # fmt: skip
@click.option("--scheduler", help="Address of a running Dask scheduler (tcp://host:8786).")
@click.option("--fs-license", type=click.Path(path_type=Path), help="FreeSurfer license file.")
@click.option("--executable", help="Native runner: the engine program (default on PATH).")
@click.option("--image", help="Container image (Docker name or Apptainer .sif file).")
@click.option("--3T", "three_t", is_flag=True, help="3T atlas for the Talairach registration.")
@click.option("--no-parallel", is_flag=True, help="One hemisphere after the other.")
@click.option("--allow-root", is_flag=True, help="Pass FastSurfer's --allow_root.")
@click.option("--runs", type=click.Choice(["first", "last"]), default="first", show_default=True,
              help="Which run FastSurfer reads when a scan has several.")  # fmt: skip
@click.option("--ingest", "ingest_db", type=click.Path(path_type=Path),
              help="Ingest the finished scans into this database.")  # fmt: skip
@click.option("--source", help="Data source name for --ingest.")
@click.option("--key-file", type=click.Path(path_type=Path),
              help="Pseudonym key for --ingest [MORPHML_KEY_FILE].")  # fmt: skip
@click.option("--participants", type=click.Path(path_type=Path),
              help="Participants table for --ingest.")  # fmt: skip
@click.option("--map", "column_map", type=click.Path(path_type=Path),
              help="Column map of the participants table.")  # fmt: skip
@click.option("--plan-only", is_flag=True, help="Write the plan, print the commands, stop.")
@click.option("--quiet", is_flag=True, help="No line per finished step.")
@friendly
def process_command(
    bids_dir: Path,
    out: Path,
    engine: str,
    runner: str,
    gpus: str | None,
    jobs: int,
    threads: int,
    workers: int,
    cluster: str,
    cluster_config: Path | None,
    scheduler: str | None,
    fs_license: Path | None,
    executable: str | None,
    image: str | None,
    three_t: bool,
    no_parallel: bool,
    allow_root: bool,
    runs: str,
    ingest_db: Path | None,
    source: str | None,
    key_file: Path | None,
    participants: Path | None,
    column_map: Path | None,
    plan_only: bool,
    quiet: bool,
) -> None:
    """Run FastSurfer or FreeSurfer on every T1w scan of BIDS_DIR (resumable)."""
    from morphml.process import process

    result = process(
        bids_dir, out, engine=engine, runner=runner, gpus=_gpus(gpus), jobs=jobs,
        threads=threads, workers=workers, cluster=cluster, scheduler=scheduler,
        cluster_config=cluster_config, fs_license=fs_license, executable=executable,
        image=image, three_t=three_t, parallel=not no_parallel, allow_root=allow_root,
        runs=runs, plan_only=plan_only, ingest_db=ingest_db, source=source,
        key_file=key_file, participants=participants, column_map=column_map,
        progress=None if quiet else click.echo,
    )  # fmt: skip
    if plan_only:
        for sid, step, line in result.command_lines():
            click.echo(f"{sid} {step}: {line}")
        for subject, session in result.plan.without_t1w:
            click.echo(f"no T1w: {subject}{' ' + session if session else ''}")
    for line in result.lines():
        click.echo(line)
    click.echo(f"plan, logs and timings: {result.state_dir}")
    if result.failures:
        click.get_current_context().exit(1)
