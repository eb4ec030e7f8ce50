"""Opening a pretrain run directory for transfer."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from morphml.config import PretrainConfig
from morphml.exceptions import TransferError
from morphml.rundir._layout import RunDir, read_config
from morphml.rundir._manifest import read_manifest

if TYPE_CHECKING:
    from morphml.transfer import PretrainedRun

__all__ = ["load_pretrained"]


def load_pretrained(run_dir: str | os.PathLike[str]) -> PretrainedRun:
    """Open a run directory written by ``morphml fit`` with a ``kind: pretrain`` config.

    Raises
    ------
    TransferError
        When the folder is not a run directory, is another kind of run, or its files cannot
        be read.

    Examples
    --------
    >>> from morphml.rundir import load_pretrained  # doctest: +SKIP
    >>> load_pretrained("runs/pretrain").feature_ids[:1]  # doctest: +SKIP
    ['aseg.na.Left-Hippocampus.volume']
    """
    from morphml.models import load_model
    from morphml.transfer import PretrainedModel, PretrainedRun

    folder = RunDir(run_dir)
    path = folder.path
    manifest = read_manifest(path, TransferError, ("run_id", "kind", "feature_ids"))
    if manifest.get("kind") != "pretrain":
        raise TransferError(
            f"{path}: a {manifest.get('kind')!r} run; transfer needs a pretrain run"
        )
    config = read_config(path, TransferError)
    if not isinstance(config, PretrainConfig):  # pragma: no cover - kind checked above
        raise TransferError(f"{path}: the run's config is not a pretrain config")
    models = {}
    for key in manifest.get("final_models", {}):
        target, label = key.split("/", 1)
        model, sidecar = load_model(folder.model_stem(target, label))
        models[key] = PretrainedModel(key, model, sidecar)
    return PretrainedRun(path, str(manifest["run_id"]), config, manifest, models)
