"""Write stats folders the way FreeSurfer (5.1 to 8.x) and FastSurfer write them.

Two uses: fixtures for the stats readers (there is no real FastSurfer output beside the
repository) and the cohort simulator, which writes thousands of subjects; one subject takes a
few milliseconds because every file is built as one string and written once.

What is written, by software and version
----------------------------------------
=====================  ==========================================================================
FreeSurfer 5.1         ``aseg``, ``wmparc``, ``?h.aparc``, ``?h.aparc.a2009s``, ``?h.BA``,
                       ``?h.entorhinal_exvivo``
FreeSurfer 5.3         5.1 plus ``?h.aparc.DKTatlas40``, ``?h.BA.thresh``
FreeSurfer 6.0, 7, 8   ``aseg``, ``wmparc``, ``?h.aparc``, ``?h.aparc.pial``, ``?h.aparc.a2009s``,
                       ``?h.aparc.DKTatlas``, ``?h.BA_exvivo``, ``?h.BA_exvivo.thresh``; 7 and 8
                       also ``brainvol.stats``
FastSurfer             ``aseg``, ``aseg+DKT``, ``wmparc.DKTatlas.mapped``,
                       ``cerebellum.CerebNet``, ``brainvol``, ``?h.aparc.DKTatlas.mapped``,
                       ``?h.BA_exvivo``, ``?h.BA_exvivo.thresh`` (and, as with ``--fsaparc``,
                       ``?h.aparc``, ``?h.aparc.pial``, ``?h.aparc.a2009s`` when asked for)
=====================  ==========================================================================

Each file is written only when ``features`` holds rows for it (``aseg.stats`` and
``brainvol.stats`` also when only their global measures are given).

Quirks reproduced on purpose, because the readers must cope with them in real data:

* FreeSurfer 6 surface files write ``# Measure Cortex, CortexVol Total cortical ...`` with a
  comma missing; FreeSurfer 6 spells Destrieux ``G&S_...`` where 5.x and 7+ write ``G_and_S_``.
* ``?h.BA*`` and ``?h.entorhinal_exvivo`` files carry whole-hemisphere ``NumVert`` and
  ``WhiteSurfArea`` (no cortex label): this writer puts 1.07 and 1.063 times the cortex values
  there, so those two measures differ from the ones in ``?h.aparc.stats``, as in real data.
* FreeSurfer 5.1 ``wmparc.stats`` carries ``BrainSegVol`` (the sum of the wmparc rows, not the
  brain), ``BrainSegVolNotVent`` = 0, and ``BrainMaskNVox`` / ``BrainMaskVol``, derived here
  from the rows and from ``eTIV``.
* FastSurfer's ``segstats.py`` writes ``# SUBJECT_DIR`` (not ``SUBJECTS_DIR``) and
  ``...Timestamp`` (not ``...TimeStamp``); ``aseg+DKT.stats`` and ``cerebellum.CerebNet.stats``
  have no ``# Measure`` lines.

Values are written with the precision of the real files (surface ``NumVert``, ``SurfArea``,
``GrayVol``, ``FoldInd`` as integers, ``ThickAvg`` ... ``GausCurv`` with 3 decimals,
``CurvInd`` with 1; FreeSurfer ``Volume_mm3`` with 1 decimal, FastSurfer ``aseg`` and
``aseg+DKT`` with 3; ``norm*`` with 4; ``# Measure`` values with ``%f``, ``%g`` or as integers
like the original programs), so reading a written folder back gives rounded values.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TypeAlias

import numpy as np

from morphml.io import (
    ATLASES,
    GLOBAL_MEASURES,
    SEGMENTATION_COLUMNS,
    SUBCORTICAL_GRAY,
    SURFACE_COLUMNS,
    known_regions,
    parse_feature_id,
)

__all__ = ["example_features", "write_subject_stats"]

#: surface table measures in column order (NumVert ... CurvInd)
_SURF_MEASURES: tuple[str, ...] = tuple(SURFACE_COLUMNS.values())
#: segmentation table measures in column order (NVoxels ... normRange)
_SEG_HEADERS = (
    "NVoxels",
    "Volume_mm3",
    "normMean",
    "normStdDev",
    "normMin",
    "normMax",
    "normRange",
)
_SEG_MEASURES: tuple[str, ...] = tuple(SEGMENTATION_COLUMNS[h] for h in _SEG_HEADERS)

_IDENTIFYING_KEYS = (
    "subjectname",
    "hostname",
    "user",
    "SUBJECTS_DIR",
    "cmdline_path",
    "CreationTime",
    "timestamp",
)
_IDENTIFYING_DEFAULTS = {
    "subjectname": "sub-001",
    "hostname": "node01",
    "user": "user",
    "SUBJECTS_DIR": "/home/user/subjects",
    "CreationTime": "2024/01/15-10:32:07-GMT",
    "timestamp": "2024/01/15 10:30:00",
}
#: FREESURFER_HOME inside FastSurfer's container (ColorTable of aseg / wmparc stats)
_FASTSURFER_FREESURFER_HOME = "/opt/freesurfer"

# --------------------------------------------------------------------------------------------
# software / version


@dataclass(frozen=True)
class _Flavor:
    """Which program wrote the folder; ``release`` is FreeSurfer's (major, minor)."""

    software: str
    version: str
    release: tuple[int, int]
    fastsurfer_version: str

    @property
    def fastsurfer(self) -> bool:
        return self.software == "fastsurfer"

    @property
    def label(self) -> str:
        if self.fastsurfer:
            return f"FastSurfer {self.fastsurfer_version} (FreeSurfer {self.version})"
        return f"FreeSurfer {self.version}"


_VERSION_PATTERN = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?$")
_SUPPORTED = "5.1, 5.3, 6.0 (6.0.0, 6.0.1), 7.x.y or 8.x.y"


def _flavor(software: str, version: str, fastsurfer_version: str) -> _Flavor:
    name = str(software).lower()
    if name not in ("freesurfer", "fastsurfer"):
        raise ValueError(f"software must be 'freesurfer' or 'fastsurfer', got {software!r}")
    match = _VERSION_PATTERN.match(str(version))
    release = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    known = release in ((5, 1), (5, 3), (6, 0)) or release[0] in (7, 8)
    if not known:
        raise ValueError(f"unknown FreeSurfer version {version!r}; the writer knows {_SUPPORTED}")
    if name == "fastsurfer":
        if release[0] != 7:
            raise ValueError(
                f"FastSurfer 2.x runs FreeSurfer 7 for its surface stats; version must be "
                f"7.x.y (default '7.4.1'), got {version!r}"
            )
        if not re.fullmatch(r"\S+", str(fastsurfer_version)):
            raise ValueError(
                f"fastsurfer_version must be a version string without spaces, e.g. '2.4.2'; "
                f"got {fastsurfer_version!r}"
            )
    return _Flavor(name, str(version), release, str(fastsurfer_version))


# --------------------------------------------------------------------------------------------
# anatomy: regions, SegIds, file names


def _words(text: str) -> list[str]:
    return text.split()


def _pairs(table: str) -> tuple[tuple[int, str], ...]:
    """``"4 Left-Lateral-Ventricle 5 Left-Inf-Lat-Vent ..."`` -> ((4, ...), (5, ...))."""
    words = _words(table)
    return tuple((int(i), name) for i, name in zip(words[::2], words[1::2], strict=True))


#: Desikan-Killiany label index (ctx-lh-* = 1000 + index, wm-lh-* = 3000 + index)
_DK_INDEX = {
    name: i
    for i, name in enumerate(
        _words(
            """bankssts caudalanteriorcingulate caudalmiddlefrontal corpuscallosum cuneus
        entorhinal fusiform inferiorparietal inferiortemporal isthmuscingulate lateraloccipital
        lateralorbitofrontal lingual medialorbitofrontal middletemporal parahippocampal
        paracentral parsopercularis parsorbitalis parstriangularis pericalcarine postcentral
        posteriorcingulate precentral precuneus rostralanteriorcingulate rostralmiddlefrontal
        superiorfrontal superiorparietal superiortemporal supramarginal frontalpole temporalpole
        transversetemporal insula"""
        ),
        start=1,
    )
}

#: FreeSurferColorLUT ids of the aseg rows (FreeSurfer 7 names) and of the cerebral WM
_ASEG_IDS = {
    name: i
    for i, name in _pairs(
        """2 Left-Cerebral-White-Matter 4 Left-Lateral-Ventricle 5 Left-Inf-Lat-Vent
        7 Left-Cerebellum-White-Matter 8 Left-Cerebellum-Cortex 10 Left-Thalamus 11 Left-Caudate
        12 Left-Putamen 13 Left-Pallidum 14 3rd-Ventricle 15 4th-Ventricle 16 Brain-Stem
        17 Left-Hippocampus 18 Left-Amygdala 24 CSF 26 Left-Accumbens-area 28 Left-VentralDC
        30 Left-vessel 31 Left-choroid-plexus 41 Right-Cerebral-White-Matter
        43 Right-Lateral-Ventricle 44 Right-Inf-Lat-Vent 46 Right-Cerebellum-White-Matter
        47 Right-Cerebellum-Cortex 49 Right-Thalamus 50 Right-Caudate 51 Right-Putamen
        52 Right-Pallidum 53 Right-Hippocampus 54 Right-Amygdala 58 Right-Accumbens-area
        60 Right-VentralDC 62 Right-vessel 63 Right-choroid-plexus 72 5th-Ventricle
        77 WM-hypointensities 78 Left-WM-hypointensities 79 Right-WM-hypointensities
        80 non-WM-hypointensities 81 Left-non-WM-hypointensities 82 Right-non-WM-hypointensities
        85 Optic-Chiasm 251 CC_Posterior 252 CC_Mid_Posterior 253 CC_Central 254 CC_Mid_Anterior
        255 CC_Anterior"""
    )
}

