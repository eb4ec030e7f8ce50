"""Which scans each fitted run used, and whether a run is stale.

A run is stale when data it was trained or evaluated on have left the database (a withdrawal)
or were never there when the run was recorded. Stale runs are kept, marked, and explained:
their results can no longer be reproduced from this database. The reason never names a person.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pyarrow as pa

from morphml.db._store import rollback
from morphml.exceptions import DatabaseError, StaleRunError

__all__ = ["check_stale_run", "record_run", "run_folders", "run_status", "stale_runs"]


def record_run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    kind: str,
    config_hash: str,
    scan_keys: Iterable[str],
    run_dir: str | os.PathLike[str] | None = None,
) -> bool:
    """Record a run, its folder and the scans it used, in one transaction of its own.

    Scans that are no longer in the database (withdrawn, or replaced by a re-ingest since the
    data were read) are not linked; the run is recorded as stale instead, so that a withdrawal
    racing a fit can neither re-create the link to the withdrawn person nor leave the run
    looking reproducible.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        An open, writable morphml database (see :func:`morphml.db.connect`), not inside a
        transaction.
    run_id : str
        Unique id of the run (its directory name, say).
    kind : str
        What the run is (``pretrain``, ``transfer``, ...).
    config_hash : str
        Hash of the resolved configuration.
    scan_keys : iterable of str
        Pseudonymous scan keys the run used.
    run_dir : path-like, optional
        The folder the run wrote. It is stored relative to the database's folder (so the two
        can move together), and a withdrawal scrubs the person from the files in it.

    Returns
    -------
    bool
        True when the run was recorded fresh, False when it was recorded stale.

    Raises
    ------
    DatabaseError
        When ``run_id`` is already recorded.

    Examples
    --------
    >>> from morphml.db import connect, record_run  # doctest: +SKIP
    >>> with connect("morphml.duckdb") as con:  # doctest: +SKIP
    ...     record_run(con, "run-001", "pretrain", "c0ffee", ["scan-1f2e..."])
    True
    """
    keys = list(dict.fromkeys(scan_keys))
    table = pa.table({"scan_key": pa.array(keys, type=pa.string())})
    con.execute("BEGIN")
    try:
        if con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone():
            raise DatabaseError(
                f"run {run_id!r} is already recorded in the database; give each run a new id"
            )
        con.register("morphml_run_keys", table)
        try:
            present = con.execute(
                "SELECT count(*) FROM morphml_run_keys "
                "WHERE scan_key IN (SELECT scan_key FROM scans)"
            ).fetchone()
            n_missing = len(keys) - (int(present[0]) if present else 0)
            reason = (
                f"{n_missing} of its {len(keys)} scans were no longer in the database when the "
                "run was recorded"
                if n_missing
                else None
            )
            con.execute(
                "INSERT INTO runs (run_id, kind, config_hash, stale, stale_reason, run_dir) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [run_id, kind, config_hash, reason is not None, reason, _stored_dir(con, run_dir)],
            )
            con.execute(
                "INSERT INTO run_scans SELECT ?, scan_key FROM morphml_run_keys "
                "WHERE scan_key IN (SELECT scan_key FROM scans)",
                [run_id],
            )
        finally:
            con.unregister("morphml_run_keys")
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        raise
    return reason is None


def _database_folder(con: duckdb.DuckDBPyConnection) -> Path | None:
    row = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    return Path(row[0]).resolve().parent if row and row[0] else None


def _stored_dir(
    con: duckdb.DuckDBPyConnection, run_dir: str | os.PathLike[str] | None
) -> str | None:
    if run_dir is None:
        return None
    folder = Path(run_dir).resolve()
    base = _database_folder(con)
    if base is None:
        return str(folder)
    return os.path.relpath(folder, base)


def run_folders(con: duckdb.DuckDBPyConnection, run_ids: Iterable[str]) -> dict[str, Path | None]:
    """Each run's folder as an absolute path (None where the run did not record one)."""
    base = _database_folder(con)
    out: dict[str, Path | None] = {}
    for run_id in run_ids:
        row = con.execute("SELECT run_dir FROM runs WHERE run_id = ?", [run_id]).fetchone()
        stored = row[0] if row else None
        if stored is None:
            out[run_id] = None
        else:
            path = Path(stored)
            out[run_id] = path if path.is_absolute() or base is None else (base / path).resolve()
    return out


