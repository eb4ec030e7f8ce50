"""Reading a run folder's ``manifest.json`` with one clear error for every way it can be bad."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["read_manifest"]


def read_manifest(
    run: Path, error: type[Exception], required: Iterable[str] = ("run_id", "kind")
) -> dict[str, Any]:
    """``run/manifest.json`` as a dict; a missing, unreadable, non-JSON or incomplete file
    raises ``error`` naming the file and what was expected."""
    path = run / "manifest.json"
    if not path.is_file():
        raise error(
            f"{run}: not a morphml run directory (no manifest.json); give the directory "
            "'morphml fit' wrote"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise error(
            f"{path}: not valid JSON ({err}); expected the manifest 'morphml fit' wrote "
            "(restore the run folder from a backup, or fit again)"
        ) from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object (the manifest 'morphml fit' wrote)")
    missing = [key for key in required if key not in data]
    if missing:
        raise error(
            f"{path}: expected a JSON object with {', '.join(repr(k) for k in missing)} "
            "(the manifest 'morphml fit' wrote)"
        )
    return data