#: the --ids run_fastsurfer.sh gives segstats.py for aseg+DKT.stats, below 1000
_FASTSURFER_ASEGDKT_SUBCORTICAL = tuple(
    int(i)
    for i in _words(
        """2 4 5 7 8 10 11 12 13 14 15 16 17 18 24 26 28 31 41 43 44 46 47 49 50 51 52 53
    54 58 60 63 77 251 252 253 254 255"""
    )
)

#: rows of FastSurfer's cerebellum.CerebNet.stats: CerebNet labels mapped to
#: FreeSurferColorLUT names (CerebNet2FreeSurfer.json), plus the rows CerebNet merges:
#: 8 and 47 (hemisphere cortex) and 632 (vermis)
_CEREBNET_ROWS = _pairs(
    """7 Left-Cerebellum-White-Matter 8 Left-Cerebellum-Cortex 46 Right-Cerebellum-White-Matter
    47 Right-Cerebellum-Cortex 601 Cbm_Left_I_IV 602 Cbm_Right_I_IV 603 Cbm_Left_V
    604 Cbm_Right_V 605 Cbm_Left_VI 606 Cbm_Vermis_VI 607 Cbm_Right_VI 608 Cbm_Left_CrusI
    610 Cbm_Right_CrusI 611 Cbm_Left_CrusII 613 Cbm_Right_CrusII 614 Cbm_Left_VIIb
    616 Cbm_Right_VIIb 617 Cbm_Left_VIIIa 619 Cbm_Right_VIIIa 620 Cbm_Left_VIIIb
    622 Cbm_Right_VIIIb 623 Cbm_Left_IX 624 Cbm_Vermis_IX 625 Cbm_Right_IX 626 Cbm_Left_X
    627 Cbm_Vermis_X 628 Cbm_Right_X 630 Cbm_Vermis_VII 631 Cbm_Vermis_VIII 632 Cbm_Vermis"""
)

_SURFACE_ATLASES = ("aparc", "aparc_pial", "a2009s", "DKT", "BA", "BA_thresh", "entorhinal")
_SEGMENTATION_ATLASES = ("aseg", "aseg_dkt", "wmparc", "wmparc_dkt", "cerebnet")


def _default_atlases(flavor: _Flavor) -> tuple[str, ...]:
    """The atlases the software writes in a default run (what example_features fills)."""
    if flavor.fastsurfer:
        return ("DKT", "BA", "BA_thresh", "aseg", "aseg_dkt", "wmparc_dkt", "cerebnet")
    if flavor.release == (5, 1):
        return ("aparc", "a2009s", "BA", "entorhinal", "aseg", "wmparc")
    if flavor.release == (5, 3):
        return ("aparc", "a2009s", "DKT", "BA", "BA_thresh", "entorhinal", "aseg", "wmparc")
    return ("aparc", "aparc_pial", "a2009s", "DKT", "BA", "BA_thresh", "aseg", "wmparc")


def _writable_atlases(flavor: _Flavor) -> tuple[str, ...]:
    if flavor.fastsurfer:  # --fsaparc adds FreeSurfer's own parcellation stats
        return ("aparc", "aparc_pial", "a2009s", *_default_atlases(flavor))
    return _default_atlases(flavor)


def _surface_stem(flavor: _Flavor, atlas: str) -> str:
    """The file name between ``?h.`` and ``.stats``."""
    fs5 = flavor.release < (6, 0)
    if atlas == "DKT":
        if flavor.fastsurfer:
            return "aparc.DKTatlas.mapped"
        return "aparc.DKTatlas40" if fs5 else "aparc.DKTatlas"
    if atlas == "BA":
        return "BA" if fs5 else "BA_exvivo"
    if atlas == "BA_thresh":
        return "BA.thresh" if fs5 else "BA_exvivo.thresh"
    stems = {"aparc": "aparc", "aparc_pial": "aparc.pial", "a2009s": "aparc.a2009s"}
    return stems.get(atlas, "entorhinal_exvivo")


def _surface_regions(flavor: _Flavor, atlas: str, hemi: str) -> tuple[tuple[str, str], ...]:
    """(canonical region, name as written) in the software's row order."""
    if atlas in ("aparc", "aparc_pial", "DKT"):
        return tuple((r, r) for r in known_regions("DKT" if atlas == "DKT" else "aparc"))
    if atlas == "a2009s":
        if flavor.release == (6, 0):  # FreeSurfer 6 ctab spells '&', 5.x and 7+ '_and_'
            return tuple((r, r.replace("_and_", "&")) for r in known_regions("a2009s"))
        return tuple((r, r) for r in known_regions("a2009s"))
    if atlas == "entorhinal":
        return (("entorhinal_exvivo", f"{hemi}.entorhinal_exvivo.label"),)
    regions = known_regions("BA")
    if flavor.release >= (6, 0):
        return tuple((r, r) for r in regions)
    # FreeSurfer 5: no '_exvivo' suffix; entorhinal has its own file; perirhinal only in 5.3 BA
    keep = [r for r in regions if r != "entorhinal_exvivo"]
    if not (flavor.release == (5, 3) and atlas == "BA"):
        keep.remove("perirhinal_exvivo")
    return tuple((r, r.removesuffix("_exvivo")) for r in keep)


def _segmentation_rows(atlas: str) -> tuple[tuple[str, int], ...]:
    """(canonical region, SegId) in file order."""
    if atlas == "aseg":
        return tuple((r, _ASEG_IDS[r]) for r in known_regions("aseg"))
    if atlas == "cerebnet":
        return tuple((name, i) for i, name in _CEREBNET_ROWS)
    rows: list[tuple[str, int]] = []
    if atlas == "aseg_dkt":
        by_id = {i: name for name, i in _ASEG_IDS.items()}
        rows.extend((by_id[i], i) for i in _FASTSURFER_ASEGDKT_SUBCORTICAL)
        for hemi, base in (("lh", 1000), ("rh", 2000)):
            rows.extend((f"ctx-{hemi}-{r}", base + _DK_INDEX[r]) for r in known_regions("DKT"))
        return tuple(rows)
    parcellation = known_regions("DKT" if atlas == "wmparc_dkt" else "aparc")
    for hemi, base in (("lh", 3000), ("rh", 4000)):
        rows.extend((f"wm-{hemi}-{r}", base + _DK_INDEX[r]) for r in parcellation)
    return (*rows, ("Left-UnsegmentedWhiteMatter", 5001), ("Right-UnsegmentedWhiteMatter", 5002))


# --------------------------------------------------------------------------------------------
# '# Measure' lines


def _gid(hemi: str, region: str) -> str:
    return f"global.{hemi}.{region}.{GLOBAL_MEASURES[region][0]}"


@dataclass(frozen=True)
class _Measure:
    """One ``# Measure key, name, description, value, unit`` line.

    ``source`` is ``feature`` (the value of ``feature``, times ``scale``), ``rows_volume`` or
    ``rows_nvoxels`` (sums over the file's rows) or ``zero``. Only ``feature`` lines with
    ``scale == 1`` carry a feature faithfully; the others are derived.
    """

    key: str
    name: str
    description: str
    unit: str
    feature: str
    style: str = "f"
    scale: float = 1.0
    integer: bool = False
    comma: bool = True
    source: str = "feature"

    @property
    def faithful(self) -> bool:
        return self.source == "feature" and self.scale == 1.0


#: name | key | description | unit | feature (hemi.region) | value style
_MEASURE_TABLE = """
BrainSegVol|BrainSeg|Brain Segmentation Volume|mm^3|na.BrainSegVol|f
BrainSegVolNotVent|BrainSegNotVent|Brain Segmentation Volume Without Ventricles|mm^3|na.BrainSegVolNotVent|f
BrainSegVolNotVentSurf|BrainSegNotVentSurf|Brain Segmentation Volume Without Ventricles from Surf|mm^3|na.BrainSegVolNotVentSurf|f
VentricleChoroidVol|VentricleChoroidVol|Volume of ventricles and choroid plexus|mm^3|na.VentricleChoroidVol|f
lhCortexVol|lhCortex|Left hemisphere cortical gray matter volume|mm^3|lh.CortexVol|f
rhCortexVol|rhCortex|Right hemisphere cortical gray matter volume|mm^3|rh.CortexVol|f
CortexVol|Cortex|Total cortical gray matter volume|mm^3|na.CortexVol|f
lhCerebralWhiteMatterVol|lhCerebralWhiteMatter|Left hemisphere cerebral white matter volume|mm^3|lh.CerebralWhiteMatterVol|f
rhCerebralWhiteMatterVol|rhCerebralWhiteMatter|Right hemisphere cerebral white matter volume|mm^3|rh.CerebralWhiteMatterVol|f
CerebralWhiteMatterVol|CerebralWhiteMatter|Total cerebral white matter volume|mm^3|na.CerebralWhiteMatterVol|f
lhCorticalWhiteMatterVol|lhCorticalWhiteMatter|Left hemisphere cortical white matter volume|mm^3|lh.CerebralWhiteMatterVol|f
rhCorticalWhiteMatterVol|rhCorticalWhiteMatter|Right hemisphere cortical white matter volume|mm^3|rh.CerebralWhiteMatterVol|f
CorticalWhiteMatterVol|CorticalWhiteMatter|Total cortical white matter volume|mm^3|na.CerebralWhiteMatterVol|f
SubCortGrayVol|SubCortGray|Subcortical gray matter volume|mm^3|na.SubCortGrayVol|f
TotalGrayVol|TotalGray|Total gray matter volume|mm^3|na.TotalGrayVol|f
SupraTentorialVol|SupraTentorial|Supratentorial volume|mm^3|na.SupraTentorialVol|f
SupraTentorialVolNotVent|SupraTentorialNotVent|Supratentorial volume|mm^3|na.SupraTentorialVolNotVent|f
SupraTentorialVolNotVentVox|SupraTentorialNotVentVox|Supratentorial volume voxel count|mm^3|na.SupraTentorialVolNotVentVox|f
MaskVol|Mask|Mask Volume|mm^3|na.MaskVol|f
BrainSegVol-to-eTIV|BrainSegVol-to-eTIV|Ratio of BrainSegVol to eTIV|unitless|na.BrainSegVol-to-eTIV|f
MaskVol-to-eTIV|MaskVol-to-eTIV|Ratio of MaskVol to eTIV|unitless|na.MaskVol-to-eTIV|f
lhSurfaceHoles|lhSurfaceHoles|Number of defect holes in lh surfaces prior to fixing|unitless|lh.SurfaceHoles|d
rhSurfaceHoles|rhSurfaceHoles|Number of defect holes in rh surfaces prior to fixing|unitless|rh.SurfaceHoles|d
SurfaceHoles|SurfaceHoles|Total number of defect holes in surfaces prior to fixing|unitless|na.SurfaceHoles|d
eTIV|EstimatedTotalIntraCranialVol|Estimated Total Intracranial Volume|mm^3|na.eTIV|f
sTIV|SegmentedTotalIntraCranialVol|Segmented Total Intracranial Volume|mm^3|na.sTIV|f
ICV|IntraCranialVol|Intracranial Volume|mm^3|na.eTIV|f
"""  # noqa: E501


