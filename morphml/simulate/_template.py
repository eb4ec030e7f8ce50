"""Population baselines for the measures no real table calibrates.

No table in ``../shared/data`` holds curvature, thickness SD, vertex counts, intensity
statistics, white-matter parcels, CerebNet lobules or Destrieux / Brodmann areas of many
people. Their population baselines come from one draw of the fixture writer's
:func:`~morphml.simulate._writer.example_features` under a fixed seed (so every simulated
cohort shares the same "anatomy"), and the simulator keeps the ratios the writer uses
(grey-matter volume / (area x thickness), vertices per mm^2, folding index / (area x mean
curvature), pial / white area, ``NVoxels / Volume_mm3``, ``normMin`` / ``normMax`` in SDs from
``normMean``), so derived columns stay as consistent as the writer's own examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from morphml.simulate._writer import example_features

__all__ = ["AtlasTemplate", "flavor_keys", "template"]

#: fixed: the baselines are part of the simulator, not of one simulated cohort
_TEMPLATE_SEED = 20240115

#: (software, version) whose default output holds each atlas in the template
_TEMPLATE_SOURCE = {
    "aparc": ("freesurfer", "7.4.1"),
    "aparc_pial": ("freesurfer", "7.4.1"),
    "a2009s": ("freesurfer", "7.4.1"),
    "DKT": ("freesurfer", "7.4.1"),
    "BA": ("freesurfer", "7.4.1"),
    "BA_thresh": ("freesurfer", "7.4.1"),
    "entorhinal": ("freesurfer", "5.3"),
    "aseg": ("freesurfer", "7.4.1"),
    "wmparc": ("freesurfer", "7.4.1"),
    "aseg_dkt": ("fastsurfer", "7.4.1"),
    "wmparc_dkt": ("fastsurfer", "7.4.1"),
    "cerebnet": ("fastsurfer", "7.4.1"),
}


@cache
def flavor_keys(software: str, version: str) -> tuple[str, ...]:
    """Every feature id the software and version writes by default, in the writer's order."""
    return tuple(example_features(np.random.default_rng(0), software=software, version=version))


@dataclass(frozen=True)
class AtlasTemplate:
    """Baselines of one atlas and hemisphere: ``regions`` and one array per measure."""

    atlas: str
    hemi: str
    regions: tuple[str, ...]
    values: dict[str, np.ndarray]

    def __getitem__(self, measure: str) -> np.ndarray:
        return self.values[measure]


@cache
def _examples() -> dict[tuple[str, str], dict[str, float]]:
    out = {}
    for software, version in sorted(set(_TEMPLATE_SOURCE.values())):
        rng = np.random.default_rng(_TEMPLATE_SEED)
        out[(software, version)] = example_features(rng, software=software, version=version)
    return out


@cache
def template(atlas: str, hemi: str) -> AtlasTemplate:
    """Baseline values of ``atlas`` (``hemi`` is ``na`` for segmentation atlases)."""
    values = _examples()[_TEMPLATE_SOURCE[atlas]]
    prefix = f"{atlas}.{hemi}."
    regions: dict[str, None] = {}
    measures: dict[str, dict[str, float]] = {}
    for key, value in values.items():
        if key.startswith(prefix):
            region, measure = key[len(prefix) :].rsplit(".", 1)
            regions.setdefault(region)
            measures.setdefault(measure, {})[region] = value
    names = tuple(regions)
    arrays = {m: np.array([by[r] for r in names]) for m, by in measures.items()}
    return AtlasTemplate(atlas, hemi, names, arrays)
