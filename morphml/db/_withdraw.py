"""``morphml withdraw``: remove a person from the database, for good.

A withdrawal

1. finds the person by original id (through the key) or by pseudonym, within one source;
1b. scrubs them from the folder of every run that used them (the ``runs`` table records each
   run's folder): their rows leave the Parquet files, their pseudonyms the JSON files, and
   ``manifest.json`` records the withdrawal (see ``_scrub``). A recorded folder that cannot be
   reached stops the withdrawal before anything changes, unless ``allow_unreachable``;
2. in one transaction, deletes every row of theirs (subject, scans, values, phenotypes, file
   hashes, change and error records, QC flags), marks stale every run that used one of their
   scans and then deletes those links, and records the withdrawal as a keyed token only;
3. rewrites the database file. DuckDB keeps deleted values in free blocks of the file until
   they happen to be reused, so deleting rows is not enough: the whole database is copied into
   a fresh file (``COPY FROM DATABASE``), which replaces the old one atomically. The old file's
   blocks are then overwritten with zeros when no other hard link holds them.

The token is ``HMAC(key, subject pseudonym)``: the ingest, which holds the key, recognises the
person and refuses to ingest them again (unless re-enrolment is allowed), while the database
alone cannot tell who withdrew. The key is therefore required even when withdrawing by
pseudonym: without it no token could be computed, and nothing would stop the person's data
from coming back with the next ingest of their source.

What the rewrite cannot reach: backups and copies of the file, filesystem snapshots, and blocks
an SSD remaps internally. Aggregate counts in the ``ingests`` table (how many subjects an ingest
saw) are kept; they hold no value of the person.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from morphml.db._privacy import PseudonymKey, check_key, load_key
from morphml.db._runs import mark_runs_stale, run_folders
from morphml.db._scrub import scrub_folder, unreachable_reason
from morphml.db._store import connect, db_path, rollback
from morphml.db._zeroing import remove_zeroed, replace_zeroed
from morphml.exceptions import DatabaseError, WithdrawalError

__all__ = [
    "WithdrawalError",
    "WithdrawalResult",
    "is_withdrawn",
    "rewrite_database",
    "withdraw",
]

#: tables holding rows per scan; every one of them is cleared of the person's scans
_SCAN_TABLES = (
    "measures",
    "phenotypes",
    "files",
    "changes",
    "ingest_errors",
    "qc_flags",
    "run_scans",
)
_WITHDRAWN_VIEW = "morphml_withdrawn_scans"


@dataclass(frozen=True)
class WithdrawalResult:
    """What a withdrawal did (no identity inside)."""

    withdrawal_id: int
    n_scans: int
    n_runs_marked: int
    #: run folders the person was scrubbed from, with the files changed in each
    scrubbed: tuple[str, ...] = ()
    #: runs that used the person and whose folders were not scrubbed, with the reason
    not_scrubbed: tuple[str, ...] = ()


def withdraw(
    db: str | os.PathLike[str] | None = None,
    *,
    source: str,
    original_id: str | None = None,
    pseudonym: str | None = None,
    key_file: str | os.PathLike[str] | None = None,
    allow_unreachable: bool = False,
) -> WithdrawalResult:
    """Remove one person from the database and from every run folder that used them.

    The run folders the ``runs`` table records for the runs that used the person are
    scrubbed first (see :mod:`morphml.db._scrub`); a folder that cannot be reached (moved,
    deleted, not writable) stops the withdrawal before anything is changed, unless
    ``allow_unreachable``. Then the person's rows are deleted, the withdrawal is recorded and
    the database file is rewritten.

    Parameters
    ----------
    db : path-like, optional
        The database file (see :func:`morphml.db.db_path`).
    source : str
        The source the person was ingested under.
    original_id : str, optional
        Their id in the source; the key turns it into the pseudonym. Give this or ``pseudonym``.
    pseudonym : str, optional
        Their subject pseudonym (``sub-...``) or the pseudonym of one of their scans
        (``scan-...``), as found in an export.
    key_file : path-like, optional
        The key used at ingest (see :func:`morphml.db.default_key_path`); required in both
        modes, since the withdrawal token that blocks re-enrolment is keyed.
    allow_unreachable : bool
        Withdraw from the database even when some run folders cannot be scrubbed (they are
        listed in the result; delete them yourself).

    Returns
    -------
    WithdrawalResult

    Raises
    ------
    WithdrawalError
        When no such person is in the source (or they withdrew already); nothing is changed.
    KeyFileError
        When the key file is missing or unusable; nothing is changed.
    DatabaseError
        When the file cannot be opened or rewritten.

    Examples
    --------
    >>> from morphml.db import withdraw  # doctest: +SKIP
    >>> withdraw("morphml.duckdb", source="hospital", original_id="P0042")  # doctest: +SKIP
    WithdrawalResult(withdrawal_id=1, n_scans=2, n_runs_marked=1)
    """
    if (original_id is None) == (pseudonym is None):
        raise TypeError("withdraw() needs exactly one of original_id or pseudonym")
    path = db_path(db)
    key = load_key(key_file, create=False)
    with connect(path) as con:
        check_key(con, key)
        subject_key = _find_person(con, key, source, original_id, pseudonym)
        scrubbed, not_scrubbed = _scrub_runs(con, subject_key, allow_unreachable)
        result = _delete_person(con, key, source, subject_key)
    rewrite_database(path)
    return dataclasses.replace(result, scrubbed=scrubbed, not_scrubbed=not_scrubbed)


def _scrub_runs(
    con: duckdb.DuckDBPyConnection, subject_key: str, allow_unreachable: bool
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Scrub the person from the folders of the runs that used them (before the database:
    an interrupted withdrawal is then run again and finds them still in the database)."""
    rows = con.execute(
        "SELECT r.run_id, count(*) FROM run_scans r JOIN scans s USING (scan_key) "
        "WHERE s.subject_key = ? GROUP BY r.run_id ORDER BY r.run_id",
        [subject_key],
    ).fetchall()
    used = {str(run_id): int(n) for run_id, n in rows}
    if not used:
        return (), ()
    folders = run_folders(con, used)
    problems = {run: unreachable_reason(folder) for run, folder in folders.items()}
    blocked = [
        f"{folders[run]} ({why})"
        for run, why in problems.items()
        if why is not None and folders[run] is not None
    ]
    if blocked and not allow_unreachable:
        raise WithdrawalError(
            f"{len(blocked)} run folders that used this person cannot be scrubbed: "
            + "; ".join(blocked)
            + ". Nothing was changed. Make them reachable and writable and withdraw again, "
            "or pass --allow-unreachable to withdraw from the database anyway and delete "
            "those folders yourself"
        )
    scan_rows = con.execute(
        "SELECT scan_key, age FROM scans WHERE subject_key = ?", [subject_key]
    ).fetchall()
    keys = {subject_key, *(str(k) for k, _ in scan_rows)}
    ages = {float(a) for _, a in scan_rows if a is not None}
    row = con.execute("SELECT coalesce(max(withdrawal_id), 0) + 1 FROM withdrawals").fetchone()
    withdrawal_id = int(row[0]) if row else 1
    scrubbed: list[str] = []
    for run, folder in folders.items():
        if problems[run] is not None or folder is None:
            continue
        done = scrub_folder(folder, keys, ages, withdrawal_id, used[run])
        changed = sorted(set(done.rewritten) | {"manifest.json"})
        note = ", ".join(changed) + (
            f"; removed {', '.join(done.removed)}" if done.removed else ""
        )
        scrubbed.append(f"{folder} ({note})")
    not_scrubbed = [
        f"run {run}: {why}" + (f" ({folders[run]})" if folders[run] is not None else "")
        for run, why in problems.items()
        if why is not None
    ]
    return tuple(scrubbed), tuple(not_scrubbed)