def _measure_table() -> dict[str, _Measure]:
    out = {}
    for line in _MEASURE_TABLE.strip().splitlines():
        name, key, description, unit, feature, style = line.split("|")
        hemi, region = feature.split(".")
        out[name] = _Measure(key, name, description, unit, _gid(hemi, region), style)
    return out


_MEASURES = _measure_table()
_BRAINVOL_FIXED = "# BrainVolStatsFixed-NotNeeded because voxelvolume=1mm3\n"

_MeasureItem: TypeAlias = _Measure | str


def _pick(names: str) -> tuple[_MeasureItem, ...]:
    """Measures by name; ``FIXED`` is the BrainVolStatsFixed line of FreeSurfer 7+."""
    return tuple(_BRAINVOL_FIXED if n == "FIXED" else _MEASURES[n] for n in _words(names))


_FS7_ASEG = """BrainSegVol BrainSegVolNotVent VentricleChoroidVol lhCortexVol rhCortexVol CortexVol
    lhCerebralWhiteMatterVol rhCerebralWhiteMatterVol CerebralWhiteMatterVol SubCortGrayVol
    TotalGrayVol SupraTentorialVol SupraTentorialVolNotVent MaskVol BrainSegVol-to-eTIV
    MaskVol-to-eTIV lhSurfaceHoles rhSurfaceHoles SurfaceHoles eTIV"""


def _aseg_measures(flavor: _Flavor) -> tuple[_MeasureItem, ...]:
    if flavor.fastsurfer:  # segstats.py --compute, in the order recon-surf.sh asks for
        return _pick(_FS7_ASEG)
    if flavor.release[0] >= 7:
        return _pick("FIXED " + _FS7_ASEG + (" sTIV" if flavor.release[0] >= 8 else ""))
    if flavor.release == (5, 1):
        return _pick(
            """lhCortexVol rhCortexVol CortexVol lhCorticalWhiteMatterVol
            rhCorticalWhiteMatterVol CorticalWhiteMatterVol SubCortGrayVol TotalGrayVol
            SupraTentorialVol ICV"""
        )
    white = (
        "lhCorticalWhiteMatterVol rhCorticalWhiteMatterVol CorticalWhiteMatterVol"
        if flavor.release == (5, 3)
        else "lhCerebralWhiteMatterVol rhCerebralWhiteMatterVol CerebralWhiteMatterVol"
    )
    ventricles = "" if flavor.release == (5, 3) else "VentricleChoroidVol"
    return _pick(
        f"""BrainSegVol BrainSegVolNotVent BrainSegVolNotVentSurf {ventricles} lhCortexVol
        rhCortexVol CortexVol {white} SubCortGrayVol TotalGrayVol SupraTentorialVol
        SupraTentorialVolNotVent SupraTentorialVolNotVentVox MaskVol BrainSegVol-to-eTIV
        MaskVol-to-eTIV lhSurfaceHoles rhSurfaceHoles SurfaceHoles eTIV"""
    )


def _brainvol_measures() -> tuple[_MeasureItem, ...]:
    names = """BrainSegVol BrainSegVolNotVent SupraTentorialVol SupraTentorialVolNotVent
    SubCortGrayVol lhCortexVol rhCortexVol CortexVol TotalGrayVol lhCerebralWhiteMatterVol
    rhCerebralWhiteMatterVol CerebralWhiteMatterVol MaskVol SupraTentorialVolNotVentVox
    BrainSegVolNotVentSurf VentricleChoroidVol"""
    return tuple(
        _Measure(m.key, m.name, m.description, m.unit, m.feature, "12f")
        for m in _pick(names)
        if isinstance(m, _Measure)
    )


def _wmparc_measures(flavor: _Flavor) -> tuple[_MeasureItem, ...]:
    if flavor.fastsurfer:  # imported from brainvol.stats in the order recon-surf.sh asks for
        return _pick(
            """MaskVol VentricleChoroidVol rhCerebralWhiteMatterVol lhCerebralWhiteMatterVol
            CerebralWhiteMatterVol"""
        )
    if flavor.release == (5, 1):
        etiv = _gid("na", "eTIV")
        mask = "Brain Mask"
        segmentation = "Brain Segmentation"
        return (
            _Measure("BrainMask", "BrainMaskNVox", f"Number of {mask} Voxels", "unitless", etiv,
                     "d", scale=1.41, integer=True),
            _Measure("BrainMask", "BrainMaskVol", f"{mask} Volume", "mm^3", etiv, scale=1.41,
                     integer=True),
            _Measure("BrainSegNotVent", "BrainSegVolNotVent",
                     f"{segmentation} Volume Without Ventricles", "mm^3", "", source="zero"),
            _Measure("BrainSeg", "BrainSegNVox", f"Number of {segmentation} Voxels", "unitless",
                     "", "d7", source="rows_nvoxels"),
            _Measure("BrainSeg", "BrainSegVol", f"{segmentation} Volume", "mm^3", "",
                     source="rows_volume"),
            *_pick("lhCorticalWhiteMatterVol rhCorticalWhiteMatterVol CorticalWhiteMatterVol ICV"),
        )  # fmt: skip
    if flavor.release == (5, 3):
        return _pick(
            "lhCorticalWhiteMatterVol rhCorticalWhiteMatterVol CorticalWhiteMatterVol MaskVol eTIV"
        )
    names = """VentricleChoroidVol lhCerebralWhiteMatterVol rhCerebralWhiteMatterVol
    CerebralWhiteMatterVol MaskVol eTIV"""
    if flavor.release[0] >= 7:
        names = "FIXED " + names
    return _pick(names + (" sTIV" if flavor.release[0] >= 8 else ""))


#: whole-hemisphere / cortex ratios for files computed without a cortex label (?h.BA*)
_WHOLE_HEMI_VERTICES = 1.07
_WHOLE_HEMI_AREA = 1.063


def _surface_measures(flavor: _Flavor, atlas: str, hemi: str) -> tuple[_MeasureItem, ...]:
    numvert, white = _gid(hemi, "NumVert"), _gid(hemi, "WhiteSurfArea")
    head: tuple[_MeasureItem, ...]
    if atlas in ("BA", "BA_thresh", "entorhinal"):
        head = (
            _Measure("Cortex", "NumVert", "Number of Vertices", "unitless", numvert, "d",
                     scale=_WHOLE_HEMI_VERTICES, integer=True),
            _Measure("Cortex", "WhiteSurfArea", "White Surface Total Area", "mm^2", white, "g",
                     scale=_WHOLE_HEMI_AREA),
        )  # fmt: skip
    else:
        area = (
            _Measure("Cortex", "PialSurfArea", "Pial Surface Total Area", "mm^2",
                     _gid(hemi, "PialSurfArea"), "g")
            if atlas == "aparc_pial"
            else _Measure("Cortex", "WhiteSurfArea", "White Surface Total Area", "mm^2", white,
                          "g")
        )  # fmt: skip
        thickness = _gid(hemi, "MeanThickness")
        head = (
            _Measure("Cortex", "NumVert", "Number of Vertices", "unitless", numvert, "d"),
            area,
            _Measure("Cortex", "MeanThickness", "Mean Thickness", "mm", thickness, "g"),
        )
    if flavor.release < (6, 0):
        return head
    cortex = _MEASURES["CortexVol"]
    if flavor.release == (6, 0):  # FreeSurfer 6 lost the comma after 'CortexVol' here
        cortex = _Measure(cortex.key, cortex.name, cortex.description, cortex.unit,
                          cortex.feature, comma=False)  # fmt: skip
    fixed = "FIXED " if flavor.release >= (7, 0) else ""
    before = _pick(f"{fixed}BrainSegVol BrainSegVolNotVent BrainSegVolNotVentSurf")
    after = _pick("SupraTentorialVol SupraTentorialVolNotVent eTIV")
    return (*head, *before, cortex, *after)


