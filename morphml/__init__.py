"""morphml: privacy-safe machine learning on FreeSurfer / FastSurfer brain morphometry.

The Python API: :func:`ingest` adds stats folders or tables to the database (with QC),
:func:`fit` runs a config into a run directory, :func:`predict` applies a
pretrain run's models; the packages below hold the pieces (README, "Architecture").
"""

from morphml._api import fit, ingest, predict
from morphml._utils._threads import passive_openmp as _passive_openmp
from morphml._version import __version__

# before any OpenMP runtime loads: idle threads sleep (see morphml._utils._threads)
_passive_openmp()

__all__ = ["__version__", "fit", "ingest", "predict"]
