"""Small helpers shared by several layers."""

from morphml._utils._manifest import read_manifest
from morphml._utils._yaml import read_yaml

__all__ = ["read_manifest", "read_yaml"]