def _format_value(measure: _Measure, value: float) -> str:
    style = measure.style
    if style == "f":
        return f"{value:f}"
    if style == "d":
        return f"{value:.0f}"
    if style == "d7":
        return f"{value:7.0f}"
    if style == "g":
        return f"{value:g}"
    return f"{value:.12f}"


def _measure_block(
    items: Sequence[_MeasureItem],
    features: Mapping[str, float],
    consumed: set[str],
    sums: tuple[float, float] = (0.0, 0.0),
) -> tuple[str, bool]:
    """The ``# Measure`` lines for the features present, and whether any was written."""
    out: list[str] = []
    wrote = False
    for item in items:
        if isinstance(item, str):
            out.append(item)
            continue
        if item.source == "feature":
            raw = features.get(item.feature)
            if raw is None:
                continue
            value = float(raw) * item.scale
            if item.integer:
                value = float(round(value))
            if item.faithful:
                consumed.add(item.feature)
        elif item.source == "rows_volume":
            value = sums[0]
        elif item.source == "rows_nvoxels":
            value = sums[1]
        else:
            value = 0.0
        wrote = True
        sep = ", " if item.comma else " "
        out.append(
            f"# Measure {item.key}, {item.name}{sep}{item.description}, "
            f"{_format_value(item, value)}, {item.unit}\n"
        )
    return "".join(out), wrote


# --------------------------------------------------------------------------------------------
# fixed header blocks, as the programs print them (trailing spaces included)

_SURFACE_TABLECOLS = """\
# NTableCols 10
# TableCol  1 ColHeader StructName
# TableCol  1 FieldName Structure Name
# TableCol  1 Units     NA
# TableCol  2 ColHeader NumVert
# TableCol  2 FieldName Number of Vertices
# TableCol  2 Units     unitless
# TableCol  3 ColHeader SurfArea
# TableCol  3 FieldName Surface Area
# TableCol  3 Units     mm^2
# TableCol  4 ColHeader GrayVol
# TableCol  4 FieldName Gray Matter Volume
# TableCol  4 Units     mm^3
# TableCol  5 ColHeader ThickAvg 
# TableCol  5 FieldName Average Thickness
# TableCol  5 Units     mm
# TableCol  6 ColHeader ThickStd
# TableCol  6 FieldName Thickness StdDev
# TableCol  6 Units     mm 
# TableCol  7 ColHeader MeanCurv
# TableCol  7 FieldName Integrated Rectified Mean Curvature
# TableCol  7 Units     mm^-1
# TableCol  8 ColHeader GausCurv 
# TableCol  8 FieldName Integrated Rectified Gaussian Curvature
# TableCol  8 Units     mm^-2
# TableCol  9 ColHeader  FoldInd
# TableCol  9 FieldName  Folding Index 
# TableCol  9 Units      unitless 
# TableCol 10 ColHeader CurvInd
# TableCol 10 FieldName Intrinsic Curvature Index
# TableCol 10 Units     unitless
# ColHeaders StructName NumVert SurfArea GrayVol ThickAvg ThickStd MeanCurv GausCurv FoldInd CurvInd
"""  # noqa: W291, E501

_SEG_TABLECOLS = """\
# TableCol  1 ColHeader Index 
# TableCol  1 FieldName Index 
# TableCol  1 Units     NA 
# TableCol  2 ColHeader SegId 
# TableCol  2 FieldName Segmentation Id
# TableCol  2 Units     NA
# TableCol  3 ColHeader NVoxels 
# TableCol  3 FieldName Number of Voxels
# TableCol  3 Units     unitless
# TableCol  4 ColHeader Volume_mm3
# TableCol  4 FieldName Volume
# TableCol  4 Units     mm^3
# TableCol  5 ColHeader StructName
# TableCol  5 FieldName Structure Name
# TableCol  5 Units     NA
# TableCol  6 ColHeader normMean 
# TableCol  6 FieldName Intensity normMean
# TableCol  6 Units     MR
# TableCol  7 ColHeader normStdDev
# TableCol  7 FieldName {itensity} normStdDev
# TableCol  7 Units     MR
# TableCol  8 ColHeader normMin
# TableCol  8 FieldName Intensity normMin
# TableCol  8 Units     MR
# TableCol  9 ColHeader normMax
# TableCol  9 FieldName Intensity normMax
# TableCol  9 Units     MR
# TableCol 10 ColHeader normRange
# TableCol 10 FieldName Intensity normRange
# TableCol 10 Units     MR
"""  # noqa: W291


def _fastsurfer_tablecols() -> str:
    names = ("Index", "SegId", *_SEG_HEADERS[:2], "StructName", *_SEG_HEADERS[2:])
    fields = {
        "Index": "Index",
        "SegId": "Segmentation Id",
        "NVoxels": "Number of Voxels",
        "Volume_mm3": "Volume",
        "StructName": "Structure Name",
    }
    units = {"NVoxels": "unitless", "Volume_mm3": "mm^3"}
    out = []
    for i, name in enumerate(names, start=1):
        norm = name.startswith("norm")
        out.append(
            f"# TableCol {i: 2d} ColHeader {name}\n"
            f"# TableCol {i: 2d} FieldName {f'Intensity {name}' if norm else fields[name]}\n"
            f"# TableCol {i: 2d} Units     {'MR' if norm else units.get(name, 'NA')}\n"
        )
    return "".join(out)


_FASTSURFER_TABLECOLS = _fastsurfer_tablecols()
_SEG_COLHEADERS = (
    "Index SegId NVoxels Volume_mm3 StructName normMean normStdDev normMin normMax normRange"
)


def _segstats_version(flavor: _Flavor) -> str:
    if flavor.release == (5, 1):
        return "$Id: mri_segstats.c,v 1.75.2.2 2011/04/27 22:18:58 nicks Exp $"
    if flavor.release == (5, 3):
        return "$Id: mri_segstats.c,v 1.75.2.9 2013/02/16 00:09:33 greve Exp $"
    if flavor.release == (6, 0):
        return "$Id: mri_segstats.c,v 1.121 2016/05/31 17:27:11 greve Exp $"
    return flavor.version


def _anatomical_stats_versions(flavor: _Flavor) -> tuple[str, str]:
    if flavor.release == (5, 1):
        return (
            "$Id: mris_anatomical_stats.c,v 1.72 2011/03/02 00:04:26 nicks Exp $",
            "$Id: mrisurf.c,v 1.693.2.2 2011/04/27 19:21:05 nicks Exp $",
        )
    if flavor.release == (5, 3):
        return (
            "$Id: mris_anatomical_stats.c,v 1.72 2011/03/02 00:04:26 nicks Exp $",
            "$Id: mrisurf.c,v 1.693.2.7 2013/05/12 22:28:01 nicks Exp $",
        )
    if flavor.release == (6, 0):
        return (
            "$Id: mris_anatomical_stats.c,v 1.79 2016/03/14 15:15:34 greve Exp $",
            "$Id: mrisurf.c,v 1.781.2.6 2016/12/27 16:47:14 zkaufman Exp $",
        )
    return flavor.version, flavor.version


# --------------------------------------------------------------------------------------------
# files

_Ident = Mapping[str, str]


class _File:
    """One stats file of a plan: knows its name, the features it can hold, how to render."""

    name: str
    atlas: str
    hemi: str

    def render(
        self, features: Mapping[str, float], ident: _Ident, consumed: set[str]
    ) -> str | None:
        raise NotImplementedError  # pragma: no cover


def _missing_measures_error(
    file: str,
    atlas: str,
    hemi: str,
    region: str,
    measures: Sequence[str],
    values: Sequence[float | None],
) -> ValueError:
    have = [m for m, v in zip(measures, values, strict=True) if v is not None]
    lack = [m for m, v in zip(measures, values, strict=True) if v is None]
    return ValueError(
        f"{file}: row {atlas}.{hemi}.{region} has {', '.join(have)} but lacks "
        f"{', '.join(lack)}; a row needs all {len(measures)} measures "
        f"({', '.join(measures)}). example_features(rng) gives a complete set to start from."
    )


