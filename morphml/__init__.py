"""morphml: privacy-safe machine learning on FreeSurfer / FastSurfer brain morphometry.

The Python API: :func:`fit` runs a config into a run directory, :func:`predict` applies a
pretrain run's models; the packages below hold the pieces (README, "Architecture").
"""

from morphml._api import fit, predict
from morphml._version import __version__

__all__ = ["__version__", "fit", "predict"]
