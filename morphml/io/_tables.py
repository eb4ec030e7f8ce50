"""Table importers: FreeSurfer table exports and wide CSV/TSV files with a column map.

Two entry points:

* :func:`read_table_export` reads what ``aparcstats2table`` / ``asegstats2table`` write
  (one row per subject, the first header cell names the table: ``lh.aparc.thickness``,
  ``lh.aparc.a2009s.area``, ``Measure:volume``).
* :func:`read_wide_table` reads any wide table (ENIGMA protocol sheets, PCNtoolkit demo CSVs,
  site exports) together with a :class:`~morphml.io.ColumnMap` that states the id, age, sex,
  site and phenotype columns; feature columns are recognised from their names.

Column names become canonical feature ids through :func:`recognise_column`. Anything the
importer cannot place is an error that lists the columns, never a silent drop, and a column
that looks identifying (a name, a date, contact details, free text) is refused unless the map
names it.

Error messages name rows by their line in the file and never repeat an id or a date read from
the file: the message may end up in a log.
"""

from __future__ import annotations

import csv
import difflib
import fnmatch
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from morphml.exceptions import ColumnMapError, TableImportError
from morphml.io._columnmap import (
    DEFAULT_MISSING_VALUES,
    ColumnMap,
    IdentifyingColumns,
    RowFilter,
    load_column_map,
)
from morphml.io._dictionary import (
    GLOBAL_MEASURES,
    canonical_global,
    canonical_region,
    feature_id,
    known_regions,
)

__all__ = [
    "NOT_IMPORTED",
    "WideTable",
    "identifying_kind",
    "participants_file",
    "read_table_export",
    "read_wide_table",
    "recognise_column",
]

# aparcstats2table --meas values; the column suffix is the same word
_REGION_MEASURES = (
    "thicknessstd",
    "thickness",
    "area",
    "volume",
    "meancurv",
    "gauscurv",
    "foldind",
    "curvind",
)
_APARC_COLUMN = re.compile(r"^(lh|rh)_(.+)_(" + "|".join(_REGION_MEASURES) + r")$")
_HEMI_GLOBAL_COLUMN = re.compile(r"^(lh|rh)_([A-Za-z]+)$")
_ENIGMA_CORTICAL = re.compile(r"^([LR])_(.+)_(thickavg|surfavg)$")
_ENIGMA_MEASURES = {"thickavg": "thickness", "surfavg": "area"}
# ENIGMA subcortical protocol: L/R + short name -> aseg structure (after Left-/Right-)
_ENIGMA_SUBCORTICAL = {
    "latvent": "Lateral-Ventricle",
    "thal": "Thalamus",
    "caud": "Caudate",
    "put": "Putamen",
    "pal": "Pallidum",
    "hippo": "Hippocampus",
    "amyg": "Amygdala",
    "accumb": "Accumbens-area",
}
# ENIGMA cortical protocol hemisphere summaries (from ?h.aparc.stats '# Measure Cortex' lines)
_ENIGMA_GLOBALS = {
    "LThickness": ("lh", "MeanThickness"),
    "RThickness": ("rh", "MeanThickness"),
    "LSurfArea": ("lh", "WhiteSurfArea"),
    "RSurfArea": ("rh", "WhiteSurfArea"),
}
# global measures FreeSurfer reports per hemisphere only (no whole-brain value of its own)
_HEMI_ONLY_GLOBALS = frozenset({"NumVert", "WhiteSurfArea", "PialSurfArea", "MeanThickness"})
# Desikan-Killiany regions that DKT dropped; their absence is how a DKT table gives itself away
_DK_ONLY = frozenset({"bankssts", "frontalpole", "temporalpole"})

#: Column names (lower case) that hold values derived from other columns, and why they are
#: not imported. They appear in FreeSurfer 5 "brainstats" tables (ABIDE preprocessed).
NOT_IMPORTED: dict[str, str] = {
    "totalmeancorticalthickness": "derived: unweighted mean of lh and rh MeanThickness",
    "totalwhitesurfarea": "derived: lh + rh WhiteSurfArea",
    "totalpialsurfarea": "derived: lh + rh PialSurfArea",
    "totalbrainvolume": (
        "derived: CortexVol + CerebralWhiteMatterVol + SubCortGrayVol "
        "(not FreeSurfer's BrainSegVol)"
    ),
}

# first header cell of an aparcstats2table export: annotation part -> atlas
_EXPORT_ATLASES = {
    "aparc": "aparc",
    "aparc.a2009s": "a2009s",
    "aparc.dktatlas": "DKT",
    "aparc.dktatlas40": "DKT",
    "aparc.dktatlas.mapped": "DKT",
    "aparc.pial": "aparc_pial",
    "ba": "BA",
    "ba_exvivo": "BA",
    "ba.thresh": "BA_thresh",
    "ba_exvivo.thresh": "BA_thresh",
    "entorhinal_exvivo": "entorhinal",
}
_SURFACE_HEADER = re.compile(r"^(lh|rh)\.(.+)\.(" + "|".join(_REGION_MEASURES) + r")$")
_SEGMENTATION_HEADER = re.compile(r"^Measure:(\w+)$")
# asegstats2table --meas -> canonical measure
_SEGMENTATION_MEASURES = {"volume": "volume", "mean": "normmean", "std": "normstd"}

_SEX = {"female": "F", "male": "M"}
_DOT_COPY = re.compile(r"^(.+)\.(\d+)$")
_DUPLICATE_HINT = (
    "if the rows are repeated scans of one person, say so in the column map with "
    "'session: COLUMN' or 'sessions_from: age'; otherwise fix the file, or set "
    "'duplicate_ids: drop' to leave the id out"
)
_SHOWN = 8  # how many offending columns an error lists before "... and N more"


@cache
def _known(atlas: str) -> frozenset[str]:
    return frozenset(known_regions(atlas))


def _global_feature(name: str) -> str | None:
    """``lhCortexVol``, ``EstimatedTotalIntraCranialVol``, ``SurfaceHoles`` ... -> feature id."""
    if name.lower() in NOT_IMPORTED:
        return None
    hemi, region, _ = canonical_global(name)
    info = GLOBAL_MEASURES.get(region)
    if info is None:
        return None
    measure, per_hemi, _ = info
    if hemi == "na" and region in _HEMI_ONLY_GLOBALS:
        return None
    if hemi != "na" and not per_hemi:
        return None
    return feature_id("global", hemi, region, measure)


def _hemi_global(hemi: str, stem: str, measure: str | None) -> str | None:
    """``lh_MeanThickness_thickness`` / ``lh_NumVert``: a per-hemisphere global measure."""
    _, region, _ = canonical_global(stem)
    info = GLOBAL_MEASURES.get(region)
    if info is None or not info[1]:
        return None
    if measure is not None and measure != info[0]:
        return None
    return feature_id("global", hemi, region, info[0])