class _SurfaceFile(_File):
    def __init__(self, flavor: _Flavor, atlas: str, hemi: str) -> None:
        self.flavor = flavor
        self.atlas = atlas
        self.hemi = hemi
        self.stem = _surface_stem(flavor, atlas)
        self.name = f"{hemi}.{self.stem}.stats"
        self.rows = tuple(
            (written, tuple(f"{atlas}.{hemi}.{region}.{m}" for m in _SURF_MEASURES), region)
            for region, written in _surface_regions(flavor, atlas, hemi)
        )
        self.measures = _surface_measures(flavor, atlas, hemi)
        # FreeSurfer 8 widens the NumVert column by two characters
        numvert = "%7.0f" if flavor.release[0] >= 8 else "%5.0f"
        self.row_format = (
            "%-40s" + numvert + "  %5.0f  %5.0f %6.3f %5.3f %9.3f %9.3f %8.0f %7.1f\n"
        )

    def _cmdline(self, ident: _Ident) -> tuple[str, str]:
        """(cmdline, AnnotationFile) as the generating program wrote them."""
        h, subject, flavor = self.hemi, ident["subjectname"], self.flavor
        th3 = {5: "", 6: " -th3", 7: " -th3"}.get(flavor.release[0], " -no-th3")
        surf = "pial" if self.atlas == "aparc_pial" else "white"
        fname = self.name
        if flavor.fastsurfer and self.atlas in ("DKT", "BA", "BA_thresh"):
            label = f"{ident['SUBJECTS_DIR']}/{subject}/label"
            stats = f"{ident['SUBJECTS_DIR']}/{subject}/stats"
            if self.atlas == "DKT":
                annot = f"{label}/{h}.aparc.DKTatlas.mapped.annot"
                cmd = (
                    f"mris_anatomical_stats -th3 -mgz -cortex {label}/{h}.cortex.label "
                    f"-f {stats}/{fname} -b -a {annot} -c {label}/aparc.annot.mapped.ctab "
                    f"{subject} {h} white"
                )
            else:
                annot = f"{label}/{h}.{self.stem}.annot"
                cmd = (
                    f"mris_anatomical_stats -th3 -mgz -f {stats}/{fname} -b -a {annot} "
                    f"-c {label}/{self.stem}.ctab {subject} {h} white"
                )
            return cmd, annot
        if self.atlas == "entorhinal":
            annot = f"./{h}.entorhinal_exvivo.label"
            return (
                f"mris_anatomical_stats -mgz -f ../stats/{fname} -b -l {annot} {subject} {h} white"
            ), annot
        if self.atlas in ("BA", "BA_thresh"):
            annot = f"./{h}.{self.stem}.annot"
            return (
                f"mris_anatomical_stats{th3} -mgz -f ../stats/{fname} -b -a {annot} "
                f"-c ./{self.stem}.ctab {subject} {h} white"
            ), annot
        annot_name = "aparc" if self.atlas == "aparc_pial" else self.stem
        ctab = (
            "aparc.annot.ctab" if annot_name == "aparc" else f"aparc.annot.{annot_name[6:]}.ctab"
        )
        annot = f"../label/{h}.{annot_name}.annot"
        return (
            f"mris_anatomical_stats{th3} -mgz -cortex ../label/{h}.cortex.label "
            f"-f ../stats/{fname} -b -a {annot} -c ../label/{ctab} {subject} {h} {surf}"
        ), annot

    def render(
        self, features: Mapping[str, float], ident: _Ident, consumed: set[str]
    ) -> str | None:
        get = features.get
        body: list[str] = []
        fmt = self.row_format
        for written, keys, region in self.rows:
            values = [get(k) for k in keys]
            if None in values:
                if values.count(None) == len(values):
                    continue
                raise _missing_measures_error(
                    self.name, self.atlas, self.hemi, region, _SURF_MEASURES, values
                )
            body.append(fmt % (written, *values))
            consumed.update(keys)
        if not body:
            return None
        measures, _ = _measure_block(self.measures, features, consumed)
        cmdline, annot = self._cmdline(ident)
        version, mrisurf = _anatomical_stats_versions(self.flavor)
        header = (
            "# Table of FreeSurfer cortical parcellation anatomical statistics \n"
            "# \n"
            f"# CreationTime {ident['CreationTime']}\n"
            "# generating_program mris_anatomical_stats\n"
            f"# cvs_version {version}\n"
            f"# mrisurf.c-cvs_version {mrisurf}\n"
            f"# cmdline {cmdline} \n"
            "# sysname  Linux\n"
            f"# hostname {ident['hostname']}\n"
            "# machine  x86_64\n"
            f"# user     {ident['user']}\n"
            "# \n"
            f"# SUBJECTS_DIR {ident['SUBJECTS_DIR']}\n"
            "# anatomy_type surface\n"
            f"# subjectname {ident['subjectname']}\n"
            f"# hemi {self.hemi}\n"
            f"# AnnotationFile {annot}\n"
            f"# AnnotationFileTimeStamp {ident['timestamp']}\n"
        )
        return header + measures + _SURFACE_TABLECOLS + "".join(body)


def _segmentation_values(
    file: str,
    atlas: str,
    rows: Sequence[tuple[str, tuple[str, ...], str, int]],
    features: Mapping[str, float],
    consumed: set[str],
) -> list[tuple[int, str, list[float]]]:
    """(SegId, written name, values) of the rows present in ``features``."""
    get = features.get
    out: list[tuple[int, str, list[float]]] = []
    for written, keys, region, segid in rows:
        values = [get(k) for k in keys]
        if None in values:
            if values.count(None) == len(values):
                continue
            raise _missing_measures_error(file, atlas, "na", region, _SEG_MEASURES, values)
        out.append((segid, written, values))  # type: ignore[arg-type]
        consumed.update(keys)
    return out


class _SegFile(_File):
    """A segmentation table written by FreeSurfer's mri_segstats."""

    def __init__(self, flavor: _Flavor, atlas: str) -> None:
        self.flavor = flavor
        self.atlas = atlas
        self.hemi = "na"
        self.name = f"{atlas}.stats"
        proper = flavor.release < (7, 0)
        self.rows = tuple(
            (
                region + "-Proper" if proper and region.endswith("-Thalamus") else region,
                tuple(f"{atlas}.na.{region}.{m}" for m in _SEG_MEASURES),
                region,
                segid,
            )
            for region, segid in _segmentation_rows(atlas)
        )
        self.measures = _aseg_measures(flavor) if atlas == "aseg" else _wmparc_measures(flavor)
        self.itensity = "Itensity" if flavor.release < (7, 3) else "Intensity"

    def _cmdline(self, ident: _Ident) -> str:
        flavor, subject, home = self.flavor, ident["subjectname"], ident["cmdline_path"]
        seed = "--seed 1234 " if flavor.release >= (7, 0) else ""
        stiv = (
            f" --stiv {ident['SUBJECTS_DIR']}/{subject}/stats/synthseg.tiv.dat"
            if flavor.release[0] >= 8
            else ""
        )
        if self.atlas == "aseg":
            if flavor.release == (5, 1):
                middle = "--empty --excludeid 0"
                tail = "--surf-wm-vol --surf-ctx-vol --totalgray"
            else:
                middle = "--empty --brainmask mri/brainmask.mgz --brain-vol-from-seg --excludeid 0"
                tail = "--surf-wm-vol --surf-ctx-vol --totalgray --euler"
            return (
                f"mri_segstats {seed}--seg mri/aseg.mgz --sum stats/aseg.stats "
                f"--pv mri/norm.mgz {middle} --excl-ctxgmwm --supratent --subcortgray "
                f"--in mri/norm.mgz --in-intensity-name norm --in-intensity-units MR "
                f"--etiv{stiv} {tail} --ctab {home}/ASegStatsLUT.txt --subject {subject}"
            )
        mask = (
            "--brain-vol-from-seg --brainmask mri/brainmask.mgz"
            if flavor.release == (5, 1)
            else "--brainmask mri/brainmask.mgz"
        )
        return (
            f"mri_segstats {seed}--seg mri/wmparc.mgz --sum stats/wmparc.stats "
            f"--pv mri/norm.mgz --excludeid 0 {mask} --in mri/norm.mgz "
            f"--in-intensity-name norm --in-intensity-units MR --subject {subject} "
            f"--surf-wm-vol --ctab {home}/WMParcStatsLUT.txt --etiv{stiv}"
        )

    def render(
        self, features: Mapping[str, float], ident: _Ident, consumed: set[str]
    ) -> str | None:
        rows = _segmentation_values(self.name, self.atlas, self.rows, features, consumed)
        sums = (sum(v[1] for _, _, v in rows), sum(v[0] for _, _, v in rows))
        used: set[str] = set()
        measures, wrote = _measure_block(self.measures, features, used, sums)
        if not rows and not (self.atlas == "aseg" and wrote):
            return None
        consumed |= used
        ts = ident["timestamp"]
        lut = "ASegStatsLUT.txt" if self.atlas == "aseg" else "WMParcStatsLUT.txt"
        mask = ""
        if self.atlas == "wmparc" and self.flavor.release == (5, 1):
            mask = f"# BrainMaskFile  mri/brainmask.mgz \n# BrainMaskFileTimeStamp  {ts} \n"
        if self.atlas == "aseg":
            exclude = "# Excluding Cortical Gray and White Matter\n# ExcludeSegId 0 2 3 41 42 \n"
        else:
            exclude = "# ExcludeSegId 0 \n# Only reporting non-empty segmentations\n"
        fmt = "%3d %3d %9.0f %10.1f  %-30s %10.4f %10.4f %10.4f %10.4f %10.4f \n"
        body = [
            fmt % (i, segid, v[0], v[1], name, *v[2:])
            for i, (segid, name, v) in enumerate(rows, start=1)
        ]
        return (
            "# Title Segmentation Statistics \n"
            "# \n"
            "# generating_program mri_segstats\n"
            f"# cvs_version {_segstats_version(self.flavor)}\n"
            f"# cmdline {self._cmdline(ident)} \n"
            "# sysname  Linux\n"
            f"# hostname {ident['hostname']}\n"
            "# machine  x86_64\n"
            f"# user     {ident['user']}\n"
            "# anatomy_type volume\n"
            "# \n"
            f"# SUBJECTS_DIR {ident['SUBJECTS_DIR']}\n"
            f"# subjectname {ident['subjectname']}\n"
            f"{mask}{measures}"
            f"# SegVolFile mri/{self.atlas}.mgz \n"
            f"# SegVolFileTimeStamp  {ts} \n"
            f"# ColorTable {ident['cmdline_path']}/{lut} \n"
            f"# ColorTableTimeStamp {ts} \n"
            "# InVolFile  mri/norm.mgz \n"
            f"# InVolFileTimeStamp  {ts} \n"
            "# InVolFrame 0 \n"
            "# PVVolFile  mri/norm.mgz \n"
            f"# PVVolFileTimeStamp  {ts} \n"
            f"{exclude}"
            "# VoxelVolume_mm3 1 \n"
            + _SEG_TABLECOLS.format(itensity=self.itensity)
            + f"# NRows {len(rows)} \n"
            "# NTableCols 10 \n"
            f"# ColHeaders  {_SEG_COLHEADERS}  \n" + "".join(body)
        )


