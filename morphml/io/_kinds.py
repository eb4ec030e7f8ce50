"""The stats file kinds morphml reads: one entry each.

Adding a kind is one :class:`StatsKind` entry here (file name, atlas, table kind, description)
plus, when its structure names need canonical spellings, the region rules in
:mod:`morphml.io._dictionary`. The reader's file classification, its "unknown kind" message,
the atlas list (``morphml.io.ATLASES``), the kinds read but not turned into features and the
FastSurfer-only kinds are all derived from this table.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KINDS", "StatsKind"]


@dataclass(frozen=True)
class StatsKind:
    """One stats file kind.

    Attributes
    ----------
    atlas : str
        Canonical atlas, the first part of every feature id of the kind.
    table_kind : str
        ``surface``, ``segmentation``, ``measures`` (only ``# Measure`` lines), ``contrast``
        or ``curv``.
    description : str
        One line for ``morphml.io.ATLASES``, the dictionary and reports.
    names : tuple of str
        File names without hemisphere (``aseg.stats``).
    hemi_pattern : str
        For ``lh.``/``rh.`` files: a regex for the part between ``?h.`` and ``.stats``.
    shown : str
        How the "unknown stats kind" message lists a hemisphere kind ('' to list it with
        the entry before).
    atlas_kind : str
        The kind given in ``ATLASES`` (defaults to ``table_kind``); '' keeps the kind out of
        ``ATLASES``.
    fastsurfer : bool
        Only FastSurfer writes files of this kind (tells FastSurfer output from FreeSurfer's).
    skipped : str
        Why the kind is read but gives no feature ('' when it gives features).
    """

    atlas: str
    table_kind: str
    description: str
    names: tuple[str, ...] = ()
    hemi_pattern: str = ""
    shown: str = ""
    atlas_kind: str | None = None
    fastsurfer: bool = False
    skipped: str = ""


KINDS: tuple[StatsKind, ...] = (
    StatsKind(
        "aparc", "surface", "Desikan-Killiany (?h.aparc.stats)",
        hemi_pattern=r"aparc", shown="?h.aparc.stats",
    ),
    StatsKind(
        "aparc_pial", "surface", "Desikan-Killiany on the pial surface (?h.aparc.pial.stats)",
        hemi_pattern=r"aparc\.pial", shown="?h.aparc.pial.stats",
    ),
    StatsKind(
        "a2009s", "surface", "Destrieux (?h.aparc.a2009s.stats)",
        hemi_pattern=r"aparc\.a2009s", shown="?h.aparc.a2009s.stats",
    ),
    StatsKind(
        "DKT", "surface", "Desikan-Killiany-Tourville (?h.aparc.DKTatlas[40|.mapped].stats)",
        hemi_pattern=r"aparc\.DKTatlas(?:40)?(?:\.mapped)?",
        shown="?h.aparc.DKTatlas[40|.mapped].stats",
    ),
    StatsKind(
        "BA", "surface", "Brodmann areas (?h.BA_exvivo.stats; FreeSurfer 5 ?h.BA.stats)",
        hemi_pattern=r"BA(?:_exvivo)?", shown="?h.BA[_exvivo][.thresh].stats",
    ),
    StatsKind(
        "BA_thresh", "surface", "thresholded Brodmann areas (?h.BA_exvivo.thresh.stats)",
        hemi_pattern=r"BA(?:_exvivo)?\.thresh",
    ),
    StatsKind(
        "entorhinal", "surface", "ex-vivo entorhinal label (?h.entorhinal_exvivo.stats)",
        hemi_pattern=r"entorhinal_exvivo", shown="?h.entorhinal_exvivo.stats",
    ),
    StatsKind("aseg", "segmentation", "subcortical segmentation (aseg.stats)",
              names=("aseg.stats",)),
    StatsKind(
        "aseg_dkt", "segmentation", "FastSurfer aseg+DKT.stats (subcortical + DKT cortex)",
        names=("aseg+DKT.stats",), fastsurfer=True,
    ),
    StatsKind("wmparc", "segmentation", "white-matter parcellation (wmparc.stats)",
              names=("wmparc.stats",)),
    StatsKind(
        "wmparc_dkt", "segmentation",
        "FastSurfer white-matter parcellation from DKT (wmparc.DKTatlas.mapped.stats)",
        names=("wmparc.DKTatlas.mapped.stats",), fastsurfer=True,
    ),
    StatsKind(
        "cerebnet", "segmentation", "FastSurfer CerebNet cerebellum (cerebellum.CerebNet.stats)",
        names=("cerebellum.CerebNet.stats",), fastsurfer=True,
    ),
    StatsKind("entowm", "segmentation",
              "FreeSurfer 8 entorhinal white matter (entowm.stats)", names=("entowm.stats",)),
    StatsKind("vsinus", "segmentation", "FreeSurfer 8 venous sinus (vsinus.stats)",
              names=("vsinus.stats",)),
    StatsKind(
        "global", "measures", "whole-brain and whole-hemisphere '# Measure' values",
        names=("brainvol.stats",), atlas_kind="global",
    ),
    StatsKind(
        "wgpct", "contrast", "", hemi_pattern=r"w-g\.pct", shown="?h.w-g.pct.stats",
        atlas_kind="",
        skipped=(
            "?h.w-g.pct.stats holds grey/white intensity contrast per region, an image-quality "
            "measure rather than morphometry; it is parsed but not turned into features"
        ),
    ),
    StatsKind(
        "curv", "curv", "", hemi_pattern=r"curv", shown="?h.curv.stats", atlas_kind="",
        skipped=(
            "?h.curv.stats is free-text mris_curvature_stats output (whole-surface curvature "
            "summaries), not a per-region table; it carries no feature of the dictionary"
        ),
    ),
)  # fmt: skip
