"""Readable names for canonical feature ids (``{atlas}.{hemi}.{region}.{measure}``)."""

from __future__ import annotations

import re

__all__ = ["atlas_description", "readable_feature"]

#: Desikan-Killiany (and DKT) region names as FreeSurfer spells them -> words
_DK = {
    "bankssts": "banks of the superior temporal sulcus",
    "caudalanteriorcingulate": "caudal anterior cingulate",
    "caudalmiddlefrontal": "caudal middle frontal",
    "cuneus": "cuneus",
    "entorhinal": "entorhinal",
    "fusiform": "fusiform",
    "inferiorparietal": "inferior parietal",
    "inferiortemporal": "inferior temporal",
    "isthmuscingulate": "isthmus cingulate",
    "lateraloccipital": "lateral occipital",
    "lateralorbitofrontal": "lateral orbitofrontal",
    "lingual": "lingual",
    "medialorbitofrontal": "medial orbitofrontal",
    "middletemporal": "middle temporal",
    "parahippocampal": "parahippocampal",
    "paracentral": "paracentral",
    "parsopercularis": "pars opercularis",
    "parsorbitalis": "pars orbitalis",
    "parstriangularis": "pars triangularis",
    "pericalcarine": "pericalcarine",
    "postcentral": "postcentral",
    "posteriorcingulate": "posterior cingulate",
    "precentral": "precentral",
    "precuneus": "precuneus",
    "rostralanteriorcingulate": "rostral anterior cingulate",
    "rostralmiddlefrontal": "rostral middle frontal",
    "superiorfrontal": "superior frontal",
    "superiorparietal": "superior parietal",
    "superiortemporal": "superior temporal",
    "supramarginal": "supramarginal",
    "frontalpole": "frontal pole",
    "temporalpole": "temporal pole",
    "transversetemporal": "transverse temporal",
    "insula": "insula",
}

#: whole-brain and whole-hemisphere measures -> words
_GLOBAL = {
    "eTIV": "estimated total intracranial volume",
    "BrainSegVol": "brain segmentation volume",
    "BrainSegVolNotVent": "brain volume without ventricles",
    "BrainSegVolNotVentSurf": "brain volume without ventricles (surface)",
    "SupraTentorialVol": "supratentorial volume",
    "SupraTentorialVolNotVent": "supratentorial volume without ventricles",
    "SupraTentorialVolNotVentVox": "supratentorial volume without ventricles (voxels)",
    "SubCortGrayVol": "subcortical grey matter volume",
    "CortexVol": "cortical grey matter volume",
    "TotalGrayVol": "total grey matter volume",
    "CerebralWhiteMatterVol": "cerebral white matter volume",
    "MaskVol": "brain mask volume",
    "MeanThickness": "mean cortical thickness",
    "WhiteSurfArea": "white surface area",
    "NumVert": "number of vertices",
    "SurfaceHoles": "surface holes",
    "VentricleChoroidVol": "ventricles and choroid plexus volume",
}

_MEASURES = {
    "thickness": "thickness",
    "thicknessstd": "thickness SD",
    "area": "surface area",
    "volume": "volume",
    "meancurv": "mean curvature",
    "gauscurv": "Gaussian curvature",
    "foldind": "folding index",
    "curvind": "curvature index",
    "numvert": "vertex count",
    "count": "count",
}

_HEMI = {"lh": "left", "rh": "right"}


def _words(name: str) -> str:
    """``CamelCase``, ``snake_case`` and ``kebab-case`` to lower-case words."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return re.sub(r"[_\-]+", " ", spaced).strip()


def _destrieux(region: str) -> str:
    # Destrieux labels: G = gyrus, S = sulcus, Lat_Fis = lateral fissure, ...
    parts = region.split("_")
    expand = {"G": "gyrus", "S": "sulcus", "Pole": "pole", "Lat": "lateral", "Fis": "fissure"}
    return " ".join(expand.get(p, p) for p in parts if p)


def readable_feature(feature_id: str) -> str:
    """A readable name for a canonical feature id or a model covariate column.

    Parameters
    ----------
    feature_id : str
        ``{atlas}.{hemi}.{region}.{measure}``, a site indicator ``site=<name>``, a ComBat
        covariate ``meta:<name>`` or a QC covariate ``qc:<name>``.

    Returns
    -------
    str

    Examples
    --------
    >>> readable_feature("aparc.lh.superiorfrontal.thickness")
    'left superior frontal thickness (aparc)'
    >>> readable_feature("aseg.na.Left-Hippocampus.volume")
    'Left Hippocampus volume (aseg)'
    >>> readable_feature("site=site02")
    'site indicator: site02'
    """
    if feature_id.startswith("site="):
        return f"site indicator: {feature_id[5:]}"
    if feature_id.startswith("meta:"):
        return f"covariate: {feature_id[5:]}"
    if feature_id.startswith("qc:"):
        return f"QC covariate: {feature_id[3:]}"
    parts = feature_id.split(".")
    if len(parts) != 4:
        return feature_id
    atlas, hemi, region, measure = parts
    if atlas == "global":
        label = _GLOBAL.get(region, _words(region))
        side = _HEMI.get(hemi)
        text = f"{side} {label}" if side else label
        if measure not in ("volume", "thickness", "area", "count") and measure not in label:
            text = f"{text} ({_MEASURES.get(measure, measure)})"
        return text
    if atlas in ("aparc", "aparc_pial", "DKT", "aseg_dkt", "wmparc", "wmparc_dkt"):
        label = _DK.get(region, _words(region))
    elif atlas == "a2009s":
        label = _destrieux(region)
    else:
        label = _words(region)
    side = _HEMI.get(hemi)
    head = f"{side} {label}" if side else label
    return f"{head} {_MEASURES.get(measure, measure)} ({atlas})"


def atlas_description(atlas: str) -> str:
    """What an atlas name stands for (from the feature dictionary), or the name itself."""
    from morphml.io import ATLASES

    entry = ATLASES.get(atlas)
    return f"{atlas}: {entry[1]}" if entry else atlas