def _fastsurfer_width(values: Sequence[float], decimals: int | None) -> int:
    """Column width as FastSurfer's segstats.py computes it: digits of the column maximum."""
    top = max(values) if values else 0.0
    digits = math.ceil(math.log10(top)) if top > 0 else 1
    width = max(digits, 0) + (decimals + 1 if decimals is not None else 0)
    return max(width, 1)


class _FastSurferSegFile(_File):
    """A segmentation table written by FastSurfer's segstats.py."""

    def __init__(self, flavor: _Flavor, atlas: str) -> None:
        self.flavor = flavor
        self.atlas = atlas
        self.hemi = "na"
        self.name = {
            "aseg": "aseg.stats",
            "aseg_dkt": "aseg+DKT.stats",
            "wmparc_dkt": "wmparc.DKTatlas.mapped.stats",
            "cerebnet": "cerebellum.CerebNet.stats",
        }[atlas]
        self.rows = tuple(
            (region, tuple(f"{atlas}.na.{region}.{m}" for m in _SEG_MEASURES), region, segid)
            for region, segid in _segmentation_rows(atlas)
        )
        self.measures: tuple[_MeasureItem, ...] = ()
        if atlas == "aseg":
            self.measures = _aseg_measures(flavor)
        elif atlas == "wmparc_dkt":
            self.measures = _wmparc_measures(flavor)
        # segstats.py defaults to 3 decimals; recon-surf asks for 1 in wmparc, CerebNet
        # calls write_statsfile with its own default of 1
        self.volume_decimals = 3 if atlas in ("aseg", "aseg_dkt") else 1

    def _header_parts(self, ident: _Ident) -> tuple[str, str, str, str, str]:
        """(cmdline, SUBJECT_DIR/subjectname lines, SegVolFile, ColorTable, InVolFile)."""
        home, sd, subject = ident["cmdline_path"], ident["SUBJECTS_DIR"], ident["subjectname"]
        mri, stats = f"{sd}/{subject}/mri", f"{sd}/{subject}/stats"
        fshome = _FASTSURFER_FREESURFER_HOME
        who = f"# SUBJECT_DIR {sd}\n# subjectname {subject}\n"
        script = f"{home}/FastSurferCNN/segstats.py"
        if self.atlas == "aseg":
            measures = " ".join(m.key for m in self.measures if isinstance(m, _Measure))
            measures = measures.replace("Mask ", f"Mask({mri}/mask.mgz) ")
            cmd = (
                f"{script} --sid {subject} --segfile {mri}/aseg.mgz "
                f"--segstatsfile {stats}/aseg.stats --pvfile {mri}/norm.mgz "
                f"--normfile {mri}/norm.mgz --threads 1 --excludeid 0 2 3 41 42 "
                f"--lut {fshome}/ASegStatsLUT.txt --empty measures --compute {measures}"
            )
            return cmd, who, f"{mri}/aseg.mgz", f"{fshome}/ASegStatsLUT.txt", f"{mri}/norm.mgz"
        if self.atlas == "wmparc_dkt":
            cmd = (
                f"{script} --sid {subject} --sd {sd} --pvfile {mri}/norm.mgz "
                f"--segfile {mri}/wmparc.DKTatlas.mapped.mgz --normfile {mri}/norm.mgz "
                f"--lut {fshome}/WMParcStatsLUT.txt --threads 1 "
                f"--segstatsfile {stats}/wmparc.DKTatlas.mapped.stats --volume_precision 1 "
                f"measures --file {stats}/brainvol.stats --import Mask VentricleChoroidVol "
                f"rhCerebralWhiteMatter lhCerebralWhiteMatter CerebralWhiteMatter"
            )
            return (
                cmd,
                who,
                f"{mri}/wmparc.DKTatlas.mapped.mgz",
                f"{fshome}/WMParcStatsLUT.txt",
                f"{mri}/norm.mgz",
            )
        lut = f"{home}/FastSurferCNN/config/FreeSurferColorLUT.txt"
        if self.atlas == "aseg_dkt":
            ids = " ".join(str(i) for _, _, _, i in self.rows)
            cmd = (
                f"{script} --segfile {mri}/aparc.DKTatlas+aseg.deep.mgz "
                f"--segstatsfile {stats}/aseg+DKT.stats --normfile {mri}/orig_nu.mgz "
                f"--threads 1 --empty --excludeid 0 --ids {ids} --lut {lut}"
            )
            return cmd, "", f"{mri}/aparc.DKTatlas+aseg.deep.mgz", lut, f"{mri}/orig_nu.mgz"
        cmd = (
            f"{home}/CerebNet/run_prediction.py --t1 {sd}/{subject}/input/T1w.nii.gz "
            f"--asegdkt_segfile {mri}/aparc.DKTatlas+aseg.deep.mgz "
            f"--conformed_name {mri}/orig.mgz --cereb_segfile {mri}/cerebellum.CerebNet.nii.gz "
            f"--seg_log {sd}/{subject}/scripts/deep-seg.log --async_io --batch_size 1 "
            f"--viewagg_device auto --device auto --threads 1 --norm_name {mri}/orig_nu.mgz "
            f"--cereb_statsfile {stats}/cerebellum.CerebNet.stats --sd {sd}"
        )
        return cmd, "", f"{mri}/cerebellum.CerebNet.nii.gz", lut, f"{mri}/orig_nu.mgz"

    def render(
        self, features: Mapping[str, float], ident: _Ident, consumed: set[str]
    ) -> str | None:
        rows = _segmentation_values(self.name, self.atlas, self.rows, features, consumed)
        used: set[str] = set()
        measures, wrote = _measure_block(self.measures, features, used)
        if not rows and not (self.atlas == "aseg" and wrote):
            return None
        consumed |= used
        ts = ident["timestamp"]
        cmd, who, segfile, lut, invol = self._header_parts(ident)
        exclude = {"aseg": "# ExcludeSegId 0 2 3 41 42\n", "aseg_dkt": "# ExcludeSegId 0\n"}
        return (
            "# Title Segmentation Statistics\n"
            "#\n"
            "# generating_program segstats.py\n"
            f"# FastSurfer_version {self.flavor.fastsurfer_version}\n"
            f"# cmdline {cmd}\n"
            "# sysname  Linux\n"
            f"# hostname {ident['hostname']}\n"
            "# machine  x86_64\n"
            f"# user       {ident['user']}\n"
            "# anatomy_type volume\n"
            "#\n"
            f"{who}{measures}"
            f"# SegVolFile {segfile}\n"
            f"# SegVolFileTimestamp {ts}\n"
            f"# ColorTable {lut}\n"
            f"# ColorTableTimestamp {ts}\n"
            f"# InVolFile {invol}\n"
            f"# InVolFileTimestamp {ts}\n"
            f"{exclude.get(self.atlas, '')}"
            "# Only reporting non-empty segmentations\n"
            "# compatibility with freesurfer's mri_segstats: fixed\n"
            "# VoxelVolume_mm3 1.0\n"
            f"{_FASTSURFER_TABLECOLS}"
            f"# NRows {len(rows)}\n"
            "# NTableCols 10\n"
            f"# ColHeaders  {_SEG_COLHEADERS}\n" + self._body(rows)
        )

    def _body(self, rows: Sequence[tuple[int, str, list[float]]]) -> str:
        if not rows:
            return ""
        decimals = self.volume_decimals
        columns = list(zip(*(v for _, _, v in rows), strict=True))
        widths = (
            _fastsurfer_width(range(1, len(rows) + 1), None),
            _fastsurfer_width([s for s, _, _ in rows], None),
            _fastsurfer_width(columns[0], None),
            _fastsurfer_width(columns[1], decimals),
        )
        name_width = max(len(n) for _, n, _ in rows)
        norm = [_fastsurfer_width(c, 4) for c in columns[2:]]
        fmt = (
            f"%{widths[0]}d %{widths[1]}d %{widths[2]}.0f %{widths[3]}.{decimals}f "
            f"%-{name_width}s " + " ".join(f"%{w}.4f" for w in norm) + "\n"
        )
        return "".join(
            fmt % (i, segid, v[0], v[1], name, *v[2:])
            for i, (segid, name, v) in enumerate(rows, start=1)
        )


class _BrainvolFile(_File):
    """``brainvol.stats``: measure lines only (FreeSurfer 7+ and FastSurfer)."""

    def __init__(self) -> None:
        self.name = "brainvol.stats"
        self.atlas = "global"
        self.hemi = "na"
        self.measures = _brainvol_measures()

    def render(
        self, features: Mapping[str, float], ident: _Ident, consumed: set[str]
    ) -> str | None:
        text, wrote = _measure_block(self.measures, features, consumed)
        return text if wrote else None


_AnyFile: TypeAlias = _SurfaceFile | _SegFile | _FastSurferSegFile | _BrainvolFile


@dataclass(frozen=True)
class _Plan:
    flavor: _Flavor
    files: tuple[_AnyFile, ...]
    #: atlas -> canonical regions the flavor writes (surface atlases: same for lh and rh)
    regions: Mapping[str, tuple[str, ...]]
    #: global feature ids written faithfully somewhere, for the default atlases
    default_globals: tuple[str, ...]


