"""``morphml db info`` and ``morphml db export``: what the database holds, and the wide matrix.

The export is the one place where the long ``measures`` table (one row per scan and feature)
becomes the wide matrix models read. It is built without pandas: DuckDB joins each value to
its output row and streams the result as Arrow batches, numpy scatters the batches into one
preallocated column-major float64 matrix, and every column of that matrix becomes an Arrow
array without a copy. 10,000 scans x 4,000 features (40 million values) take a few seconds.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from morphml._version import __version__
from morphml.db._store import connect, db_path
from morphml.exceptions import ExportError

__all__ = ["ExportError", "ExportResult", "database_info", "export_wide", "format_info"]

#: the scan columns that open every export, in this order
SCAN_COLUMNS = (
    "scan_key",
    "subject_key",
    "source",
    "session",
    "site",
    "scanner",
    "software",
    "version",
    "age",
    "sex",
)
_FORMATS = (".parquet", ".csv")
#: cells per CSV piece; pieces are formatted in parallel and written in order
_CSV_CELLS = 4_000_000


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    path: Path
    n_rows: int
    n_features: int
    n_phenotypes: int


# ------------------------------------------------------------------------------------ info


def database_info(db: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Summarise the database: counts by source, site, software, atlas, sex, age, QC and runs.

    Parameters
    ----------
    db : path-like, optional
        The database file (see :func:`morphml.db.db_path`).

    Returns
    -------
    dict
        JSON-safe; :func:`format_info` turns it into text.

    Examples
    --------
    >>> from morphml.db import database_info  # doctest: +SKIP
    >>> database_info("morphml.duckdb")["counts"]  # doctest: +SKIP
    {'sources': 2, 'subjects': 1078, 'scans': 1078, 'values': 2345678, ...}
    """
    path = db_path(db)
    with connect(path, read_only=True) as con:
        meta = dict(_rows(con, "SELECT key, value FROM morphml_meta"))
        info: dict[str, Any] = {
            "file": path.name,
            "schema_version": int(meta["schema_version"]),
            "created_by": meta.get("created_by"),
            "counts": _info_counts(con),
            "sources": _info_sources(con),
            **_info_breakdowns(con),
            "qc": {
                "flags": [
                    {"flag": flag, "scans": int(n)}
                    for flag, n in _rows(
                        con,
                        "SELECT flag, count(DISTINCT scan_key) FROM qc_flags "
                        "GROUP BY ALL ORDER BY ALL",
                    )
                ],
                "scans_flagged": _one(con, "SELECT count(DISTINCT scan_key) FROM qc_flags"),
            },
            "phenotypes": [
                {"name": name, "type": kind, "scans": int(n)}
                for name, kind, n in _rows(
                    con,
                    "SELECT name, string_agg(DISTINCT type, '/' ORDER BY type), "
                    "count(DISTINCT scan_key) FILTER (WHERE value_num IS NOT NULL "
                    "OR value_text IS NOT NULL) FROM phenotypes GROUP BY name ORDER BY name",
                )
            ],
            "withdrawals": _one(con, "SELECT count(*) FROM withdrawals"),
        }
        runs = _rows(con, "SELECT count(*), count(*) FILTER (WHERE stale) FROM runs")[0]
        info["runs"] = {"total": int(runs[0]), "stale": int(runs[1])}
    return info


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    return con.execute(sql).fetchall()


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    return _rows(con, sql)[0][0]


