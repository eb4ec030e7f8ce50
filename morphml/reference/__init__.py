"""Reference models: published (or shared) normative models as a pretraining source.

A reference model holds, per canonical feature, the expected value and spread given age, sex
and site, fitted on healthy people elsewhere. Import one from a braincharts archive
(:func:`import_braincharts`), build one from this database (:func:`build_reference`), save and
load it in morphml's own non-pickle format (:class:`ReferenceModel`), and turn scans into
deviation scores with new sites adapted inside training folds (:class:`ReferenceDeviations`).
"""

from morphml.reference._braincharts import (
    BRAINCHARTS_CITATION,
    BRAINCHARTS_LICENCE,
    import_braincharts,
)
from morphml.reference._build import (
    ReferenceBuildConfig,
    build_reference,
    load_reference_config,
    source_deviations,
)
from morphml.reference._deviations import ReferenceDeviations, SiteAdaptation
from morphml.reference._model import FORMAT_VERSION, ReferenceModel

__all__ = [
    "BRAINCHARTS_CITATION",
    "BRAINCHARTS_LICENCE",
    "FORMAT_VERSION",
    "ReferenceBuildConfig",
    "ReferenceDeviations",
    "ReferenceModel",
    "SiteAdaptation",
    "build_reference",
    "import_braincharts",
    "load_reference_config",
    "source_deviations",
]
