"""Where each file of a run directory lives, and reading and writing the plain ones.

A run directory (``morphml fit``, a transfer run, an external validation) holds::

    config.yaml          the resolved config
    manifest.json        provenance: versions, platform, seeds, hashes, scan keys
    metrics.json         the results
    predictions.parquet  out-of-fold (or external) predictions
    scores.parquet       per-split scores of a transfer run
    reference.json       a transfer run's reference-model facts
    models/              final models with their sidecars (pretrain runs)
    studies/             Optuna journal files (pretrain runs)

This module is the only place that spells those names; everything else asks it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel

from morphml._utils import read_yaml
from morphml.config import parse_config

__all__ = [
    "CONFIG",
    "MANIFEST",
    "METRICS",
    "PREDICTIONS",
    "REFERENCE",
    "RESULT_TABLES",
    "SCORES",
    "RunDir",
    "copy_config",
    "read_config",
    "read_metrics",
    "read_raw_config",
    "read_table",
    "write_config",
    "write_json",
    "write_metrics",
    "write_table",
]

CONFIG = "config.yaml"
MANIFEST = "manifest.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.parquet"
SCORES = "scores.parquet"
REFERENCE = "reference.json"
#: result tables an audit compares after a re-fit (the first one every run has)
RESULT_TABLES = (PREDICTIONS, SCORES)
_MODELS = "models"
_STUDIES = "studies"


class RunDir:
    """The paths of one run directory (nothing is read or created).

    Examples
    --------
    >>> RunDir("runs/pretrain").model_stem("age", "ridge").as_posix()
    'runs/pretrain/models/age-ridge'
    """

    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS

    @property
    def scores(self) -> Path:
        return self.path / SCORES

    @property
    def reference(self) -> Path:
        return self.path / REFERENCE

    @property
    def models(self) -> Path:
        """The folder of final models."""
        return self.path / _MODELS

    @property
    def studies(self) -> Path:
        """The folder of Optuna journal files."""
        return self.path / _STUDIES

    def model_stem(self, target: str, label: str) -> Path:
        """Where the final model of ``target`` and ``label`` is saved (without a suffix)."""
        return self.models / f"{target}-{label}"

    def model_sidecar(self, target: str, label: str) -> Path:
        """The JSON sidecar of the final model of ``target`` and ``label``."""
        stem = self.model_stem(target, label)
        return stem.with_name(f"{stem.name}.json")

    def model_sidecars(self) -> list[Path]:
        """The JSON sidecars of the saved models, sorted."""
        return sorted(self.models.glob("*.json"))

    def journal(self, name: str) -> Path:
        """The Optuna journal file of study ``name``."""
        return self.studies / f"{name}.journal"

    def table(self, name: str) -> Path:
        """A result table of :data:`RESULT_TABLES`."""
        return self.path / name

    def is_run(self) -> bool:
        """True when the folder has a manifest (a finished run or evaluation)."""
        return self.manifest.is_file()


def write_config(run: str | os.PathLike[str], config: BaseModel) -> None:
    """Write the resolved config as YAML (keys in the model's order)."""
    RunDir(run).config.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def copy_config(source: str | os.PathLike[str], run: str | os.PathLike[str]) -> None:
    """Copy a run's config file, byte for byte, into another run folder."""
    RunDir(run).config.write_text(RunDir(source).config.read_text())


def read_raw_config(run: str | os.PathLike[str], error: type[Exception]) -> Any:
    """The stored config as loaded from YAML; a missing or unreadable file raises ``error``."""
    folder = RunDir(run)
    return read_yaml(folder.config, error, f"{folder.path}: no {CONFIG} in the run folder")


def read_config(
    run: str | os.PathLike[str], error: type[Exception], *, source: str | None = None
) -> Any:
    """The stored config, parsed (``source`` names it in validation errors; the run folder
    by default)."""
    return parse_config(read_raw_config(run, error), source=source or str(run))


def write_json(path: Path, data: Any, *, sort_keys: bool = False) -> None:
    """JSON with one-space indents, as every run file is written."""
    path.write_text(json.dumps(data, indent=1, sort_keys=sort_keys))


def write_metrics(run: str | os.PathLike[str], metrics: dict[str, Any]) -> None:
    write_json(RunDir(run).metrics, metrics, sort_keys=True)


def read_metrics(run: str | os.PathLike[str]) -> Any:
    """``metrics.json`` as loaded (raises ``OSError`` / ``ValueError`` when unreadable)."""
    return json.loads(RunDir(run).metrics.read_text(encoding="utf-8"))


def write_table(run: str | os.PathLike[str], name: str, table: pd.DataFrame) -> None:
    """Write ``predictions.parquet`` or ``scores.parquet`` (see :data:`RESULT_TABLES`)."""
    table.to_parquet(RunDir(run).table(name), index=False)


def read_table(run: str | os.PathLike[str], name: str = PREDICTIONS) -> pd.DataFrame:
    return pd.read_parquet(RunDir(run).table(name))