def _info_counts(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    return {
        "sources": _one(con, "SELECT count(*) FROM sources"),
        "subjects": _one(con, "SELECT count(*) FROM subjects"),
        "scans": _one(con, "SELECT count(*) FROM scans"),
        "values": _one(con, "SELECT count(*) FROM measures"),
        "features": _one(con, "SELECT count(DISTINCT feature_idx) FROM measures"),
        "ingests": _one(con, "SELECT count(*) FROM ingests"),
    }


def _info_sources(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return [
        {"source": s, "kind": k, "subjects": int(n_sub), "scans": int(n_scan),
         "values": int(n_val)}
        for s, k, n_sub, n_scan, n_val in _rows(
            con,
            """
            SELECT so.source, so.kind,
                (SELECT count(*) FROM subjects su WHERE su.source = so.source),
                (SELECT count(*) FROM scans sc WHERE sc.source = so.source),
                coalesce(v.n, 0)
            FROM sources so LEFT JOIN (
                SELECT sc.source, count(*) AS n
                FROM measures m JOIN scans sc USING (scan_key) GROUP BY ALL
            ) v USING (source)
            ORDER BY so.source
            """,
        )
    ]  # fmt: skip


def _info_breakdowns(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Scans by site and software, values by atlas, subjects by sex, and the age range."""
    age = _rows(
        con, "SELECT count(age), min(age), max(age), avg(age) FROM scans WHERE age IS NOT NULL"
    )[0]
    return {
        "sites": [
            {"source": s, "site": site, "scans": int(n)}
            for s, site, n in _rows(
                con, "SELECT source, site, count(*) FROM scans GROUP BY ALL ORDER BY ALL"
            )
        ],
        "software": [
            {"software": sw, "version": v, "scans": int(n)}
            for sw, v, n in _rows(
                con, "SELECT software, version, count(*) FROM scans GROUP BY ALL ORDER BY ALL"
            )
        ],
        "atlases": [
            {"atlas": a, "features": int(nf), "scans": int(ns), "values": int(nv)}
            for a, nf, ns, nv in _rows(
                con,
                """
                SELECT f.atlas, count(DISTINCT m.feature_idx), count(DISTINCT m.scan_key),
                    count(*)
                FROM measures m JOIN features f USING (feature_idx)
                GROUP BY ALL ORDER BY ALL
                """,
            )
        ],
        "sex": {
            str(sex) if sex is not None else "unknown": int(n)
            for sex, n in _rows(
                con, "SELECT sex, count(*) FROM subjects GROUP BY ALL ORDER BY sex NULLS LAST"
            )
        },
        "age": {
            "scans": int(age[0]),
            "min": _float(age[1]),
            "max": _float(age[2]),
            "mean": _float(age[3], 2),
        },
    }


def _float(value: Any, digits: int | None = None) -> float | None:
    if value is None:
        return None
    return round(float(value), digits) if digits is not None else float(value)


def format_info(info: dict[str, Any]) -> str:
    """The text form of :func:`database_info`.

    Examples
    --------
    >>> from morphml.db import database_info, format_info  # doctest: +SKIP
    >>> print(format_info(database_info("morphml.duckdb")))  # doctest: +SKIP
    """
    c = info["counts"]
    out = [
        f"{info['file']}: morphml database, schema version {info['schema_version']}",
        f"  {c['sources']} sources, {c['subjects']:,} subjects, {c['scans']:,} scans, "
        f"{c['values']:,} values of {c['features']:,} features, {c['ingests']} ingests",
    ]

    def table(title: str, rows: list[list[str]]) -> None:
        out.append(f"{title}:")
        if not rows:
            out.append("  none")
            return
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            cells = [
                cell.rjust(w) if cell[:1].isdigit() and i else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(r, widths, strict=True))
            ]
            out.append("  " + "  ".join(cells).rstrip())

    table(
        "sources",
        [
            [s["source"], s["kind"], f"{s['subjects']:,} subjects", f"{s['scans']:,} scans",
             f"{s['values']:,} values"]
            for s in info["sources"]
        ],
    )  # fmt: skip
    table(
        "sites",
        [[s["source"], _text(s["site"]), f"{s['scans']:,} scans"] for s in info["sites"]],
    )
    table(
        "software",
        [
            [_text(s["software"]), _text(s["version"]), f"{s['scans']:,} scans"]
            for s in info["software"]
        ],
    )
    table(
        "atlases",
        [
            [a["atlas"], f"{a['features']:,} features", f"{a['scans']:,} scans"]
            for a in info["atlases"]
        ],
    )
    sex = ", ".join(f"{k} {v:,}" for k, v in info["sex"].items()) or "none"
    out.append(f"sex (subjects): {sex}")
    age = info["age"]
    if age["scans"]:
        out.append(
            f"age (scans): {age['min']:g} to {age['max']:g}, mean {age['mean']:g} "
            f"({age['scans']:,} scans with an age)"
        )
    else:
        out.append("age (scans): none recorded")
    flags = info["qc"]["flags"]
    out.append(
        "QC flags: "
        + (
            ", ".join(f"{f['flag']} {f['scans']:,}" for f in flags)
            + f" ({info['qc']['scans_flagged']:,} scans flagged)"
            if flags
            else "none"
        )
    )
    phenos = ", ".join(f"{p['name']} ({p['type']}, {p['scans']:,})" for p in info["phenotypes"])
    out.append(f"phenotypes: {phenos or 'none'}")
    out.append(f"withdrawals: {info['withdrawals']}")
    out.append(f"runs: {info['runs']['total']} ({info['runs']['stale']} stale)")
    return "\n".join(out)


def _text(value: str | None) -> str:
    return "-" if value is None else str(value)


# ---------------------------------------------------------------------------------- export


def export_wide(
    db: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    *,
    atlases: Sequence[str] | None = None,
    measures: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
) -> ExportResult:
    """Write the wide matrix: one row per scan, one column per feature, with phenotypes.

    Columns, in order: the scan columns (``scan_key``, ``subject_key``, ``source``, ``session``
    (rank within the subject), ``site``, ``scanner``, ``software``, ``version``, ``age``,
    ``sex``), one column per phenotype (float64 when every value is continuous, text
    otherwise; a phenotype named like a scan column or a feature is written as
    ``phenotype.NAME``), then one float64 column per canonical feature id, in feature index
    order. Missing values are nulls (NaN when read by pandas or numpy; empty cells in CSV).
    Features without any value among the exported scans are left out. Rows are ordered by
    source, subject, session.

    Parameters
    ----------
    db : path-like or None
        The database file (see :func:`morphml.db.db_path`).
    out : path-like
        ``*.parquet`` or ``*.csv`` (its folder is created when missing). Written to a
        temporary file beside it first, so a failed export leaves no partial file.
    atlases, measures, sources : sequence of str, optional
        Keep only these atlases (``aparc``, ``aseg``, ...), measures (``thickness``,
        ``volume``, ...) and sources.

    Returns
    -------
    ExportResult

    Raises
    ------
    ExportError
        For another file suffix, an atlas, measure or source the database does not hold, or
        when nothing matches.

    Examples
    --------
    >>> from morphml.db import export_wide  # doctest: +SKIP
    >>> export_wide("morphml.duckdb", "wide.parquet", atlases=["aparc"])  # doctest: +SKIP
    ExportResult(path=PosixPath('wide.parquet'), n_rows=1078, n_features=204, n_phenotypes=2)
    """
    out = Path(out)
    fmt = out.suffix.lower()
    if fmt not in _FORMATS:
        raise ExportError(
            f"{out.name}: cannot export to {out.suffix or 'a file without a suffix'!r}; "
            "name the output *.parquet or *.csv"
        )
    with connect(db, read_only=True) as con:
        _check_choices(con, "atlas", "atlases", "SELECT DISTINCT atlas FROM features", atlases)
        _check_choices(
            con, "measure", "measures", "SELECT DISTINCT measure FROM features", measures
        )
        _check_choices(con, "source", "sources", "SELECT source FROM sources", sources)
        feats = _selected_features(con, atlases, measures)
        scans = _selected_scans(con, sources)
        if scans.num_rows == 0:
            raise ExportError("no scans to export" + (f" from {list(sources)}" if sources else ""))
        matrix, phenotypes = _read_values(con, scans, feats, every=not atlases and not measures)
        schema_version = con.execute(
            "SELECT value FROM morphml_meta WHERE key = 'schema_version'"
        ).fetchone()
    provenance = {
        "morphml_version": __version__,
        "schema_version": schema_version[0] if schema_version else None,
        "atlases": list(atlases) if atlases else None,
        "measures": list(measures) if measures else None,
        "sources": list(sources) if sources else None,
    }
    table, n_features = _wide_table(scans, feats, matrix, phenotypes, provenance)
    del matrix  # the table's columns hold its memory now
    _write_atomic(table, out, fmt, n_features)
    return ExportResult(
        path=out, n_rows=scans.num_rows, n_features=n_features, n_phenotypes=len(phenotypes)
    )


def _read_values(
    con: duckdb.DuckDBPyConnection, scans: pa.Table, feats: pa.Table, *, every: bool
) -> tuple[np.ndarray, dict[str, pa.Array]]:
    """The (features, scans) value matrix and the phenotype columns, rows in ``scans`` order."""
    n = scans.num_rows
    row_ids = pa.table(
        {"scan_key": scans.column("scan_key"), "row_id": pa.array(np.arange(n, dtype=np.int32))}
    )
    con.register("morphml_export_rows", row_ids)
    con.register("morphml_export_features", feats.select(["feature_idx"]))
    try:
        matrix = _scatter_measures(con, feats.column("feature_idx").to_numpy(), n, every=every)
        return matrix, _phenotype_columns(con, n)
    finally:
        con.unregister("morphml_export_rows")
        con.unregister("morphml_export_features")


def _wide_table(
    scans: pa.Table,
    feats: pa.Table,
    matrix: np.ndarray,
    phenotypes: dict[str, pa.Array],
    provenance: dict[str, Any],
) -> tuple[pa.Table, int]:
    """Scan columns, phenotypes, then the features that have a value (each a zero-copy view
    of its matrix row); the number of feature columns."""
    keep = np.flatnonzero(~np.isnan(matrix).all(axis=1))
    names = list(scans.column_names)
    columns = list(scans.columns)
    feature_ids = feats.column("feature_id").to_pylist()
    taken = {*SCAN_COLUMNS, *feature_ids}
    for name, column in phenotypes.items():
        names.append(f"phenotype.{name}" if name in taken else name)
        columns.append(column)
    for j in keep:
        names.append(feature_ids[j])
        columns.append(pa.array(matrix[j], type=pa.float64(), from_pandas=True))
    table = pa.Table.from_arrays(columns, names=names)
    return table.replace_schema_metadata({"morphml": json.dumps(provenance)}), len(keep)


def _write_atomic(table: pa.Table, out: Path, fmt: str, n_features: int) -> None:
    """Write to a temporary file beside ``out``, then rename it: no partial file on failure.

    The last ``n_features`` columns are the features.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    try:
        if fmt == ".parquet":
            text = [f.name for f in table.schema if pa.types.is_string(f.type)]
            leading = table.column_names[: table.num_columns - n_features]
            # feature values rarely repeat: dictionary encoding and snappy gain almost nothing
            # on them, and their min/max statistics serve no reader of one wide row group;
            # together they cost 60 % of the write (measured at 11,256 x 5,830: 1.7 s CPU,
            # 0.6 s without). Text columns keep both, scan and phenotype columns statistics.
            pq.write_table(
                table,
                tmp,
                use_dictionary=text,
                compression=dict.fromkeys(text, "snappy"),
                write_statistics=leading,
            )
        else:
            _write_csv(table, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _check_choices(
    con: duckdb.DuckDBPyConnection,
    what: str,
    plural: str,
    sql: str,
    chosen: Sequence[str] | None,
) -> None:
    if not chosen:
        return
    if isinstance(chosen, str):
        raise ExportError(f"give the {plural} as a list of names, not the string {chosen!r}")
    known = sorted(str(row[0]) for row in con.execute(sql).fetchall())
    for name in chosen:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ExportError(
                f"the database holds no {what} {name!r}{hint}; "
                f"its {plural} are: {', '.join(known) or 'none'}"
            )


def _selected_features(
    con: duckdb.DuckDBPyConnection,
    atlases: Sequence[str] | None,
    measures: Sequence[str] | None,
) -> pa.Table:
    where, params = ["TRUE"], []
    if atlases:
        where.append("list_contains(?, atlas)")
        params.append(list(atlases))
    if measures:
        where.append("list_contains(?, measure)")
        params.append(list(measures))
    result = con.execute(
        f"SELECT feature_idx, feature_id FROM features WHERE {' AND '.join(where)} "
        "ORDER BY feature_idx",
        params,
    )
    feats = _arrow_table(result)
    if feats.num_rows == 0:
        raise ExportError(
            f"no feature has atlas in {list(atlases or [])} and measure in {list(measures or [])}"
        )
    return feats


def _selected_scans(con: duckdb.DuckDBPyConnection, sources: Sequence[str] | None) -> pa.Table:
    where, params = "", []
    if sources:
        where, params = "WHERE list_contains(?, sc.source)", [list(sources)]
    result = con.execute(
        f"""
        SELECT sc.scan_key, sc.subject_key, sc.source, sc.session, sc.site, sc.scanner,
            sc.software, sc.version, sc.age, su.sex
        FROM scans sc LEFT JOIN subjects su USING (subject_key)
        {where}
        ORDER BY sc.source, sc.subject_key, sc.session NULLS LAST, sc.scan_key
        """,
        params,
    )
    return _arrow_table(result)


def _scatter_measures(
    con: duckdb.DuckDBPyConnection, feature_idx: np.ndarray, n_rows: int, *, every: bool = False
) -> np.ndarray:
    """The (n_features, n_rows) matrix of the selected scans and features, NaN where missing.

    Column-major on purpose: each feature's values are contiguous, so each becomes an Arrow
    array without a copy. DuckDB's join runs in a background thread (it releases the GIL)
    while this thread scatters the batches it has already produced, so the two overlap.
    ``every`` says that every feature of the database is selected: the features filter is
    then left out of the query.
    """
    n_features = len(feature_idx)
    # feature_idx -> offset of its column in the flat matrix
    offset = np.zeros(int(feature_idx.max()) + 1, dtype=np.int64)
    offset[feature_idx] = np.arange(n_features, dtype=np.int64) * n_rows
    flat = np.full(n_features * n_rows, np.nan)
    semi = "" if every else "SEMI JOIN morphml_export_features f USING (feature_idx)"
    result = con.execute(
        f"""
        SELECT r.row_id, m.feature_idx, m.value
        FROM measures m
        JOIN morphml_export_rows r USING (scan_key)
        {semi}
        """
    )
    for batch in _prefetched(_arrow_reader(result, 1 << 20)):
        rows = batch.column(0).to_numpy()
        pos = offset[batch.column(1).to_numpy()]
        pos += rows
        flat[pos] = batch.column(2).to_numpy(zero_copy_only=False)
    return flat.reshape(n_features, n_rows)


def _prefetched(reader: pa.RecordBatchReader, depth: int = 3) -> Iterator[pa.RecordBatch]:
    """The reader's batches, read ahead by a background thread (at most ``depth`` waiting).

    An error in the reader is raised here; when the consumer stops early, the thread stops
    at its next batch.
    """
    ready: queue.Queue[pa.RecordBatch | BaseException | None] = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        item: pa.RecordBatch | BaseException | None = None
        try:
            for batch in reader:
                while not stop.is_set():
                    try:
                        ready.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            item = exc
        ready.put(item)

    thread = threading.Thread(target=produce, name="morphml-export-reader", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.1)
        thread.join()


def _phenotype_columns(con: duckdb.DuckDBPyConnection, n_rows: int) -> dict[str, pa.Array]:
    """One column per phenotype name: float64 when all its values are continuous, else text."""
    result = con.execute(
        """
        SELECT r.row_id, p.name, p.type, p.value_num, p.value_text
        FROM phenotypes p JOIN morphml_export_rows r USING (scan_key)
        ORDER BY p.name, r.row_id
        """
    )
    table = _arrow_table(result)
    columns: dict[str, pa.Array] = {}
    if table.num_rows == 0:
        return columns
    names = table.column("name").to_pylist()
    rows = table.column("row_id").to_numpy()
    types = table.column("type").to_pylist()
    nums = table.column("value_num").to_numpy(zero_copy_only=False)
    texts = table.column("value_text").to_pylist()
    start = 0
    for stop in [*_group_ends(names), len(names)]:
        name = names[start]
        where = rows[start:stop]
        if all(t == "continuous" for t in types[start:stop]):
            values = np.full(n_rows, np.nan)
            values[where] = nums[start:stop]
            columns[name] = pa.array(values, type=pa.float64(), from_pandas=True)
        else:
            cells: list[str | None] = [None] * n_rows
            for row, num, text in zip(where, nums[start:stop], texts[start:stop], strict=True):
                if text is not None:
                    cells[row] = text
                elif not np.isnan(num):
                    cells[row] = f"{num:.15g}"
            columns[name] = pa.array(cells, type=pa.string())
        start = stop
    return columns


def _arrow_table(result: duckdb.DuckDBPyConnection) -> pa.Table:
    # duckdb 1.5 renamed fetch_arrow_table (now deprecated) to to_arrow_table
    if hasattr(result, "to_arrow_table"):
        return result.to_arrow_table()
    return result.fetch_arrow_table()


def _arrow_reader(result: duckdb.DuckDBPyConnection, rows: int) -> pa.RecordBatchReader:
    if hasattr(result, "to_arrow_reader"):
        return result.to_arrow_reader(rows)
    return result.fetch_record_batch(rows)


def _group_ends(names: list[str]) -> Iterator[int]:
    for i in range(1, len(names)):
        if names[i] != names[i - 1]:
            yield i


def _write_csv(table: pa.Table, path: Path) -> None:
    """Write CSV pieces formatted in parallel threads (pyarrow releases the GIL), in order."""

    rows = max(64, _CSV_CELLS // max(table.num_columns, 1))

    def piece(start: int) -> pa.Buffer:
        sink = pa.BufferOutputStream()
        options = pacsv.WriteOptions(include_header=start == 0)
        pacsv.write_csv(table.slice(start, rows), sink, write_options=options)
        return sink.getvalue()

    starts = range(0, max(table.num_rows, 1), rows)
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool, open(path, "wb") as handle:
        # a bounded window of pieces in flight keeps memory flat on large exports
        window = 2 * workers
        pending = [pool.submit(piece, s) for s in starts[:window]]
        next_start = window
        while pending:
            handle.write(pending.pop(0).result())
            if next_start < len(starts):
                pending.append(pool.submit(piece, starts[next_start]))
                next_start += 1
