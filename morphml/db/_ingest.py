"""``morphml ingest``: stats folders and tables into the database, in one transaction.

Order of work, chosen so that nothing is written before everything that can be checked cheaply
has been checked:

1. discover the scans and tables (no parsing) and pseudonymise their ids;
2. read the participants file with its column map and match it to the scans;
3. refuse conflicting duplicate ids, withdrawn people (unless re-enrolment is allowed), and
   scans another source already holds;
4. parse the stats folders in parallel (``jobs`` processes, or the workers of a Dask cluster
   when ``scheduler`` is given), streaming compact arrays back in order;
5. write everything inside one DuckDB transaction; any failure rolls it back, so the file is
   exactly as it was before the ingest started (a killed process leaves an uncommitted
   transaction, which DuckDB discards when the file is next opened).

Messages never contain an original id, a folder name or a path outside a subject's folder:
scans are named by pseudonym, files by their path inside the subject folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from morphml._version import __version__
from morphml.db._discover import Discovery, discover
from morphml.db._privacy import PseudonymKey, check_key, key_required, load_key
from morphml.db._store import connect, rollback
from morphml.exceptions import IngestError, MorphmlError, StatsFileError
from morphml.io import (
    ColumnMap,
    WideTable,
    feature_layout,
    find_stats_dir,
    is_table_export,
    load_column_map,
    parse_feature_id,
    read_stats_files,
    read_table_set,
    read_wide_table,
    select_stats_files,
    software_and_version,
)

__all__ = ["IngestSummary", "QualityControl", "ingest"]

_SOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CHUNK = 48


@dataclass
class IngestSummary:
    """What one ingest did (no identity inside)."""

    source: str
    ingest_id: int
    n_subjects: int = 0
    n_scans: int = 0
    n_new: int = 0
    n_changed: int = 0
    n_unchanged: int = 0
    n_skipped: int = 0
    n_files: int = 0
    n_values: int = 0
    n_features: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    #: QC flag -> scans of this source it flagged (``morphml qc`` lists them)
    qc_flags: Counter[str] = field(default_factory=Counter)
    #: what the table readers merged or left out (alias columns, ids on one side only);
    #: printed on the terminal only, never stored (they may name the user's own ids)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """A short human summary."""
        out = [
            f"source {self.source}: {self.n_subjects} subjects, {self.n_scans} scans "
            f"({self.n_new} new, {self.n_changed} changed, {self.n_unchanged} unchanged), "
            f"{self.n_files} files, {self.n_values:,} values, {self.n_features} features",
        ]
        if self.n_skipped or self.skipped:
            out.append(f"skipped {self.n_skipped} scans")
            out.extend(f"  {count} x {reason}" for reason, count in self.skipped.most_common())
        if self.qc_flags:
            flagged = ", ".join(f"{flag} {n}" for flag, n in sorted(self.qc_flags.items()))
            out.append(f"QC flags (see 'morphml qc'): {flagged}")
        out.extend(self.notes)
        out.extend(f"  error: {e}" for e in self.errors[:20])
        if len(self.errors) > 20:
            out.append(f"  ... and {len(self.errors) - 20} more errors (see ingest_errors)")
        return out


# ------------------------------------------------------------------------------- parsing


@dataclass
class _Parsed:
    """One scan's values, with its layout as an index into the chunk's layouts."""

    index: int
    layout: int
    values: np.ndarray
    software: str
    version: str
    files: list[tuple[str, str, str, str, str, str]]  # path, kind, atlas, software, version, hash
    skipped: dict[str, str]


@dataclass
class _Failed:
    index: int
    path: str | None
    line: int | None
    detail: str


_MERGE_CACHE: dict[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], np.ndarray]] = {}


def _merge_layout(
    per_file: tuple[tuple[str, ...], ...],
) -> tuple[tuple[str, ...], np.ndarray]:
    """Feature ids of a scan (first file wins for repeated globals) and where their values are
    in the concatenation of the files' values; cached per combination of file layouts."""
    hit = _MERGE_CACHE.get(per_file)
    if hit is None:
        ids: list[str] = []
        take: list[int] = []
        seen: set[str] = set()
        offset = 0
        for file_ids in per_file:
            for k, fid in enumerate(file_ids):
                if fid not in seen:
                    seen.add(fid)
                    ids.append(fid)
                    take.append(offset + k)
            offset += len(file_ids)
        hit = (tuple(ids), np.asarray(take, dtype=np.int64))
        if len(_MERGE_CACHE) > 256:
            _MERGE_CACHE.clear()
        _MERGE_CACHE[per_file] = hit
    return hit


def _parse_scan(folder: str) -> tuple[tuple[str, ...], np.ndarray, Any, Any, Any, Any]:
    stats = find_stats_dir(folder)
    readable, skipped = select_stats_files(stats)
    parsed = read_stats_files([stats / name for name in readable])
    layouts: list[tuple[str, ...]] = []
    values: list[np.ndarray] = []
    files = []
    for sf in parsed:
        file_ids, take = feature_layout(sf)
        if file_ids:
            layouts.append(file_ids)
            values.append(sf.flat_values()[take])
        else:
            skipped[f"stats/{sf.name}"] = "no features (parsed, not part of the dictionary)"
        files.append(
            (
                f"stats/{sf.name}",
                sf.table_kind,
                sf.atlas,
                sf.software,
                sf.version,
                sf.content_hash,
            )
        )
    software, version = software_and_version((sf.software, sf.version) for sf in parsed)
    ids, take = _merge_layout(tuple(layouts))
    array = np.concatenate(values)[take] if values else np.empty(0)
    return ids, array, software, version, files, skipped