def is_withdrawn(con: duckdb.DuckDBPyConnection, key: PseudonymKey, subject_key: str) -> bool:
    """Whether the person with this subject pseudonym has withdrawn (needs the key)."""
    token = key.withdrawal_token(subject_key)
    return con.execute("SELECT 1 FROM withdrawals WHERE token = ?", [token]).fetchone() is not None


def _find_person(
    con: duckdb.DuckDBPyConnection,
    key: PseudonymKey,
    source: str,
    original_id: str | None,
    pseudonym: str | None,
) -> str:
    sources = [row[0] for row in con.execute("SELECT source FROM sources ORDER BY 1").fetchall()]
    if source not in sources:
        raise WithdrawalError(
            f"source {source!r} is not in the database (sources: {', '.join(sources) or 'none'}); "
            "nothing was changed"
        )
    if original_id is not None:
        subject_key = key.subject(source, original_id)
        given = f"the given original id (pseudonym {subject_key})"
    elif pseudonym is not None:
        given = f"pseudonym {pseudonym}"
        subject_key = pseudonym
        if pseudonym.startswith("scan-"):
            row = con.execute(
                "SELECT subject_key FROM scans WHERE scan_key = ?", [pseudonym]
            ).fetchone()
            if row is None:
                raise WithdrawalError(f"no scan with {given} in the database; nothing was changed")
            subject_key = row[0]
    else:
        raise TypeError("withdraw() needs exactly one of original_id or pseudonym")
    owners = {
        row[0]
        for row in con.execute(
            "SELECT source FROM subjects WHERE subject_key = ? "
            "UNION SELECT source FROM scans WHERE subject_key = ?",
            [subject_key, subject_key],
        ).fetchall()
    }
    if source in owners:
        return subject_key
    if owners:
        raise WithdrawalError(
            f"{given} belongs to source {sorted(owners)[0]!r}, not {source!r}; nothing was changed"
        )
    token = key.withdrawal_token(subject_key)
    done = con.execute(
        "SELECT min(withdrawal_id) FROM withdrawals WHERE token = ? AND source = ?",
        [token, source],
    ).fetchone()
    if done is not None and done[0] is not None:
        raise WithdrawalError(
            f"{given} withdrew already (withdrawal {done[0]}); nothing left to remove"
        )
    hint = (
        "check --source, and that the key file is the one used when the data were ingested"
        if original_id is not None
        else "check --source and the pseudonym"
    )
    raise WithdrawalError(
        f"no person with {given} in source {source!r}; {hint}. Nothing was changed"
    )


