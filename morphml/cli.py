"""The ``morphml`` command: parse arguments, call the public API, print, set the exit code.

Every error morphml raises on purpose is printed as one line on stderr and the command exits
with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click

from morphml._utils._cli import UsageError, friendly
from morphml._utils._lazy import LazyCommand, LazyGroup
from morphml._version import __version__

_UsageError = UsageError
_friendly = friendly


# Commands defined in their own modules, imported only when they run (so that --help and
# --version answer at once). One line each, sorted: name, module, click object, the first
# sentence of its docstring (tests/test_cli.py checks that the two agree).
# --- command registry ---
_LAZY_COMMANDS = {
    "audit": LazyCommand("morphml.audit._cli", "audit", "Check a run's scans, config and packages, re-fit it, and compare the results."),  # noqa: E501
    "deviations": LazyCommand("morphml.reference._cli", "deviations_command", "z-scores and centiles from a reference model for every scan of a source."),  # noqa: E501
    "process": LazyCommand("morphml.process._cli", "process_command", "Run FastSurfer or FreeSurfer on every T1w scan of BIDS_DIR (resumable)."),  # noqa: E501
    "qc": LazyCommand("morphml.qc._cli", "qc_command", "Flag scans failing QC (Euler number, missing/zero/negative values, thickness range, multivariate outliers per site) and store the flags with their reasons."),  # noqa: E501
    "reference": LazyCommand("morphml.reference._cli", "reference_group", "Reference models: import a published one, build one from this database, inspect one."),  # noqa: E501
    "report": LazyCommand("morphml.reports._cli", "report_command", "Write the HTML report of a run directory (pretrain or transfer)."),  # noqa: E501
}  # fmt: skip
# --- end of command registry ---


@click.group(
    cls=LazyGroup,
    lazy_commands=_LAZY_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", prog_name="morphml")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def cli(debug: bool) -> None:
    """morphml: brain-morphometry machine learning from FreeSurfer / FastSurfer outputs."""


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_friendly
def inspect(path: Path, as_json: bool) -> None:
    """Show software, version, atlases and features of a stats file or subject folder."""
    from morphml.io import read_stats_file, read_subject

    if path.is_file():
        sf = read_stats_file(path)
        features = sf.features()
        out: dict[str, Any] = {
            "kind": "file",
            "software": sf.software,
            "version": sf.version,
            "atlas": sf.atlas,
            "hemi": sf.hemi,
            "structures": len(sf.structures),
            "measures": len(sf.measures),
            "provenance": dict(sf.provenance),
            "features": features,
        }
    else:
        rec = read_subject(path)
        features = rec.features
        out = {
            "kind": "subject",
            "software": rec.software,
            "version": rec.version,
            "atlases": list(rec.atlases),
            "files": [
                {"name": f.name, "atlas": f.atlas, "software": f.software, "version": f.version}
                for f in rec.files
            ],
            "skipped": dict(rec.skipped),
            "features": features,
        }
    if as_json:
        click.echo(json.dumps(out, indent=1, sort_keys=False))
        return
    click.echo(f"software  {out['software']} {out['version']}")
    if out["kind"] == "file":
        click.echo(f"atlas     {out['atlas']} ({out['hemi']})")
        click.echo(f"rows      {out['structures']} structures, {out['measures']} measures")
    else:
        click.echo(f"files     {len(out['files'])} read, {len(out['skipped'])} skipped")
    by_atlas = Counter(key.split(".", 1)[0] for key in features)
    click.echo(f"features  {len(features)}")
    for atlas, count in sorted(by_atlas.items()):
        click.echo(f"  {atlas:<12} {count}")
    for name, reason in out.get("skipped", {}).items():
        click.echo(f"skipped   {name}: {reason}")


@cli.command()
@click.option("--atlas", help="Only this atlas (aparc, a2009s, DKT, aseg, global, ...).")
@click.option("--aliases", "aliases_only", is_flag=True, help="Only the alias table.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
@_friendly
def features(atlas: str | None, aliases_only: bool, as_json: bool) -> None:
    """Print the canonical feature dictionary and every alias with its origin."""
    from morphml.io import ATLASES, dictionary_table

    if atlas is not None and atlas not in ATLASES:
        from morphml.exceptions import FeatureIdError

        raise FeatureIdError(f"unknown atlas {atlas!r}; expected one of {sorted(ATLASES)}")
    rows = [
        r
        for r in dictionary_table()
        if (atlas is None or r["atlas"] == atlas) and (not aliases_only or r["kind"] == "alias")
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        if r["kind"] == "alias":
            click.echo(
                f"alias    {r['atlas']:<10} {r['name']} -> {r['canonical']}  ({r['origin']})"
            )
        else:
            click.echo(f"feature  {r['name']}")


@cli.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--software",
    type=click.Choice(["freesurfer", "fastsurfer"]),
    default="fastsurfer",
    show_default=True,
)
@click.option("--version", "fs_version", default="7.4.1", show_default=True,
              help="FreeSurfer version whose layout to write.")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@_friendly
def example(out: Path, software: str, fs_version: str, seed: int) -> None:
    """Write one simulated example subject folder (OUT/stats/...) to try the readers on."""
    import numpy as np

    from morphml.io._writer import example_features, write_subject_stats

    rng = np.random.default_rng(seed)
    feats = example_features(rng, software=software, version=fs_version)
    written = write_subject_stats(out / "stats", feats, software=software, version=fs_version)
    click.echo(f"wrote {len(written)} stats files to {out / 'stats'}")


@cli.command()
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
@_friendly
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
    from morphml.db import db_path
    from morphml.db import ingest as run_ingest
    from morphml.qc import qc_at_ingest

    target = db_path(db)
    created = not target.exists()
    summary = run_ingest(
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
        quality_control=qc_at_ingest,
    )
    for line in summary.lines():
        click.echo(line)
    if created:  # say where: without --db and MORPHML_DB it is the current folder
        click.echo(f"created a new database {target.resolve()}")


@cli.command()
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
@_friendly
def simulate(out: Path, subjects: int, sites: int, seed: int, layout: str) -> None:
    """Write a simulated multi-site cohort as real stats folders plus participants.tsv."""
    from morphml.simulate import simulate_cohort

    try:
        summary = simulate_cohort(
            out, n_subjects=subjects, n_sites=sites, seed=seed, layout=layout
        )
    except (FileExistsError, ValueError) as err:
        raise _UsageError(str(err)) from None
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


@cli.command()
@click.argument("original_id", required=False)
@click.option("--db", type=click.Path(path_type=Path), help="Database file [MORPHML_DB].")
@click.option("--source", required=True, help="The source the person was ingested under.")
@click.option("--pseudonym", help="Their subject or scan pseudonym instead of ORIGINAL_ID.")
@click.option(
    "--key-file", type=click.Path(path_type=Path), help="Pseudonym key [MORPHML_KEY_FILE]."
)
@click.option(
    "--allow-unreachable",
    is_flag=True,
    help="Withdraw even when some run folders cannot be scrubbed (listed; delete them).",
)
@_friendly
def withdraw(
    original_id: str | None,
    db: Path | None,
    source: str,
    pseudonym: str | None,
    key_file: Path | None,
    allow_unreachable: bool,
) -> None:
    """Remove a person from every table and every run folder that used them, mark those runs
    stale, rewrite the file."""
    from morphml.db import withdraw as run_withdraw

    if (original_id is None) == (pseudonym is None):
        raise _UsageError("give exactly one of ORIGINAL_ID or --pseudonym")
    result = run_withdraw(
        db, source=source, original_id=original_id, pseudonym=pseudonym, key_file=key_file,
        allow_unreachable=allow_unreachable,
    )  # fmt: skip
    click.echo(
        f"withdrawal {result.withdrawal_id}: removed {result.n_scans} scans; "
        f"{result.n_runs_marked} runs marked stale; database file rewritten"
    )
    for line in result.scrubbed:
        click.echo(f"  scrubbed {line}")
    for line in result.not_scrubbed:
        click.echo(f"  NOT scrubbed: {line}; delete or scrub that folder yourself")


@cli.group("db")
def db_group() -> None:
    """Inspect, export, upgrade or rewrite the database file."""


@db_group.command("info")
@click.option("--db", type=click.Path(path_type=Path), help="Database file [MORPHML_DB].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_friendly
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
@_friendly
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
@_friendly
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
@_friendly
def db_rewrite(db: Path | None) -> None:
    """Rewrite the file so deleted values cannot be recovered from its free blocks."""
    from morphml.db import rewrite_database

    rewrite_database(db)
    click.echo("database file rewritten")


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=Path))
@click.option("--db", type=click.Path(path_type=Path), help="Database file [MORPHML_DB].")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory.")
@click.option("--no-resume", is_flag=True, help="Refuse to continue an interrupted run.")
@click.option(
    "--pretrained",
    type=click.Path(path_type=Path),
    help="kind: transfer: the pretrain run directory (overrides the config's 'pretrained').",
)
@click.option(
    "--allow-stale", is_flag=True, help="kind: transfer: accept a pretrain run marked stale."
)
@click.option("--storage", help="Optuna studies in this storage (postgresql://...) [pretrain].")
@click.option("--scheduler", help="Run tuning trials on this Dask scheduler [pretrain].")
@_friendly
def fit(
    config_path: Path,
    db: Path | None,
    out: Path,
    no_resume: bool,
    pretrained: Path | None,
    allow_stale: bool,
    storage: str | None,
    scheduler: str | None,
) -> None:
    """Run a config (kind: pretrain or transfer) and write the run directory."""
    from morphml.config import PretrainConfig, load_config

    config = load_config(config_path)
    if isinstance(config, PretrainConfig):
        from morphml.pipelines import fit_pretrain

        if pretrained is not None or allow_stale:
            raise _UsageError("--pretrained and --allow-stale apply to kind: transfer configs")
        result = fit_pretrain(config, db=db, out=out, resume=not no_resume, storage=storage,
                              scheduler=scheduler, progress=True)  # fmt: skip
        click.echo(f"run {result.run_id} written to {result.run_dir}")
        _echo_pretrain_metrics(result.metrics)
        return
    from morphml.pipelines import fit_transfer

    if storage is not None or scheduler is not None:
        raise _UsageError("--storage and --scheduler apply to kind: pretrain configs")
    transfer = fit_transfer(
        config, db=db, out=out, pretrained=pretrained, allow_stale=allow_stale, progress=True,
    )  # fmt: skip
    click.echo(f"run {transfer.run_id} written to {transfer.run_dir}")
    click.echo(transfer.table)


def _echo_pretrain_metrics(metrics: dict[str, Any]) -> None:
    for target, models in metrics["targets"].items():
        for model, schemes in models.items():
            for scheme, m in schemes.items():
                if target == "age":
                    click.echo(
                        f"  age  {model:<24} {scheme:<15} MAE {m['mae']:.2f} "
                        f"[{m['mae_ci'][0]:.2f}, {m['mae_ci'][1]:.2f}]  r {m['r']:.3f}"
                    )
                else:
                    click.echo(
                        f"  sex  {model:<24} {scheme:<15} AUC {m['auc']:.3f} "
                        f"[{m['auc_ci'][0]:.3f}, {m['auc_ci'][1]:.3f}]"
                    )


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--db", type=click.Path(path_type=Path), help="Database file [MORPHML_DB].")
@click.option("--source", help="Only scans of this source.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="FILE.parquet")
@click.option("--allow-stale", is_flag=True, help="Accept a run marked stale (a withdrawal).")
@_friendly
def predict(
    run_dir: Path, db: Path | None, source: str | None, out: Path, allow_stale: bool
) -> None:
    """Predict age and sex for scans in the database with a run's final models."""
    from morphml.pipelines import predict_run
    from morphml.pipelines._predict import in_sample_count

    result = predict_run(run_dir, db=db, source=source, out=out, allow_stale=allow_stale)
    click.echo(f"wrote {len(result)} predictions to {out}")
    seen, n_scans = in_sample_count(result)
    if seen:
        click.echo(
            f"morphml: warning: {seen} of {n_scans} scans were in the run's training data: their "
            "predictions are in-sample (optimistic, no measure of accuracy; the run's "
            "predictions.parquet holds the out-of-fold ones). Column in_sample marks them.",
            err=True,
        )


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--source", required=True, help="The source to validate on (never trained on).")
@click.option("--db", type=click.Path(path_type=Path), help="Database file [MORPHML_DB].")
@click.option("--out", type=click.Path(path_type=Path), help="Folder [RUN/external-SOURCE].")
@click.option("--allow-stale", is_flag=True, help="Evaluate a run someone it used withdrew from.")
@_friendly
def evaluate(
    run_dir: Path, source: str, db: Path | None, out: Path | None, allow_stale: bool
) -> None:
    """External validation: score a pretrain run's final models on another source."""
    from morphml.pipelines import evaluate_run

    result = evaluate_run(run_dir, source=source, db=db, out=out, allow_stale=allow_stale)
    click.echo(f"external validation on {source}: written to {result.out_dir}")
    _echo_pretrain_metrics(result.metrics)


@cli.command()
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
@_friendly
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


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``morphml`` console script."""
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="morphml")


if __name__ == "__main__":  # pragma: no cover
    main()
