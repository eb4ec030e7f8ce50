"""One policy for BLAS/OpenMP threads in every parallel section: workers x threads <= cores.

A parallel section runs ``workers`` tasks at once (joblib threads or processes, a process
pool); each task may call multi-threaded native code (OpenBLAS/MKL through numpy and scipy,
OpenMP through scikit-learn, XGBoost's own threads). Left alone, each library starts one
thread per core in every worker, so 2 workers on 2 cores run 4+ busy threads, and spinning
BLAS threads make small solves (scipy's L-BFGS-B) many times slower. The policy gives every
worker ``cores // workers`` threads (at least one), through threadpoolctl:

* :func:`worker_threads` is the per-worker budget (also XGBoost's ``nthread``/``n_jobs``);
* :func:`limit_threads` limits BLAS and OpenMP in the calling process (a process worker, or
  the main process around a section of threads);
* :func:`in_worker` wraps a task so that its limits are in force inside the worker, whichever
  the backend: for threads, BLAS pools are process-wide, so the section itself must also run
  under :func:`threads_section`; OpenMP's thread count is per calling thread, so it is set in
  each task.

``MORPHML_CORES`` overrides the number of cores (e.g. a share of a machine other jobs use).

OpenMP threads that wait for work spin by default (libgomp: 300,000 spins after every
parallel region). On a machine other jobs share, a spinning thread takes the core its team's
other thread needs, and every barrier waits for a scheduler time slice: one early-stopped
XGBoost fit on 250 x 190 with two threads took 165-327 s wall and 37-45 CPU-seconds at load
11, against 5-6 s wall and 1.4 CPU-seconds with passive waiting. :func:`passive_openmp`
(called when ``morphml`` is imported, before XGBoost or scikit-learn load their OpenMP
runtime) makes idle threads sleep unless the user chose a wait policy.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

__all__ = [
    "available_cores",
    "in_worker",
    "limit_threads",
    "passive_openmp",
    "small_blas",
    "threads_section",
    "worker_init",
    "worker_threads",
]

F = TypeVar("F", bound=Callable[..., Any])
Backend = Literal["threads", "processes"]


#: environment variables that choose how OpenMP threads wait (left alone when one is set)
_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def passive_openmp() -> bool:
    """Make idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``),
    unless the user set a wait policy; True when it was set here.

    OpenMP runtimes read the variable once, when they load: call this before importing
    XGBoost or scikit-learn (``import morphml`` does). Processes started later (joblib
    workers, process pools) inherit it.
    """
    if any(name in os.environ for name in _WAIT_VARIABLES):
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


#: matrices below this many values (rows x columns) get one BLAS thread in :func:`small_blas`
SMALL_BLAS_VALUES = 1_000_000


@contextlib.contextmanager
def small_blas(n_rows: int, n_cols: int) -> Iterator[bool]:
    """One BLAS thread for the block when the data are small (``n_rows * n_cols`` below
    :data:`SMALL_BLAS_VALUES`); yields whether the limit is in force.

    A threaded BLAS call waits for its helper threads; OpenBLAS's waiting thread spins, so on
    a machine other jobs share every call costs a scheduler time slice whatever its size:
    20 ridge fits on 250 x 190 took 44 s wall and 3.6-4.4 CPU-seconds with two BLAS threads
    at load 36, against 0.8 s and 0.04 CPU-seconds with one. Small solves gain nothing from
    a second thread on an idle machine either; large ones keep every thread.
    """
    if n_rows * n_cols >= SMALL_BLAS_VALUES:
        yield False
        return
    with limit_threads(1, user_api="blas"):
        yield True


def available_cores() -> int:
    """Cores this process may use: ``MORPHML_CORES`` when set, else the CPU affinity."""
    env = os.environ.get("MORPHML_CORES", "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value >= 1:
            return value
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def worker_threads(workers: int, cores: int | None = None) -> int:
    """Native threads each of ``workers`` concurrent tasks may use: ``cores // workers``, >= 1
    (``workers`` below 0 counts as in joblib: -1 is one worker per core).

    Examples
    --------
    >>> worker_threads(2, cores=2), worker_threads(3, cores=16), worker_threads(-1, cores=8)
    (1, 5, 1)
    """
    total = available_cores() if cores is None else cores
    if workers < 0:  # joblib's convention: -1 is every core, -2 all but one...
        workers = max(1, total + 1 + workers)
    return max(1, total // max(1, workers))


@contextlib.contextmanager
def limit_threads(threads: int, user_api: str | None = None) -> Iterator[int]:
    """Limit BLAS and OpenMP pools (``user_api``: only ``"blas"`` or ``"openmp"``) to
    ``threads`` in this process (OpenMP: in this thread) for the block; yields ``threads``."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, int(threads)), user_api=user_api):
        yield threads


@contextlib.contextmanager
def threads_section(workers: int) -> Iterator[int]:
    """Around a section of ``workers`` joblib threads: BLAS limited process-wide to the
    per-worker budget for the whole section (its pools are shared by all threads, so a
    per-task limit would be undone by the first task to finish); yields that budget."""
    threads = worker_threads(workers)
    with limit_threads(threads, user_api="blas"):
        yield threads


def in_worker(func: F, threads: int, backend: Backend = "processes") -> F:
    """``func`` with the thread limits applied inside the worker that runs it.

    For ``"processes"`` every pool is limited (a process runs one task at a time); for
    ``"threads"`` only OpenMP, whose count is per thread (run the section under
    :func:`threads_section` for BLAS).
    """
    api = "openmp" if backend == "threads" else None

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        with limit_threads(threads, user_api=api):
            return func(*args, **kwargs)

    return run  # type: ignore[return-value]


def worker_init(threads: int) -> None:
    """Initializer of a process pool's workers: limit every pool of the worker process for
    its lifetime (``ProcessPoolExecutor(initializer=worker_init, initargs=(threads,))``)."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(max(1, int(threads)))
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=max(1, int(threads)))
