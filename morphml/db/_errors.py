"""What went wrong with the database file, in words a user can act on.

DuckDB reports a damaged file, a lock held by another process, a permission problem and a
missing write-ahead log all as ``IOException`` with a message; these functions turn them into one
:class:`~morphml.exceptions.DatabaseError` each, naming the file and what to do. Messages never
repeat DuckDB's text where it names another program's path.
"""

from __future__ import annotations

import re
from pathlib import Path

from morphml.exceptions import DatabaseError

__all__ = ["database_error", "is_duckdb_error"]

_PID_RE = re.compile(r"\(PID (\d+)\)")
_DAMAGED = (
    "corrupt database file",
    "could not read enough bytes",
    "checksum",
    "not a valid duckdb database",
    "invalid block",
    "failed to read database header",
    "serialization error",
)
_PERMISSION = ("permission denied", "operation not permitted", "read-only file system")


def is_duckdb_error(err: BaseException) -> bool:
    """Whether ``err`` comes from DuckDB (checked without importing it)."""
    return type(err).__module__.split(".")[0] in ("duckdb", "_duckdb")


def database_error(path: Path, err: BaseException, *, doing: str = "open") -> DatabaseError:
    """The :class:`DatabaseError` that explains a DuckDB error met while using ``path``.

    Parameters
    ----------
    path : Path
        The database file.
    err : BaseException
        The DuckDB error (or an ``OSError``).
    doing : str
        What morphml was doing (``open``, ``write``, ``read``), for the message.
    """
    text = str(err)
    first = text.splitlines()[0] if text else type(err).__name__
    low = text.lower()
    if "could not set lock" in low or "conflicting lock" in low:
        pid = _PID_RE.search(text)
        who = f" (process {pid.group(1)})" if pid else ""
        return DatabaseError(
            f"{path} is in use by another process{who}; wait for it to finish (or close it), "
            "then run this command again"
        )
    if any(word in low for word in _PERMISSION):
        wal = str(path) + ".wal"
        if wal in text or ".wal" in low:
            return DatabaseError(
                f"cannot create the write-ahead log {wal}: permission denied; morphml needs "
                f"write access to the folder {path.parent} that holds the database"
            )
        reason = "read-only file system" if "read-only file system" in low else "permission denied"
        return DatabaseError(
            f"{path}: {reason}; cannot {doing} the database (check the file's and the "
            "folder's permissions, the mount, and 'lsattr' for an immutable flag)"
        )
    if "not a valid duckdb database" in low or "unable to open" in low:
        return DatabaseError(
            f"{path} is not a DuckDB database file morphml can open ({first}); "
            "expected a file written by 'morphml ingest'"
        )
    if any(word in low for word in _DAMAGED):
        return DatabaseError(
            f"{path} is damaged ({_damage(first)}); restore it from a backup "
            "(morphml has not changed it)"
        )
    return DatabaseError(f"{path}: cannot {doing} the database ({_without_paths(first)})")


def _damage(text: str) -> str:
    low = text.lower()
    where = re.search(r"location (\d+)", text)
    at = f" at byte {where.group(1)}" if where else ""
    if "could not read enough bytes" in low:
        return f"it ends before the data it describes{at}: truncated"
    if "checksum" in low:
        return f"a block's checksum does not match{at}: its content changed on disk"
    return _without_paths(text)


def _without_paths(text: str) -> str:
    # DuckDB quotes file names; the caller names the file already
    return re.sub(r'"[^"]*"', "the file", text)
