"""``morphml inspect``, ``features`` and ``example``: stats files and the feature dictionary."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import click

from morphml.cli._errors import friendly

__all__ = ["example", "features", "inspect"]


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@friendly
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


@click.command()
@click.option("--atlas", help="Only this atlas (aparc, a2009s, DKT, aseg, global, ...).")
@click.option("--aliases", "aliases_only", is_flag=True, help="Only the alias table.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
@friendly
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


@click.command()
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
@friendly
def example(out: Path, software: str, fs_version: str, seed: int) -> None:
    """Write one simulated example subject folder (OUT/stats/...) to try the readers on."""
    import numpy as np

    from morphml.simulate import example_features, write_subject_stats

    rng = np.random.default_rng(seed)
    feats = example_features(rng, software=software, version=fs_version)
    written = write_subject_stats(out / "stats", feats, software=software, version=fs_version)
    click.echo(f"wrote {len(written)} stats files to {out / 'stats'}")
