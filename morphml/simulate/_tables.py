"""Tables a statistician receives instead of subject folders, written from a simulated cohort.

Two shapes, read back from the stats folders :func:`simulate_cohort` wrote (so the values are
the simulated FreeSurfer outputs, not new draws):

* :func:`write_table_exports`: what ``aparcstats2table`` / ``asegstats2table`` write, one file
  per hemisphere × atlas × measure (``lh.aparc.thickness`` ... 12 files) plus one
  ``Measure:volume`` file, each with the scan id in its first column, and a phenotype CSV whose
  id column has its own name (``FILE_ID``), as public table releases come;
* :func:`write_wide_csv`: a PCNtoolkit-style wide CSV (one row per scan) with the quirks real
  releases have: repeated ids for repeated scans of one person at different ages (no session
  column), ``.1`` copies that are all zero, and alias pairs (``Left-Thalamus-Proper`` beside an
  all-zero ``Left-Thalamus``, ``G&S`` beside an all-zero ``G_and_S``).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from morphml.exceptions import MorphmlError

__all__ = ["write_table_exports", "write_wide_csv"]

_SURFACE = (("aparc", "aparc"), ("a2009s", "aparc.a2009s"))
_MEASURES = ("thickness", "area", "volume")
_HEMI_GLOBAL = {"thickness": "MeanThickness", "area": "WhiteSurfArea"}
_ASEG_GLOBALS = ("EstimatedTotalIntraCranialVol", "BrainSegVol", "BrainSegVolNotVent")
#: aseg columns that get an all-zero ``.1`` copy in the wide CSV
_DOT_COPIES = ("Left-Lateral-Ventricle", "Right-Lateral-Ventricle", "3rd-Ventricle")


def _scans(cohort: Path) -> list[tuple[str, str | None, dict[str, float], dict[str, str]]]:
    """(participant id, session, features, participants row) of every readable scan."""
    from morphml.db import discover
    from morphml.io import read_subject

    rows: dict[tuple[str, str], dict[str, str]] = {}
    with (cohort / "participants.tsv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            rows[(row["participant_id"], row["session_id"])] = row
    out = []
    for scan in discover([cohort]).scans:
        try:
            record = read_subject(scan.path)
        except MorphmlError:
            continue  # the simulator plants corrupt files on purpose
        found = rows.get((scan.subject, scan.session or ""))
        if found is not None:
            out.append((scan.subject, scan.session, dict(record.features), found))
    return out


def _write(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]], sep: str) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=sep, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _value(features: dict[str, float], fid: str) -> str:
    value = features.get(fid)
    return "" if value is None else f"{value:.6g}"


def write_table_exports(cohort: str | Path, out: str | Path) -> list[Path]:
    """Write a simulated cohort as FreeSurfer table exports plus a phenotype CSV.

    Parameters
    ----------
    cohort : str or Path
        A folder written by :func:`simulate_cohort` (layout ``freesurfer``: FastSurfer has no
        Desikan-Killiany ``aparc``).
    out : str or Path
        Folder for the 13 tables (``lh.aparc_table_thickness.tsv`` ... ``aseg_table.tsv``,
        tab-separated as the FreeSurfer tools write them) and ``phenotype.csv`` (id column
        ``FILE_ID``: the scan's folder-style id; ``AGE_AT_SCAN``; ``SEX`` 1 = male 2 = female;
        ``SITE_ID``).

    Returns
    -------
    list of Path
        The 13 table files, then the phenotype file.
    """
    scans = _scans(Path(cohort))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    ids = [s if not ses else f"{s}_{ses}" for s, ses, _, _ in scans]
    written: list[Path] = []
    for atlas, annot in _SURFACE:
        for hemi in ("lh", "rh"):
            for measure in _MEASURES:
                prefix = f"{atlas}.{hemi}."
                regions = sorted(
                    {
                        f[len(prefix) :].rsplit(".", 1)[0]
                        for _, _, feats, _ in scans
                        for f in feats
                        if f.startswith(prefix) and f.endswith(f".{measure}")
                    }
                )
                fids = [f"{atlas}.{hemi}.{r}.{measure}" for r in regions]
                header = [f"{hemi}.{annot}.{measure}"] + [f"{hemi}_{r}_{measure}" for r in regions]
                if measure in _HEMI_GLOBAL:
                    name = _HEMI_GLOBAL[measure]
                    fids.append(f"global.{hemi}.{name}.{measure}")
                    header.append(f"{hemi}_{name}_{measure}")
                rows = [
                    [i, *(_value(feats, f) for f in fids)]
                    for i, (_, _, feats, _) in zip(ids, scans, strict=True)
                ]
                path = folder / f"{hemi}.{annot}_table_{measure}.tsv"
                _write(path, header, rows, "\t")
                written.append(path)
    structures = sorted(
        {f.split(".")[2] for _, _, feats, _ in scans for f in feats if f.startswith("aseg.na.")}
    )
    fids = [f"aseg.na.{s}.volume" for s in structures]
    globals_ = [g for g in _ASEG_GLOBALS if any(f"global.na.{g}" in f for f in scans[0][2])]
    header = ["Measure:volume", *structures, *globals_]
    rows = []
    for i, (_, _, feats, _) in zip(ids, scans, strict=True):
        glob = [
            next((_value(feats, f) for f in feats if f.startswith(f"global.na.{g}.")), "")
            for g in globals_
        ]
        rows.append([i, *(_value(feats, f) for f in fids), *glob])
    path = folder / "aseg_table.tsv"
    _write(path, header, rows, "\t")
    written.append(path)
    pheno = folder / "phenotype.csv"
    _write(
        pheno,
        ["FILE_ID", "AGE_AT_SCAN", "SEX", "SITE_ID"],
        [
            [i, row["age"], row["sex"], row["site"]]
            for i, (_, _, _, row) in zip(ids, scans, strict=True)
        ],
        ",",
    )
    written.append(pheno)
    return written


def write_wide_csv(cohort: str | Path, out: str | Path, *, quirks: bool = True) -> Path:
    """Write a simulated cohort as one PCNtoolkit-style wide CSV.

    Columns: ``sub_id``, ``age``, ``sex`` (0 = female, 1 = male), ``site``, the Destrieux
    thickness columns (``lh_G&S_frontomargin_thickness`` ...), ``lh/rh_MeanThickness_thickness``,
    aseg volumes with FreeSurfer 5/6 names (``Left-Thalamus-Proper``) and ``eTIV``.

    With ``quirks`` (the default), as real releases have them: ``sub_id`` is the participant,
    so a person scanned twice has two rows with one id at different ages and no session
    column; ``Left-Lateral-Ventricle.1`` and two more ``.1`` copies are all zero;
    ``Left-Thalamus`` / ``Right-Thalamus`` are all-zero aliases of the ``-Proper`` columns and
    ``lh_G_and_S_frontomargin_thickness`` an all-zero alias of ``lh_G&S_frontomargin_thickness``.

    Returns
    -------
    Path
        The CSV file (``out``).
    """
    scans = _scans(Path(cohort))
    first = scans[0][2]
    thick = sorted(f for f in first if f.startswith(("a2009s.lh.", "a2009s.rh.")) and
                   f.endswith(".thickness"))  # fmt: skip
    aseg = sorted(f for f in first if f.startswith("aseg.na.") and f.endswith(".volume"))
    columns: list[tuple[str, str | None]] = []
    for fid in thick:
        _, hemi, region, _ = fid.split(".")
        columns.append((f"{hemi}_{region.replace('_and_', '&')}_thickness", fid))
    for hemi in ("lh", "rh"):
        columns.append(
            (f"{hemi}_MeanThickness_thickness", f"global.{hemi}.MeanThickness.thickness")
        )
    for fid in aseg:
        name = fid.split(".")[2]
        if name in ("Left-Thalamus", "Right-Thalamus"):
            name += "-Proper"
        columns.append((name, fid))
    etiv = next(f for f in first if f.startswith("global.na.eTIV."))
    columns.append(("eTIV", etiv))
    if quirks:
        columns += [
            (f"{name}.1", None) for name in _DOT_COPIES if f"aseg.na.{name}.volume" in first
        ]
        columns += [("Left-Thalamus", None), ("Right-Thalamus", None)]
        columns.append(("lh_G_and_S_frontomargin_thickness", None))
    rows = []
    for subject, session, feats, row in scans:
        sub_id = subject if quirks else (subject if not session else f"{subject}_{session}")
        sex = {"1": "1", "2": "0"}.get(row["sex"], "")
        values = ["0" if fid is None else _value(feats, fid) for _, fid in columns]
        rows.append([sub_id, row["age"], sex, row["site"], *values])
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, ["sub_id", "age", "sex", "site", *(c for c, _ in columns)], rows, ",")
    return path