def check_stale_run(
    run_dir: str | os.PathLike[str],
    db: str | os.PathLike[str] | None = None,
    *,
    allow_stale: bool = False,
    command: str = "this command",
) -> str | None:
    """Refuse a stale run unless ``allow_stale``; return why it is stale (None when fresh).

    A run is stale when a withdrawal scrubbed people from its folder (``manifest.json`` says
    so, with or without a database) or when the database marks it stale. A run the database
    does not know (fitted on another database) is judged by its manifest alone.

    Parameters
    ----------
    run_dir : path-like
        A run (or evaluation) folder with a ``manifest.json``.
    db : path-like, optional
        The database; skipped when None or when the file does not exist.
    allow_stale : bool
        Return the reason instead of raising.
    command : str
        The command that asks, for the message (``predict``, ``report``, ``evaluate``).

    Raises
    ------
    StaleRunError
        When the run is stale and ``allow_stale`` is false.

    Examples
    --------
    >>> from morphml.db import check_stale_run  # doctest: +SKIP
    >>> check_stale_run("runs/pretrain", "morphml.duckdb", command="predict")  # doctest: +SKIP
    """
    import json

    from morphml.db._store import connect, db_path

    run = Path(run_dir)
    reasons: list[str] = []
    run_id = None
    try:
        manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    if isinstance(manifest, dict):
        run_id = manifest.get("run_id")
        for record in manifest.get("withdrawals") or []:
            if isinstance(record, dict):
                reasons.append(
                    f"withdrawal {record.get('withdrawal_id')} removed "
                    f"{record.get('n_scans_removed')} scans from its files"
                )
    path = db_path(db) if db is not None else None
    if run_id is not None and path is not None and path.is_file():
        with connect(path, read_only=True) as con:
            row = con.execute(
                "SELECT stale, stale_reason FROM runs WHERE run_id = ?", [str(run_id)]
            ).fetchone()
        if row is not None and row[0]:
            reasons.insert(0, str(row[1] or "marked stale in the database"))
    if not reasons:
        return None
    reason = "; ".join(dict.fromkeys(reasons))
    if not allow_stale:
        raise StaleRunError(
            f"{run} is a stale run ({reason}); its results no longer match the data. Fit it "
            f"again, or pass --allow-stale to {command} with it anyway"
        )
    return reason


def stale_runs(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str | None]]:
    """Every stale run as ``(run_id, reason)``, ordered by run id."""
    rows = con.execute(
        "SELECT run_id, stale_reason FROM runs WHERE stale ORDER BY run_id"
    ).fetchall()
    return [(str(run_id), reason) for run_id, reason in rows]


def run_status(con: duckdb.DuckDBPyConnection, run_id: str) -> tuple[bool, str | None]:
    """Whether a run is stale, and why.

    Raises
    ------
    DatabaseError
        When the run is not recorded in this database.
    """
    row = con.execute("SELECT stale, stale_reason FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if row is None:
        raise DatabaseError(f"run {run_id!r} is not recorded in this database")
    return bool(row[0]), row[1]


def mark_runs_stale(con: duckdb.DuckDBPyConnection, scan_keys_table: str, reason: str) -> int:
    """Mark stale every run that used a scan listed in ``scan_keys_table``; return how many.

    For use inside the caller's transaction. A run already stale for another reason keeps that
    reason and gets this one appended.
    """
    used = (
        "SELECT DISTINCT run_id FROM run_scans "
        f"WHERE scan_key IN (SELECT scan_key FROM {scan_keys_table})"
    )
    row = con.execute(f"SELECT count(*) FROM ({used})").fetchone()
    n_runs = int(row[0]) if row else 0
    if n_runs:
        con.execute(
            "UPDATE runs SET stale = TRUE, stale_reason = CASE "
            "WHEN stale AND stale_reason IS NOT NULL THEN stale_reason || '; ' || ? ELSE ? END "
            f"WHERE run_id IN ({used})",
            [reason, reason],
        )
    return n_runs