def _parse_chunk(
    items: list[tuple[int, str]],
) -> tuple[list[tuple[str, ...]], list[_Parsed | _Failed]]:
    layouts: dict[tuple[str, ...], int] = {}
    out: list[_Parsed | _Failed] = []
    for index, folder in items:
        try:
            ids, values, software, version, files, skipped = _parse_scan(folder)
        except StatsFileError as err:
            relative = _relative_to_subject(err.path, folder)
            out.append(_Failed(index, relative, err.line, err.detail))
            continue
        except MorphmlError as err:
            out.append(_Failed(index, None, None, _strip_paths(str(err), folder)))
            continue
        layout = layouts.setdefault(ids, len(layouts))
        out.append(_Parsed(index, layout, values, software, version, files, skipped))
    return list(layouts), out


def _relative_to_subject(path: str, folder: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(folder).resolve()))
    except ValueError:
        return os.path.basename(path)


def _strip_paths(message: str, folder: str) -> str:
    folder_abs = str(Path(folder).resolve())
    for text in (folder_abs, folder):
        message = message.replace(text, "<subject>")
    return message


# ------------------------------------------------------------------------------ the ingest


@dataclass
class _Scan:
    """A scan to write: pseudonyms and demographics, never the original id."""

    scan_key: str
    subject_key: str
    session_label: str | None
    session_rank: int
    folder: Path | None
    age: float | None = None
    sex: str | None = None
    site: str | None = None
    scanner: str | None = None
    phenotypes: dict[str, tuple[str, float | None, str | None]] = field(default_factory=dict)
    table_values: tuple[tuple[str, ...], np.ndarray] | None = None
    #: (original id, session label): in memory only, for matching and the linkage file
    original: tuple[str, str | None] = ("", None)


#: QC run inside the ingest's transaction: given the open connection and the scan keys of the
#: ingested source, it stores its flags and returns the flag name of each (scan, flag) pair.
#: The caller passes it (``morphml.qc.qc_at_ingest``): the database layer knows no QC rules.
QualityControl = Callable[[duckdb.DuckDBPyConnection, list[str]], Iterable[str]]


def ingest(
    paths: Sequence[str | os.PathLike[str]],
    *,
    source: str,
    db: str | os.PathLike[str] | None = None,
    participants: str | os.PathLike[str] | None = None,
    column_map: str | os.PathLike[str] | ColumnMap | None = None,
    key_file: str | os.PathLike[str] | None = None,
    jobs: int = 1,
    on_error: str = "fail",
    linkage_out: str | os.PathLike[str] | None = None,
    allow_reenrol: bool = False,
    progress: bool = False,
    scheduler: Any = None,
    quality_control: QualityControl | None = None,
) -> IngestSummary:
    """Ingest stats folders and tables into the database as one transaction.

    Parameters
    ----------
    paths : sequence of path-like
        Subject folders, folders of subjects (SUBJECTS_DIR, FastSurfer output, BIDS
        derivatives), or ``.csv``/``.tsv`` tables (which need ``column_map``).
    source : str
        Name of the data source (``hospital``, ``fcon1000``, ...): pseudonyms are keyed by it.
    db : path-like, optional
        The database file (created when missing).
    participants, column_map : path-like, optional
        A participants table and the YAML column map that reads it (ids, age, sex coding, site,
        phenotypes). For table inputs the map reads the table itself; ``aparcstats2table`` /
        ``asegstats2table`` files are read as one set joined with the participants file (the
        map's ``participants`` key, which ``participants`` overrides).
    key_file : path-like, optional
        The pseudonym key (created with mode 0600 on first use).
    jobs : int
        Parser processes.
    on_error : {'fail', 'skip'}
        ``fail`` rolls back everything on the first bad scan; ``skip`` records bad scans in
        ``ingest_errors`` and ingests the rest. It covers participants rows that cannot be
        read, and (for tables) ids with no participants row and the reverse.
    linkage_out : path-like, optional
        Write original id <-> pseudonym here (mode 0600), for the linkage manager only.
    allow_reenrol : bool
        Accept people who withdrew earlier.
    progress : bool
        Show a progress bar on stderr.
    scheduler : str or distributed.Client, optional
        Parse the subject folders on this Dask cluster (a scheduler address or a client)
        instead of ``jobs`` local processes. The workers must see the folders at the same
        paths; the database is still written by this process, in one transaction.
    quality_control : callable, optional
        QC of the source's scans, run in the ingest's transaction after the values are written
        (``morphml.qc.qc_at_ingest``, which ``morphml ingest`` passes); its flags are counted in
        the summary. None stores no QC flags (``morphml qc`` can add them later).

    Returns
    -------
    IngestSummary

    Examples
    --------
    >>> from morphml.db import ingest  # doctest: +SKIP
    >>> from morphml.qc import qc_at_ingest  # doctest: +SKIP
    >>> ingest(["subjects/"], source="hospital", quality_control=qc_at_ingest)  # doctest: +SKIP
    """
    _check_arguments(source, on_error, jobs)
    # an existing database's key is never re-created: a new one would re-pseudonymise people
    key = load_key(key_file, create=not key_required(db))
    summary = IngestSummary(source=source, ingest_id=0)
    errors: list[_ErrorRow] = []
    scans = _gather_scans(paths, source, key, participants, column_map, on_error, errors, summary)
    with connect(db, create=True) as con:
        check_key(con, key)
        _check_withdrawn(con, key, scans, allow_reenrol)
        con.execute("SET preserve_insertion_order = false")
        # bounded memory: DuckDB writes large appends to the file as it goes (uncommitted
        # blocks are discarded on rollback or after a crash)
        con.execute("SET memory_limit = '1GB'")
        con.execute("BEGIN TRANSACTION")
        try:
            check_key(con, key, record=True)
            _write(con, scans, _Options(source, jobs, on_error, progress, scheduler), errors,
                   summary)  # fmt: skip
            if quality_control is not None:
                _quality_control(con, source, summary, quality_control)
            con.execute("COMMIT")
        except BaseException:
            rollback(con)
            raise
    if linkage_out is not None:
        _write_linkage(Path(linkage_out), scans)
    return summary