@lru_cache(maxsize=8192)
def recognise_column(name: str, *, surface_atlas: str = "aparc") -> str | None:
    """Return the canonical feature id a wide-table column name stands for, or None.

    Recognised spellings:

    * aparcstats2table: ``lh_<region>_<measure>`` (measure ``thickness``, ``area``,
      ``volume``, ``thicknessstd``, ``meancurv``, ``gauscurv``, ``foldind``, ``curvind``).
      A Destrieux region (any spelling :func:`canonical_region` knows) gives ``a2009s``; a
      Desikan region gives ``surface_atlas``. ``lh_MeanThickness_thickness``,
      ``lh_WhiteSurfArea_area`` and ``lh_NumVert`` are global measures.
    * asegstats2table: aseg (and wmparc) structure names, global measures
      (``EstimatedTotalIntraCranialVol``, ``lhCortexVol``, ``SurfaceHoles`` ...).
    * ENIGMA protocol: ``L_<region>_thickavg``, ``R_<region>_surfavg``, ``LThickness``,
      ``LSurfArea``, ``Lthal`` ... ``Raccumb``, ``LLatVent``, ``ICV``.

    Parameters
    ----------
    name : str
        The column name as written.
    surface_atlas : str
        Atlas of Desikan-style region names: ``aparc`` (DK) or ``DKT``. The two share region
        names, so this is never inferred from the name.

    Returns
    -------
    str or None
        ``{atlas}.{hemi}.{region}.{measure}``, or None when the name is not a known feature.

    Examples
    --------
    >>> recognise_column("lh_G&S_frontomargin_thickness")
    'a2009s.lh.G_and_S_frontomargin.thickness'
    >>> recognise_column("Left-Thalamus-Proper")
    'aseg.na.Left-Thalamus.volume'
    >>> recognise_column("R_insula_surfavg", surface_atlas="DKT")
    'DKT.rh.insula.area'
    >>> recognise_column("age") is None
    True
    """
    name = name.strip()
    match = _APARC_COLUMN.match(name)
    if match:
        hemi, raw, measure = match.groups()
        hit = _hemi_global(hemi, raw, measure)
        if hit is not None:
            return hit
        for atlas in ("a2009s", surface_atlas):
            region = canonical_region(atlas, raw)
            if region in _known(atlas):
                return feature_id(atlas, hemi, region, measure)
        return None
    match = _HEMI_GLOBAL_COLUMN.match(name)
    if match:
        return _hemi_global(match.group(1), match.group(2), None)
    match = _ENIGMA_CORTICAL.match(name)
    if match:
        side, raw, suffix = match.groups()
        region = canonical_region(surface_atlas, raw)
        if region in _known(surface_atlas):
            hemi = "lh" if side == "L" else "rh"
            return feature_id(surface_atlas, hemi, region, _ENIGMA_MEASURES[suffix])
        return None
    if name in _ENIGMA_GLOBALS:
        hemi, region = _ENIGMA_GLOBALS[name]
        return feature_id("global", hemi, region, GLOBAL_MEASURES[region][0])
    if len(name) > 1 and name[0] in "LR" and name[1:].lower() in _ENIGMA_SUBCORTICAL:
        side = "Left" if name[0] == "L" else "Right"
        return feature_id(
            "aseg", "na", f"{side}-{_ENIGMA_SUBCORTICAL[name[1:].lower()]}", "volume"
        )
    for atlas in ("aseg", "wmparc"):
        region = canonical_region(atlas, name)
        if region in _known(atlas):
            return feature_id(atlas, "na", region, "volume")
    return _global_feature(name)


# --------------------------------------------------------------------------- identifying names

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def identifying_kind(name: str) -> str | None:
    """Say what kind of identifying information a column name suggests, or None.

    Deliberately over-cautious: a false alarm costs one line in the column map (``ignore``),
    a miss could put a name or a birth date into the database.

    Examples
    --------
    >>> identifying_kind("PatientName")
    'a name'
    >>> identifying_kind("dob")
    'a date'
    >>> identifying_kind("lh_G_front_sup_thickness") is None
    True
    >>> identifying_kind("Right-Caudate_Z_predict") is None
    True
    """
    tokens = [t for t in re.split(r"[^a-z0-9]+", _CAMEL.sub("_", name).lower()) if t]
    words = set(tokens)
    joined = "".join(tokens)
    # whole tokens only: "date" is inside "Right-Caudate" and "candidate", which are no dates
    if any(_is_date_word(t) for t in tokens):
        return "a date"
    if words & {"mrn", "ssn", "nhs", "bsn", "mrnumber"} or any(
        s in joined
        for s in (
            "patientnumber",
            "patientno",
            "patientnr",
            "patientid",
            "medicalrecord",
            "recordnumber",
            "hospitalnumber",
            "socialsecurity",
            "insurancenumber",
            "personnummer",
        )
    ):
        return "a patient record number"
    if words & {"mail", "fax", "mobile", "zip", "city", "town"} or any(
        s in joined for s in ("email", "phone", "address", "postcode", "postalcode", "zipcode")
    ):
        return "contact details"
    if words & {"name", "names", "surname", "forename", "initials"} or any(
        s in joined for s in ("firstname", "lastname", "fullname", "givenname", "familyname")
    ):
        return "a name"
    if words & {
        "note",
        "notes",
        "comment",
        "comments",
        "remark",
        "remarks",
        "text",
        "memo",
        "description",
    } or any(s in joined for s in ("comment", "freetext", "remark")):
        return "free text"
    return None


_DATE_WORDS = frozenset(
    {"date", "dates", "dob", "birthday", "born", "timestamp", "datetime", "dateofbirth"}
)
#: what a compound written as one word ("birthdate", "scandate") may start with
_DATE_QUALIFIERS = frozenset(
    {
        "birth", "scan", "visit", "exam", "study", "acquisition", "acq", "mri", "session",
        "collection", "admission", "discharge", "consent", "death", "entry", "test",
        "assessment", "enrolment", "enrollment", "referral", "diagnosis", "onset", "start",
        "end", "record", "series", "content", "instance",
    }
)  # fmt: skip


def _is_date_word(token: str) -> bool:
    """A token that names a date: a date word, or a compound such as ``birthdate``."""
    if token in _DATE_WORDS:
        return True
    if token.endswith("date") and token[:-4] in _DATE_QUALIFIERS:
        return True
    return token.startswith("dateof") or (token.startswith("date") and token[4:] in {"time", "s"})


# kind -> map keys that may name such a column ("" = any key)
_ALLOWED_ROLES = {
    "a name": ("",),
    "a patient record number": ("id",),
    "a date": ("identifying.",),
    "contact details": (),
    "free text": (),
}


# --------------------------------------------------------------------------- raw reading


@dataclass
class _Raw:
    """A table read as text: every cell a stripped-later str, rows with their file line."""

    path: str  # as given by the caller, for messages
    frame: pd.DataFrame
    lines: np.ndarray  # 1-based line in the file of each row of ``frame``

    @property
    def header(self) -> list[str]:
        return [str(c) for c in self.frame.columns]

    def where(self, row: int, column: str | None = None) -> str:
        text = f"{self.path} line {int(self.lines[row])}"
        return f"{text}, column {column!r}" if column is not None else text


