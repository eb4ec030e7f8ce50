"""Site harmonisation: ComBat with empirical-Bayes site effects and a spline age term.

Fitted inside training folds like any other preprocessing; see :class:`ComBat`.
"""

from morphml.exceptions import HarmonizationError
from morphml.harmonize._combat import META_PREFIX, ComBat
from morphml.harmonize._eb import Hyperpriors, batch_moments, parametric_posterior
from morphml.harmonize._step import HarmonizeStep

__all__ = [
    "META_PREFIX",
    "ComBat",
    "HarmonizationError",
    "HarmonizeStep",
    "Hyperpriors",
    "batch_moments",
    "parametric_posterior",
]