@cache
def _plan(flavor: _Flavor) -> _Plan:
    files: list[_AnyFile] = []
    regions: dict[str, tuple[str, ...]] = {}
    for atlas in _writable_atlases(flavor):
        if atlas in _SEGMENTATION_ATLASES:
            seg: _SegFile | _FastSurferSegFile = (
                _FastSurferSegFile(flavor, atlas) if flavor.fastsurfer else _SegFile(flavor, atlas)
            )
            files.append(seg)
            regions[atlas] = tuple(r for _, _, r, _ in seg.rows)
            if atlas == "aseg" and (flavor.fastsurfer or flavor.release >= (7, 0)):
                files.append(_BrainvolFile())
        else:
            for hemi in ("lh", "rh"):
                surf = _SurfaceFile(flavor, atlas, hemi)
                files.append(surf)
                regions[atlas] = tuple(r for _, _, r in surf.rows)
    defaults = set(_default_atlases(flavor))
    seen: dict[str, None] = {}
    for file in files:
        if file.atlas in defaults or isinstance(file, _BrainvolFile):
            for item in file.measures:
                if isinstance(item, _Measure) and item.faithful:
                    seen.setdefault(item.feature)
    return _Plan(flavor, tuple(files), regions, tuple(seen))


# --------------------------------------------------------------------------------------------
# public API


def _identifying(flavor: _Flavor, identifying: Mapping[str, str] | None) -> dict[str, str]:
    ident = dict(_IDENTIFYING_DEFAULTS)
    ident["cmdline_path"] = "/fastsurfer" if flavor.fastsurfer else "/usr/local/freesurfer"
    for key, value in (identifying or {}).items():
        if key not in _IDENTIFYING_KEYS:
            close = difflib.get_close_matches(str(key), _IDENTIFYING_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"identifying: unknown key {key!r}{hint} "
                f"Valid keys: {', '.join(_IDENTIFYING_KEYS)}"
            )
        if not isinstance(value, str) or not value or any(c in value for c in "\r\n"):
            raise ValueError(
                f"identifying[{key!r}] must be a non-empty one-line string, got {value!r}"
            )
        ident[key] = value
    return ident


def _check_values(features: Mapping[str, float]) -> None:
    try:
        values = np.fromiter(features.values(), dtype=float, count=len(features))
    except (TypeError, ValueError):
        bad = [k for k, v in features.items() if not isinstance(v, (int, float, np.number))]
        raise ValueError(
            f"features values must be numbers; {len(bad)} are not, e.g. {bad[:3]}"
        ) from None
    if not np.isfinite(values).all():
        bad = [k for k, v in features.items() if not math.isfinite(float(v))]
        raise ValueError(
            f"features values must be finite (stats files hold no NaN or inf); "
            f"{len(bad)} are not, e.g. {bad[:3]}"
        )