def _guess_sep(path: Path, header_line: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return ","
    if suffix == ".tsv":
        return "\t"
    for sep in ("\t", ",", ";"):
        if sep in header_line:
            return sep
    return r"\s+"


def _read_raw(path: str | Path, sep: str | None) -> _Raw:
    """Read a delimited text table as strings, keeping each row's line number."""
    p = Path(path)
    shown = str(path)
    if not p.is_file():
        raise FileNotFoundError(f"table {shown} does not exist or is not a file")
    try:
        with p.open(encoding="utf-8-sig", newline="") as handle:
            header_line = handle.readline()
    except UnicodeDecodeError as exc:
        raise TableImportError(f"{shown}: not UTF-8 text ({exc.reason})") from None
    if not header_line.strip():
        if p.stat().st_size > len(header_line.encode("utf-8")):
            raise TableImportError(f"{shown} line 1: blank (expected the header line)")
        raise TableImportError(f"{shown}: the file is empty (expected a header line)")
    header_line = header_line.rstrip("\r\n")
    if sep is None:
        sep = _guess_sep(p, header_line)
    if sep == r"\s+":
        cells = header_line.split()
    else:
        cells = next(csv.reader([header_line], delimiter=sep))
    seen: dict[str, int] = {}
    for pos, cell in enumerate(cells, start=1):
        cell = cell.strip()
        if cell and cell in seen:
            raise TableImportError(
                f"{shown} line 1: column {cell!r} appears twice (columns {seen[cell]} and "
                f"{pos}); each column needs its own name"
            )
        seen[cell] = pos
    try:
        frame = pd.read_csv(
            p,
            sep=sep,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            encoding="utf-8-sig",
        )
    except pd.errors.ParserError as exc:
        raise TableImportError(f"{shown}: cannot be parsed as a table ({exc})") from None
    except UnicodeDecodeError as exc:
        raise TableImportError(f"{shown}: not UTF-8 text ({exc.reason})") from None
    frame.columns = pd.Index([str(c).strip() for c in frame.columns])
    frame = frame.fillna("")
    lines = np.arange(len(frame), dtype=np.int64) + 2
    if len(frame):
        # blank lines come through as all-empty rows: drop them, keeping the line numbers
        filled = (frame != "").to_numpy().any(axis=1)
        if not filled.all():
            frame = frame.iloc[np.flatnonzero(filled)].reset_index(drop=True)
            lines = lines[filled]
    if not len(frame):
        raise TableImportError(
            f"{shown}: the file has a header line but no data rows (expected one row per scan)"
        )
    return _Raw(shown, frame, lines)


def _row_error(error: type[Exception], raw: _Raw, row: int, message: str) -> Exception:
    """An error about one data row, tagged with the file and row so that a caller reading with
    ``on_bad_row="skip"`` can leave the row out and go on."""
    exc = error(message)
    exc._morphml_row = (raw, int(row))  # type: ignore[attr-defined]
    return exc


def _raise_first(
    bad: np.ndarray,
    detail: Callable[[int], str],
    raw: _Raw,
    rows: np.ndarray,
    column: str,
    error: type[Exception] = TableImportError,
) -> None:
    """Raise :func:`_row_error` at the first data row where ``bad`` holds (``i`` its position
    in ``rows``): ``<file, row, column>: <detail(i)>``."""
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        row = int(rows[i])
        raise _row_error(error, raw, row, f"{raw.where(row, column)}: {detail(i)}")


def _bad_row(exc: Exception) -> tuple[_Raw, int] | None:
    return getattr(exc, "_morphml_row", None)


def _stripped(raw: _Raw, column: str) -> pd.Series:
    return raw.frame[column].str.strip()


def _missing_mask(values: pd.Series, missing: frozenset[str]) -> np.ndarray:
    return values.isin(missing).to_numpy()


def _norm_code(value: str) -> str:
    """Codes compare as numbers when both look like numbers ('1' == '1.0' == '01')."""
    try:
        number = float(value)
    except ValueError:
        return value
    if math.isfinite(number) and number == int(number):
        return str(int(number))
    return repr(number)


def _norm_codes(values: pd.Series) -> pd.Series:
    uniques = {v: _norm_code(v) for v in values.unique()}
    return values.map(uniques)


def _closest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.5)
    return f"; closest: {', '.join(repr(c) for c in close)}" if close else ""


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_SHOWN])
    more = len(names) - _SHOWN
    return shown + (f" (and {more} more)" if more > 0 else "")


# --------------------------------------------------------------------------- shared checks


def _ids(raw: _Raw, column: str) -> pd.Series:
    ids = _stripped(raw, column)
    empty = np.flatnonzero((ids == "").to_numpy())
    if len(empty):
        raise TableImportError(
            f"{raw.where(int(empty[0]), column)}: the id is empty (expected a subject / scan id "
            "on every row)"
        )
    return ids


def _to_float(
    raw: _Raw, rows: np.ndarray, columns: Sequence[str], missing: frozenset[str]
) -> np.ndarray:
    """Parse feature cells as float64; empty or missing-value cells become NaN."""
    out = np.empty((len(rows), len(columns)), dtype=np.float64)
    if not len(columns):
        return out
    block = raw.frame.iloc[rows][list(columns)]
    try:
        # fast path: every cell a plain number (float() accepts surrounding spaces)
        fast = block.to_numpy(dtype=object).astype(np.float64)
    except (ValueError, TypeError):
        fast = None
    if fast is not None and np.isfinite(fast).all():
        return fast
    for j, column in enumerate(columns):
        text = block[column]
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        nan = np.isnan(values)
        bad = np.isinf(values)
        if nan.any():
            bad |= nan & ~text.str.strip().isin(missing).to_numpy()
        _raise_first(
            bad,
            # called at once, inside this iteration
            lambda i: (
                "expected a finite number (or an empty cell for a missing value), "
                f"got {_short(str(text.iloc[i]))!r}"  # noqa: B023
            ),
            raw,
            rows,
            column,
        )
        out[:, j] = values
    return out


def _dedupe_ids(
    raw: _Raw,
    ids: pd.Series,
    rows: np.ndarray,
    compare: Sequence[str],
    policy: str,
    id_column: str,
    hint: str,
) -> tuple[np.ndarray, dict[str, str]]:
    """Collapse repeated identical rows; conflicting repeats are an error (or dropped).

    ``ids`` are the row keys (the id, or id and session). Returns the kept row positions and
    ``{key: reason}`` for keys dropped by ``policy="drop"``.
    """
    kept_ids = ids.iloc[rows]
    repeated = kept_ids.duplicated(keep=False).to_numpy()
    if not repeated.any():
        return rows, {}
    block = raw.frame.iloc[rows][list(compare)].apply(lambda s: s.str.strip())
    keep = np.ones(len(rows), dtype=bool)
    dropped: dict[str, str] = {}
    positions = np.flatnonzero(repeated)
    groups: dict[str, list[int]] = {}
    for pos in positions:
        groups.setdefault(str(kept_ids.iloc[pos]), []).append(int(pos))
    for key, members in groups.items():
        first = block.iloc[members[0]]
        conflict = None
        for other in members[1:]:
            if block.iloc[other].equals(first):
                keep[other] = False
            elif conflict is None:
                conflict = other
        if conflict is None:
            continue
        diff = [c for c in compare if block.iloc[conflict][c] != first[c]]
        if policy == "drop":
            for member in members:
                keep[member] = False
            lines = ", ".join(str(int(raw.lines[rows[m]])) for m in members)
            dropped[key] = (
                f"{Path(raw.path).name}: repeated with different values on lines {lines}"
            )
            continue
        raise TableImportError(
            f"{raw.path} lines {int(raw.lines[rows[members[0]]])} and "
            f"{int(raw.lines[rows[conflict]])}: the same id (column {id_column!r}) appears "
            f"twice with different values in {_listing(diff)}; {hint}"
        )
    return rows[keep], dropped


def _empty_column(values: np.ndarray) -> bool:
    """All zero or missing: what an export writes for a structure it does not have."""
    return bool(np.all(np.isnan(values) | (values == 0)))