#: (scan key, file path, line, message) of a bad scan or row, stored in ``ingest_errors``
_ErrorRow = tuple[str | None, str | None, int | None, str]


@dataclass(frozen=True)
class _Options:
    """How to parse and what to do with a bad scan (the ingest's arguments)."""

    source: str
    jobs: int
    on_error: str
    progress: bool
    scheduler: Any


def _check_arguments(source: str, on_error: str, jobs: int) -> None:
    if not _SOURCE_RE.match(source or ""):
        raise IngestError(
            f"source name {source!r} must be 1-64 letters, digits, '_', '.' or '-' "
            "and start with a letter or digit"
        )
    if on_error not in ("fail", "skip"):
        raise IngestError(f"--on-error must be 'fail' or 'skip', got {on_error!r}")
    if not isinstance(jobs, int) or jobs < 1:
        raise IngestError(f"--jobs must be an integer >= 1, got {jobs!r}")


def _gather_scans(
    paths: Sequence[str | os.PathLike[str]],
    source: str,
    key: PseudonymKey,
    participants: str | os.PathLike[str] | None,
    column_map: str | os.PathLike[str] | ColumnMap | None,
    on_error: str,
    errors: list[_ErrorRow],
    summary: IngestSummary,
) -> list[_Scan]:
    """Discover the scans and tables, pseudonymise them and attach their participant rows;
    nothing is parsed or written yet."""
    found = discover([Path(p) for p in paths])
    cmap = _column_map(column_map, found)
    part_path = Path(participants) if participants is not None else found.participants
    for reason, count in found.skipped.items():
        summary.skipped[reason] += count
    scans = _plan_scans(found, source, key)
    if found.tables:
        if cmap is None:
            raise IngestError(
                f"{found.tables[0].name}: a table needs a column map (--map MAP.yaml) naming "
                "its id column and the sex coding"
            )
        scans.extend(
            _table_scans(found.tables, cmap, source, key, participants, on_error, errors, summary)
        )
    _check_duplicates(scans)
    if part_path is not None:
        if cmap is None:
            raise IngestError(
                f"{part_path.name}: a participants file needs a column map (--map MAP.yaml) "
                "that names the id, age and sex columns and states the sex coding"
            )
        if found.scans:
            if not part_path.is_file():
                origin = "--participants" if participants is not None else "found beside the scans"
                raise IngestError(
                    f"participants file {part_path} ({origin}) does not exist or is not a file"
                )
            _attach_participants(scans, part_path, cmap, on_error, errors, summary)
    return scans


def _quality_control(
    con: duckdb.DuckDBPyConnection,
    source: str,
    summary: IngestSummary,
    quality_control: QualityControl,
) -> None:
    """QC flags of the source's scans, in the ingest's transaction."""
    rows = con.execute("SELECT scan_key FROM scans WHERE source = ?", [source]).fetchall()
    keys = [str(k) for (k,) in rows]
    if not keys:
        return
    summary.qc_flags.update(quality_control(con, keys))


def _column_map(
    column_map: str | os.PathLike[str] | ColumnMap | None, found: Discovery
) -> ColumnMap | None:
    if isinstance(column_map, ColumnMap):
        return column_map
    if column_map is not None:
        return load_column_map(Path(column_map))
    if found.participants_map is not None:
        return load_column_map(found.participants_map)
    return None


def _plan_scans(found: Discovery, source: str, key: PseudonymKey) -> list[_Scan]:
    sessions: dict[str, list[str | None]] = {}
    for scan in found.scans:
        sessions.setdefault(scan.subject, []).append(scan.session)
    ranks = {
        subject: {s: r for r, s in enumerate(sorted(labels, key=lambda x: x or ""), start=1)}
        for subject, labels in sessions.items()
    }
    planned = []
    for scan in found.scans:
        planned.append(
            _Scan(
                scan_key=key.scan(source, scan.subject, scan.session),
                subject_key=key.subject(source, scan.subject),
                session_label=scan.session,
                session_rank=ranks[scan.subject][scan.session],
                folder=scan.path,
                original=(scan.subject, scan.session),
            )
        )
    return planned


def _check_duplicates(scans: list[_Scan]) -> None:
    counts = Counter(s.scan_key for s in scans)
    dupes = [k for k, n in counts.items() if n > 1]
    if dupes:
        raise IngestError(
            f"{len(dupes)} scan ids occur more than once in this ingest (e.g. scan {dupes[0]}): "
            "two folders or table rows claim the same subject and session; keep one"
        )


