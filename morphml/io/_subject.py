"""Read a whole FreeSurfer / FastSurfer subject directory into one record."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from morphml.exceptions import SubjectDirError, UnknownStatsKindError
from morphml.io._statsfile import (
    SKIPPED_KINDS,
    StatsFile,
    classify_stats_name,
    read_stats_files,
)

__all__ = [
    "FileRecord",
    "SubjectRecord",
    "find_stats_dir",
    "read_subject",
    "select_stats_files",
    "software_and_version",
]


@dataclass(frozen=True)
class FileRecord:
    """Provenance of one stats file: nothing that could identify a person."""

    name: str  # path relative to the subject folder, e.g. 'stats/lh.aparc.stats'
    atlas: str
    hemi: str
    kind: str
    software: str
    version: str
    content_hash: str
    n_features: int


@dataclass(frozen=True)
class SubjectRecord:
    """Canonical features of one subject (one scan) plus safe provenance.

    Attributes
    ----------
    features : dict
        Canonical feature id -> value.
    software : str
        ``FreeSurfer`` or ``FastSurfer`` (``mixed`` if files disagree).
    version : str
        The version most files report (per-file versions are in ``files``).
    atlases : tuple of str
        Atlases present, sorted.
    files : tuple of FileRecord
        One entry per stats file read.
    skipped : Mapping[str, str]
        File name -> reason, for files that were recognised but carry no features or that
        are not a stats kind morphml knows.
    """

    features: dict[str, float]
    software: str
    version: str
    atlases: tuple[str, ...]
    files: tuple[FileRecord, ...]
    skipped: Mapping[str, str] = field(default_factory=dict)


def find_stats_dir(path: str | os.PathLike[str]) -> Path:
    """Return the ``stats/`` folder of a subject directory (or ``path`` if it is one)."""
    p = Path(path)
    if not p.exists():
        raise SubjectDirError(f"{path}: no such directory; expected a subject folder")
    if not p.is_dir():
        raise SubjectDirError(f"{path}: is a file; expected a subject folder with stats/")
    if p.name == "stats":
        return p
    stats = p / "stats"
    if not stats.is_dir():
        raise SubjectDirError(
            f"{path}: no stats/ folder; expected a FreeSurfer or FastSurfer subject directory "
            "(SUBJECT/stats/aseg.stats, ...)"
        )
    return stats


# Files whose global measures win when several files report one: brainvol and aseg for
# whole-brain values, then the cortical parcellations for hemisphere values (BA files report a
# whole-hemisphere WhiteSurfArea computed without the cortex label, which aparcstats2table
# does not use).
_PRIORITY = {
    "brainvol.stats": 0,
    "aseg.stats": 1,
    "lh.aparc.stats": 2,
    "rh.aparc.stats": 2,
    "lh.aparc.a2009s.stats": 3,
    "rh.aparc.a2009s.stats": 3,
    # FastSurfer writes no ?h.aparc.stats: its DKT table carries the cortex-label values
    "lh.aparc.DKTatlas.mapped.stats": 3,
    "rh.aparc.DKTatlas.mapped.stats": 3,
    "lh.aparc.DKTatlas.stats": 3,
    "rh.aparc.DKTatlas.stats": 3,
}


def select_stats_files(stats: Path) -> tuple[list[str], dict[str, str]]:
    """The stats files of a ``stats/`` folder to read, in priority order, and those skipped.

    Raises
    ------
    SubjectDirError
        When no readable stats file is there.
    """
    names = sorted(
        (e.name for e in os.scandir(stats) if e.is_file()),
        key=lambda n: (_PRIORITY.get(n, 4), n),
    )
    readable: list[str] = []
    skipped: dict[str, str] = {}
    for name in names:
        if not name.endswith(".stats"):
            skipped[f"stats/{name}"] = "not a .stats file"
            continue
        try:
            _atlas, _hemi, kind = classify_stats_name(name)
        except UnknownStatsKindError as err:
            skipped[f"stats/{name}"] = err.detail
            continue
        if kind == "curv":
            skipped[f"stats/{name}"] = SKIPPED_KINDS["curv"]
            continue
        readable.append(name)
    if not readable:
        raise SubjectDirError(
            f"{stats}: no FreeSurfer/FastSurfer stats file (aseg.stats, ?h.aparc.stats, ...)"
        )
    return readable, skipped


def read_subject(path: str | os.PathLike[str]) -> SubjectRecord:
    """Read every stats file of one subject into canonical features.

    Parameters
    ----------
    path : path-like
        A subject directory (containing ``stats/``) or its ``stats/`` folder.

    Returns
    -------
    SubjectRecord

    Raises
    ------
    SubjectDirError
        When the folder or its ``stats/`` is missing or holds no stats file.
    StatsFileError
        When a stats file is malformed (naming the file and line).

    Examples
    --------
    >>> rec = read_subject("subjects/sub-01")  # doctest: +SKIP
    >>> rec.features["aseg.na.Left-Hippocampus.volume"]  # doctest: +SKIP
    4207.0
    """
    stats = find_stats_dir(path)
    readable, skipped = select_stats_files(stats)
    parsed = read_stats_files([stats / n for n in readable])
    return _combine(parsed, skipped)


def software_and_version(files: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """The software and version of a scan from its files' (software, version) pairs.

    FastSurfer wins when any file is FastSurfer's (its surface files are FreeSurfer's own
    programs), with the most common FastSurfer version; otherwise FreeSurfer with the most
    common known version.
    """
    pairs = [(s, v) for s, v in files if s != "unknown"]
    if any(s == "FastSurfer" for s, _ in pairs):
        known = Counter(v for s, v in pairs if s == "FastSurfer" and v != "unknown")
        return "FastSurfer", known.most_common(1)[0][0] if known else "unknown"
    if not pairs:
        return "unknown", "unknown"
    versions = Counter(v for _, v in pairs if v != "unknown")
    return "FreeSurfer", versions.most_common(1)[0][0] if versions else "unknown"


def _combine(parsed: list[StatsFile], skipped: dict[str, str]) -> SubjectRecord:
    features: dict[str, float] = {}
    files: list[FileRecord] = []
    atlases: set[str] = set()
    for sf in parsed:
        if sf.atlas in SKIPPED_KINDS:
            skipped[f"stats/{sf.name}"] = SKIPPED_KINDS[sf.atlas]
            continue
        feats = sf.features()
        for key, value in feats.items():
            features.setdefault(key, value)
        if sf.table_kind != "measures":
            atlases.add(sf.atlas)
        if any(k.startswith("global.") for k in feats):
            atlases.add("global")
        files.append(
            FileRecord(
                name=f"stats/{sf.name}",
                atlas=sf.atlas,
                hemi=sf.hemi,
                kind=sf.table_kind,
                software=sf.software,
                version=sf.version,
                content_hash=sf.content_hash,
                n_features=len(feats),
            )
        )
    software, version = software_and_version((f.software, f.version) for f in files)
    return SubjectRecord(
        features=features,
        software=software,
        version=version,
        atlases=tuple(sorted(atlases)),
        files=tuple(files),
        skipped=skipped,
    )