def _merge_duplicate_features(
    path: str,
    columns: list[str],
    fids: list[str],
    values: np.ndarray,
    lines: np.ndarray,
    hint: str,
) -> tuple[list[str], np.ndarray, dict[str, str], dict[str, str]]:
    """Merge columns naming the same feature (``eTIV`` and ``EstimatedTotalIntraCranialVol``,
    ``Left-Thalamus-Proper`` and ``Left-Thalamus``, a ``.1`` copy and its column).

    Equal columns are merged (the first kept); a column that is entirely zero or missing gives
    way to a populated one; any other disagreement is an error listing every conflicting pair.

    Returns
    -------
    fids, values
        One column per feature, in the order of first appearance.
    duplicates : dict
        Column left out -> the kept column with the same values.
    empty : dict
        Column left out because it is all zero / missing -> the populated column used instead.
    """
    groups: dict[str, list[int]] = {}
    for j, fid in enumerate(fids):
        groups.setdefault(fid, []).append(j)
    duplicates: dict[str, str] = {}
    empty: dict[str, str] = {}
    conflicts: list[str] = []
    keep_idx: list[int] = []
    for fid, members in groups.items():
        if len(members) == 1:
            keep_idx.append(members[0])
            continue
        populated = [j for j in members if not _empty_column(values[:, j])]
        keep = populated[0] if populated else members[0]
        keep_idx.append(keep)
        for j in members:
            if j == keep:
                continue
            a, b = values[:, keep], values[:, j]
            same = np.isclose(a, b, rtol=1e-6, atol=0.0, equal_nan=True)
            if same.all():
                duplicates[columns[j]] = columns[keep]
            elif j not in populated:
                empty[columns[j]] = columns[keep]
            else:
                i = int(np.flatnonzero(~same)[0])
                conflicts.append(
                    f"line {int(lines[i])}: columns {columns[keep]!r} and {columns[j]!r} both "
                    f"hold feature {fid} but differ ({float(a[i]):g} vs {float(b[i]):g})"
                )
    if len(conflicts) == 1:
        raise TableImportError(f"{path} {conflicts[0]}; {hint}")
    if conflicts:
        raise TableImportError(
            f"{path}: {len(conflicts)} pairs of columns hold the same feature but differ "
            "(neither is all zero or empty): " + "; ".join(conflicts) + f"; {hint}"
        )
    return [fids[j] for j in keep_idx], values[:, keep_idx], duplicates, empty


def _check_dk_or_dkt(fids: Iterable[str], where: str, fix: str, error: type[Exception]) -> None:
    """Refuse to call a table DK when it lacks every DK-only region (DKT tables do)."""
    groups: dict[tuple[str, str], set[str]] = {}
    for fid in fids:
        atlas, hemi, *middle, measure = fid.split(".")
        if atlas == "aparc":
            groups.setdefault((hemi, measure), set()).add(".".join(middle))
    for (hemi, measure), regions in sorted(groups.items()):
        if not regions & _DK_ONLY:
            raise error(
                f"{where}: the {hemi} {measure} columns use Desikan region names but none of "
                f"{', '.join(sorted(_DK_ONLY))}, which only DK (aparc) has; this looks like a "
                f"DKT (FastSurfer / aparc.DKTatlas) table. DK and DKT share region names, so "
                f"say which: {fix}"
            )


# --------------------------------------------------------------------------- table exports


def _export_context(cell: str) -> tuple[str, str | None, str | None, str] | None:
    """Parse the first header cell: ('surface', atlas, hemi, measure) or
    ('segmentation', None, None, measure); None when it is an ordinary id header."""
    cell = cell.strip()
    match = _SEGMENTATION_HEADER.match(cell)
    if match:
        meas = match.group(1)
        if meas not in _SEGMENTATION_MEASURES:
            raise TableImportError(
                f"first header cell {cell!r}: unknown asegstats2table measure {meas!r}; "
                f"expected one of {sorted(_SEGMENTATION_MEASURES)}"
            )
        return ("segmentation", None, None, _SEGMENTATION_MEASURES[meas])
    match = _SURFACE_HEADER.match(cell)
    if match:
        hemi, annot, measure = match.groups()
        atlas = _EXPORT_ATLASES.get(annot.lower())
        if atlas is None:
            raise TableImportError(
                f"first header cell {cell!r}: unknown parcellation {annot!r}; morphml reads "
                f"{', '.join(sorted(_EXPORT_ATLASES))}"
            )
        return ("surface", atlas, hemi, measure)
    return None


def read_table_export(path: str | Path) -> pd.DataFrame:
    """Read an ``aparcstats2table`` / ``asegstats2table`` output into canonical features.

    The delimiter (tab, comma, semicolon or spaces) is taken from the header line. The first
    column holds the subject id; its header names the table (``lh.aparc.thickness``,
    ``rh.aparc.a2009s.area``, ``lh.aparc.DKTatlas.thickness``, ``Measure:volume``) or is a
    plain id header (``subject``), in which case every column is recognised by name.

    Parameters
    ----------
    path : str or Path
        The table file.

    Returns
    -------
    pandas.DataFrame
        Index: subject id (str, named ``id``); columns: canonical feature ids; float64 values.
        ``attrs["source_file"]`` is the file's base name and ``attrs["not_imported"]`` maps
        each column left out on purpose (derived sums such as ``totalMeanCorticalThickness``)
        to the reason.

    Raises
    ------
    TableImportError
        Unknown columns, a non-numeric value, an empty id, an id repeated with different
        values, an empty file or one with only a header. Messages give file, line and column.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "lh.tsv"
    >>> _ = p.write_text("lh.aparc.thickness\\tlh_insula_thickness\\nsub1\\t2.9\\n")
    >>> float(read_table_export(p).loc["sub1", "aparc.lh.insula.thickness"])
    2.9
    """
    raw = _read_raw(path, None)
    header = raw.header
    id_column = header[0]
    try:
        context = _export_context(id_column)
    except TableImportError as exc:
        raise TableImportError(f"{raw.path} line 1, {exc}") from None
    columns: list[str] = []
    fids: list[str] = []
    not_imported: dict[str, str] = {}
    unknown: list[str] = []
    mismatched: list[str] = []
    for column in header[1:]:
        fid = _export_feature(column, context)
        if fid is None:
            if column.lower() in NOT_IMPORTED:
                not_imported[column] = NOT_IMPORTED[column.lower()]
            else:
                unknown.append(column)
        elif fid == "":
            mismatched.append(column)
        else:
            columns.append(column)
            fids.append(fid)
    if mismatched and context is not None:
        _, _, hemi, measure = context
        raise TableImportError(
            f"{raw.path} line 1: columns {_listing(mismatched)} do not match the table's first "
            f"header cell {id_column!r} (expected {hemi}_<region>_{measure} columns)"
        )
    if unknown:
        raise TableImportError(
            f"{raw.path} line 1: cannot tell what these columns are: {_listing(unknown)}. "
            "Known: aparcstats2table / asegstats2table names and FreeSurfer global measures; "
            "to import other columns use read_wide_table with a column map ('features' or "
            "'ignore')"
        )
    if context is None:
        _check_dk_or_dkt(
            fids,
            raw.path,
            "read it with read_wide_table and a column map that sets surface_atlas",
            TableImportError,
        )
    ids = _ids(raw, id_column)
    rows = np.arange(len(raw.frame))
    rows, _ = _dedupe_ids(raw, ids, rows, columns, "error", id_column, "fix the file")
    values = _to_float(raw, rows, columns, frozenset(DEFAULT_MISSING_VALUES))
    fids, values, _, empty = _merge_duplicate_features(
        raw.path,
        columns,
        fids,
        values,
        raw.lines[rows],
        "read the file with read_wide_table and a column map that ignores one of them",
    )
    index = pd.Index(ids.iloc[rows].to_numpy(dtype=object), name="id", dtype=object)
    out = pd.DataFrame(values, index=index, columns=pd.Index(fids, dtype=object))
    out.attrs["source_file"] = Path(path).name
    out.attrs["not_imported"] = not_imported
    out.attrs["empty_columns"] = empty
    out.attrs["lines"] = dict(zip(out.index, raw.lines[rows].tolist(), strict=True))
    return out