def _table_scans(
    tables: list[Path],
    cmap: ColumnMap,
    source: str,
    key: PseudonymKey,
    participants: str | os.PathLike[str] | None,
    on_error: str,
    errors: list[_ErrorRow],
    summary: IngestSummary,
) -> list[_Scan]:
    """Scans of the table inputs: FreeSurfer table exports are read as one set joined with the
    participants file; every other table is a wide table read with the map.

    The same scan in several tables is one scan when the rows agree (collapsed) and an error
    naming the files otherwise.
    """
    bad_rows = "skip" if on_error == "skip" else "error"
    exports = [t for t in tables if is_table_export(t)]
    wides = [t for t in tables if t not in exports]
    read: list[WideTable] = []
    if exports:
        read.append(
            read_table_set(exports, cmap, participants_path=participants, on_bad_row=bad_rows)
        )
    for table in wides:
        read.append(
            read_wide_table(table, cmap, participants_path=participants, on_bad_row=bad_rows)
        )
    out: list[_Scan] = []
    seen: dict[str, tuple[_Scan, str]] = {}
    for wide in read:
        where = f"{len(exports)} table files" if wide is read[0] and exports else wide.source_file
        _report_table(wide, where, on_error, errors, summary)
        skip = set(wide.skipped_rows) | set(wide.without_participants) if on_error == "skip" \
            else set()  # fmt: skip
        if wide.participants_file is None:
            skip = set(wide.skipped_rows)
        part = wide.participants
        feature_ids = list(wide.features.columns)
        matrix = wide.features.to_numpy(dtype=np.float64)
        has_session = "session" in part.columns
        subjects: dict[str, list[str | None]] = {}
        for _, row in part.iterrows():
            sess = row["session"] if has_session and pd.notna(row["session"]) else None
            subjects.setdefault(str(row["id"]), []).append(sess)
        phenotype_cols = [c for c in part.columns if c not in _DEMOGRAPHIC_COLUMNS]
        for i, (_, row) in enumerate(part.iterrows()):
            original = str(row["id"])
            if original in skip:
                continue
            sess = row["session"] if has_session and pd.notna(row["session"]) else None
            labels = sorted(set(subjects[original]), key=lambda x: x or "")
            scan = _Scan(
                scan_key=key.scan(source, original, sess),
                subject_key=key.subject(source, original),
                session_label=sess,
                session_rank=labels.index(sess) + 1,
                folder=None,
                original=(original, sess),
            )
            _apply_participant_row(scan, row, phenotype_cols, cmap)
            present = ~np.isnan(matrix[i])
            scan.table_values = (
                tuple(f for f, p in zip(feature_ids, present, strict=True) if p),
                matrix[i][present],
            )
            here = where if wide.lines is None else f"{where} line {wide.lines[i]}"
            earlier = seen.get(scan.scan_key)
            if earlier is not None:
                if _same_scan(earlier[0], scan):
                    continue
                shown = original + (f" session {sess}" if sess else "")
                # the user's own id, on the user's terminal only: the message is not stored
                raise IngestError(
                    f"{earlier[1]} and {here}: id {shown!r} appears in both with different "
                    "values (features or participant columns); one person's scan must be the "
                    "same in every file: fix one of the files, or ingest them as different "
                    "sources"
                )
            seen[scan.scan_key] = (scan, here)
            out.append(scan)
    return out


def _same_scan(a: _Scan, b: _Scan) -> bool:
    if (a.age, a.sex, a.site, a.phenotypes) != (b.age, b.sex, b.site, b.phenotypes):
        return False
    ids_a, vals_a = a.table_values or ((), np.empty(0))
    ids_b, vals_b = b.table_values or ((), np.empty(0))
    return ids_a == ids_b and bool(np.allclose(vals_a, vals_b, rtol=1e-9, atol=0.0))


def _shown_ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:10])
    return shown + (f" (and {len(ids) - 10} more)" if len(ids) > 10 else "")


def _report_table(
    wide: WideTable,
    where: str,
    on_error: str,
    errors: list[_ErrorRow],
    summary: IngestSummary,
) -> None:
    """Summary notes for what a table reader merged or left out; ids on one side only stop
    the ingest unless ``on_error == 'skip'`` (then they are skipped with a recorded reason).

    Ids appear only in the notes and messages, which go to the user's terminal; the recorded
    reasons in ``ingest_errors`` never hold an id.
    """
    if wide.empty_columns:
        pairs = ", ".join(f"{c!r} (used {k!r})" for c, k in wide.empty_columns.items())
        summary.notes.append(
            f"{where}: {len(wide.empty_columns)} all-zero or empty columns left out in favour "
            f"of a populated column holding the same feature: {pairs}"
        )
    if wide.duplicate_columns:
        pairs = ", ".join(f"{c!r} (= {k!r})" for c, k in wide.duplicate_columns.items())
        summary.notes.append(f"{where}: duplicate columns merged: {pairs}")
    part_name = wide.participants_file
    if part_name is not None:
        without = wide.without_participants
        only = wide.participants_only
        if (without or only) and on_error != "skip":
            parts = []
            if without:
                parts.append(
                    f"{len(without)} ids of {where} have no row in {part_name} "
                    f"({_shown_ids(without)})"
                )
            if only:
                parts.append(
                    f"{len(only)} ids of {part_name} have no row in {where} ({_shown_ids(only)})"
                )
            raise IngestError(
                "; ".join(parts) + "; fix the files, or ingest with --on-error skip to leave "
                "these ids out (nothing was ingested)"
            )
        if without:
            summary.notes.append(
                f"skipped {len(without)} ids of {where} without a row in {part_name}: "
                f"{_shown_ids(without)}"
            )
            summary.n_skipped += len(without)
            summary.skipped[f"no row in {part_name}"] += len(without)
            errors.extend(
                (None, where, None, f"a table row has no row in {part_name}") for _ in without
            )
        if only:
            summary.notes.append(
                f"{len(only)} ids of {part_name} have no row in {where} (not ingested): "
                f"{_shown_ids(only)}"
            )
            errors.extend(
                (None, part_name, None, f"a row of {part_name} matches no table row") for _ in only
            )
    if wide.skipped_rows:
        bad = list(wide.skipped_rows)
        summary.notes.append(f"skipped {len(bad)} rows that cannot be read: {_shown_ids(bad)}")
        summary.n_skipped += len(bad)
        for reason in wide.skipped_rows.values():
            summary.skipped["row cannot be read (see ingest_errors)"] += 1
            # stored: file names only, never the folders they were in
            errors.append((None, where, None, re.sub(r"[^\s'\"]*/(?=[^/\s]+)", "", reason)))


