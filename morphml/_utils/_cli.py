"""Shared pieces of the ``morphml`` command line (used by every command module)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from morphml.exceptions import MorphmlError

__all__ = ["UsageError", "friendly"]

F = TypeVar("F", bound=Callable[..., Any])


class UsageError(MorphmlError, ValueError):
    """A command's arguments cannot be used (shown in one line)."""


def friendly(func: F) -> F:
    """Turn morphml errors into one line on stderr and exit status 2 (``--debug``: traceback)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            return func(*args, **kwargs)
        except MorphmlError as err:
            if ctx.find_root().params.get("debug"):
                raise
            click.echo(f"morphml: error: {err}", err=True)
            ctx.exit(2)

    return wrapper  # type: ignore[return-value]