def _export_feature(
    column: str, context: tuple[str, str | None, str | None, str] | None
) -> str | None:
    """Feature id of an export column; '' when it contradicts the header; None if unknown."""
    if context is None:
        return recognise_column(column)
    kind, atlas, hemi, measure = context
    if kind == "segmentation":
        for seg_atlas in ("aseg", "wmparc"):
            region = canonical_region(seg_atlas, column)
            if region in _known(seg_atlas):
                return feature_id(seg_atlas, "na", region, measure)
        return _global_feature(column)
    atlas, hemi = str(atlas), str(hemi)
    match = _APARC_COLUMN.match(column)
    if match:
        col_hemi, raw, col_measure = match.groups()
        glob = _hemi_global(col_hemi, raw, col_measure)
        if col_hemi != hemi:
            return ""
        if glob is not None:
            return glob
        if col_measure != measure:
            return ""
        region = canonical_region(atlas, raw)
        return feature_id(atlas, hemi, region, measure) if region in _known(atlas) else None
    match = _HEMI_GLOBAL_COLUMN.match(column)
    if match:
        return _hemi_global(match.group(1), match.group(2), None)
    return _global_feature(column)


# --------------------------------------------------------------------------- wide tables


@dataclass
class WideTable:
    """A wide table read with a column map.

    One row per scan: ids are unique, unless the map names a ``session`` column, in which case
    an id may repeat once per session.

    Attributes
    ----------
    features : pandas.DataFrame
        One row per scan, indexed by the original id (str, index name ``id``); columns are
        canonical feature ids; float64 with NaN for empty cells.
    participants : pandas.DataFrame
        Same rows in the same order: ``id``, ``age`` (float, years at scan), ``sex``
        (``'F'``/``'M'``/None), ``site``, ``session`` (only when mapped) and one column per
        phenotype (float for continuous, the label for binary / categorical).
    source_file : str
        Base name of the table file (never its folder: paths can identify people).
    participants_file : str or None
        Base name of the participants file, when one was joined.
    unrecognised : list of str
        Columns left out because the map says ``unrecognised: skip``.
    ignored : list of str
        Columns matched by ``ignore``.
    not_imported : dict
        Columns left out on purpose (derived values) -> reason.
    duplicate_columns : dict
        Column left out -> the column with the same feature id and the same values that was kept.
    dropped_ids : dict
        Id -> reason, for ids repeated with different values under ``duplicate_ids: drop``.
    without_participants : list of str
        Ids of the table with no row in the participants file (their age, sex ... are missing).
    participants_only : list of str
        Ids of the participants file with no row in the table.
    n_filtered_out : int
        Rows left out by the ``rows`` filter.
    empty_columns : dict
        Column left out because it is all zero or missing -> the column holding the same
        feature that was used (alias pairs such as ``Left-Thalamus``/``Left-Thalamus-Proper``,
        ``.1`` copies).
    skipped_rows : dict
        Id -> reason, for rows left out by ``on_bad_row="skip"`` (an unknown code, a bad
        number). The reason names file, line and column and never the id.
    """

    features: pd.DataFrame
    participants: pd.DataFrame
    source_file: str
    participants_file: str | None = None
    unrecognised: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    not_imported: dict[str, str] = field(default_factory=dict)
    duplicate_columns: dict[str, str] = field(default_factory=dict)
    dropped_ids: dict[str, str] = field(default_factory=dict)
    without_participants: list[str] = field(default_factory=list)
    participants_only: list[str] = field(default_factory=list)
    n_filtered_out: int = 0
    empty_columns: dict[str, str] = field(default_factory=dict)
    skipped_rows: dict[str, str] = field(default_factory=dict)
    #: line in the table file of each row (None for a table set, whose rows span files)
    lines: list[int] | None = None


def _is_ignored(column: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(column, p) for p in patterns)


def _role_allowed(kind: str, key: str) -> bool:
    return any(prefix == "" or key.startswith(prefix) for prefix in _ALLOWED_ROLES[kind])


def _refuse_identifying(path: str, refused: list[tuple[str, str, str]]) -> None:
    if not refused:
        return
    parts = [f"{column!r} in {file} ({kind})" for file, column, kind in refused[:_SHOWN]]
    more = len(refused) - _SHOWN
    raise ColumnMapError(
        f"{path}: columns that look identifying are never imported: "
        + "; ".join(parts)
        + (f" (and {more} more)" if more > 0 else "")
        + ". Add them to 'ignore' in the column map to leave them out, or name birth and scan "
        "dates under 'identifying' to derive age at scan (only the age is kept)"
    )


def _classify(
    raw: _Raw,
    cmap: ColumnMap,
    used: dict[str, str],
    surface_atlas: str | None,
    refused: list[tuple[str, str, str]],
) -> tuple[list[str], list[str], list[str], list[str], dict[str, str]]:
    """Sort a file's columns: feature columns (with ids), ignored, unrecognised, not imported.

    ``used`` maps columns named by map keys (id, age, ...) to the key; ``surface_atlas`` is
    None for a participants file, whose columns are never read as features.
    """
    columns: list[str] = []
    fids: list[str] = []
    ignored: list[str] = []
    unrecognised: list[str] = []
    not_imported: dict[str, str] = {}
    name = Path(raw.path).name
    for column in raw.header:
        if column in used:
            kind = identifying_kind(column)
            if kind is not None and not _role_allowed(kind, used[column]):
                raise ColumnMapError(
                    f"{raw.path}: map key {used[column]!r} names column {column!r}, which looks "
                    f"like {kind}; such a column may only be "
                    + (
                        "used under 'identifying' to derive age at scan"
                        if kind == "a date"
                        else "the id"
                        if kind == "a patient record number"
                        else "ignored"
                    )
                )
            continue
        if surface_atlas is not None and column in cmap.features:
            columns.append(column)
            fids.append(cmap.features[column])
            continue
        if _is_ignored(column, cmap.ignore):
            ignored.append(column)
            continue
        fid = recognise_column(column, surface_atlas=surface_atlas or "aparc")
        if fid is not None and surface_atlas is None:
            # features come from the table only; a participants file often repeats one (ICV)
            not_imported[column] = f"feature {fid} in the participants file {name}"
            continue
        if fid is not None:
            columns.append(column)
            fids.append(fid)
            continue
        copy = _DOT_COPY.match(column)
        if surface_atlas is not None and copy and copy.group(1) in raw.header:
            # a pandas-style '.1' copy of another column: merged with it (or, all zero, left
            # out) by _merge_duplicate_features
            base = copy.group(1)
            base_fid = cmap.features.get(base) or recognise_column(
                base, surface_atlas=surface_atlas
            )
            if base_fid is not None:
                columns.append(column)
                fids.append(base_fid)
                continue
        if column.lower() in NOT_IMPORTED:
            not_imported[column] = NOT_IMPORTED[column.lower()]
            continue
        kind = identifying_kind(column)
        if kind is not None:
            refused.append((name, column, kind))
            continue
        unrecognised.append(column)
    return columns, fids, ignored, unrecognised, not_imported


def _surface_atlas(cmap: ColumnMap, raw: _Raw) -> str:
    """The map's surface atlas, checked against an export header (``lh.aparc.DKTatlas...``)."""
    try:
        context = _export_context(cmap.id or "")
    except TableImportError:
        context = None
    if context is None or context[0] != "surface" or context[1] not in ("aparc", "DKT"):
        return cmap.surface_atlas
    header_atlas = str(context[1])
    if "surface_atlas" in cmap.model_fields_set and cmap.surface_atlas != header_atlas:
        raise ColumnMapError(
            f"{raw.path} line 1: the first header cell {cmap.id!r} says {header_atlas} but the "
            f"column map says surface_atlas: {cmap.surface_atlas}"
        )
    return header_atlas


