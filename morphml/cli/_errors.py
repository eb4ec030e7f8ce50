"""How every ``morphml`` command reports an error: one line on stderr, exit status 2."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from morphml.exceptions import MorphmlError

__all__ = ["UsageError", "friendly", "one_line"]

F = TypeVar("F", bound=Callable[..., Any])


class UsageError(MorphmlError, ValueError):
    """A command's arguments cannot be used (shown in one line)."""


def one_line(err: BaseException) -> str | None:
    """The one-line message for an error a user can cause, or None for a bug.

    morphml's own errors carry their message. Errors that reach the command line from below
    (a file that cannot be opened or read, a database DuckDB cannot use) are the user's
    environment, not a bug: they are named by file and cause instead of a traceback.
    """
    if isinstance(err, MorphmlError):
        return str(err)
    if isinstance(err, OSError):
        name = err.filename
        if name is None:
            text = str(err) or type(err).__name__
            return f"{text}; check the path (expected an existing, readable file)"
        what = err.strerror or type(err).__name__
        other = f" -> {err.filename2}" if err.filename2 is not None else ""
        return f"{name}{other}: {what}; check that the file exists and can be read (or written)"
    from morphml.db import database_error, db_path, is_duckdb_error

    if is_duckdb_error(err):
        ctx = click.get_current_context(silent=True)
        given = ctx.params.get("db") if ctx is not None else None
        return str(database_error(db_path(given), err, doing="use"))
    return None


def friendly(func: F) -> F:
    """Turn errors a user can cause into one line on stderr and exit status 2.

    ``--debug`` shows the traceback instead.
    """

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            return func(*args, **kwargs)
        except Exception as err:
            message = one_line(err)
            if message is None or ctx.find_root().params.get("debug"):
                raise
            click.echo(f"morphml: error: {' '.join(message.split())}", err=True)
            ctx.exit(2)

    return wrapper  # type: ignore[return-value]
