"""Opening the database file: location, version checks, creation and upgrade."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb

from morphml._version import __version__
from morphml.db._errors import database_error
from morphml.db._schema import SCHEMA_VERSION, create_schema, migrations
from morphml.exceptions import DatabaseError

__all__ = ["connect", "db_path", "rollback", "schema_version", "upgrade", "verify"]

DEFAULT_DB = "morphml.duckdb"


def db_path(db: str | os.PathLike[str] | None = None) -> Path:
    """The database file: the argument, then ``MORPHML_DB``, then ``morphml.duckdb``."""
    if db is not None:
        return Path(db)
    return Path(os.environ.get("MORPHML_DB") or DEFAULT_DB)


def _open(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as err:
        raise database_error(path, err) from None


def verify(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Read every block of every table, so a damaged file is found before any work.

    DuckDB checks each block's checksum when it reads the block; a query that reads every
    column of every row reads them all (about 0.4 s for 10 million values). Raises
    :class:`DatabaseError` ("damaged ... restore it from a backup") on a failed check.
    """
    try:
        tables = con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() "
            "WHERE database_name = current_database() ORDER BY 1, 2"
        ).fetchall()
        for schema, table in tables:
            con.execute(f'SELECT bit_xor(hash(COLUMNS(*))) FROM "{schema}"."{table}"').fetchall()
    except duckdb.Error as err:
        raise database_error(path, err, doing="read") from None


def _check_writable_folder(path: Path) -> None:
    """Refuse early when the write-ahead log beside the file cannot be created.

    DuckDB creates ``FILE.wal`` only at the first commit, and its failure there surfaces as
    a "cannot rollback" error that hides the cause; a probe file tells it before any work.
    """
    probe = path.with_name(f".{path.name}.morphml-probe-{os.getpid()}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as err:
        raise DatabaseError(
            f"cannot create the write-ahead log {path}.wal ({err.strerror}); morphml needs "
            f"write access to the folder {path.parent} that holds the database"
        ) from None
    os.close(fd)
    os.unlink(probe)


def schema_version(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """The schema version stored in an open database file."""
    try:
        row = con.execute("SELECT value FROM morphml_meta WHERE key = 'schema_version'").fetchone()
    except duckdb.CatalogException:
        raise DatabaseError(
            f"{path} is a DuckDB file but not a morphml database (no morphml_meta table)"
        ) from None
    if row is None:
        raise DatabaseError(f"{path}: morphml_meta has no schema_version")
    return int(row[0])


@contextmanager
def connect(
    db: str | os.PathLike[str] | None = None, *, create: bool = False, read_only: bool = False
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the morphml database, checking that this code can read its schema.

    Parameters
    ----------
    db : path-like, optional
        The file (see :func:`db_path` for the default).
    create : bool
        Create the file with the current schema when it does not exist.
    read_only : bool
        Open without write access.

    Raises
    ------
    DatabaseError
        When the file is missing (and ``create`` is false), is not a DuckDB file, is not a
        morphml database, is newer than this code, or needs ``morphml db upgrade``.
    """
    path = db_path(db)
    existed = path.exists()
    if not existed and not create:
        raise DatabaseError(
            f"database {path} does not exist; create it with 'morphml ingest ... --db {path}'"
        )
    if existed and path.is_dir():
        raise DatabaseError(f"{path} is a directory; expected a DuckDB database file")
    if not existed:
        _make_folder(path)
    con = _open(path, read_only=read_only and existed)
    try:
        if not existed:
            _check_writable_folder(path)
            try:
                con.execute("BEGIN")
                create_schema(con, __version__)
                con.execute("COMMIT")
            except duckdb.Error as err:
                raise database_error(path, err, doing="create") from None
        elif not read_only:
            _check_writable_folder(path)
            verify(con, path)
        version = schema_version(con, path)
        _refuse_newer(path, version)
        if version < SCHEMA_VERSION:
            raise DatabaseError(
                f"{path} has schema version {version}; this morphml uses {SCHEMA_VERSION}. "
                f"Run 'morphml db upgrade --db {path}' (back the file up first)"
            )
        yield con
    finally:
        con.close()


def _refuse_newer(path: Path, version: int) -> None:
    """Raise when the file's schema is newer than this morphml reads."""
    if version > SCHEMA_VERSION:
        raise DatabaseError(
            f"{path} has schema version {version}, newer than this morphml "
            f"({__version__} reads up to {SCHEMA_VERSION}); install a newer morphml"
        )


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back the open transaction; quiet when DuckDB already ended it.

    A failed COMMIT (the write-ahead log could not be written, say) ends the transaction
    itself, and a ROLLBACK then raises "no transaction is active", which would hide the
    error that matters.
    """
    with suppress(duckdb.TransactionException):
        con.execute("ROLLBACK")


def _make_folder(path: Path) -> None:
    """Create the folder a new database file goes in (``MORPHML_DB=~/morphml/x.duckdb``)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DatabaseError(
            f"cannot create the folder {path.parent} for the new database {path.name} "
            f"({err.strerror})"
        ) from None


def upgrade(db: str | os.PathLike[str] | None = None) -> tuple[int, int]:
    """Upgrade an older database file to the current schema, in one transaction.

    Returns
    -------
    (from_version, to_version)
    """
    path = db_path(db)
    if not path.exists():
        raise DatabaseError(f"database {path} does not exist")
    con = _open(path, read_only=False)
    try:
        _check_writable_folder(path)
        verify(con, path)
        before = schema_version(con, path)
        _refuse_newer(path, before)
        steps = migrations()
        con.execute("BEGIN")
        try:
            for version in range(before + 1, SCHEMA_VERSION + 1):
                steps[version](con)
            con.execute(
                "UPDATE morphml_meta SET value = ? WHERE key = 'schema_version'",
                [str(SCHEMA_VERSION)],
            )
            con.execute("COMMIT")
        except BaseException:
            rollback(con)
            raise
        return before, SCHEMA_VERSION
    finally:
        con.close()