def _filter_mask(raw: _Raw, rows_filter: RowFilter) -> np.ndarray:
    values = _norm_codes(_stripped(raw, rows_filter.column))
    keep = {_norm_code(v.strip()) for v in rows_filter.keep}
    return values.isin(keep).to_numpy()


def _parse_role(
    raw: _Raw, rows: np.ndarray, key: str, cmap: ColumnMap, missing: frozenset[str]
) -> pd.Series:
    """Parse one participant column (map key ``key``) on the given rows."""
    column = cmap.role_columns()[key]
    text = _stripped(raw, column).iloc[rows]
    is_missing = _missing_mask(text, missing)
    if key == "age":
        ages = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        ages[is_missing] = np.nan
        _check_ages(raw, rows, column, ages, text, is_missing)
        return pd.Series(ages, index=text.index, dtype=np.float64)
    if key == "sex.column":
        sex_coding = cmap.sex.coding if cmap.sex is not None else {}
        coding = {_norm_code(k.strip()): _SEX[v] for k, v in sex_coding.items()}
        return _apply_coding(raw, rows, column, "sex.coding", text, is_missing, coding)
    if key.startswith("phenotypes."):
        name = key.split(".")[1]
        pheno = cmap.phenotypes[name]
        if pheno.type == "continuous":
            values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
            bad = (np.isnan(values) | np.isinf(values)) & ~is_missing
            _raise_first(
                bad,
                lambda i: (
                    f"phenotype {name!r} is continuous; "
                    f"expected a number, got {_short(text.iloc[i])!r}"
                ),
                raw,
                rows,
                column,
            )
            values[is_missing] = np.nan
            return pd.Series(values, index=text.index, dtype=np.float64)
        if pheno.coding is not None:
            coding = {_norm_code(k.strip()): v for k, v in pheno.coding.items()}
            return _apply_coding(
                raw, rows, column, f"phenotypes.{name}.coding", text, is_missing, coding
            )
        if pheno.levels is not None:
            coding = {_norm_code(v.strip()): v.strip() for v in pheno.levels}
            return _apply_coding(
                raw, rows, column, f"phenotypes.{name}.levels", text, is_missing, coding
            )
        return _with_none(text, is_missing)
    # site, session: text as written
    return _with_none(text, is_missing)


def _with_none(values: pd.Series, is_missing: np.ndarray) -> pd.Series:
    """An object Series with None where ``is_missing`` (pandas would write NaN)."""
    out = values.to_numpy(dtype=object).copy()
    out[is_missing] = None
    return pd.Series(out, index=values.index, dtype=object)


def _short(value: str) -> str:
    return value if len(value) <= 40 else value[:37] + "..."


def _check_ages(
    raw: _Raw,
    rows: np.ndarray,
    column: str,
    ages: np.ndarray,
    text: pd.Series | None,
    is_missing: np.ndarray,
) -> None:
    bad = np.isnan(ages) & ~is_missing
    _raise_first(
        bad,
        lambda i: (
            "expected age in years (a number)"
            + (f", got {_short(str(text.iloc[i]))!r}" if text is not None else "")
        ),
        raw,
        rows,
        column,
    )
    with np.errstate(invalid="ignore"):
        out = (ages < 0) | (ages > 120)
    _raise_first(
        out,
        lambda i: (
            "expected age in years between 0 and 120"
            + (f", got {ages[i]:g}" if text is not None else "")
        ),
        raw,
        rows,
        column,
    )


def _apply_coding(
    raw: _Raw,
    rows: np.ndarray,
    column: str,
    key: str,
    text: pd.Series,
    is_missing: np.ndarray,
    coding: dict[str, str],
) -> pd.Series:
    codes = _norm_codes(text)
    mapped = codes.map(coding)
    bad = mapped.isna().to_numpy() & ~is_missing
    _raise_first(
        bad,
        lambda i: (
            f"value {_short(str(text.iloc[i]))!r} is not in "
            f"the map's {key} (codes: {', '.join(repr(c) for c in coding)}); add it to {key} "
            "or correct the cell (or ingest with --on-error skip to leave the row out)"
        ),
        raw,
        rows,
        column,
        error=ColumnMapError,
    )
    return _with_none(mapped, is_missing)


def _derive_age(
    raw: _Raw, rows: np.ndarray, ident: IdentifyingColumns, missing: frozenset[str]
) -> pd.Series:
    """Age at scan from birth and scan dates; neither date leaves this function."""
    fmt = ident.date_format or "ISO8601"
    dates = {}
    for key in ("birth_date", "scan_date"):
        column = getattr(ident, key)
        text = _stripped(raw, column).iloc[rows]
        is_missing = _missing_mask(text, missing)
        parsed = pd.to_datetime(_with_none(text, is_missing), format=fmt, errors="coerce")
        bad = parsed.isna().to_numpy() & ~is_missing
        # the cell is not shown: it is a date of birth or of a visit
        _raise_first(
            bad,
            lambda i: (
                "expected a date "
                + (
                    f"in the format {ident.date_format!r}"
                    if ident.date_format
                    else "in ISO 8601 form (YYYY-MM-DD) or a 'date_format' under 'identifying'"
                )
            ),
            raw,
            rows,
            column,
        )
        dates[key] = parsed
    days = (dates["scan_date"] - dates["birth_date"]).dt.days.to_numpy(dtype=np.float64)
    ages = days / 365.25
    column = f"{ident.scan_date} - {ident.birth_date}"
    _check_ages(raw, rows, column, ages, None, np.isnan(ages))
    return pd.Series(ages, dtype=np.float64)


@dataclass
class _Sources:
    """The table, the optional participants file and the file each map key's column is in."""

    path: str | Path
    cmap: ColumnMap
    id_col: str
    part_id: str
    missing: frozenset[str]
    main: _Raw
    part: _Raw | None
    part_file: Path | None
    roles: dict[str, str]
    home: dict[str, _Raw]
    surface_atlas: str

    @property
    def tables(self) -> list[_Raw]:
        return [self.main] if self.part is None else [self.main, self.part]


@dataclass
class _Rows:
    """The rows kept after the row filter and the repeated-id rules, and their ids."""

    rows: np.ndarray  # positions in the table
    part_rows: np.ndarray  # positions in the participants file
    main_ids: pd.Series
    part_ids: pd.Series
    n_filtered: int
    dropped: dict[str, str]
    age_sessions: pd.Series | None


def _open_sources(
    path: str | Path, cmap: ColumnMap, participants_path: str | os.PathLike[str] | None
) -> _Sources:
    """Read the table (and participants file) and place every map key's column."""
    if cmap.id is None:
        raise ColumnMapError(
            f"{path}: the column map has no 'id' key; name the table's id column (id: COLUMN)"
        )
    id_col = cmap.id
    part_id = cmap.participants_id or id_col
    main = _read_raw(path, cmap.sep)
    part_file = participants_file(cmap, Path(path), participants_path)
    part = _read_raw(part_file, cmap.sep) if part_file is not None else None
    for raw, column, key in ((main, id_col, "id"), (part, part_id, "participants.id")):
        if raw is not None and column not in raw.header:
            raise ColumnMapError(
                f"{raw.path} line 1: no id column {column!r} (map key {key!r})"
                f"{_closest(column, raw.header)}"
            )
    surface_atlas = _surface_atlas(cmap, main)
    # where each participant-side column lives: the participants file first, then the table
    roles = cmap.role_columns()
    home: dict[str, _Raw] = {}
    for key, column in roles.items():
        if part is not None and column in part.header:
            home[key] = part
        elif column in main.header:
            home[key] = main
        else:
            names = main.header + (part.header if part is not None else [])
            files = " or ".join(raw.path for raw in ([main] if part is None else [main, part]))
            raise ColumnMapError(
                f"map key {key!r} names column {column!r}, which is not in {files}"
                f"{_closest(column, names)}"
            )
    for column in cmap.features:
        if column not in main.header:
            raise ColumnMapError(
                f"map key 'features' names column {column!r}, which is not in {main.path}"
                f"{_closest(column, main.header)}"
            )
    if cmap.sessions_from == "age" and home.get("age") is not main:
        raise ColumnMapError(
            f"map key 'sessions_from: age' needs the age column {cmap.age!r} in {main.path} "
            "itself (repeated ids there are ordered by it)"
        )
    missing = frozenset(v.strip() for v in cmap.missing_values)
    return _Sources(
        path, cmap, id_col, part_id, missing, main, part, part_file, roles, home, surface_atlas
    )


