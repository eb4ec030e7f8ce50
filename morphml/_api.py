"""The public Python API: ``morphml.ingest(paths)``, ``morphml.fit(config)`` and
``morphml.predict(run_dir)``.

The same calls the ``morphml ingest``, ``morphml fit`` and ``morphml predict`` commands
make. What they run is imported when they are called, so ``import morphml`` stays light.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from morphml.config import PretrainConfig, TransferConfig
    from morphml.db import IngestSummary
    from morphml.pipelines import RunResult, TransferResult

__all__ = ["fit", "ingest", "predict"]

PathLike = str | os.PathLike[str]


def _config(config: Any) -> PretrainConfig | TransferConfig:
    """A validated config from a config object, a YAML file or a mapping."""
    from morphml.config import PretrainConfig, TransferConfig, load_config, parse_config
    from morphml.exceptions import ConfigError

    if isinstance(config, (PretrainConfig, TransferConfig)):
        return config
    if isinstance(config, (str, os.PathLike)):
        return load_config(Path(config))
    if isinstance(config, Mapping):
        return parse_config(dict(config))
    raise ConfigError(
        "config: expected a PretrainConfig or TransferConfig, a YAML file path or a mapping, "
        f"got {type(config).__name__}"
    )


def fit(
    config: PretrainConfig | TransferConfig | PathLike | Mapping[str, Any],
    *,
    out: PathLike,
    db: PathLike | None = None,
    resume: bool = True,
    storage: str | None = None,
    scheduler: Any = None,
    pretrained: PathLike | None = None,
    allow_stale: bool = False,
    record: bool = True,
    progress: bool = False,
) -> RunResult | TransferResult:
    """Run a config (``kind: pretrain`` or ``kind: transfer``) and write its run directory.

    Parameters
    ----------
    config : PretrainConfig, TransferConfig, path-like or mapping
        The config object, its YAML file, or the mapping a YAML file would hold; validated
        like ``morphml fit CONFIG`` (unknown keys are errors).
    out : path-like
        The run directory. A pretrain run resumes an interrupted run in it (unless
        ``resume=False``); a transfer run needs a new or empty folder.
    db : path-like, optional
        The database (``MORPHML_DB``, then ``morphml.duckdb``, by default).
    resume, storage, scheduler
        Pretrain runs only: continue an interrupted run; keep the Optuna studies in this
        storage (``postgresql://...``); run the tuning trials on this Dask scheduler.
    pretrained, allow_stale
        Transfer runs only: the pretrain run directory (overrides the config's
        ``pretrained``); accept a pretrain run marked stale by a withdrawal.
    record : bool, default True
        Record the run and its scans in the database's ``runs`` table.
    progress : bool, default False
        Report progress on standard error.

    Returns
    -------
    RunResult or TransferResult
        The run's id, directory and metrics (a transfer run adds its comparison table).

    Raises
    ------
    ConfigError
        An invalid config, or an option of the other kind of run.

    Examples
    --------
    >>> import morphml
    >>> result = morphml.fit("pretrain.yaml", out="runs/age")  # doctest: +SKIP
    >>> result.metrics["targets"]["age"]  # doctest: +SKIP
    """
    from morphml.config import PretrainConfig
    from morphml.exceptions import ConfigError

    checked = _config(config)
    if isinstance(checked, PretrainConfig):
        if pretrained is not None or allow_stale:
            raise ConfigError("pretrained= and allow_stale= apply to kind: transfer configs")
        from morphml.pipelines import fit_pretrain

        return fit_pretrain(checked, db=db, out=out, resume=resume, record=record,
                            storage=storage, scheduler=scheduler, progress=progress)  # fmt: skip
    if storage is not None or scheduler is not None or not resume:
        raise ConfigError("resume=, storage= and scheduler= apply to kind: pretrain configs")
    from morphml.pipelines import fit_transfer

    return fit_transfer(checked, db=db, out=out, pretrained=pretrained, allow_stale=allow_stale,
                        progress=progress, record=record)  # fmt: skip


def predict(
    run_dir: PathLike,
    *,
    db: PathLike | None = None,
    source: str | None = None,
    out: PathLike | None = None,
    allow_stale: bool = False,
) -> pd.DataFrame:
    """Predict age and sex for the database's scans with a pretrain run's final models.

    Parameters
    ----------
    run_dir : path-like
        A pretrain run directory.
    db : path-like, optional
        The database (``MORPHML_DB``, then ``morphml.duckdb``, by default).
    source : str, optional
        Only the scans of this source.
    out : path-like, optional
        Also write the predictions to this Parquet file.
    allow_stale : bool, default False
        Accept a run marked stale (a person it was trained on withdrew).

    Returns
    -------
    DataFrame
        One row per scan, target and model. ``in_sample`` is True for scans the models were
        trained on: those predictions are optimistic and no measure of accuracy.

    Raises
    ------
    ConfigError
        Not a pretrain run, or an unknown source.
    FeatureMismatchError
        The scans' features differ from the ones the models were trained on.

    Examples
    --------
    >>> import morphml
    >>> table = morphml.predict("runs/age", source="hospital")  # doctest: +SKIP
    """
    from morphml.pipelines import predict_run, predictions

    if out is not None:
        return predict_run(run_dir, db=db, source=source, out=out, allow_stale=allow_stale)
    return predictions(run_dir, db=db, source=source, allow_stale=allow_stale)


def ingest(
    paths: PathLike | list[PathLike],
    *,
    source: str,
    db: PathLike | None = None,
    quality_control: bool = True,
    **options: Any,
) -> IngestSummary:
    """Ingest stats folders or tables into the database in one transaction, with QC.

    What ``morphml ingest`` does: :func:`morphml.db.ingest` with the QC rules of
    :func:`morphml.qc.qc_at_ingest` run on the new scans inside the same transaction (the
    database layer itself knows nothing of QC).

    Parameters
    ----------
    paths : path-like or list of path-like
        Subject folders, folders of subjects, or tables (see :func:`morphml.db.ingest`).
    source : str
        The data source's name (pseudonyms are keyed by it).
    db : path-like, optional
        The database (``MORPHML_DB``, then ``morphml.duckdb``, by default; created if missing).
    quality_control : bool, default True
        Flag the new scans with the QC rules (``morphml qc`` can do it later when False).
    **options
        Every other keyword of :func:`morphml.db.ingest` (``participants``, ``column_map``,
        ``key_file``, ``jobs``, ``on_error``, ...).

    Examples
    --------
    >>> import morphml
    >>> summary = morphml.ingest("/data/subjects", source="hospital",
    ...                          participants="participants.tsv",
    ...                          column_map="participants.yaml")  # doctest: +SKIP
    """
    from morphml.db import ingest as ingest_into
    from morphml.qc import qc_at_ingest

    listed = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    qc = qc_at_ingest if quality_control else None
    return ingest_into(listed, source=source, db=db, quality_control=qc, **options)
