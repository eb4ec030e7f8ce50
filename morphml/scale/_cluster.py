"""Dask clusters: the one scale-out engine for processing, ingest and tuning.

Three ways to get a :class:`distributed.Client`, all running the same task graphs:

* ``local`` (default): a :class:`distributed.LocalCluster` on this machine;
* a scheduler address (``tcp://host:8786``): a cluster somebody already started
  (``dask scheduler`` + ``dask worker ... --resources "GPU=1,CPU=4"``);
* ``slurm``: a dask-jobqueue :class:`~dask_jobqueue.SLURMCluster` built from a YAML file.
  GPUs are requested per SLURM job with ``#SBATCH --gres=gpu:N`` (dask-jobqueue's
  ``job_extra_directives``) and announced to the scheduler as the worker resource ``GPU``.

Worker *resources* are how tasks ask for hardware: a FastSurfer segmentation asks for
``{"GPU": 1}``, a surface reconstruction or recon-all for ``{"CPU": 1}`` (one "slot" that runs
one engine process with ``--threads`` threads). Tasks that ask for nothing (ingest parsing,
Optuna trials) run on any worker thread.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from morphml._utils import read_yaml
from morphml.exceptions import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

__all__ = [
    "SlurmSettings",
    "dask_client",
    "load_slurm_settings",
    "require_dask",
    "slurm_cluster",
    "worker_count",
]

#: how to install what this module needs (Dask is an extra since morphml 0.2)
INSTALL_SCALE = "pip install 'morphml[scale]'"


def require_dask(what: str = "this command") -> None:
    """Refuse in one line, naming the extra, when Dask is not installed.

    Raises
    ------
    ConfigError
        When ``distributed`` cannot be imported.
    """
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"{what} needs Dask, which is not installed; install it with {INSTALL_SCALE}"
        ) from None


class SlurmSettings(BaseModel):
    """One SLURM job = one Dask worker; its resources are what the job asked SLURM for.

    Parameters mirror dask-jobqueue's ``SLURMCluster`` where they share a name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: SLURM partition (``-p``)
    queue: str | None = None
    #: SLURM account (``-A``)
    account: str | None = None
    #: CPU cores per job (``--cpus-per-task``); also the worker's thread count
    cores: int = Field(default=8, ge=1)
    #: memory per job, e.g. ``32GB``
    memory: str = "32GB"
    #: wall-clock limit per job, ``HH:MM:SS``
    walltime: str = "04:00:00"
    #: GPUs per job: ``#SBATCH --gres=gpu:N`` and the worker resource ``GPU=N`` (0: none)
    gpus_per_job: int = Field(default=1, ge=0)
    #: engine processes a job runs at once on its CPUs (worker resource ``CPU``)
    cpu_slots: int = Field(default=1, ge=1)
    #: how many jobs (workers) to start
    jobs: int = Field(default=1, ge=1)
    #: more ``#SBATCH`` lines, e.g. ``["--constraint=a100"]``
    job_extra_directives: list[str] = Field(default_factory=list)
    #: shell lines run before the worker starts, e.g. ``["module load apptainer"]``
    job_script_prologue: list[str] = Field(default_factory=list)
    #: worker scratch folder on the compute node
    local_directory: str | None = None
    #: where SLURM writes the jobs' stdout/stderr
    log_directory: str | None = None
    #: network interface of the nodes (``ib0``), when the default one is not routable
    interface: str | None = None


def load_slurm_settings(source: str | os.PathLike[str] | Mapping[str, Any]) -> SlurmSettings:
    """Read a SLURM cluster YAML file (keys at the top level or under ``slurm:``).

    Examples
    --------
    >>> load_slurm_settings({"queue": "gpu", "gpus_per_job": 1}).gpus_per_job
    1
    """
    where = "cluster config"
    if isinstance(source, Mapping):
        data: Any = dict(source)
    else:
        path = Path(source)
        where = str(path)
        data = read_yaml(
            path, ConfigError, f"{path}: no such cluster config (a YAML file of SLURM settings)"
        )
    if isinstance(data, Mapping) and set(data) == {"slurm"}:
        data = data["slurm"]
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of SLURM settings (queue, cores, ...)")
    try:
        return SlurmSettings.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, list(SlurmSettings.model_fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}") from None
        raise ConfigError(f"{where}: {key}: {first['msg']}") from None