def _leftover_error(plan: _Plan, features: Mapping[str, float], consumed: set[str]) -> ValueError:
    flavor = plan.flavor
    leftovers = [k for k in features if k not in consumed]
    reasons: list[str] = []
    for key in leftovers[:5]:
        try:
            fid = parse_feature_id(key)
        except ValueError as error:
            reasons.append(str(error))
            continue
        if fid.atlas == "global":
            where = (
                "its file is not written (no rows for it in features)"
                if key in _all_global_features(plan)
                else f"{flavor.label} writes no such measure"
            )
            reasons.append(f"{key}: {where}")
        elif fid.atlas not in plan.regions:
            writes = ", ".join(sorted(plan.regions))
            what = ATLASES[fid.atlas][1]
            reasons.append(f"{key}: {flavor.label} does not write {what}; it writes {writes}")
        elif fid.region not in plan.regions[fid.atlas]:
            close = difflib.get_close_matches(fid.region, plan.regions[fid.atlas], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            reasons.append(
                f"{key}: {flavor.label} writes no {fid.atlas} region {fid.region!r}{hint}"
            )
        else:
            reasons.append(f"{key}: wrong hemisphere or measure for a {fid.atlas} table")
    more = f" (and {len(leftovers) - 5} more)" if len(leftovers) > 5 else ""
    return ValueError(
        f"write_subject_stats: {len(leftovers)} feature(s) would not be written{more}:\n  "
        + "\n  ".join(reasons)
    )


def _all_global_features(plan: _Plan) -> set[str]:
    return {
        item.feature
        for file in plan.files
        for item in file.measures
        if isinstance(item, _Measure) and item.faithful
    }


def write_subject_stats(
    stats_dir: Path,
    features: Mapping[str, float],
    *,
    software: str = "freesurfer",
    version: str = "7.4.1",
    identifying: Mapping[str, str] | None = None,
    fastsurfer_version: str = "2.4.2",
) -> list[Path]:
    """Write one subject's ``stats/`` folder as FreeSurfer or FastSurfer would.

    Parameters
    ----------
    stats_dir : Path
        The folder to write into (created if missing; existing files of the same names are
        replaced).
    features : mapping of str to float
        Canonical feature ids (``{atlas}.{hemi}.{region}.{measure}``) to values. One file is
        written per atlas and hemisphere present; a table row needs all its measures (9 for
        surface tables, 7 for segmentation tables). ``global.*`` values go into the
        ``# Measure`` lines where the software writes them. Values are rounded to the precision
        of the real files, so reading the folder back gives rounded values.
    software : {"freesurfer", "fastsurfer"}, default "freesurfer"
    version : str, default "7.4.1"
        FreeSurfer version: ``5.1``, ``5.3``, ``6.0``, ``7.x.y`` or ``8.x.y``. For FastSurfer,
        the FreeSurfer version its surface stats come from (``7.x.y``).
    identifying : mapping of str to str, optional
        Values for the identifying header fields, to plant canaries for privacy tests. Keys:
        ``subjectname``, ``hostname``, ``user``, ``SUBJECTS_DIR``, ``cmdline_path`` (the
        software's install folder, inside ``# cmdline`` and ``# ColorTable`` of segmentation
        files and every FastSurfer command line), ``CreationTime`` (surface files) and
        ``timestamp`` (every ``...TimeStamp`` line). Defaults are realistic and fake.
    fastsurfer_version : str, default "2.4.2"
        Written as ``# FastSurfer_version`` in FastSurfer's segmentation files.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    ValueError
        For an unknown software or version, an incomplete row, a non-finite value, an
        unknown ``identifying`` key, or any feature this software and version would not write
        (the message names each and says why). Nothing is written in that case.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> features = example_features(np.random.default_rng(0))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     paths = write_subject_stats(Path(tmp) / "sub-001" / "stats", features)
    ...     sorted(p.name for p in paths)[:3]
    ['aseg.stats', 'brainvol.stats', 'lh.BA_exvivo.stats']
    """
    flavor = _flavor(software, version, fastsurfer_version)
    ident = _identifying(flavor, identifying)
    _check_values(features)
    plan = _plan(flavor)
    consumed: set[str] = set()
    texts: list[tuple[str, str]] = []
    for file in plan.files:
        text = file.render(features, ident, consumed)
        if text is not None:
            texts.append((file.name, text))
    if len(consumed) != len(features):
        raise _leftover_error(plan, features, consumed)
    folder = Path(stats_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in texts:
        path = folder / name
        path.write_text(text, encoding="utf-8", newline="\n")
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# example values

#: typical aseg volumes (mm^3) by structure, hemisphere prefix removed
_TYPICAL_ASEG = {
    "Lateral-Ventricle": 9000.0,
    "Inf-Lat-Vent": 350.0,
    "Cerebellum-White-Matter": 14500.0,
    "Cerebellum-Cortex": 52000.0,
    "Thalamus": 7600.0,
    "Caudate": 3600.0,
    "Putamen": 5000.0,
    "Pallidum": 2000.0,
    "3rd-Ventricle": 1100.0,
    "4th-Ventricle": 1600.0,
    "Brain-Stem": 21000.0,
    "Hippocampus": 4200.0,
    "Amygdala": 1600.0,
    "CSF": 1100.0,
    "Accumbens-area": 600.0,
    "VentralDC": 4000.0,
    "vessel": 12.0,
    "choroid-plexus": 600.0,
    "WM-hypointensities": 1800.0,
    "Optic-Chiasm": 180.0,
    "CC_Posterior": 950.0,
    "CC_Mid_Posterior": 500.0,
    "CC_Central": 520.0,
    "CC_Mid_Anterior": 540.0,
    "CC_Anterior": 880.0,
    "Cerebral-White-Matter": 235000.0,
    "UnsegmentedWhiteMatter": 30000.0,
}
#: aseg structures (without Left-/Right-) summed into the ventricle volume (the subcortical
#: grey volume sums io's SUBCORTICAL_GRAY); the simulator reuses both
VENTRICLES = (
    "Lateral-Ventricle",
    "Inf-Lat-Vent",
    "3rd-Ventricle",
    "4th-Ventricle",
    "5th-Ventricle",
    "choroid-plexus",
)


def _structure(region: str) -> str:
    for prefix in ("Left-", "Right-"):
        if region.startswith(prefix):
            return region[len(prefix) :]
    return region


def _surface_example(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    area = np.clip(np.exp(rng.normal(np.log(2200.0), 0.6, n)), 150.0, 12000.0)
    thickness = rng.uniform(1.7, 3.8, n)
    meancurv = rng.uniform(0.09, 0.17, n)
    gauscurv = rng.uniform(0.012, 0.05, n)
    return {
        "numvert": np.rint(area * rng.uniform(1.35, 1.55, n)),
        "area": area,
        "volume": area * thickness * rng.uniform(0.9, 1.1, n),
        "thickness": thickness,
        "thicknessstd": rng.uniform(0.35, 0.9, n),
        "meancurv": meancurv,
        "gauscurv": gauscurv,
        "foldind": np.rint(area * meancurv * rng.uniform(0.05, 0.12, n)),
        "curvind": area * gauscurv * rng.uniform(0.05, 0.09, n),
    }


def _pial_example(rng: np.random.Generator, white: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = len(white["area"])
    area = white["area"] * rng.uniform(1.15, 1.45, n)
    meancurv = rng.uniform(0.12, 0.2, n)
    gauscurv = rng.uniform(0.025, 0.06, n)
    return {
        **white,
        "area": area,
        "meancurv": meancurv,
        "gauscurv": gauscurv,
        "foldind": np.rint(area * meancurv * rng.uniform(0.08, 0.2, n)),
        "curvind": area * gauscurv * rng.uniform(0.05, 0.09, n),
    }


def _seg_example(rng: np.random.Generator, volumes: np.ndarray) -> dict[str, np.ndarray]:
    n = len(volumes)
    mean = rng.uniform(30.0, 105.0, n)
    std = rng.uniform(3.0, 16.0, n)
    low = np.floor(np.maximum(0.0, mean - rng.uniform(2.5, 5.0, n) * std))
    high = np.ceil(mean + rng.uniform(2.0, 4.0, n) * std)
    empty = volumes <= 0
    out = {
        "nvoxels": np.rint(volumes * rng.uniform(0.95, 1.05, n)),
        "volume": volumes,
        "normmean": mean,
        "normstd": std,
        "normmin": low,
        "normmax": high,
        "normrange": high - low,
    }
    for values in out.values():
        values[empty] = 0.0
    return out


def _typical_volume(region: str) -> float:
    structure = _structure(region)
    if structure in _TYPICAL_ASEG:
        return _TYPICAL_ASEG[structure]
    if region.startswith("wm-"):
        return 4500.0
    if region.startswith("ctx-"):
        return 8000.0
    if region.startswith("Cbm_Vermis"):
        return 900.0
    if region.startswith("Cbm_"):
        return 5000.0
    return 0.0  # 5th-Ventricle, the lateralised and non-WM hypointensities


def example_features(
    rng: np.random.Generator,
    *,
    software: str = "freesurfer",
    version: str = "7.4.1",
) -> dict[str, float]:
    """Realistic values for every feature a software and version writes by default.

    Surface regions get areas of a few hundred to a few thousand mm^2, thickness 1.7 to
    3.8 mm, integer vertex counts and folding indices; segmentation rows typical volumes in
    mm^3 (zero for structures FreeSurfer usually finds empty) with integer ``normMin`` /
    ``normMax``; globals are consistent with the regions (``WhiteSurfArea`` is the sum of the
    aparc areas, ``SurfaceHoles`` the sum of the two hemispheres, eTIV about 1.5e6 mm^3).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness; the same seed gives the same features.
    software : {"freesurfer", "fastsurfer"}, default "freesurfer"
    version : str, default "7.4.1"
        As in :func:`write_subject_stats`.

    Returns
    -------
    dict of str to float
        Canonical feature id to value, ready for :func:`write_subject_stats`.

    Examples
    --------
    >>> import numpy as np
    >>> features = example_features(np.random.default_rng(0), software="fastsurfer")
    >>> "aseg_dkt.na.ctx-lh-insula.volume" in features
    True
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator, e.g. numpy.random.default_rng(0); "
            f"got {type(rng).__name__}"
        )
    flavor = _flavor(software, version, "0")
    plan = _plan(flavor)
    out: dict[str, float] = {}
    surface: dict[tuple[str, str], dict[str, np.ndarray]] = {}

    def put(atlas: str, hemi: str, regions: Sequence[str], values: dict[str, np.ndarray]) -> None:
        for measure, column in values.items():
            for region, value in zip(regions, column.tolist(), strict=True):
                out[f"{atlas}.{hemi}.{region}.{measure}"] = float(value)

    for atlas in _default_atlases(flavor):
        regions = plan.regions[atlas]
        if atlas in _SEGMENTATION_ATLASES:
            continue
        for hemi in ("lh", "rh"):
            if atlas == "aparc_pial":
                values = _pial_example(rng, surface[("aparc", hemi)])
            else:
                values = _surface_example(rng, len(regions))
            surface[(atlas, hemi)] = values
            put(atlas, hemi, regions, values)

    seg: dict[str, dict[str, float]] = {}
    for atlas in _default_atlases(flavor):
        if atlas not in _SEGMENTATION_ATLASES:
            continue
        regions = plan.regions[atlas]
        typical = np.array([_typical_volume(r) for r in regions])
        volumes = typical * np.exp(rng.normal(0.0, 0.12, len(regions)))
        if atlas == "aseg_dkt" and ("DKT", "lh") in surface:
            by_name = {
                f"ctx-{h}-{r}": surface[("DKT", h)]["volume"][i]
                for h in ("lh", "rh")
                for i, r in enumerate(plan.regions["DKT"])
            }
            volumes = np.array([by_name.get(r, v) for r, v in zip(regions, volumes, strict=True)])
        if atlas == "cerebnet":
            volumes = _merge_cerebellum(regions, volumes)
        values = _seg_example(rng, volumes)
        put(atlas, "na", regions, values)
        seg[atlas] = dict(zip(regions, volumes.tolist(), strict=True))

    globals_ = _example_globals(rng, surface, seg.get("aseg", {}))
    for key in plan.default_globals:
        out[key] = globals_[key]
    return out


def _merge_cerebellum(regions: Sequence[str], volumes: np.ndarray) -> np.ndarray:
    """CerebNet's merged rows are sums of the lobules they merge."""
    values = dict(zip(regions, volumes.tolist(), strict=True))
    lobules = [r for r in regions if r.startswith("Cbm_") and r != "Cbm_Vermis"]
    values["Left-Cerebellum-Cortex"] = sum(values[r] for r in lobules if "_Left_" in r)
    values["Right-Cerebellum-Cortex"] = sum(values[r] for r in lobules if "_Right_" in r)
    values["Cbm_Vermis"] = sum(values[r] for r in lobules if "_Vermis_" in r)
    return np.array([values[r] for r in regions])


def _example_globals(
    rng: np.random.Generator,
    surface: Mapping[tuple[str, str], Mapping[str, np.ndarray]],
    aseg: Mapping[str, float],
) -> dict[str, float]:
    g: dict[str, float] = {}

    def put(hemi: str, region: str, value: float) -> None:
        g[_gid(hemi, region)] = float(value)

    cortex = {}
    for hemi in ("lh", "rh"):
        white = surface.get(("aparc", hemi)) or surface.get(("DKT", hemi))
        if white is None:
            white = _surface_example(rng, 34)
        area = float(white["area"].sum())
        put(hemi, "NumVert", float(np.rint(white["numvert"].sum() * rng.uniform(1.0, 1.02))))
        put(hemi, "WhiteSurfArea", area)
        put(hemi, "MeanThickness", float((white["thickness"] * white["area"]).sum() / area))
        pial = surface.get(("aparc_pial", hemi))
        put(hemi, "PialSurfArea", float(pial["area"].sum()) if pial is not None else area * 1.3)
        cortex[hemi] = float(white["volume"].sum()) * rng.uniform(0.98, 1.02)
        put(hemi, "CortexVol", cortex[hemi])
        put(hemi, "CerebralWhiteMatterVol", rng.uniform(210000.0, 270000.0))
        put(hemi, "SurfaceHoles", float(rng.integers(3, 45)))
    put("na", "CortexVol", cortex["lh"] + cortex["rh"])
    wm = g[_gid("lh", "CerebralWhiteMatterVol")] + g[_gid("rh", "CerebralWhiteMatterVol")]
    put("na", "CerebralWhiteMatterVol", wm)
    put("na", "SurfaceHoles", g[_gid("lh", "SurfaceHoles")] + g[_gid("rh", "SurfaceHoles")])

    def total(structures: Sequence[str]) -> float:
        return sum(v for r, v in aseg.items() if _structure(r) in structures)

    ventricles = total(VENTRICLES) or rng.uniform(12000.0, 30000.0)
    subcortical = total(SUBCORTICAL_GRAY) or rng.uniform(55000.0, 65000.0)
    cerebellum = total(("Cerebellum-Cortex", "Cerebellum-White-Matter")) or 130000.0
    brainstem = total(("Brain-Stem",)) or 21000.0
    gray = g[_gid("na", "CortexVol")] + subcortical + total(("Cerebellum-Cortex",))
    brainseg = gray + wm + total(("Cerebellum-White-Matter",)) + brainstem + ventricles
    etiv = brainseg / rng.uniform(0.72, 0.86)
    supratentorial = brainseg - cerebellum - brainstem
    put("na", "eTIV", etiv)
    put("na", "sTIV", etiv * rng.uniform(0.95, 1.05))
    put("na", "VentricleChoroidVol", ventricles)
    put("na", "SubCortGrayVol", subcortical)
    put("na", "TotalGrayVol", gray)
    put("na", "BrainSegVol", brainseg)
    put("na", "BrainSegVolNotVent", brainseg - ventricles)
    put("na", "BrainSegVolNotVentSurf", brainseg - ventricles)
    put("na", "SupraTentorialVol", supratentorial)
    put("na", "SupraTentorialVolNotVent", supratentorial - ventricles)
    put("na", "SupraTentorialVolNotVentVox", float(round(supratentorial - ventricles)))
    mask = etiv * rng.uniform(1.1, 1.3)
    put("na", "MaskVol", mask)
    put("na", "BrainSegVol-to-eTIV", brainseg / etiv)
    put("na", "MaskVol-to-eTIV", mask / etiv)
    return g