def _delete_person(
    con: duckdb.DuckDBPyConnection, key: PseudonymKey, source: str, subject_key: str
) -> WithdrawalResult:
    """Delete the person's rows and record the withdrawal, in one transaction.

    This leaves the deleted values in free blocks of the file; :func:`withdraw` follows it with
    :func:`rewrite_database`.
    """
    con.execute("BEGIN")
    try:
        scan_keys = [
            row[0]
            for row in con.execute(
                "SELECT scan_key FROM scans WHERE subject_key = ? ORDER BY scan_key",
                [subject_key],
            ).fetchall()
        ]
        row = con.execute("SELECT coalesce(max(withdrawal_id), 0) + 1 FROM withdrawals").fetchone()
        withdrawal_id = int(row[0]) if row else 1
        con.register(_WITHDRAWN_VIEW, pa.table({"scan_key": pa.array(scan_keys, pa.string())}))
        try:
            # runs first: the run -> scan links tell which runs used the person, and are then
            # deleted with the rest of the person's rows
            n_runs = mark_runs_stale(
                con, _WITHDRAWN_VIEW, f"subject withdrawn (withdrawal {withdrawal_id})"
            )
            for table in _SCAN_TABLES:
                con.execute(
                    f"DELETE FROM {table} "
                    f"WHERE scan_key IN (SELECT scan_key FROM {_WITHDRAWN_VIEW})"
                )
        finally:
            con.unregister(_WITHDRAWN_VIEW)
        con.execute("DELETE FROM ingest_errors WHERE subject_key = ?", [subject_key])
        con.execute("DELETE FROM scans WHERE subject_key = ?", [subject_key])
        con.execute("DELETE FROM subjects WHERE subject_key = ?", [subject_key])
        con.execute(
            "INSERT INTO withdrawals (withdrawal_id, token, source, n_scans, n_runs_marked) "
            "VALUES (?, ?, ?, ?, ?)",
            [withdrawal_id, key.withdrawal_token(subject_key), source, len(scan_keys), n_runs],
        )
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        raise
    con.execute("CHECKPOINT")
    return WithdrawalResult(
        withdrawal_id=withdrawal_id, n_scans=len(scan_keys), n_runs_marked=n_runs
    )


