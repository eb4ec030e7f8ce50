"""morphml: privacy-safe machine learning on FreeSurfer / FastSurfer brain morphometry."""

from morphml._version import __version__

__all__ = ["__version__"]
