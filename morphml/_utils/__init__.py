"""Small helpers shared by several layers."""

from morphml._utils._threads import limit_threads, small_blas
from morphml._utils._yaml import read_yaml

__all__ = ["limit_threads", "read_yaml", "small_blas"]