def rewrite_database(db: str | os.PathLike[str] | None = None) -> None:
    """Copy the database into a fresh file that replaces it, leaving no deleted value behind.

    :func:`withdraw` calls this; call it yourself when a withdrawal was interrupted after its
    transaction committed (the rows are gone, but their bytes may still be in the file).

    The copy is made beside the file, checked table by table, flushed to disk and moved over
    the original with :func:`os.replace` (atomic: a crash leaves either the old or the new file).
    The old file's blocks are then overwritten with zeros, unless another hard link still
    refers to them. Run it while no other process uses the database.

    Raises
    ------
    DatabaseError
        When the file cannot be opened, has a write-ahead log another process is using, or the
        copy does not match the original.
    """
    path = db_path(db)
    # a clean open and checkpoint folds any write-ahead log into the file, so the copy (and
    # the old file that is scrubbed afterwards) is all there is
    with connect(path) as con:
        con.execute("CHECKPOINT")
    wal = _wal(path)
    if wal.exists():
        raise DatabaseError(
            f"{wal} is still there after a checkpoint; is another process using {path}? "
            "Close it and run the withdrawal again"
        )
    tmp = path.with_name(path.name + ".rewrite")
    # a partial copy from an interrupted rewrite
    remove_zeroed(tmp)
    remove_zeroed(_wal(tmp))
    try:
        _copy(path, tmp)
    except BaseException as err:
        remove_zeroed(tmp)
        remove_zeroed(_wal(tmp))
        if isinstance(err, duckdb.Error):
            raise DatabaseError(
                f"{path}: rewriting the database failed ({err}); it is unchanged"
            ) from None
        raise
    replace_zeroed(tmp, path)


def _copy(path: Path, tmp: Path) -> None:
    mem = duckdb.connect(":memory:")
    try:
        mem.execute("SET enable_progress_bar = false")
        mem.execute(f"ATTACH {_quote(path)} AS morphml_old (READ_ONLY)")
        mem.execute(f"ATTACH {_quote(tmp)} AS morphml_new")
        mem.execute("COPY FROM DATABASE morphml_old TO morphml_new")
        _check_copy(mem, path)
        mem.execute("DETACH morphml_new")
        mem.execute("DETACH morphml_old")
    finally:
        mem.close()
    if _wal(tmp).exists():
        raise DatabaseError(f"{path}: the rewritten copy was not checkpointed; it is unchanged")


def _check_copy(mem: duckdb.DuckDBPyConnection, path: Path) -> None:
    tables = [
        row[0]
        for row in mem.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'morphml_old' ORDER BY 1"
        ).fetchall()
    ]
    for table in tables:
        counts = [
            mem.execute(f'SELECT count(*) FROM {db}.main."{table}"').fetchone()
            for db in ("morphml_old", "morphml_new")
        ]
        if counts[0] != counts[1]:
            raise DatabaseError(
                f"{path}: the rewritten copy of table {table} has {counts[1]} rows, "
                f"expected {counts[0]}; the database is unchanged"
            )


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"
