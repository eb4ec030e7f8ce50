"""Opening the database file: location, version checks, creation and upgrade."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from morphml._version import __version__
from morphml.db._schema import SCHEMA_VERSION, create_schema, migrations
from morphml.exceptions import DatabaseError

__all__ = ["connect", "db_path", "schema_version", "upgrade"]

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
        text = str(err)
        if "not a valid DuckDB" in text or "Unable to open" in text or "file" in text.lower():
            raise DatabaseError(
                f"{path} is not a DuckDB database file morphml can open ({text.splitlines()[0]}); "
                "expected a file written by 'morphml ingest'"
            ) from None
        raise DatabaseError(f"{path}: cannot open the database: {text}") from None


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
    con = _open(path, read_only=read_only and existed)
    try:
        if not existed:
            con.execute("BEGIN")
            create_schema(con, __version__)
            con.execute("COMMIT")
        version = schema_version(con, path)
        if version > SCHEMA_VERSION:
            raise DatabaseError(
                f"{path} has schema version {version}, newer than this morphml "
                f"({__version__} reads up to {SCHEMA_VERSION}); install a newer morphml"
            )
        if version < SCHEMA_VERSION:
            raise DatabaseError(
                f"{path} has schema version {version}; this morphml uses {SCHEMA_VERSION}. "
                f"Run 'morphml db upgrade --db {path}' (back the file up first)"
            )
        yield con
    finally:
        con.close()


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
        before = schema_version(con, path)
        if before > SCHEMA_VERSION:
            raise DatabaseError(
                f"{path} has schema version {before}, newer than this morphml "
                f"({SCHEMA_VERSION}); install a newer morphml"
            )
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
            con.execute("ROLLBACK")
            raise
        return before, SCHEMA_VERSION
    finally:
        con.close()
