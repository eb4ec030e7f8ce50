"""Run directories: their layout, and reading and writing what they hold.

A run directory (``morphml fit`` of a pretrain or transfer config, ``morphml evaluate``)
holds the resolved config, ``manifest.json`` (provenance), ``metrics.json``, the prediction
tables, and for pretrain runs the final models and the Optuna studies. This package is the
only one that knows those file names: pipelines write through it, and reports, audits,
predictions and transfer read through it.
"""

from morphml.rundir._layout import (
    CONFIG,
    MANIFEST,
    METRICS,
    PREDICTIONS,
    REFERENCE,
    RESULT_TABLES,
    SCORES,
    RunDir,
    copy_config,
    read_config,
    read_metrics,
    read_raw_config,
    read_table,
    write_config,
    write_json,
    write_metrics,
    write_table,
)
from morphml.rundir._manifest import (
    build_manifest,
    git_commit,
    manifest_header,
    package_versions,
    read_manifest,
    write_manifest,
)
from morphml.rundir._pretrained import load_pretrained

__all__ = [
    "CONFIG",
    "MANIFEST",
    "METRICS",
    "PREDICTIONS",
    "REFERENCE",
    "RESULT_TABLES",
    "SCORES",
    "RunDir",
    "build_manifest",
    "copy_config",
    "git_commit",
    "load_pretrained",
    "manifest_header",
    "package_versions",
    "read_config",
    "read_manifest",
    "read_metrics",
    "read_raw_config",
    "read_table",
    "write_config",
    "write_json",
    "write_manifest",
    "write_metrics",
    "write_table",
]