_DEMOGRAPHIC_COLUMNS = ("id", "age", "sex", "site", "session", "scanner")


def _apply_participant_row(
    scan: _Scan, row: pd.Series, phenotype_cols: list[str], cmap: ColumnMap
) -> None:
    age = row.get("age")
    scan.age = float(age) if age is not None and pd.notna(age) else None
    sex = row.get("sex")
    scan.sex = str(sex) if sex is not None and pd.notna(sex) else None
    site = row.get("site")
    scan.site = str(site) if site is not None and pd.notna(site) else None
    scanner = row.get("scanner")
    scan.scanner = str(scanner) if scanner is not None and pd.notna(scanner) else None
    types = {name: p.type for name, p in (cmap.phenotypes or {}).items()}
    for name in phenotype_cols:
        value = row[name]
        kind = types.get(name, "categorical")
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            scan.phenotypes[name] = (kind, None, None)
        elif kind == "continuous":
            scan.phenotypes[name] = (kind, float(value), None)
        else:
            scan.phenotypes[name] = (kind, None, str(value))


def _attach_participants(
    scans: list[_Scan],
    path: Path,
    cmap: ColumnMap,
    on_error: str,
    errors: list[_ErrorRow],
    summary: IngestSummary,
) -> None:
    wide = read_wide_table(path, cmap, on_bad_row="skip" if on_error == "skip" else "error")
    for reason in wide.skipped_rows.values():
        # the row's scans then have no participants row and are skipped below
        errors.append((None, path.name, None, re.sub(r"[^\s'\"]*/(?=[^/\s]+)", "", reason)))
    if wide.skipped_rows:
        summary.notes.append(
            f"{len(wide.skipped_rows)} rows of {path.name} cannot be read and were left out: "
            f"{_shown_ids(list(wide.skipped_rows))}"
        )
    part = wide.participants
    if len(wide.features.columns):
        raise IngestError(
            f"{path.name}: the participants file has feature columns "
            f"({list(wide.features.columns)[:3]} ...); ingest it as a table instead"
        )
    has_session = "session" in part.columns and part["session"].notna().any()
    phenotype_cols = [c for c in part.columns if c not in _DEMOGRAPHIC_COLUMNS]
    rows: dict[tuple[str, str | None], pd.Series] = {}
    for _, row in part.iterrows():
        sess = row["session"] if has_session and pd.notna(row["session"]) else None
        rows[(str(row["id"]), sess)] = row
    used: set[tuple[str, str | None]] = set()
    missing: list[_Scan] = []
    for scan in scans:
        original, session = scan.original
        match_key = (original, session if has_session else None)
        match = rows.get(match_key)
        if match is None:
            missing.append(scan)
            continue
        used.add(match_key)
        _apply_participant_row(scan, match, phenotype_cols, cmap)
    orphans = [k for k in rows if k not in used]
    if missing:
        message = (
            f"{len(missing)} scans have no row in {path.name} (e.g. scan {missing[0].scan_key}); "
            "every scan needs its participant row (id"
            + (" and session" if has_session else "")
            + ")"
        )
        if on_error == "fail":
            raise IngestError(message + "; nothing was ingested")
        summary.errors.append(message)
        for scan in missing:
            errors.append((scan.scan_key, None, None, f"no row in {path.name}"))
    if orphans:
        message = (
            f"{len(orphans)} rows of {path.name} match no scan folder "
            "(a participant without stats files)"
        )
        if on_error == "fail":
            raise IngestError(message + "; nothing was ingested")
        summary.errors.append(message)
        errors.extend((None, None, None, f"a row of {path.name} matches no scan") for _ in orphans)


def _check_withdrawn(
    con: duckdb.DuckDBPyConnection, key: PseudonymKey, scans: list[_Scan], allow: bool
) -> None:
    tokens = {row[0] for row in con.execute("SELECT token FROM withdrawals").fetchall()}
    if not tokens or allow:
        return
    withdrawn = {s.subject_key for s in scans if key.withdrawal_token(s.subject_key) in tokens}
    if withdrawn:
        raise IngestError(
            f"{len(withdrawn)} people in this ingest withdrew earlier "
            f"(e.g. {sorted(withdrawn)[0]}); "
            "their data are not ingested again unless you pass --allow-reenrol with their "
            "renewed consent"
        )


