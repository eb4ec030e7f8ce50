"""The canonical feature dictionary.

A feature id is ``{atlas}.{hemi}.{region}.{measure}``, for example
``aparc.lh.superiorfrontal.thickness`` or ``global.na.eTIV.volume``.

* ``atlas`` names the parcellation the value comes from; different atlases are never merged
  (DK ``aparc`` is not ``DKT``).
* ``hemi`` is ``lh``, ``rh`` or ``na``.
* ``region`` is spelled as FreeSurfer 7 spells it, with ``&`` written ``_and_``; every other
  spelling seen in the wild is an *alias* listed in :func:`alias_table` with where it comes from.
* ``measure`` is one of :data:`MEASURES`.

The region lists in ``data/regions.tsv`` were read off real FreeSurfer 7.0 stats files.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from morphml.exceptions import FeatureIdError
from morphml.io._kinds import KINDS

__all__ = [
    "ATLASES",
    "GLOBAL_MEASURES",
    "MEASURES",
    "SEGMENTATION_COLUMNS",
    "SUBCORTICAL_GRAY",
    "SURFACE_COLUMNS",
    "Alias",
    "FeatureId",
    "alias_table",
    "canonical_global",
    "canonical_region",
    "dictionary_table",
    "feature_id",
    "known_regions",
    "parse_feature_id",
]

#: aseg grey-matter structures below the cortex, without Left-/Right- (QC expects each to
#: have a volume; the simulator sums them into the subcortical grey volume)
SUBCORTICAL_GRAY: tuple[str, ...] = (
    "Thalamus",
    "Caudate",
    "Putamen",
    "Pallidum",
    "Hippocampus",
    "Amygdala",
    "Accumbens-area",
    "VentralDC",
)

#: atlas -> (table kind, description), from the stats kinds registry
ATLASES: dict[str, tuple[str, str]] = {
    k.atlas: (k.table_kind if k.atlas_kind is None else k.atlas_kind, k.description)
    for k in KINDS
    if k.atlas_kind != ""
}

#: surface table column header -> measure (aparcstats2table's names)
SURFACE_COLUMNS: dict[str, str] = {
    "NumVert": "numvert",
    "SurfArea": "area",
    "GrayVol": "volume",
    "ThickAvg": "thickness",
    "ThickStd": "thicknessstd",
    "MeanCurv": "meancurv",
    "GausCurv": "gauscurv",
    "FoldInd": "foldind",
    "CurvInd": "curvind",
}

#: segmentation table column header -> measure
SEGMENTATION_COLUMNS: dict[str, str] = {
    "Volume_mm3": "volume",
    "NVoxels": "nvoxels",
    "normMean": "normmean",
    "normStdDev": "normstd",
    "normMin": "normmin",
    "normMax": "normmax",
    "normRange": "normrange",
}

MEASURES: tuple[str, ...] = (
    *SURFACE_COLUMNS.values(),
    "nvoxels",
    "normmean",
    "normstd",
    "normmin",
    "normmax",
    "normrange",
    "count",
    "ratio",
)

#: canonical global measure -> (measure, has per-hemisphere values, description)
GLOBAL_MEASURES: dict[str, tuple[str, bool, str]] = {
    "BrainSegVol": ("volume", False, "brain segmentation volume"),
    "BrainSegVolNotVent": ("volume", False, "brain segmentation volume without ventricles"),
    "BrainSegVolNotVentSurf": (
        "volume",
        False,
        "brain segmentation volume without ventricles, from surfaces",
    ),
    "VentricleChoroidVol": ("volume", False, "ventricles and choroid plexus"),
    "CortexVol": ("volume", True, "cortical grey matter volume"),
    "CerebralWhiteMatterVol": ("volume", True, "cerebral white matter volume"),
    "SubCortGrayVol": ("volume", False, "subcortical grey matter volume"),
    "TotalGrayVol": ("volume", False, "total grey matter volume"),
    "SupraTentorialVol": ("volume", False, "supratentorial volume"),
    "SupraTentorialVolNotVent": ("volume", False, "supratentorial volume without ventricles"),
    "SupraTentorialVolNotVentVox": ("volume", False, "supratentorial volume, voxel count"),
    "MaskVol": ("volume", False, "brain mask volume"),
    "BrainSegVol-to-eTIV": ("ratio", False, "BrainSegVol / eTIV"),
    "MaskVol-to-eTIV": ("ratio", False, "MaskVol / eTIV"),
    "SurfaceHoles": ("count", True, "surface defect holes before fixing (Euler number proxy)"),
    "eTIV": ("volume", False, "estimated total intracranial volume"),
    "sTIV": ("volume", False, "segmented total intracranial volume (FreeSurfer 8)"),
    "NumVert": ("count", True, "number of cortical vertices"),
    "WhiteSurfArea": ("area", True, "white surface total area"),
    "PialSurfArea": ("area", True, "pial surface total area"),
    "MeanThickness": ("thickness", True, "mean cortical thickness"),
}


@dataclass(frozen=True)
class Alias:
    """One spelling seen in the wild and the canonical name it stands for."""

    atlas: str
    alias: str
    canonical: str
    origin: str


@dataclass(frozen=True)
class FeatureId:
    """A parsed canonical feature id."""

    atlas: str
    hemi: str
    region: str
    measure: str

    def __str__(self) -> str:
        return f"{self.atlas}.{self.hemi}.{self.region}.{self.measure}"


_HEMIS = ("lh", "rh", "na")


def feature_id(atlas: str, hemi: str, region: str, measure: str) -> str:
    """Join the four parts of a canonical feature id.

    Examples
    --------
    >>> feature_id("aparc", "lh", "superiorfrontal", "thickness")
    'aparc.lh.superiorfrontal.thickness'
    """
    return f"{atlas}.{hemi}.{region}.{measure}"


def parse_feature_id(text: str) -> FeatureId:
    """Split a canonical feature id into its parts, checking each.

    Region names may contain dots, so the atlas and hemisphere are the first two parts and
    the measure the last.

    Examples
    --------
    >>> parse_feature_id("global.na.eTIV.volume").region
    'eTIV'
    """
    parts = text.split(".")
    if len(parts) < 4:
        raise FeatureIdError(
            f"feature id {text!r} must have 4 dot-separated parts "
            "'{atlas}.{hemi}.{region}.{measure}', e.g. 'aparc.lh.superiorfrontal.thickness'"
        )
    atlas, hemi, measure = parts[0], parts[1], parts[-1]
    region = ".".join(parts[2:-1])
    if atlas not in ATLASES:
        raise FeatureIdError(
            f"feature id {text!r}: unknown atlas {atlas!r}; expected one of {sorted(ATLASES)}"
        )
    if hemi not in _HEMIS:
        raise FeatureIdError(f"feature id {text!r}: hemi must be lh, rh or na, got {hemi!r}")
    if measure not in MEASURES:
        raise FeatureIdError(
            f"feature id {text!r}: unknown measure {measure!r}; expected one of {list(MEASURES)}"
        )
    if not region:
        raise FeatureIdError(f"feature id {text!r}: empty region")
    return FeatureId(atlas, hemi, region, measure)


@cache
def _base_regions() -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    text = resources.files("morphml.io").joinpath("data/regions.tsv").read_text("utf-8")
    for row in csv.DictReader(text.splitlines(), delimiter="\t"):
        out.setdefault(row["atlas"], []).append(row["region"])
    return {atlas: tuple(regions) for atlas, regions in out.items()}


@cache
def known_regions(atlas: str) -> tuple[str, ...]:
    """The canonical region names of an atlas, in FreeSurfer's table order.

    Atlases read from surface files keep hemisphere out of the region name; segmentation
    atlases carry it inside (``Left-Hippocampus``, ``wm-lh-insula``).

    Examples
    --------
    >>> len(known_regions("aparc"))
    34
    """
    base = _base_regions()
    if atlas in base:
        return base[atlas]
    if atlas == "aparc_pial":
        return base["aparc"]
    if atlas == "BA_thresh":
        return base["BA"]
    if atlas == "aseg_dkt":
        dkt = base["DKT"]
        return base["aseg"] + tuple(f"ctx-lh-{r}" for r in dkt) + tuple(f"ctx-rh-{r}" for r in dkt)
    if atlas == "wmparc_dkt":
        dkt = base["DKT"]
        return (
            tuple(f"wm-lh-{r}" for r in dkt)
            + tuple(f"wm-rh-{r}" for r in dkt)
            + ("Left-UnsegmentedWhiteMatter", "Right-UnsegmentedWhiteMatter")
        )
    if atlas == "cerebnet":
        return _CEREBNET_REGIONS
    if atlas == "global":
        return tuple(GLOBAL_MEASURES)
    return ()


# FastSurfer cerebellum.CerebNet.stats rows: CerebNet labels under their FreeSurferColorLUT
# names (CerebNet2FreeSurfer.json), plus the rows CerebNet merges (hemisphere cortex, vermis).
_CEREBNET_REGIONS: tuple[str, ...] = (
    "Left-Cerebellum-White-Matter",
    "Left-Cerebellum-Cortex",
    "Right-Cerebellum-White-Matter",
    "Right-Cerebellum-Cortex",
    "Cbm_Left_I_IV",
    "Cbm_Right_I_IV",
    "Cbm_Left_V",
    "Cbm_Right_V",
    "Cbm_Left_VI",
    "Cbm_Vermis_VI",
    "Cbm_Right_VI",
    "Cbm_Left_CrusI",
    "Cbm_Right_CrusI",
    "Cbm_Left_CrusII",
    "Cbm_Right_CrusII",
    "Cbm_Left_VIIb",
    "Cbm_Right_VIIb",
    "Cbm_Left_VIIIa",
    "Cbm_Right_VIIIa",
    "Cbm_Left_VIIIb",
    "Cbm_Right_VIIIb",
    "Cbm_Left_IX",
    "Cbm_Vermis_IX",
    "Cbm_Right_IX",
    "Cbm_Left_X",
    "Cbm_Vermis_X",
    "Cbm_Right_X",
    "Cbm_Vermis_VII",
    "Cbm_Vermis_VIII",
    "Cbm_Vermis",
)

# FastSurfer aseg+DKT.stats subcortical rows (the --ids run_fastsurfer.sh passes, below 1000)
_ASEG_DKT_SUBCORTICAL: tuple[str, ...] = (
    "Left-Cerebral-White-Matter",
    "Left-Lateral-Ventricle",
    "Left-Inf-Lat-Vent",
    "Left-Cerebellum-White-Matter",
    "Left-Cerebellum-Cortex",
    "Left-Thalamus",
    "Left-Caudate",
    "Left-Putamen",
    "Left-Pallidum",
    "3rd-Ventricle",
    "4th-Ventricle",
    "Brain-Stem",
    "Left-Hippocampus",
    "Left-Amygdala",
    "CSF",
    "Left-Accumbens-area",
    "Left-VentralDC",
    "Left-choroid-plexus",
    "Right-Cerebral-White-Matter",
    "Right-Lateral-Ventricle",
    "Right-Inf-Lat-Vent",
    "Right-Cerebellum-White-Matter",
    "Right-Cerebellum-Cortex",
    "Right-Thalamus",
    "Right-Caudate",
    "Right-Putamen",
    "Right-Pallidum",
    "Right-Hippocampus",
    "Right-Amygdala",
    "Right-Accumbens-area",
    "Right-VentralDC",
    "Right-choroid-plexus",
    "WM-hypointensities",
    "CC_Posterior",
    "CC_Mid_Posterior",
    "CC_Central",
    "CC_Mid_Anterior",
    "CC_Anterior",
)


def _explicit_aliases() -> list[Alias]:
    rows: list[Alias] = []
    for side in ("Left", "Right"):
        for atlas in ("aseg", "aseg_dkt"):
            rows.append(
                Alias(
                    atlas,
                    f"{side}-Thalamus-Proper",
                    f"{side}-Thalamus",
                    "FreeSurfer <= 6.0 aseg (FreeSurfer 7 renamed it)",
                )
            )
    for region in _base_regions()["BA"]:
        old = region.removesuffix("_exvivo")
        if old != region:
            for atlas in ("BA", "BA_thresh"):
                rows.append(Alias(atlas, old, region, "FreeSurfer 5.x ?h.BA[.thresh].stats"))
    for hemi in ("lh", "rh"):
        rows.append(
            Alias(
                "entorhinal",
                f"{hemi}.entorhinal_exvivo.label",
                "entorhinal_exvivo",
                "FreeSurfer 5.x-6.0 ?h.entorhinal_exvivo.stats (label file name as region)",
            )
        )
    for region in _base_regions()["a2009s"]:
        if "_and_" in region:
            rows.append(
                Alias(
                    "a2009s",
                    region.replace("_and_", "&"),
                    region,
                    "FreeSurfer 6+ raw files and fcon1000 tables write '&'",
                )
            )
    rows.append(
        Alias(
            "a2009s",
            "G_Ins_lG&S_cent_ins",
            "G_Ins_lg_and_S_cent_ins",
            "case variant in some Destrieux exports",
        )
    )
    # global measures: FreeSurfer's '# Measure' keys and table-export column names
    globals_ = [
        ("ICV", "eTIV", "FreeSurfer 5.1 aseg.stats '# Measure IntraCranialVol, ICV'"),
        ("IntraCranialVol", "eTIV", "FreeSurfer 5.1 asegstats2table column"),
        ("EstimatedTotalIntraCranialVol", "eTIV", "FreeSurfer 5.3+ measure key / asegstats2table"),
        ("SegmentedTotalIntraCranialVol", "sTIV", "FreeSurfer 8 measure key"),
        (
            "CorticalWhiteMatterVol",
            "CerebralWhiteMatterVol",
            "FreeSurfer 5.x name of the same measure",
        ),
        ("CorticalWhiteMatter", "CerebralWhiteMatterVol", "FreeSurfer 5.x measure key"),
        ("BrainSeg", "BrainSegVol", "measure key"),
        ("BrainSegNotVent", "BrainSegVolNotVent", "measure key"),
        ("BrainSegNotVentSurf", "BrainSegVolNotVentSurf", "measure key"),
        ("Cortex", "CortexVol", "measure key"),
        ("CerebralWhiteMatter", "CerebralWhiteMatterVol", "measure key"),
        ("SubCortGray", "SubCortGrayVol", "measure key"),
        ("TotalGray", "TotalGrayVol", "measure key"),
        ("SupraTentorial", "SupraTentorialVol", "measure key"),
        ("SupraTentorialNotVent", "SupraTentorialVolNotVent", "measure key"),
        ("SupraTentorialNotVentVox", "SupraTentorialVolNotVentVox", "measure key"),
        ("Mask", "MaskVol", "measure key"),
    ]
    rows.extend(Alias("global", a, c, o) for a, c, o in globals_)
    return rows


@cache
def alias_table() -> tuple[Alias, ...]:
    """Every alias morphml resolves, with the FreeSurfer version or export it comes from.

    Examples
    --------
    >>> any(a.alias == "Left-Thalamus-Proper" for a in alias_table())
    True
    """
    return tuple(_explicit_aliases())


@cache
def _alias_index() -> dict[tuple[str, str], str]:
    index: dict[tuple[str, str], str] = {}
    for a in alias_table():
        index[(a.atlas, a.alias.lower())] = a.canonical
    for atlas in ATLASES:
        for region in known_regions(atlas):
            index.setdefault((atlas, region.lower()), region)
    return index


_region_cache: dict[tuple[str, str], str] = {}


def canonical_region(atlas: str, raw: str) -> str:
    """Return the canonical spelling of a region name read in the wild.

    ``&`` becomes ``_and_``, known aliases (``Left-Thalamus-Proper``, FS5 ``BA1``) map to the
    FreeSurfer 7 name, and case variants fold onto the known spelling. A name the dictionary
    does not know is kept as read (with ``&`` rewritten), because it comes from the file itself.

    Examples
    --------
    >>> canonical_region("a2009s", "G&S_frontomargin")
    'G_and_S_frontomargin'
    >>> canonical_region("aseg", "Left-Thalamus-Proper")
    'Left-Thalamus'
    """
    key = (atlas, raw)
    hit = _region_cache.get(key)
    if hit is not None:
        return hit
    index = _alias_index()
    lowered = raw.lower()
    out = index.get((atlas, lowered))
    if out is None:
        spelled = raw.replace("&", "_and_")
        out = index.get((atlas, spelled.lower()), spelled)
    _region_cache[key] = out
    return out


_HEMI_PREFIX = re.compile(r"^(lh|rh)(?=[A-Z])")


def canonical_global(name: str, unit: str | None = None) -> tuple[str, str, str]:
    """Map a global measure name to ``(hemi, region, measure)``.

    ``name`` is the second field of a ``# Measure`` line or a table column (``lhCortexVol``,
    ``EstimatedTotalIntraCranialVol``, ``ICV``). Unknown names keep their spelling and take
    their measure from ``unit`` (``mm^3`` volume, ``mm^2`` area, ``mm`` thickness,
    ``unitless`` count).

    Examples
    --------
    >>> canonical_global("lhCortexVol")
    ('lh', 'CortexVol', 'volume')
    >>> canonical_global("ICV")
    ('na', 'eTIV', 'volume')
    """
    hemi = "na"
    stem = name
    match = _HEMI_PREFIX.match(name)
    if match:
        hemi = match.group(1)
        stem = name[2:]
    region = _alias_index().get(("global", stem.lower()), stem)
    if region in GLOBAL_MEASURES:
        measure = GLOBAL_MEASURES[region][0]
    else:
        measure = _unit_measure(unit, region)
    return hemi, region, measure


def _unit_measure(unit: str | None, name: str) -> str:
    if unit == "mm^3":
        return "volume"
    if unit == "mm^2":
        return "area"
    if unit == "mm":
        return "thickness"
    if "-to-" in name:
        return "ratio"
    return "count"


def dictionary_table() -> list[dict[str, str]]:
    """All known canonical features and aliases as rows, for ``morphml features``.

    Each row has ``kind`` (``feature`` or ``alias``), ``atlas``, ``name``, ``canonical`` and
    ``origin``.
    """
    rows: list[dict[str, str]] = []
    for atlas, (kind, description) in ATLASES.items():
        if kind == "global":
            for region, (measure, per_hemi, desc) in GLOBAL_MEASURES.items():
                hemis: tuple[str, ...] = ("lh", "rh", "na") if per_hemi else ("na",)
                if region in ("NumVert", "WhiteSurfArea", "PialSurfArea", "MeanThickness"):
                    hemis = ("lh", "rh")
                for hemi in hemis:
                    rows.append(
                        {
                            "kind": "feature",
                            "atlas": atlas,
                            "name": feature_id(atlas, hemi, region, measure),
                            "canonical": region,
                            "origin": desc,
                        }
                    )
            continue
        measures = SURFACE_COLUMNS.values() if kind == "surface" else SEGMENTATION_COLUMNS.values()
        table_hemis: tuple[str, ...] = ("lh", "rh") if kind == "surface" else ("na",)
        for hemi in table_hemis:
            for region in known_regions(atlas):
                for measure in measures:
                    rows.append(
                        {
                            "kind": "feature",
                            "atlas": atlas,
                            "name": feature_id(atlas, hemi, region, measure),
                            "canonical": region,
                            "origin": description,
                        }
                    )
    for a in alias_table():
        rows.append(
            {
                "kind": "alias",
                "atlas": a.atlas,
                "name": a.alias,
                "canonical": a.canonical,
                "origin": a.origin,
            }
        )
    return rows
