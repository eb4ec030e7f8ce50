"""Scale-out through Dask: local clusters, existing schedulers and SLURM via dask-jobqueue."""

from morphml.scale._cluster import (
    SlurmSettings,
    dask_client,
    load_slurm_settings,
    require_dask,
    slurm_cluster,
    worker_count,
)

__all__ = [
    "SlurmSettings",
    "dask_client",
    "load_slurm_settings",
    "require_dask",
    "slurm_cluster",
    "worker_count",
]