def _write(
    con: duckdb.DuckDBPyConnection,
    scans: list[_Scan],
    opts: _Options,
    errors: list[_ErrorRow],
    summary: IngestSummary,
) -> None:
    """Parse the scans and write them, their errors and the ingest's row (in the open
    transaction)."""
    _register_ingest(con, scans, opts.source, summary)
    known = _KnownFiles(con, opts.source)
    features = _FeatureIndex(con)
    writer = _Writer(con, summary.ingest_id, opts.source, features)
    folder_scans = [s for s in scans if s.folder is not None]
    table_scans = [s for s in scans if s.folder is None]
    bar = _progress(len(scans), opts.progress)
    parsed = _parse_all(folder_scans, opts.jobs, opts.scheduler)
    for layouts, results, pool in _chain(_table_results(table_scans), parsed):
        for result in results:
            bar(1)
            scan = pool[result.index]
            if isinstance(result, _Failed):
                _record_failed(scan, result, opts.on_error, errors, summary)
                continue
            status = _write_scan(scan, result, layouts, known, writer, opts, errors, summary)
            if status is not None:
                _count(summary, status)
    writer.flush()
    _finish_ingest(con, scans, opts.source, errors, summary, writer)


def _register_ingest(
    con: duckdb.DuckDBPyConnection, scans: list[_Scan], source: str, summary: IngestSummary
) -> None:
    """The ingest's id, its source's row, and a refusal when another source holds its scans."""
    ingest_id = con.execute("SELECT coalesce(max(ingest_id), 0) + 1 FROM ingests").fetchone()
    summary.ingest_id = int(ingest_id[0]) if ingest_id else 1
    kind = "table" if all(s.folder is None for s in scans) else "stats"
    con.execute(
        "INSERT INTO sources SELECT ?, ? WHERE NOT EXISTS "
        "(SELECT 1 FROM sources WHERE source = ?)",
        [source, kind, source],
    )
    other = con.execute(
        "SELECT DISTINCT source FROM scans WHERE scan_key IN (SELECT unnest(?)) AND source <> ?",
        [[s.scan_key for s in scans], source],
    ).fetchall()
    if other:
        raise IngestError(f"scan ids of this ingest already belong to source {other[0][0]!r}")


