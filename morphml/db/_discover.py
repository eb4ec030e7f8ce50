"""Find the scans under the paths given to ``morphml ingest``.

Recognised layouts:

* a single subject folder (``SUBJ/stats/*.stats``) or its ``stats/`` folder;
* a FreeSurfer ``SUBJECTS_DIR`` or a FastSurfer output folder (one subject folder per scan);
* BIDS-style names ``sub-X_ses-Y`` and nested ``sub-X/ses-Y/`` (derivatives trees);
* FreeSurfer longitudinal folders ``TP.long.BASE``: subject ``BASE``, session ``TP`` (with a
  ``BASE_`` prefix removed); the base template folder itself is not a scan and is skipped, and a
  cross-sectional run superseded by its longitudinal run is skipped too;
* table files (``.csv``, ``.tsv``, ``.txt``) read with a column map.

A ``participants.tsv`` beside the subject folders is picked up with the column map
``participants.yaml`` next to it (what ``morphml simulate`` writes).

Original ids and folder names live only in memory here; nothing of them is stored.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from morphml.exceptions import IngestError

__all__ = ["Discovery", "ScanInput", "discover"]

_TABLE_SUFFIXES = (".csv", ".tsv", ".txt")
_SKIP_NAMES = re.compile(r"^(fsaverage.*|lh\.EC_average|rh\.EC_average|cvs_avg35.*|\..*)$")
_BIDS = re.compile(r"^(sub-[A-Za-z0-9]+)_(ses-[A-Za-z0-9]+)(?:_.*)?$")
_MAX_DEPTH = 3


@dataclass(frozen=True)
class ScanInput:
    """One scan folder found on disk (in memory only: never stored)."""

    subject: str
    session: str | None
    path: Path
    longitudinal: bool = False


@dataclass
class Discovery:
    """What the ingest paths hold."""

    scans: list[ScanInput] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)
    participants: Path | None = None
    participants_map: Path | None = None
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _has_stats(path: Path) -> bool:
    stats = path / "stats"
    try:
        return stats.is_dir() and any(
            e.name.endswith(".stats") for e in os.scandir(stats) if e.is_file()
        )
    except OSError:
        return False


def _name_ids(name: str, parent: str | None) -> tuple[str, str | None, bool]:
    if ".long." in name:
        tp, _, base = name.partition(".long.")
        session = tp[len(base) + 1 :] if tp.startswith(base + "_") else tp
        return base, session, True
    match = _BIDS.match(name)
    if match:
        return match.group(1), match.group(2), False
    if parent is not None and name.startswith("ses-") and parent.startswith("sub-"):
        return parent, name, False
    return name, None, False


def discover(paths: list[Path]) -> Discovery:
    """Walk the given paths and list every scan folder and table file."""
    found = Discovery()
    candidates: list[tuple[Path, str | None]] = []
    for path in paths:
        if not path.exists():
            raise IngestError(
                f"{path}: no such file or directory; expected a subject folder, a folder of "
                "subjects or a .csv/.tsv table"
            )
        if path.is_file():
            if path.suffix.lower() in _TABLE_SUFFIXES:
                found.tables.append(path)
                continue
            raise IngestError(
                f"{path}: expected a subject folder, a folder of subjects, or a .csv/.tsv table"
            )
        if path.name == "stats" and _has_stats(path.parent):
            candidates.append((path.parent, None))
            continue
        if _has_stats(path):
            candidates.append((path, None))
            continue
        _walk(path, 0, None, candidates, found)
        participants = path / "participants.tsv"
        mapping = path / "participants.yaml"
        if participants.is_file() and found.participants is None:
            found.participants = participants
            found.participants_map = mapping if mapping.is_file() else None
    bases = {path.name.partition(".long.")[2] for path, _ in candidates if ".long." in path.name}
    # a timepoint's cross-sectional run is the folder named like the part before '.long.'
    timepoints = {
        path.name.partition(".long.")[0] for path, _ in candidates if ".long." in path.name
    }
    for path, parent in candidates:
        subject, session, longitudinal = _name_ids(path.name, parent)
        if not longitudinal and path.name in bases:
            found.skip("longitudinal base template (not a scan)")
            continue
        if not longitudinal and path.name in timepoints:
            found.skip("cross-sectional run superseded by its longitudinal run")
            continue
        found.scans.append(ScanInput(subject, session, path, longitudinal))
    if not found.scans and not found.tables:
        raise IngestError(
            "no scans found: expected subject folders with stats/*.stats files "
            "(a FreeSurfer SUBJECTS_DIR, a FastSurfer output folder, a BIDS derivatives tree) "
            "or a .csv/.tsv table with --map"
        )
    return found


def _walk(
    folder: Path,
    depth: int,
    parent: str | None,
    candidates: list[tuple[Path, str | None]],
    found: Discovery,
) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        raise IngestError(f"{folder}: cannot list the folder ({err.strerror})") from None
    for entry in entries:
        if not entry.is_dir() or _SKIP_NAMES.match(entry.name):
            continue
        child = Path(entry.path)
        if _has_stats(child):
            candidates.append((child, parent if depth > 0 else None))
        elif depth + 1 < _MAX_DEPTH:
            _walk(child, depth + 1, entry.name, candidates, found)
