"""Which scans each fitted run used, and whether a run is stale.

A run is stale when data it was trained or evaluated on have left the database (a withdrawal)
or were never there when the run was recorded. Stale runs are kept, marked, and explained:
their results can no longer be reproduced from this database. The reason never names a person.
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb
import pyarrow as pa

from morphml.exceptions import DatabaseError

__all__ = ["record_run", "run_status", "stale_runs"]


def record_run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    kind: str,
    config_hash: str,
    scan_keys: Iterable[str],
) -> bool:
    """Record a run and the scans it used, in one transaction of its own.

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
                "INSERT INTO runs (run_id, kind, config_hash, stale, stale_reason) "
                "VALUES (?, ?, ?, ?, ?)",
                [run_id, kind, config_hash, reason is not None, reason],
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
        con.execute("ROLLBACK")
        raise
    return reason is None


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
