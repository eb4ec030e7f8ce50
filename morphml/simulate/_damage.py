"""Planted problems: QC failures (plausible files, implausible values) and corrupt files.

* A **QC failure** is a scan whose surfaces had many topological defects: ``SurfaceHoles``
  of several hundred per hemisphere (fcon1000's 99th percentile is about 300 in total), a few
  cortical regions far too thin or too thick and one subcortical volume far off. The files are
  well formed; only the values tell.
* A **corrupt file** is one table file of a scan, either cut in the middle of a row (a transfer
  that stopped) or with one value replaced by garbage a broken export leaves (``1.#QNAN``,
  ``3,14``, ``#VALUE!``). morphml's reader raises :class:`~morphml.exceptions.StatsFileError`
  on both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["corrupt_file", "qc_failure"]

_GARBAGE = ("1.#QNAN", "3,14", "#VALUE!", "-nan(ind)")
#: files that hold no table (nothing to cut mid-row)
_NO_TABLE = ("brainvol.stats",)


def qc_failure(rng: np.random.Generator, features: dict[str, float]) -> list[str]:
    """Make one scan's features fail QC in place; returns a description of each change."""
    changes = []
    total = 0.0
    for hemi in ("lh", "rh"):
        key = f"global.{hemi}.SurfaceHoles.count"
        if key in features:
            features[key] = float(rng.integers(300, 1200))
            total += features[key]
            changes.append(f"{key}={features[key]:.0f}")
    if "global.na.SurfaceHoles.count" in features:
        features["global.na.SurfaceHoles.count"] = total
    atlas = "aparc" if "aparc.lh.insula.thickness" in features else "DKT"
    thickness = sorted(
        k for k in features if k.startswith(f"{atlas}.") and k.endswith(".thickness")
    )
    picks = rng.choice(len(thickness), size=4, replace=False)
    for n, i in enumerate(picks):
        key = thickness[int(i)]
        factor = 1.8 if n == 0 else float(rng.uniform(0.35, 0.5))
        features[key] = round(features[key] * factor, 3)
        changes.append(f"{key}x{factor:.2f}")
    region = str(rng.choice(["Left-Hippocampus", "Right-Amygdala", "Left-Lateral-Ventricle"]))
    factor = 4.0 if "Ventricle" in region else 0.35
    for measure in ("volume", "nvoxels"):
        key = f"aseg.na.{region}.{measure}"
        features[key] = (
            float(np.rint(features[key] * factor))
            if measure == "nvoxels"
            else (features[key] * factor)
        )
    changes.append(f"aseg.na.{region}.volume x{factor:g}")
    return changes


def corrupt_file(rng: np.random.Generator, paths: list[Path], mode: str) -> tuple[Path, str]:
    """Damage one of ``paths`` (``mode``: ``truncated`` or ``garbage``); returns it and how."""
    candidates = sorted((p for p in paths if p.name not in _NO_TABLE), key=lambda p: p.name)
    path = candidates[int(rng.integers(len(candidates)))]
    lines = path.read_text(encoding="utf-8").split("\n")
    rows = [i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]
    row = rows[len(rows) // 2 + int(rng.integers(-(len(rows) // 4), len(rows) // 4 + 1))]
    tokens = lines[row].split()
    if mode == "truncated":
        # cut after the third value: a short last row, as when a copy stops mid-file
        cut = lines[row].index(tokens[2]) + len(tokens[2])
        text = "\n".join(lines[:row]) + "\n" + lines[row][:cut]
        how = f"truncated at line {row + 1}"
    else:
        name_col = 0 if not tokens[0].lstrip("-").replace(".", "").isdigit() else 4
        numeric = [j for j in range(len(tokens)) if j != name_col]
        j = numeric[int(rng.integers(len(numeric)))]
        garbage = _GARBAGE[int(rng.integers(len(_GARBAGE)))]
        tokens[j] = garbage
        lines[row] = " ".join(tokens)
        text = "\n".join(lines)
        how = f"line {row + 1}: value replaced by {garbage!r}"
    path.write_text(text, encoding="utf-8", newline="\n")
    return path, how
