"""The ``morphml`` command line: one module per command or command group.

``_group`` holds the top-level click group and the registry of commands; each command's module
is imported only when that command runs, so ``morphml --help`` and ``--version`` answer at once.
Commands parse their arguments, call morphml's public API, print, and set the exit code.
"""

from __future__ import annotations

from morphml.cli._group import _LAZY_COMMANDS as _LAZY_COMMANDS
from morphml.cli._group import cli, main

__all__ = ["cli", "main"]
