"""Withdrawal beyond the database: scrub a person from the folders of the runs that used them.

A run folder holds the person's pseudonyms (``manifest.json``'s scan keys and per-scan hashes)
and their rows (``predictions.parquet`` with their age and predictions, ``scores.parquet``,
evaluation tables). A withdrawal rewrites each such file without them:

- Parquet files lose every row whose ``scan_key`` or ``subject_key`` is the person's;
- JSON files lose every list item, mapping key or value that is one of their pseudonyms, and a
  ``cohort.age`` minimum or maximum equal to one of their ages;
- any other file that still names one of their pseudonyms (an HTML report, say) is removed: it
  is derived, and is written again with ``morphml report``.

Each rewritten file replaces the old one atomically, and the old one's blocks are overwritten
with zeros (as for the database file). ``manifest.json`` then records the withdrawal (its id,
how many scans were removed, which files changed), which ``morphml audit`` and the stale-run
check read; it never names the person.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from morphml.db._zeroing import remove_zeroed, replace_zeroed

__all__ = ["FolderScrub", "scrub_folder", "unreachable_reason"]


@dataclass
class FolderScrub:
    """What scrubbing one run folder changed (file names relative to the folder)."""

    folder: Path
    rewritten: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    n_rows: int = 0


def unreachable_reason(folder: Path | None) -> str | None:
    """Why a run folder cannot be scrubbed (None when it can)."""
    if folder is None:
        return "the run did not record its folder"
    if not folder.exists():
        return "the folder does not exist (moved or deleted?)"
    if not folder.is_dir():
        return "not a folder"
    probe = folder / f".morphml-withdrawal-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as err:
        return f"cannot write in it ({err.strerror})"
    os.close(fd)
    probe.unlink()
    for path in _files(folder):
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as err:
            return f"cannot write {path.relative_to(folder)} ({err.strerror})"
        os.close(fd)
    return None


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def scrub_folder(
    folder: Path,
    keys: set[str],
    ages: set[float],
    withdrawal_id: int,
    n_scans: int,
) -> FolderScrub:
    """Remove the person (``keys``: their subject and scan pseudonyms) from every file.

    Parameters
    ----------
    folder : Path
        A run or evaluation folder.
    keys : set of str
        The person's subject and scan pseudonyms.
    ages : set of float
        The person's ages at scan (removed where a manifest's cohort minimum or maximum is one).
    withdrawal_id : int
        Recorded in ``manifest.json``.
    n_scans : int
        How many of the person's scans the run used (recorded in ``manifest.json``).
    """
    done = FolderScrub(folder)
    needles = [k.encode() for k in keys]
    for path in _files(folder):
        name = str(path.relative_to(folder))
        if path.suffix == ".parquet":
            n = _scrub_parquet(path, keys)
            if n:
                done.rewritten.append(name)
                done.n_rows += n
        elif path.suffix == ".json":
            if _scrub_json(path, keys, ages, record=None):
                done.rewritten.append(name)
        else:
            data = path.read_bytes()
            if any(needle in data for needle in needles):
                remove_zeroed(path)
                done.removed.append(name)
    manifest = folder / "manifest.json"
    if manifest.is_file():
        record = {
            "withdrawal_id": withdrawal_id,
            "n_scans_removed": n_scans,
            "n_rows_removed": done.n_rows,
            "files_rewritten": sorted(set(done.rewritten) | {"manifest.json"}),
            "files_removed": done.removed,
        }
        _scrub_json(manifest, keys, ages, record=record)
    return done


def _scrub_parquet(path: Path, keys: set[str]) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    columns = [c for c in ("scan_key", "subject_key") if c in table.column_names]
    if not columns:
        return 0
    wanted = pa.array(sorted(keys), type=pa.string())
    hits = [
        pc.fill_null(pc.is_in(pc.cast(table[c], pa.string()), value_set=wanted), False)
        for c in columns
    ]
    drop = functools.reduce(pc.or_, hits)
    n = int(pc.sum(drop).as_py() or 0)
    if n:
        kept = table.filter(pc.invert(drop))
        tmp = path.with_name(path.name + ".scrub")
        pq.write_table(kept, tmp)
        replace_zeroed(tmp, path)
    return n


def _clean(value: Any, keys: set[str]) -> tuple[Any, bool]:
    """``value`` without the pseudonyms in ``keys``, and whether anything changed."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        changed = False
        for k, v in value.items():
            if k in keys or (isinstance(v, str) and v in keys):
                changed = True
                continue
            out[k], c = _clean(v, keys)
            changed |= c
        return out, changed
    if isinstance(value, list):
        items: list[Any] = []
        changed = False
        for v in value:
            if isinstance(v, str) and v in keys:
                changed = True
                continue
            new, c = _clean(v, keys)
            items.append(new)
            changed |= c
        return items, changed
    return value, False


def _scrub_json(
    path: Path, keys: set[str], ages: set[float], record: dict[str, Any] | None
) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        if any(k.encode() in path.read_bytes() for k in keys):
            remove_zeroed(path)
            return True
        return False
    data, changed = _clean(data, keys)
    cohort = data.get("cohort") if isinstance(data, dict) else None
    age = cohort.get("age") if isinstance(cohort, dict) else None
    if isinstance(age, dict):
        for bound in ("min", "max"):
            if age.get(bound) in ages:
                # one person's own age; the bound of the others is not known here
                age[bound] = None
                changed = True
    if record is not None and isinstance(data, dict):
        data.setdefault("withdrawals", []).append(record)
        changed = True
    if changed:
        tmp = path.with_name(path.name + ".scrub")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        replace_zeroed(tmp, path)
    return changed
