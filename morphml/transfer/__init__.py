"""Transfer to small samples: representations from a pretrain run or a reference model.

The comparison protocol that scores them against ``raw`` lives in :mod:`morphml.evaluation`.
"""

from morphml.transfer._heads import HeadFactory
from morphml.transfer._normative import NormativeModel
from morphml.transfer._pretrained import META_PREFIX, PretrainedModel, PretrainedRun, meta_columns
from morphml.transfer._reference import (
    ReferenceZ,
    load_reference,
    reference_columns,
    reference_summary,
)
from morphml.transfer._representations import (
    REPRESENTATIONS,
    BrainAgeGap,
    Components,
    LeafEmbedding,
    LinearProjection,
    NormativeZ,
    RawFeatures,
    SexScore,
    StackedModel,
    WarmStartBooster,
    WarmStartClassifier,
    WarmStartRegressor,
)

__all__ = [
    "META_PREFIX",
    "REPRESENTATIONS",
    "BrainAgeGap",
    "Components",
    "HeadFactory",
    "LeafEmbedding",
    "LinearProjection",
    "NormativeModel",
    "NormativeZ",
    "PretrainedModel",
    "PretrainedRun",
    "RawFeatures",
    "ReferenceZ",
    "SexScore",
    "StackedModel",
    "WarmStartBooster",
    "WarmStartClassifier",
    "WarmStartRegressor",
    "load_reference",
    "meta_columns",
    "reference_columns",
    "reference_summary",
]
