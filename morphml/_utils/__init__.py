"""Small helpers shared by several layers."""

from morphml._utils._yaml import read_yaml

__all__ = ["read_yaml"]
