"""``morphml reference import|build|info`` and ``morphml deviations``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from morphml.cli._errors import UsageError, friendly

__all__ = ["deviations_command", "reference_group"]


def _check_out_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out}: exists and is not an empty folder; give a new folder")


@click.group("reference")
def reference_group() -> None:
    """Reference models: import a published one, build one from this database, inspect one."""


@reference_group.command("import")
@click.argument("archive", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["braincharts"]),
    required=True,
    help="The archive's format (braincharts: PCNtoolkit 0.x model zip as published).",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New folder REF.")
@click.option(
    "--sites",
    type=click.Path(path_type=Path),
    help="Published site list in design order [site_ids_*<N>sites.txt beside the archive].",
)
@friendly
def reference_import(archive: Path, fmt: str, out: Path, sites: Path | None) -> None:
    """Import a published model archive into morphml's own reference format (no pickle)."""
    from morphml.reference import import_braincharts

    _check_out_folder(out)
    ref = import_braincharts(archive, sites=sites)
    ref.save(out)
    click.echo(
        f"imported {len(ref.features)} features, {len(ref.sites)} sites from {archive.name} "
        f"to {out}"
    )
    if ref.unmapped:
        click.echo(f"not imported (no canonical feature id): {', '.join(ref.unmapped)}")
    click.echo(f"cite: {ref.provenance.get('citation', '')}")


@reference_group.command("build")
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=Path))
@click.option("--db", type=click.Path(path_type=Path), help="Database file [MORPHML_DB].")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New folder REF.")
@friendly
def reference_build(config_path: Path, db: Path | None, out: Path) -> None:
    """Fit a reference model (kind: reference config) on this database's healthy controls."""
    from morphml.reference import build_reference, load_reference_config

    config = load_reference_config(config_path)
    _check_out_folder(out)
    ref = build_reference(config, db=db)
    ref.save(out)
    prov = ref.provenance
    click.echo(
        f"built {len(ref.features)} features from {prov['n_people']} people, "
        f"{prov['n_sites']} sites ({prov['converged']} fits converged) to {out}"
    )


@reference_group.command("info")
@click.argument("ref_path", metavar="REF", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@friendly
def reference_info(ref_path: Path, as_json: bool) -> None:
    """Provenance, features, sites and licence of a reference model."""
    from morphml.reference import ReferenceModel

    info = ReferenceModel.load(ref_path).info()
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    prov = info["provenance"]
    click.echo(f"source     {prov.get('source')}")
    click.echo(f"people     {prov.get('n_people')} in {info['n_sites']} sites")
    by_atlas = ", ".join(f"{a} {n}" for a, n in sorted(info["features_by_atlas"].items()))
    click.echo(f"features   {info['n_features']} ({by_atlas})")
    click.echo(f"ages       {info['age_range'][0]:g} to {info['age_range'][1]:g} years")
    click.echo(f"warp       {info['warp']}")
    if prov.get("archive_sha256"):
        click.echo(f"sha256     {prov['archive_sha256']}")
    click.echo(f"morphml    {prov.get('morphml_version')}")
    if info["unmapped"]:
        click.echo(f"unmapped   {', '.join(info['unmapped'])}")
    click.echo(f"licence    {prov.get('licence')}")
    if prov.get("citation"):
        click.echo(f"cite       {prov['citation']}")


def _parse_controls(items: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise UsageError(
                f"--controls {item!r}: expected PHENOTYPE=VALUE, e.g. --controls diagnosis=control"
            )
        out.setdefault(name.strip(), []).append(value.strip())
    return out


@click.command("deviations")
@click.argument("ref_path", metavar="REF", type=click.Path(path_type=Path))
@click.option("--source", required=True, help="Score every scan of this source.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="FILE.parquet")
@click.option("--db", type=click.Path(path_type=Path), help="Database file [MORPHML_DB].")
@click.option(
    "--controls",
    "controls",
    multiple=True,
    metavar="PHENOTYPE=VALUE",
    help="Scans that adapt a new site (repeatable), e.g. diagnosis=control.",
)
@click.option(
    "--new-sites",
    type=click.Choice(["adapt", "prior", "refuse"]),
    default="adapt",
    show_default=True,
    help="Sites the reference does not know: adapt from controls, or fall back to the prior.",
)
@click.option(
    "--adaptation",
    type=click.Choice(["braincharts", "shrunk"]),
    default="braincharts",
    show_default=True,
)
@friendly
def deviations_command(
    ref_path: Path,
    source: str,
    out: Path,
    db: Path | None,
    controls: tuple[str, ...],
    new_sites: str,
    adaptation: str,
) -> None:
    """z-scores and centiles from a reference model for every scan of a source."""
    from morphml.reference import ReferenceModel, source_deviations

    if out.suffix != ".parquet":
        raise UsageError(f"--out {out}: expected a FILE.parquet")
    ref = ReferenceModel.load(ref_path)
    table = source_deviations(
        ref,
        source=source,
        db=db,
        controls=_parse_controls(controls),
        new_sites=new_sites,
        adaptation=adaptation,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out)
    n_features = sum(c.startswith("z:") for c in table.columns)
    status = table["site_status"].value_counts().to_dict()
    counts = ", ".join(f"{k} {v}" for k, v in sorted(status.items()))
    click.echo(f"wrote {len(table)} scans x {n_features} features to {out} (sites: {counts})")