def slurm_cluster(
    settings: SlurmSettings, *, extra_resources: Mapping[str, float] | None = None
) -> Any:
    """A dask-jobqueue ``SLURMCluster`` (not yet scaled) for ``settings``.

    Each job requests ``settings.gpus_per_job`` GPUs (``#SBATCH --gres=gpu:N``) and its worker
    announces ``GPU=N,CPU=cpu_slots`` (plus ``extra_resources``), so GPU tasks land only on
    jobs that hold a GPU.
    """
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:  # pragma: no cover - the slurm extra is part of the test extras
        raise ConfigError(
            f"cluster 'slurm' needs dask-jobqueue, which is not installed; install it with "
            f"{INSTALL_SCALE}"
        ) from None
    resources: dict[str, float] = {"CPU": float(settings.cpu_slots)}
    if settings.gpus_per_job:
        resources["GPU"] = float(settings.gpus_per_job)
    resources.update(extra_resources or {})
    directives = list(settings.job_extra_directives)
    if settings.gpus_per_job:
        directives.append(f"--gres=gpu:{settings.gpus_per_job}")
    spec = ",".join(f"{k}={_number(v)}" for k, v in sorted(resources.items()))
    kwargs: dict[str, Any] = {
        "cores": settings.cores,
        "processes": 1,
        "memory": settings.memory,
        "walltime": settings.walltime,
        "job_extra_directives": directives,
        "job_script_prologue": list(settings.job_script_prologue),
        "worker_extra_args": ["--resources", spec],
        "scheduler_options": {"dashboard_address": None},
    }
    for name in ("queue", "account", "local_directory", "log_directory", "interface"):
        value = getattr(settings, name)
        if value is not None:
            kwargs[name] = value
    return SLURMCluster(**kwargs)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@contextmanager
def dask_client(
    scheduler: str | Client | None = None,
    *,
    cluster: str = "local",
    n_workers: int = 1,
    threads_per_worker: int = 1,
    processes: bool = True,
    resources: Mapping[str, float] | None = None,
    slurm: SlurmSettings | str | os.PathLike[str] | None = None,
    connect_timeout: float = 10.0,
) -> Iterator[Client]:
    """A Dask client for the duration of a ``with`` block.

    Parameters
    ----------
    scheduler : str or distributed.Client, optional
        A running scheduler's address, or a client the caller owns (left open). When given,
        ``cluster`` and the sizing parameters are ignored.
    cluster : {"local", "slurm"}
        What to start when no scheduler is given.
    n_workers, threads_per_worker, processes, resources
        LocalCluster sizing; ``resources`` are announced by every local worker.
    slurm : SlurmSettings or path, optional
        The SLURM settings (``cluster="slurm"``).
    connect_timeout : float
        Seconds to wait for a scheduler ``address``.

    Examples
    --------
    >>> with dask_client(n_workers=1, processes=False) as client:  # doctest: +SKIP
    ...     client.submit(sum, [1, 2]).result()
    3
    """
    require_dask("--scheduler" if scheduler is not None else f"a {cluster} Dask cluster")
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return
    if scheduler is not None:
        try:
            client = Client(str(scheduler), timeout=f"{connect_timeout}s")
        except OSError as err:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {scheduler} ({err}); start one with "
                "'dask scheduler' or leave --scheduler out to use a local cluster"
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    if cluster == "slurm":
        if slurm is None:
            raise ConfigError(
                "cluster 'slurm' needs a cluster config (--cluster-config FILE.yaml with "
                "queue, cores, memory, walltime, gpus_per_job, jobs)"
            )
        settings = slurm if isinstance(slurm, SlurmSettings) else load_slurm_settings(slurm)
        jq = slurm_cluster(settings)
        jq.scale(jobs=settings.jobs)
        client = Client(jq)
        try:
            yield client
        finally:
            client.close()
            jq.close()
        return
    if cluster != "local":
        raise ConfigError(f"cluster must be 'local' or 'slurm', got {cluster!r}")
    for name, value in (("n_workers", n_workers), ("threads_per_worker", threads_per_worker)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    local = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=processes,
        resources=dict(resources) if resources else None,
        dashboard_address=None,
    )
    client = Client(local)
    try:
        yield client
    finally:
        client.close()
        local.close()


def worker_count(client: Client) -> int:
    """Workers connected now (at least 1, so work can be split before workers arrive)."""
    return max(len(client.scheduler_info().get("workers", {})), 1)
