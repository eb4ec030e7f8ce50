"""Quality control of scans: rules whose flags are stored in the database with their reasons.

``run_qc(con, scan_keys)`` checks scans (at the end of an ingest, or on demand through
``morphml qc --db DB``) and replaces their flags in the ``qc_flags`` table: one row per scan and
failed rule, with the reason in words and the number the rule tested. A run config excludes
flagged scans by rule (``cohort: {qc: {exclude: [euler_absolute, ...]}}``), and
``features: {qc_covariates: [euler]}`` adds the mean Euler number as the column ``qc:euler``.

Flags (stable names; thresholds are the defaults of :class:`QCThresholds`, all overridable):

``euler_absolute``
    Mean Euler number of the two hemispheres' white surfaces before topology correction,
    ``2 - (lh holes + rh holes)`` from ``global.?h.SurfaceHoles.count`` (FreeSurfer reports the
    holes, ``h = (2 - Euler) / 2`` per hemisphere), below ``euler_absolute = -217``. Rosen et
    al. (2018, NeuroImage 169:407-418, "Quantitative assessment of structural image
    quality") found that the Euler number separates images raters scored unusable from the
    rest with AUC 0.98-0.99; -217 is the cut-off quoted from that work, which could not be
    re-checked against the paper while writing this module. Treat it as a starting point:
    22 % of the 1,078 fcon1000 scans (23 sites) fall below it, which is why the
    site-relative rule below exists.
``euler_site_z``
    Robust z of the mean Euler number within the scan's site, ``(x - median) / (1.4826 MAD)``
    (1.2533 x mean absolute deviation when the MAD is 0), below ``euler_site_z = -3.5``
    (Iglewicz and Hoaglin's cut-off for modified z-scores). Sites with fewer than
    ``site_min_scans = 10`` scans with an Euler number are compared with all scans.
``missing_structure``
    A feature the scan lacks (or holds as NaN) although the scan has values of that atlas and
    measure and at least ``missing_min_share = 0.5`` of the scans of the same source, software
    and version with that atlas and measure have it (FreeSurfer leaves a region without
    vertices out of ``?h.aparc.stats``; a half-copied table leaves cells empty).
``zero_structure``
    A value of exactly 0 where the structure exists in every brain: the volume of the
    thalamus, caudate, putamen, pallidum, hippocampus, amygdala, accumbens, ventral DC,
    cerebellar cortex and white matter, lateral, 3rd and 4th ventricles, brain stem and
    corpus callosum segments (:data:`MUST_EXIST_ASEG`); the area, volume, vertex count or
    thickness of any Desikan-style cortical region (``aparc``, ``aparc_pial``, ``DKT``); any
    whole-brain volume or area. Ventricles may be tiny but are never 0; the inferior lateral
    ventricles, vessels, choroid plexus, CSF, 5th ventricle, optic chiasm and hypointensities
    may be 0 in healthy brains and are not checked. Destrieux sulci are not checked either
    (the intermediate sulcus of Jensen is absent in some brains).
``negative_value``
    Any volume, area, voxel or vertex count, count, thickness (or its SD) or ratio below 0.
``thickness_range``
    Mean cortical thickness of a hemisphere, or any region's thickness other than exactly 0
    (a region without vertices, judged by ``zero_structure``), outside ``thickness_min = 0.5``
    to ``thickness_max = 5`` mm (human cortex is about 1 to 4.5 mm thick; Fischl and Dale 2000,
    PNAS 97:11050-11055).
``multivariate_outlier``
    Robust outlier of its site in thickness, area and volume together. Features: those of
    ``aparc``, ``DKT``, ``a2009s``, the :data:`MUST_EXIST_ASEG` volumes and the global
    volumes, areas and mean thickness present in 95 % of the site's scans (areas and volumes
    as logs). Each is adjusted for age, age squared and sex by least squares refitted once
    without points beyond 3.5 robust SD (age is the strongest source of variation in a
    lifespan site; unadjusted, QC would flag the oldest people), then robustly standardised
    (median, 1.4826 MAD). Principal axes are taken from the 75 % of scans least outlying
    feature by feature (z clipped at +-10), keeping k components (80 % of the variance, at
    most ``multivariate_max_components = 10`` and (n - 1) / 5; seeded randomized SVD, so
    the same data give the same flags); each scan gets the score
    distance (within the components, scaled by their robust SD) and the orthogonal distance
    (to the component space) of ROBPCA (Hubert, Rousseeuw and Vanden Branden 2005,
    Technometrics 47:64-79). A scan is flagged when
    (a) either distance, after the 2/3 power that makes chi-like distances near normal
    (Wilson-Hilferty), has a robust z above ``multivariate_distance_z = 5`` within the site
    (diffuse deviation: noisy or shifted values everywhere), or
    (b) at least ``multivariate_feature_count = 3`` of its adjusted values lie beyond robust
    z ``multivariate_feature_z = 6`` (a few structures far off, as a local segmentation
    failure leaves them).
    The cut-offs are set empirically from the sites' own distributions rather than from
    chi-square quantiles, whose small-sample Minimum Covariance Determinant distances flagged
    a third of clean simulated scans. The stored value is the largest robust z behind the
    flag. Sites with fewer than ``multivariate_min_scans = 20`` scans are compared with all
    scans of the database.

A site is a (source, site) pair; scans without a site form the site ``unknown`` of their
source. Comparisons with other scans always use every scan in the database as the reference,
so QC of a new batch judges it against what is already there (earlier scans keep their flags
until QC runs on them again). Re-running QC replaces the checked scans' flags from the rules
that ran and keeps other rows (a flag a person added by hand, say). Messages name scans only
by their pseudonymous scan key.
"""

from morphml.qc._report import QCFlag, QCReport
from morphml.qc._rules import MUST_EXIST_ASEG, NON_NEGATIVE_MEASURES, euler_numbers
from morphml.qc._run import (
    QC_COVARIATES,
    QC_PREFIX,
    qc_at_ingest,
    qc_covariates,
    qc_database,
    run_qc,
)
from morphml.qc._thresholds import (
    FLAGS,
    QCThresholds,
    check_flag_names,
    read_thresholds,
    resolve_thresholds,
)

__all__ = [
    "FLAGS",
    "MUST_EXIST_ASEG",
    "NON_NEGATIVE_MEASURES",
    "QC_COVARIATES",
    "QC_PREFIX",
    "QCFlag",
    "QCReport",
    "QCThresholds",
    "check_flag_names",
    "euler_numbers",
    "qc_at_ingest",
    "qc_covariates",
    "qc_database",
    "read_thresholds",
    "resolve_thresholds",
    "run_qc",
]