def _feature_columns(
    src: _Sources,
) -> tuple[list[str], list[str], list[str], list[str], dict[str, str]]:
    """Feature columns and their ids, ignored, unrecognised and not-imported columns."""
    cmap, main, part, roles, home = src.cmap, src.main, src.part, src.roles, src.home
    refused: list[tuple[str, str, str]] = []
    used_main = {src.id_col: "id"} | {c: k for k, c in roles.items() if home[k] is main}
    columns, fids, ignored, unrecognised, not_imported = _classify(
        main, cmap, used_main, src.surface_atlas, refused
    )
    if part is not None:
        used_part = {src.part_id: "id"} | {c: k for k, c in roles.items() if home[k] is part}
        _, _, p_ignored, p_unrecognised, p_not = _classify(part, cmap, used_part, None, refused)
        ignored += p_ignored
        unrecognised += p_unrecognised
        not_imported |= p_not
    _refuse_identifying(main.path, refused)
    if unrecognised and cmap.unrecognised == "error":
        files = " and ".join(Path(raw.path).name for raw in src.tables)
        raise ColumnMapError(
            f"{main.path}: {len(unrecognised)} column(s) of {files} are neither recognised as "
            f"features nor named in the column map: {_listing(unrecognised)}. Add them to "
            "'ignore' (glob patterns allowed, e.g. '*_Z_predict') to leave them out, to "
            "'features' ({column: feature_id}) to import them as features, or map them as "
            "phenotypes"
        )
    if "surface_atlas" not in cmap.model_fields_set and src.surface_atlas == "aparc":
        auto = [f for c, f in zip(columns, fids, strict=True) if c not in cmap.features]
        _check_dk_or_dkt(
            auto,
            main.path,
            "set 'surface_atlas: aparc' or 'surface_atlas: DKT' in the map",
            ColumnMapError,
        )
    return columns, fids, ignored, unrecognised, not_imported


def _main_rows(src: _Sources, columns: list[str]) -> _Rows:
    """The table's rows after its row filter and repeated-id rules (participants: later)."""
    cmap, main, home = src.cmap, src.main, src.home
    main_ids = _ids(main, src.id_col)
    rows = np.arange(len(main.frame))
    n_filtered = 0
    if cmap.rows is not None and home["rows.column"] is main:
        mask = _filter_mask(main, cmap.rows)
        rows = rows[mask]
        n_filtered = int((~mask).sum())
    main_compare = columns + [c for k, c in src.roles.items() if home[k] is main]
    main_keys = main_ids
    if cmap.session is not None and home["session"] is main:
        # one row per scan: with a session column an id may repeat, once per session
        main_keys = main_ids + " (session " + _stripped(main, cmap.session) + ")"
    age_sessions: pd.Series | None = None
    if cmap.sessions_from == "age" and cmap.age is not None:
        # repeated ids at different ages are sessions, labelled by the age (stable when a
        # later release adds a visit); repeats at the same age must agree
        ages = pd.to_numeric(_stripped(main, cmap.age), errors="coerce")
        age_sessions = ages.map(lambda a: "" if pd.isna(a) else f"age-{a:09.4f}")
        main_keys = main_ids + " (" + age_sessions + ")"
    rows, dropped = _dedupe_ids(
        main, main_keys, rows, main_compare, cmap.duplicate_ids, src.id_col, _DUPLICATE_HINT
    )
    empty = pd.Series(dtype=object)
    return _Rows(rows, np.arange(0), main_ids, empty, n_filtered, dropped, age_sessions)


def _join_participant_rows(src: _Sources, sel: _Rows) -> None:
    """Apply the participants file's row filter and repeated-id rules to ``sel``."""
    cmap, part, home = src.cmap, src.part, src.home
    if part is None:
        return
    part_id = src.part_id
    sel.part_ids = _ids(part, part_id)
    part_rows = np.arange(len(part.frame))
    if cmap.rows is not None and home["rows.column"] is part:
        part_rows = part_rows[_filter_mask(part, cmap.rows)]
    part_compare = [c for k, c in src.roles.items() if home[k] is part]
    sel.part_rows, p_dropped = _dedupe_ids(
        part, sel.part_ids, part_rows, part_compare, cmap.duplicate_ids, part_id, _DUPLICATE_HINT
    )
    sel.dropped |= p_dropped
    if cmap.rows is not None and home["rows.column"] is part:
        # the filter lives in the participants file: scans without a kept row go
        allowed = set(sel.part_ids.iloc[sel.part_rows])
        mask = sel.main_ids.iloc[sel.rows].isin(allowed).to_numpy()
        sel.n_filtered += int((~mask).sum())
        sel.rows = sel.rows[mask]
    if p_dropped:
        sel.rows = sel.rows[~sel.main_ids.iloc[sel.rows].isin(list(p_dropped)).to_numpy()]


def _role_values(src: _Sources, sel: _Rows, key: str, ids: np.ndarray) -> np.ndarray:
    """The parsed values of one map key's column, in the order of ``ids``."""
    cmap, raw = src.cmap, src.home[key]
    raw_rows = sel.rows if raw is src.main else sel.part_rows
    if key == "identifying.scan_date" and cmap.identifying is not None:
        if src.home["identifying.birth_date"] is not raw:
            raise ColumnMapError(
                "map keys 'identifying.birth_date' and 'identifying.scan_date' must name "
                "columns of the same file"
            )
        parsed = _derive_age(raw, raw_rows, cmap.identifying, src.missing)
    else:
        parsed = _parse_role(raw, raw_rows, key, cmap, src.missing)
    if raw is src.main:
        return parsed.to_numpy()
    by_id = pd.Series(parsed.to_numpy(), index=sel.part_ids.iloc[raw_rows].to_numpy())
    return by_id.reindex(ids).to_numpy()


