"""morphml: privacy-safe machine learning on FreeSurfer / FastSurfer brain morphometry."""

from morphml._utils._threads import passive_openmp as _passive_openmp
from morphml._version import __version__

# before any OpenMP runtime loads: idle threads sleep (see morphml._utils._threads)
_passive_openmp()

__all__ = ["__version__"]
