"""A click group whose commands are imported only when they run.

``morphml --help`` and ``morphml --version`` must answer at once, but some command modules
import packages that take seconds to load (XGBoost, Optuna, Dask, pandas). Those commands are
registered by name with the module that defines them and the one-line help ``--help`` lists;
the module is imported when the command is invoked (or its own ``--help`` is asked for).
``tests/test_cli_startup.py`` checks that each listed help matches the command's own docstring.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import click

__all__ = ["LazyCommand", "LazyGroup"]


@dataclass(frozen=True)
class LazyCommand:
    """Where a command lives: ``module`` (dotted), its click object ``attribute``, its help."""

    module: str
    attribute: str
    short_help: str

    def load(self) -> click.Command:
        """Import the module and return the command object."""
        command = getattr(importlib.import_module(self.module), self.attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.module}.{self.attribute} is not a click command")
        return command


def _shorten(text: str, limit: int) -> str:
    """``text`` cut at a word to at most ``limit`` characters, with "..." as click does."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 3, 0)].rsplit(" ", 1)[0].rstrip(" ,;:")
    return f"{cut}..."


class LazyGroup(click.Group):
    """A :class:`click.Group` that also holds commands imported on first use.

    Parameters
    ----------
    lazy_commands : dict, optional
        Command name -> :class:`LazyCommand`.
    **kwargs
        Passed to :class:`click.Group`.
    """

    def __init__(self, *args: Any, lazy_commands: dict[str, LazyCommand] | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.lazy_commands: dict[str, LazyCommand] = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self.lazy_commands:
            command = self.lazy_commands[cmd_name].load()
            self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List every command with its one-line help without importing the lazy ones."""
        rows: list[tuple[str, str]] = []
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        for name in names:
            command = super().get_command(ctx, name)
            if command is not None:
                if command.hidden:
                    continue
                rows.append((name, command.get_short_help_str(limit)))
            else:
                text = self.lazy_commands[name].short_help
                rows.append((name, _shorten(text, limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
