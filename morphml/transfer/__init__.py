"""Transfer to small samples: representations from a pretrain run and the comparison protocol."""

from morphml.transfer._heads import HeadFactory
from morphml.transfer._normative import NormativeModel
from morphml.transfer._pretrained import META_PREFIX, PretrainedModel, PretrainedRun, meta_columns
from morphml.transfer._protocol import Comparison, Split, compare_representations, make_splits
from morphml.transfer._reference import ReferenceZ
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
    "Comparison",
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
    "Split",
    "StackedModel",
    "WarmStartBooster",
    "WarmStartClassifier",
    "WarmStartRegressor",
    "compare_representations",
    "make_splits",
    "meta_columns",
]