def _parse_cells(
    src: _Sources, sel: _Rows, columns: list[str], on_bad_row: str
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, str]]:
    """Parse every cell: ids, feature values, role values and the rows left out.

    With ``on_bad_row="skip"`` a row that cannot be read is left out of ``sel`` (its reason
    recorded) and the parse goes on without it.
    """
    cmap, main = src.cmap, src.main
    keys = [k for k in src.roles if not k.startswith(("rows.", "identifying.birth_date"))]
    skipped: dict[str, str] = {}
    while True:
        if not len(sel.rows):
            raise TableImportError(
                f"{main.path}: no row is left to import"
                + (
                    f" after the row filter (column {cmap.rows.column!r} keeps {cmap.rows.keep})"
                    if cmap.rows is not None
                    else ""
                )
                + (" after leaving out the rows that cannot be read" if skipped else "")
            )
        ids = sel.main_ids.iloc[sel.rows].to_numpy(dtype=object)
        try:
            values = _to_float(main, sel.rows, columns, src.missing)
            parsed = {key: _role_values(src, sel, key, ids) for key in keys}
            return ids, values, parsed, skipped
        except (TableImportError, ColumnMapError) as exc:
            bad = _bad_row(exc)
            if on_bad_row != "skip" or bad is None:
                raise
            raw, row = bad
            if raw is main:
                skipped[str(sel.main_ids.iloc[row])] = str(exc)
                sel.rows = sel.rows[sel.rows != row]
            else:
                bad_id = str(sel.part_ids.iloc[row])
                skipped[bad_id] = str(exc)
                sel.part_rows = sel.part_rows[sel.part_rows != row]
                sel.rows = sel.rows[(sel.main_ids.iloc[sel.rows] != bad_id).to_numpy()]


def _participants_frame(
    cmap: ColumnMap, sel: _Rows, ids: np.ndarray, parsed: dict[str, np.ndarray]
) -> pd.DataFrame:
    """One row per scan: id, age, sex, site, session and phenotypes."""
    n = len(ids)
    participants = pd.DataFrame({"id": ids})
    if cmap.age is not None:
        participants["age"] = parsed["age"].astype(np.float64)
    elif cmap.identifying is not None:
        participants["age"] = parsed["identifying.scan_date"].astype(np.float64)
    else:
        participants["age"] = np.full(n, np.nan)
    participants["sex"] = parsed["sex.column"] if cmap.sex is not None else [None] * n
    participants["site"] = parsed["site"] if cmap.site is not None else [cmap.site_value] * n
    if cmap.session is not None:
        participants["session"] = parsed["session"]
    elif sel.age_sessions is not None:
        # every row labelled by its age, repeated or not: a scan keeps its pseudonym when a
        # later release adds another visit of the same person
        labels = sel.age_sessions.iloc[sel.rows].to_numpy(dtype=object)
        labels[labels == ""] = None
        participants["session"] = labels
    for name in cmap.phenotypes:
        participants[name] = parsed[f"phenotypes.{name}.column"]
    for column in participants.columns:
        if participants[column].dtype == object:
            participants[column] = _with_none(
                participants[column], participants[column].isna().to_numpy()
            )
    return participants


def _unmatched_ids(
    src: _Sources, sel: _Rows, ids: np.ndarray, skipped: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Ids of the table without a participants row, and participants without a scan."""
    if src.part is None:
        return [], []
    known_ids = set(sel.part_ids.iloc[sel.part_rows])
    without = list(dict.fromkeys(i for i in ids if i not in known_ids))
    table_ids = set(sel.main_ids.iloc[sel.rows])
    only = list(dict.fromkeys(i for i in sel.part_ids.iloc[sel.part_rows] if i not in table_ids))
    return without, [i for i in only if i not in skipped and i not in sel.dropped]


def read_wide_table(
    path: str | Path,
    column_map: ColumnMap | str | Path,
    *,
    participants_path: str | os.PathLike[str] | None = None,
    on_bad_row: str = "error",
) -> WideTable:
    """Read a wide CSV/TSV (one row per scan) with a column map.

    Feature columns are recognised by name (:func:`recognise_column`, with the map's
    ``surface_atlas``) or named under ``features``; the id, age, sex, site, session and
    phenotype columns come from the map; every other column must be matched by ``ignore``.
    A column that looks identifying (name, birth or scan date, record number, contact details,
    free text) is refused unless the map names it.

    Parameters
    ----------
    path : str or Path
        The table.
    column_map : ColumnMap, str or Path
        The map, or the path of its YAML file.
    participants_path : str or Path, optional
        A second file with the participant columns (age, sex, ...), joined on the map's
        id column; overrides the map's ``participants`` key.
    on_bad_row : {"error", "skip"}
        ``skip`` leaves out a row whose age, sex code, phenotype or feature value cannot be
        read, recording the reason in ``WideTable.skipped_rows``, instead of failing.

    Returns
    -------
    WideTable

    Raises
    ------
    ColumnMapError
        The map does not fit the table: a named column is missing, columns are neither
        recognised nor mapped nor ignored, a column looks identifying, a code is not in a
        coding.
    TableImportError
        Bad content: empty file, header only, empty or repeated id, non-numeric feature, age
        not a number or outside 0-120. Messages give file, line and column.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "t.csv").write_text("sub,age,sex,L_bankssts_thickavg\\ns1,30,1,2.9\\n")
    >>> cmap = ColumnMap.from_dict({"id": "sub", "age": "age", "site_value": "A",
    ...                             "sex": {"column": "sex", "coding": {1: "male", 2: "female"}}})
    >>> t = read_wide_table(d / "t.csv", cmap)
    >>> list(t.features.columns), t.participants.loc[0, "sex"]
    (['aparc.lh.bankssts.thickness'], 'M')
    """
    cmap = column_map if isinstance(column_map, ColumnMap) else load_column_map(column_map)
    src = _open_sources(path, cmap, participants_path)
    columns, fids, ignored, unrecognised, not_imported = _feature_columns(src)
    sel = _main_rows(src, columns)
    _join_participant_rows(src, sel)
    ids, values, parsed, skipped = _parse_cells(src, sel, columns, on_bad_row)
    fids, values, duplicate_columns, empty_columns = _merge_duplicate_features(
        src.main.path,
        columns,
        fids,
        values,
        src.main.lines[sel.rows],
        "add one of them to 'ignore' in the column map",
    )
    features = pd.DataFrame(
        values,
        index=pd.Index(ids, name="id", dtype=object),
        columns=pd.Index(fids, dtype=object),
    )
    without, only = _unmatched_ids(src, sel, ids, skipped)
    return WideTable(
        features=features,
        participants=_participants_frame(cmap, sel, ids, parsed),
        source_file=Path(path).name,
        participants_file=src.part_file.name if src.part_file is not None else None,
        unrecognised=unrecognised,
        ignored=ignored,
        not_imported=not_imported,
        duplicate_columns=duplicate_columns,
        dropped_ids=sel.dropped,
        without_participants=without,
        participants_only=only,
        n_filtered_out=sel.n_filtered,
        empty_columns=empty_columns,
        skipped_rows=skipped,
        lines=[int(v) for v in src.main.lines[sel.rows]],
    )


def participants_file(
    cmap: ColumnMap, table: Path | None, option: str | os.PathLike[str] | None
) -> Path | None:
    """The participants file to join: the option when given, else the map's ``participants``.

    A relative map path is taken relative to the map file's folder, and when no such file is
    there, to the table's folder. A file that does not exist is an error naming the path and
    where it came from.
    """
    if option is not None:
        path = Path(option)
        if not path.is_file():
            raise TableImportError(
                f"participants file {path} (given with --participants) does not exist or is "
                "not a file"
            )
        return path
    written = cmap.participants_path
    if written is None:
        return None
    candidate = Path(written)
    tried: list[Path] = []
    if candidate.is_absolute():
        tried.append(candidate)
    else:
        if cmap.map_dir is not None:
            tried.append(cmap.map_dir / candidate)
        if table is not None:
            tried.append(table.parent / candidate)
    for path in tried:
        if path.is_file():
            return path
    origin = "the column map's 'participants' key"
    looked = " or ".join(str(p) for p in dict.fromkeys(tried)) or written
    raise TableImportError(
        f"participants file {written!r} (from {origin}) does not exist: looked for {looked}; "
        "fix the path in the map (relative paths are relative to the map file) or pass "
        "--participants FILE"
    )