class _KnownFiles:
    """Content hashes already in the database: this source's files per scan (to tell new,
    changed and unchanged scans apart) and other sources' stats files (one scan, one source)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, source: str) -> None:
        self.existing: dict[str, dict[str, str]] = {}
        for scan_key, path, content_hash in con.execute(
            "SELECT f.scan_key, f.path, f.content_hash FROM files f JOIN scans s "
            "USING (scan_key) WHERE s.source = ?",
            [source],
        ).fetchall():
            self.existing.setdefault(scan_key, {})[path] = content_hash
        self.foreign: dict[str, str] = dict(
            con.execute(
                "SELECT f.content_hash, s.source FROM files f JOIN scans s USING (scan_key) "
                "WHERE s.source <> ? AND f.kind IN ('segmentation', 'surface', 'table')",
                [source],
            ).fetchall()
        )


def _record_failed(
    scan: _Scan,
    result: _Failed,
    on_error: str,
    errors: list[_ErrorRow],
    summary: IngestSummary,
) -> None:
    where = result.path or "stats/"
    line = f" line {result.line}" if result.line else ""
    message = f"scan {scan.scan_key}: {where}{line}: {result.detail}"
    if on_error == "fail":
        raise IngestError(message + " (nothing was ingested; --on-error skip "
                          "records bad scans and ingests the rest)")  # fmt: skip
    errors.append((scan.scan_key, result.path, result.line, result.detail))
    summary.n_skipped += 1
    summary.skipped["unreadable stats file (see ingest_errors)"] += 1


def _write_scan(
    scan: _Scan,
    result: _Parsed,
    layouts: list[tuple[str, ...]],
    known: _KnownFiles,
    writer: _Writer,
    opts: _Options,
    errors: list[_ErrorRow],
    summary: IngestSummary,
) -> str | None:
    """Write one parsed scan; its status (new, changed, unchanged), or None when skipped."""
    hashes = {f[0]: f[5] for f in result.files}
    claimed = {known.foreign[h] for h in hashes.values() if h in known.foreign}
    if claimed:
        message = (
            f"scan {scan.scan_key}: its stats files are already in the database under "
            f"source {sorted(claimed)[0]!r}; one scan belongs to one source"
        )
        if opts.on_error == "fail":
            raise IngestError(message + " (nothing was ingested)")
        errors.append((scan.scan_key, None, None, message))
        summary.n_skipped += 1
        summary.skipped["already ingested under another source"] += 1
        return None
    summary.n_files += len(hashes)
    before = known.existing.get(scan.scan_key)
    if before is not None and before == hashes:
        writer.update_scan_metadata(scan)
        writer.subjects_seen.add(scan.subject_key)
        return "unchanged"
    status = "new"
    if before is not None:
        status = "changed"
        writer.record_changes(scan.scan_key, before, hashes)
        writer.delete_scan(scan.scan_key)
    idx = writer.features.indices(layouts[result.layout])
    writer.add_scan(scan, idx, result.values, result.software, result.version, result.files,
                    status)  # fmt: skip
    return status


def _finish_ingest(
    con: duckdb.DuckDBPyConnection,
    scans: list[_Scan],
    source: str,
    errors: list[_ErrorRow],
    summary: IngestSummary,
    writer: _Writer,
) -> None:
    """The recorded errors, the summary's counts and the ingest's row."""
    subject_of = {s.scan_key: s.subject_key for s in scans}
    for scan_key, path, lineno, message in errors:
        con.execute(
            "INSERT INTO ingest_errors VALUES (?, ?, ?, ?, ?, ?, ?)",
            [summary.ingest_id, source, subject_of.get(scan_key or ""), scan_key, path, lineno,
             message],
        )  # fmt: skip
    summary.n_scans = summary.n_new + summary.n_changed + summary.n_unchanged
    summary.n_subjects = len(writer.subjects_seen)
    summary.n_values = writer.n_values
    summary.n_features = writer.features.n_used
    con.execute(
        "INSERT INTO ingests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            summary.ingest_id,
            source,
            summary.n_subjects,
            summary.n_scans,
            summary.n_new,
            summary.n_changed,
            summary.n_unchanged,
            summary.n_skipped,
            summary.n_values,
            __version__,
        ],
    )


def _count(summary: IngestSummary, status: str) -> None:
    if status == "new":
        summary.n_new += 1
    elif status == "changed":
        summary.n_changed += 1
    else:
        summary.n_unchanged += 1


_Chunk = tuple[list[tuple[str, ...]], list["_Parsed | _Failed"], list[_Scan]]


def _chain(*parts: Iterator[_Chunk]) -> Iterator[_Chunk]:
    for part in parts:
        yield from part


def _table_results(scans: list[_Scan]) -> Iterator[_Chunk]:
    """Table rows as parse results: one 'file' per row, hashed by its values."""
    if not scans:
        return
    layouts: dict[tuple[str, ...], int] = {}
    results: list[_Parsed | _Failed] = []
    for i, scan in enumerate(scans):
        ids, values = scan.table_values or ((), np.empty(0))
        digest = hashlib.sha256()
        digest.update("\x1f".join(ids).encode())
        digest.update(np.ascontiguousarray(values, dtype="<f8").tobytes())
        layout = layouts.setdefault(ids, len(layouts))
        files = [("table", "table", "", "", "", digest.hexdigest())]
        results.append(_Parsed(i, layout, values, "", "", files, {}))
    yield list(layouts), results, scans


def _parse_all(scans: list[_Scan], jobs: int, scheduler: Any = None) -> Iterator[_Chunk]:
    items = [(i, str(s.folder)) for i, s in enumerate(scans)]
    chunks = [items[k : k + _CHUNK] for k in range(0, len(items), _CHUNK)]
    if scheduler is not None and len(chunks) > 1:
        yield from _parse_on_dask(scans, chunks, scheduler)
        return
    if jobs == 1 or len(chunks) <= 1:
        for chunk in chunks:
            layouts, results = _parse_chunk(chunk)
            yield layouts, results, scans
        return
    from morphml._utils._threads import worker_init, worker_threads

    # thread policy: each parsing process gets cores // jobs BLAS/OpenMP threads
    with ProcessPoolExecutor(
        max_workers=jobs, initializer=worker_init, initargs=(worker_threads(jobs),)
    ) as pool:
        # a bounded window of chunks in flight (pool.map would submit them all, and parsed
        # chunks would pile up in memory whenever writing is slower than parsing)
        window = 3 * jobs
        queue = deque(pool.submit(_parse_chunk, c) for c in chunks[:window])
        following = iter(chunks[window:])
        while queue:
            layouts, results = queue.popleft().result()
            nxt = next(following, None)
            if nxt is not None:
                queue.append(pool.submit(_parse_chunk, nxt))
            yield layouts, results, scans


def _parse_on_dask(
    scans: list[_Scan], chunks: list[list[tuple[int, str]]], scheduler: Any
) -> Iterator[_Chunk]:
    """Chunks parsed on Dask workers, yielded in submission order (feature indices are then
    assigned in the same order as with local processes), a bounded number in flight."""
    from morphml.scale import dask_client, worker_count

    with dask_client(scheduler) as client:
        window = max(4, 3 * worker_count(client))
        queue = deque(client.submit(_parse_chunk, c, pure=False) for c in chunks[:window])
        following = iter(chunks[window:])
        while queue:
            layouts, results = queue.popleft().result()
            nxt = next(following, None)
            if nxt is not None:
                queue.append(client.submit(_parse_chunk, nxt, pure=False))
            yield layouts, results, scans


def _progress(total: int, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return lambda n: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="scan", file=sys.stderr, leave=False)
    return bar.update


class _FeatureIndex:
    """Canonical feature id -> feature_idx, adding new ids to the features table."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.index = dict(con.execute("SELECT feature_id, feature_idx FROM features").fetchall())
        self.next = max(self.index.values(), default=-1) + 1
        self.cache: dict[tuple[str, ...], np.ndarray] = {}
        self.used: set[int] = set()

    def indices(self, ids: tuple[str, ...]) -> np.ndarray:
        hit = self.cache.get(ids)
        if hit is None:
            new = [f for f in ids if f not in self.index]
            if new:
                rows = []
                for fid in new:
                    parts = parse_feature_id(fid)
                    self.index[fid] = self.next
                    rows.append((self.next, fid, parts.atlas, parts.hemi, parts.region,
                                 parts.measure))  # fmt: skip
                    self.next += 1
                _insert_rows(
                    self.con,
                    "features",
                    ["feature_idx", "feature_id", "atlas", "hemi", "region", "measure"],
                    rows,
                )
            hit = np.fromiter((self.index[f] for f in ids), dtype=np.int32, count=len(ids))
            self.cache[ids] = hit
            self.used.update(hit.tolist())
        return hit

    @property
    def n_used(self) -> int:
        return len(self.used)


