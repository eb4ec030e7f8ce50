"""``python -m morphml.cli``: the same as the ``morphml`` console script."""

from __future__ import annotations

from morphml.cli._group import main

if __name__ == "__main__":  # pragma: no cover
    main()
