"""Table sets: any number of ``aparcstats2table`` / ``asegstats2table`` files plus one
participants file, joined on the subject id.

FreeSurfer's table tools write one file per hemisphere, atlas and measure (``lh.aparc``
thickness, ``rh.aparc.a2009s`` area, ``asegstats2table`` volumes ...), each with the subject id
in its first column. A release of such tables comes with a phenotype file whose id column has
its own name (``FILE_ID``); the column map states it as ``participants: {path: ..., id: ...}``.

Ids in the tables but not in the participants file, and the reverse, are listed on the result
(``without_participants``, ``participants_only``) for the caller to report or refuse.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from morphml.exceptions import TableImportError
from morphml.io._columnmap import ColumnMap, load_column_map
from morphml.io._tables import (
    WideTable,
    _export_context,
    participants_file,
    read_table_export,
    read_wide_table,
)

__all__ = ["is_table_export", "read_table_set"]


def is_table_export(path: str | Path) -> bool:
    """Whether a file's first header cell names an aparcstats2table / asegstats2table table
    (``lh.aparc.thickness``, ``rh.aparc.a2009s.area``, ``Measure:volume`` ...).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "lh.tsv"
    >>> _ = p.write_text("lh.aparc.thickness\\tlh_insula_thickness\\nsub1\\t2.9\\n")
    >>> is_table_export(p)
    True
    """
    try:
        with Path(path).open(encoding="utf-8-sig", newline="") as handle:
            line = handle.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError):
        return False
    for sep in ("\t", ",", ";"):
        if sep in line:
            first = next(csv.reader([line], delimiter=sep), [""])
            break
    else:
        first = line.split()
    if not first:
        return False
    try:
        return _export_context(first[0]) is not None
    except TableImportError:
        return True  # an export header with an unknown atlas: read_table_export says which


def read_table_set(
    paths: Sequence[str | Path],
    column_map: ColumnMap | str | Path,
    *,
    participants_path: str | os.PathLike[str] | None = None,
    on_bad_row: str = "error",
) -> WideTable:
    """Read FreeSurfer table exports and join them with one participants file.

    Parameters
    ----------
    paths : sequence of path-like
        ``aparcstats2table`` / ``asegstats2table`` outputs (any atlas, hemisphere, measure,
        delimiter), one row per subject.
    column_map : ColumnMap, str or Path
        Reads the participants file: ``participants`` (``{path: FILE, id: COLUMN}``, or a
        path and ``id``), age, sex coding, site, phenotypes.
    participants_path : path-like, optional
        Overrides the map's ``participants`` path.
    on_bad_row : {"error", "skip"}
        ``skip`` leaves out participants rows that cannot be read (see
        :func:`read_wide_table`).

    Returns
    -------
    WideTable
        One row per id of the tables; participants columns are missing for ids without a
        participants row (listed in ``without_participants``).

    Raises
    ------
    TableImportError
        A file cannot be read, two files disagree on a feature both hold (files and lines
        named), or the participants file is missing.
    """
    cmap = column_map if isinstance(column_map, ColumnMap) else load_column_map(column_map)
    if not paths:
        raise TableImportError("no table files given")
    frames = [read_table_export(p) for p in paths]
    names = [str(p) for p in paths]
    features = _join(frames, names)
    part_file = participants_file(cmap, Path(paths[0]), participants_path)
    ids = features.index.to_numpy(dtype=object)
    empty = {c: k for f in frames for c, k in f.attrs.get("empty_columns", {}).items()}
    not_imported = {c: r for f in frames for c, r in f.attrs.get("not_imported", {}).items()}
    if part_file is None:
        participants = pd.DataFrame({"id": ids, "age": np.nan, "sex": None})
        participants["site"] = cmap.site_value
        return WideTable(
            features=features,
            participants=participants,
            source_file=Path(paths[0]).name,
            not_imported=not_imported,
            empty_columns=empty,
            without_participants=list(ids),
        )
    part_id = cmap.participants_id
    if part_id is None:
        raise TableImportError(
            f"{part_file}: the column map names no id column for the participants file; add "
            "'participants: {path: FILE, id: COLUMN}' (or 'id: COLUMN')"
        )
    part_map = cmap.model_copy(update={"id": part_id, "participants": None})
    part = read_wide_table(part_file, part_map, on_bad_row=on_bad_row)
    people = part.participants.set_index("id")
    if people.index.has_duplicates:
        raise TableImportError(
            f"{part_file}: an id repeats with a session column; table sets take one "
            "participants row per subject"
        )
    joined = people.reindex(ids)
    joined.insert(0, "id", ids)
    joined = joined.reset_index(drop=True)
    for column in joined.columns:
        if joined[column].dtype == object:
            values = joined[column].to_numpy(dtype=object)
            values[pd.isna(values)] = None
            joined[column] = values
    in_tables = set(ids)
    known = set(people.index)
    skipped = part.skipped_rows
    return WideTable(
        features=features,
        participants=joined,
        source_file=Path(paths[0]).name,
        participants_file=part_file.name,
        ignored=part.ignored,
        unrecognised=part.unrecognised,
        not_imported=not_imported | {c: r for c, r in part.not_imported.items()},
        duplicate_columns=part.duplicate_columns,
        dropped_ids=part.dropped_ids,
        without_participants=[i for i in ids if i not in known and i not in skipped],
        participants_only=[i for i in people.index if i not in in_tables],
        empty_columns=empty,
        skipped_rows=skipped,
    )


def _join(frames: list[pd.DataFrame], names: list[str]) -> pd.DataFrame:
    """Outer join on the id; a feature held by several files must agree where both have it."""
    out: pd.DataFrame | None = None
    owner: dict[str, int] = {}
    for k, frame in enumerate(frames):
        if out is None:
            out = frame.copy()
            owner = dict.fromkeys(frame.columns, k)
            continue
        shared = [c for c in frame.columns if c in owner]
        for column in shared:
            j = owner[column]
            common = out.index.intersection(frame.index)
            a = out.loc[common, column].to_numpy(dtype=np.float64)
            b = frame.loc[common, column].to_numpy(dtype=np.float64)
            same = np.isclose(a, b, rtol=1e-6, atol=0.0, equal_nan=True)
            if not same.all():
                i = int(np.flatnonzero(~same)[0])
                who = common[i]
                la = frames[j].attrs.get("lines", {}).get(who, "?")
                lb = frame.attrs.get("lines", {}).get(who, "?")
                raise TableImportError(
                    f"{names[j]} line {la} and {names[k]} line {lb}: both hold {column} for "
                    f"the same subject but differ ({a[i]:g} vs {b[i]:g}); these files do not "
                    "come from the same FreeSurfer run, or one of them was edited"
                )
        new = [c for c in frame.columns if c not in owner]
        out = out.join(frame[new], how="outer")
        if shared:
            # ids only in this file: take their shared values from it
            out.loc[frame.index, shared] = out.loc[frame.index, shared].fillna(frame[shared])
        owner.update(dict.fromkeys(new, k))
    if out is None:
        raise TableImportError("no table files given")
    out.index.name = "id"
    out.attrs = {}
    return out