class _Writer:
    """Buffers rows and appends them as Arrow batches."""

    _BATCH_VALUES = 2_000_000

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        ingest_id: int,
        source: str,
        features: _FeatureIndex,
    ) -> None:
        self.con = con
        self.ingest_id = ingest_id
        self.source = source
        self.features = features
        self.keys: list[str] = []
        self.idx: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.pending = 0
        self.n_values = 0
        self.scan_rows: list[tuple[Any, ...]] = []
        self.subject_rows: dict[str, str | None] = {}
        self.file_rows: list[tuple[Any, ...]] = []
        self.pheno_rows: list[tuple[Any, ...]] = []
        self.subjects_seen: set[str] = set()

    def add_scan(
        self,
        scan: _Scan,
        idx: np.ndarray,
        values: np.ndarray,
        software: str,
        version: str,
        files: list[tuple[str, str, str, str, str, str]],
        status: str,
    ) -> None:
        self.keys.append(scan.scan_key)
        self.idx.append(idx)
        self.vals.append(values)
        self.pending += len(values)
        self.n_values += len(values)
        self.scan_rows.append(
            (scan.scan_key, scan.subject_key, self.source, scan.session_rank, scan.site,
             scan.scanner, software or None, version or None, scan.age, len(values),
             self.ingest_id)
        )  # fmt: skip
        self.subject_rows[scan.subject_key] = scan.sex
        self.subjects_seen.add(scan.subject_key)
        self.file_rows.extend((scan.scan_key, *f) for f in files)
        self.pheno_rows.extend(
            (scan.scan_key, name, kind, num, text)
            for name, (kind, num, text) in scan.phenotypes.items()
        )
        if self.pending >= self._BATCH_VALUES:
            self.flush()

    def update_scan_metadata(self, scan: _Scan) -> None:
        self.con.execute(
            "UPDATE scans SET session = ?, site = ?, scanner = ?, age = ? WHERE scan_key = ?",
            [scan.session_rank, scan.site, scan.scanner, scan.age, scan.scan_key],
        )
        self.con.execute("DELETE FROM phenotypes WHERE scan_key = ?", [scan.scan_key])
        self.pheno_rows.extend(
            (scan.scan_key, name, kind, num, text)
            for name, (kind, num, text) in scan.phenotypes.items()
        )
        self.subject_rows[scan.subject_key] = scan.sex

    def delete_scan(self, scan_key: str) -> None:
        for table in ("measures", "files", "phenotypes", "scans"):
            self.con.execute(f"DELETE FROM {table} WHERE scan_key = ?", [scan_key])

    def record_changes(self, scan_key: str, before: dict[str, str], after: dict[str, str]) -> None:
        for path in sorted(set(before) | set(after)):
            if before.get(path) != after.get(path):
                self.con.execute(
                    "INSERT INTO changes VALUES (?, ?, ?, ?, ?)",
                    [self.ingest_id, scan_key, path, before.get(path), after.get(path)],
                )

    def flush(self) -> None:
        if self.keys:
            lengths = np.fromiter((len(v) for v in self.vals), dtype=np.int64)
            codes = np.repeat(np.arange(len(self.keys), dtype=np.int32), lengths)
            table = pa.table(
                {
                    "scan_key": pa.DictionaryArray.from_arrays(
                        pa.array(codes), pa.array(self.keys, type=pa.string())
                    ),
                    "feature_idx": pa.array(np.concatenate(self.idx), type=pa.int32()),
                    "value": pa.array(np.concatenate(self.vals), type=pa.float64()),
                }
            )
            self.con.register("morphml_batch", table)
            self.con.execute("INSERT INTO measures SELECT * FROM morphml_batch")
            self.con.unregister("morphml_batch")
            self.keys, self.idx, self.vals, self.pending = [], [], [], 0
        if self.scan_rows:
            _insert_rows(self.con, "scans", _SCAN_COLUMNS, self.scan_rows)
            self.scan_rows = []
        if self.subject_rows:
            rows = [(k, self.source, sex) for k, sex in self.subject_rows.items()]
            _insert_rows(
                self.con,
                "subjects",
                ["subject_key", "source", "sex"],
                rows,
                suffix=" ON CONFLICT (subject_key) DO UPDATE "
                "SET sex = coalesce(excluded.sex, subjects.sex)",
            )
            self.subject_rows = {}
        if self.file_rows:
            _insert_rows(self.con, "files", _FILE_COLUMNS, self.file_rows)
            self.file_rows = []
        if self.pheno_rows:
            _insert_rows(
                self.con,
                "phenotypes",
                ["scan_key", "name", "type", "value_num", "value_text"],
                self.pheno_rows,
            )
            self.pheno_rows = []


_SCAN_COLUMNS = [
    "scan_key", "subject_key", "source", "session", "site", "scanner", "software", "version",
    "age", "n_features", "ingest_id",
]  # fmt: skip
_FILE_COLUMNS = ["scan_key", "path", "kind", "atlas", "software", "version", "content_hash"]
_TYPES = {
    "session": pa.int32(), "age": pa.float64(), "n_features": pa.int32(),
    "ingest_id": pa.int32(), "feature_idx": pa.int32(), "value_num": pa.float64(),
}  # fmt: skip


def _insert_rows(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: list[str],
    rows: Sequence[tuple[Any, ...]],
    suffix: str = "",
) -> None:
    """Insert rows through one Arrow table (DuckDB's executemany is ~1 ms a row)."""
    data = {
        name: pa.array([r[k] for r in rows], type=_TYPES.get(name, pa.string()))
        for k, name in enumerate(columns)
    }
    con.register("morphml_rows", pa.table(data))
    try:
        con.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"SELECT {', '.join(columns)} FROM morphml_rows{suffix}"
        )
    finally:
        con.unregister("morphml_rows")


def _write_linkage(path: Path, scans: list[_Scan]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("original_id\tsession\tsubject_key\tscan_key\n")
        for scan in scans:
            original, session = scan.original
            handle.write(f"{original}\t{session or ''}\t{scan.subject_key}\t{scan.scan_key}\n")
