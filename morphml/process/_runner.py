"""Run a processing plan on a Dask cluster: skip what is done, resume, log, collect failures.

Files under ``DERIVATIVES/morphml-process/`` (none holds a host path, user or host name, date
or anything from ``participants.tsv``; scans are named by their BIDS labels):

``plan.json``
    the plan (see :mod:`morphml.process._plan`);
``state/<sid>.<step>.json``
    the step's marker: ``done`` or ``failed``, exit status, seconds, attempt, engine version,
    and for a failure the reason and the last lines of its log;
``state/<sid>.<step>.started`` / ``.lock``
    an attempt in progress or interrupted / the lock its process holds;
``logs/<sid>.<step>.log``
    the engine's output, scrubbed line by line;
``summary.json``, ``timings.tsv``
    what the last run did, per step, with the failures and their log tails.

A step counts as done only when its engine exited 0 *and* the files that prove it finished
exist. Resuming is running the same command again: done steps are skipped, an interrupted or
failed step starts again from an empty subject folder (FastSurfer's surface step reuses its
segmentation), and a step still running in a process that outlived a killed
``morphml process`` is waited for, never started twice.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from morphml.exceptions import ProcessingError
from morphml.process._bids import find_t1w
from morphml.process._engines import EngineSettings, EngineVersion, StepTemplate, check_engine
from morphml.process._plan import STATE_DIR, Plan, PlannedScan, make_plan, resolve
from morphml.process._step import scrubber

__all__ = ["ProcessResult", "StepOutcome", "process"]

_STEP_SCRIPT = Path(__file__).with_name("_step.py")


@dataclass(frozen=True)
class StepOutcome:
    """What happened to one step in this run."""

    sid: str
    step: str
    #: done (ran now), already_done (skipped), failed, or skipped (an earlier step failed)
    status: str
    seconds: float | None = None
    returncode: int | None = None
    reason: str | None = None
    tail: tuple[str, ...] = ()
    found_existing: bool = False
    attempt: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "sid": self.sid, "step": self.step, "status": self.status, "seconds": self.seconds,
            "returncode": self.returncode, "reason": self.reason, "tail": list(self.tail),
            "found_existing": self.found_existing, "attempt": self.attempt,
        }  # fmt: skip


@dataclass
class ProcessResult:
    """A ``morphml process`` run: its plan, every step's outcome, the optional ingest."""

    plan: Plan
    state_dir: Path
    outcomes: list[StepOutcome] = field(default_factory=list)
    elapsed: float = 0.0
    ingest: Any = None
    planned_only: bool = False
    #: host values of the placeholders (in memory only, for showing full command lines)
    values: dict[str, str] = field(default_factory=dict, repr=False)

    def command_lines(self) -> list[tuple[str, str, str]]:
        """(sid, step, shell command) with host paths filled in, for display only."""
        return self.plan.command_lines(self.values)

    @property
    def failures(self) -> list[StepOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def finished_sids(self) -> list[str]:
        """Scans whose last step is done (now or earlier)."""
        last = {s.sid: s.steps[-1].name for s in self.plan.scans}
        return sorted(
            o.sid for o in self.outcomes
            if o.step == last[o.sid] and o.status in ("done", "already_done")
        )  # fmt: skip

    def lines(self) -> list[str]:
        """A short human summary (BIDS labels only)."""
        plan = self.plan
        version = plan.version or "version not checked"
        out = [
            f"{plan.engine} {version} ({plan.runner}): {len(plan.scans)} scans planned, "
            f"{len(plan.without_t1w)} without a T1w image"
        ]
        if self.planned_only:
            return out
        counts: dict[str, int] = {}
        for o in self.outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        out.append(
            f"steps: {counts.get('done', 0)} done now, {counts.get('already_done', 0)} already "
            f"done, {counts.get('failed', 0)} failed, {counts.get('skipped', 0)} not started "
            f"(earlier step failed); {len(self.finished_sids)} of {len(plan.scans)} scans "
            f"finished in {self.elapsed:.1f} s"
        )
        for f in self.failures:
            out.append(f"FAILED {f.sid} {f.step}: {f.reason}")
            out.extend(f"    {line}" for line in f.tail[-10:])
        if self.ingest is not None:
            out.extend(self.ingest.lines())
        return out


@dataclass(frozen=True)
class _StepTask:
    """Everything a worker needs to run one step (picklable)."""

    sid: str
    step: StepTemplate
    values: dict[str, str]
    state_dir: str
    out_dir: str
    gpu_mode: str
    gpu_ids: tuple[int, ...]
    meta: dict[str, Any]
    scrub: tuple[tuple[str, str], ...]
    complete_outputs: tuple[str, ...]


def _marker_path(state_dir: Path, sid: str, step: str) -> Path:
    return state_dir / "state" / f"{sid}.{step}.json"


def read_marker(state_dir: Path, sid: str, step: str) -> dict[str, Any] | None:
    """The step's marker, or None."""
    try:
        data = json.loads(_marker_path(state_dir, sid, step).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _outcome(
    marker: dict[str, Any], sid: str, step: str, status: str | None = None
) -> StepOutcome:
    return StepOutcome(
        sid=sid,
        step=step,
        status=status or str(marker.get("status", "failed")),
        seconds=marker.get("seconds"),
        returncode=marker.get("returncode"),
        reason=marker.get("reason"),
        tail=tuple(marker.get("tail") or ()),
        found_existing=bool(marker.get("found_existing", False)),
        attempt=int(marker.get("attempt", 0)),
    )


@contextmanager
def _gpu_lease(gpu_mode: str, gpu_ids: tuple[int, ...]) -> Iterator[str | None]:
    """A GPU index for one step: a cluster-wide lock per (host, GPU) when the indices are
    ours to hand out; the one the cluster made visible otherwise."""
    if gpu_mode == "none":
        yield None
        return
    if gpu_mode == "visible":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        yield visible or "0"
        return
    from distributed import Lock

    host = socket.gethostname()
    while True:
        for gpu in gpu_ids:
            lock = Lock(f"morphml-gpu-{host}-{gpu}")
            if lock.acquire(blocking=False):
                try:
                    yield str(gpu)
                finally:
                    lock.release()
                return
        time.sleep(0.2)


def run_step(task: _StepTask, previous: StepOutcome | None = None) -> StepOutcome:
    """Run one step through the ``_step.py`` program (on a Dask worker)."""
    if previous is not None and previous.status not in ("done", "already_done"):
        return StepOutcome(task.sid, task.step.name, "skipped",
                           reason=f"{previous.step} did not finish")  # fmt: skip
    state = Path(task.state_dir)
    scrub = scrubber(list(task.scrub))
    with _gpu_lease(task.gpu_mode if task.step.resource == "GPU" else "none",
                    task.gpu_ids) as gpu:  # fmt: skip
        values = dict(task.values)
        if gpu is not None:
            values["gpu"] = gpu
        argv, env = resolve(task.step, values)
        spec = {
            "argv": argv,
            "env": env,
            "display": " ".join(task.step.argv),
            "lock": str(state / "state" / f"{task.sid}.{task.step.name}.lock"),
            "marker": str(_marker_path(state, task.sid, task.step.name)),
            "started": str(state / "state" / f"{task.sid}.{task.step.name}.started"),
            "log": str(state / "logs" / f"{task.sid}.{task.step.name}.log"),
            "subject_dir": str(Path(task.out_dir) / task.sid),
            "clean": task.step.clean,
            "outputs": list(task.step.outputs),
            "complete_outputs": list(task.complete_outputs),
            "scrub": [list(p) for p in task.scrub],
            "meta": {**task.meta, "sid": task.sid, "step": task.step.name},
            "tail_lines": 20,
        }
        done = subprocess.run(
            [sys.executable, "-I", str(_STEP_SCRIPT)], input=json.dumps(spec),
            capture_output=True, text=True, errors="replace", check=False,
        )  # fmt: skip
    marker: dict[str, Any] | None = None
    if done.returncode == 0 and done.stdout.strip():
        try:
            marker = json.loads(done.stdout.strip().splitlines()[-1])
        except ValueError:
            marker = None
    if marker is None:
        tail = tuple(scrub(line) for line in done.stderr.strip().splitlines()[-10:])
        return StepOutcome(task.sid, task.step.name, "failed", returncode=done.returncode,
                           reason="the step runner itself failed", tail=tail)  # fmt: skip
    status = "already_done" if marker.get("already_done") else None
    return _outcome(marker, task.sid, task.step.name, status)


def _local_resources(n_gpus: int, jobs: int, workers: int) -> tuple[dict[str, float], int]:
    gpu = math.ceil(n_gpus / workers) if n_gpus else 0
    cpu = math.ceil(jobs / workers)
    resources = {"CPU": float(cpu)}
    if gpu:
        resources["GPU"] = float(gpu)
    return resources, gpu + cpu


def _check_cluster_resources(client: Any, needed: set[str]) -> None:
    workers = client.scheduler_info().get("workers", {})
    if not workers:
        return  # workers still starting (SLURM): tasks wait for them
    offered: set[str] = set()
    for info in workers.values():
        offered.update(k for k, v in (info.get("resources") or {}).items() if v)
    missing = sorted(needed - offered)
    if missing:
        raise ProcessingError(
            f"no Dask worker offers the resource(s) {', '.join(missing)}; start the workers "
            "with e.g. 'dask worker ADDRESS --nthreads 3 --resources \"GPU=1,CPU=2\"' "
            "(GPU: FastSurfer segmentations on a GPU; CPU: one engine process each)"
        )


def _existing_plan(path: Path, plan: Plan) -> None:
    """Refuse to mix engines or engine versions in one derivatives folder."""
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ProcessingError(f"{path}: unreadable plan; move it away to plan again") from None
    for key, now in (("engine", plan.engine), ("runner", plan.runner)):
        if old.get(key) != now:
            raise ProcessingError(
                f"{path.parent.parent} holds a run with {key} {old.get(key)!r}, not {now!r}; "
                "choose another --out so outputs of different engines are not mixed"
            )
    before = old.get("engine_version")
    if before and plan.version and before != plan.version:
        raise ProcessingError(
            f"{path.parent.parent} holds {plan.engine} {before} outputs, but "
            f"{plan.version} is installed; choose another --out (one engine version per "
            "derivatives folder keeps the provenance exact)"
        )


def process(
    bids_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    engine: str = "fastsurfer",
    runner: str = "native",
    gpus: Sequence[int] | str = (),
    jobs: int = 1,
    threads: int = 1,
    workers: int = 1,
    processes: bool = False,
    cluster: str = "local",
    scheduler: Any = None,
    cluster_config: str | os.PathLike[str] | None = None,
    fs_license: str | os.PathLike[str] | None = None,
    executable: str | None = None,
    image: str | None = None,
    three_t: bool = False,
    parallel: bool = True,
    allow_root: bool = False,
    runs: str = "first",
    extra_args: Sequence[str] = (),
    plan_only: bool = False,
    ingest_db: str | os.PathLike[str] | None = None,
    source: str | None = None,
    key_file: str | os.PathLike[str] | None = None,
    participants: str | os.PathLike[str] | None = None,
    column_map: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ProcessResult:
    """Plan and run FastSurfer or FreeSurfer on every T1w scan of a BIDS dataset.

    Parameters
    ----------
    bids_dir : path-like
        The BIDS dataset.
    out : path-like
        The derivatives folder (one subject folder per scan, named ``sub-X_ses-Y``).
    engine : {"fastsurfer", "freesurfer"}
    runner : {"native", "apptainer", "docker"}
    gpus : sequence of int, or "visible"
        GPU indices for FastSurfer segmentations (one GPU per segmentation at a time), or
        ``"visible"`` for the GPU the cluster gives each job. Empty: segment on the CPU.
    jobs : int
        CPU slots: surface reconstructions / recon-all runs at once.
    threads : int
        Threads per engine process.
    workers, processes : int, bool
        Local cluster: number of Dask workers, and whether they are separate processes.
    cluster : {"local", "slurm"}
        Where to run when no ``scheduler`` is given.
    scheduler : str or distributed.Client, optional
        A running Dask scheduler (its workers must offer the resources ``GPU``/``CPU``).
    cluster_config : path-like, optional
        SLURM settings (``cluster="slurm"``), see :class:`morphml.scale.SlurmSettings`.
    fs_license : path-like, optional
        FreeSurfer license file (required with containers).
    executable, image, three_t, parallel, allow_root, runs, extra_args
        See :class:`morphml.process._engines.EngineSettings`.
    plan_only : bool
        Write the plan and stop.
    ingest_db, source, key_file, participants, column_map
        Ingest the finished scans into this database afterwards (see
        :func:`morphml.db.ingest`).
    progress : callable, optional
        Called with one line per finished step.

    Returns
    -------
    ProcessResult
    """
    bids, out_dir = Path(bids_dir).resolve(), Path(out).resolve()
    if out_dir == bids:
        raise ProcessingError("--out must differ from the BIDS folder")
    settings = EngineSettings(
        engine=engine,  # type: ignore[arg-type]
        runner=runner,  # type: ignore[arg-type]
        executable=executable, image=image, threads=threads, parallel=parallel,
        three_t=three_t, allow_root=allow_root, runs=runs,  # type: ignore[arg-type]
        extra_args=tuple(extra_args),
    )  # fmt: skip
    settings.check()
    _check_counts(jobs=jobs, workers=workers)
    license_path = _license(fs_license, runner)
    slurm = _slurm(scheduler, cluster, cluster_config)
    gpu_ids, gpu_mode = _gpu_mode(gpus, slurm)
    if ingest_db is not None and not source:
        raise ProcessingError("--ingest needs --source NAME (the data source of these scans)")
    result = _plan(bids, out_dir, settings, gpu_mode, license_path, plan_only=plan_only)
    if plan_only:
        return result
    ingest_args = None if ingest_db is None else {
        "source": str(source), "db": ingest_db, "key_file": key_file,
        "participants": participants, "column_map": column_map,
    }  # fmt: skip
    cluster_args = {"cluster": cluster, "n_workers": workers, "processes": processes,
                    "slurm": slurm}  # fmt: skip
    return _execute(result, _scrub_pairs(bids_dir, out, result.values), gpu_mode, gpu_ids,
                    scheduler, cluster_args, jobs, ingest_args, progress)  # fmt: skip


def _execute(
    result: ProcessResult,
    scrub: tuple[tuple[str, str], ...],
    gpu_mode: str,
    gpu_ids: tuple[int, ...],
    scheduler: Any,
    cluster_args: dict[str, Any],
    jobs: int,
    ingest_args: dict[str, Any] | None,
    progress: Callable[[str], None] | None,
) -> ProcessResult:
    """Run the steps not done yet on a Dask cluster, write the summary, ingest what finished."""
    from morphml.scale import dask_client

    plan, state_dir, out_dir = result.plan, result.state_dir, result.values["out"]
    meta = {"engine": plan.engine, "engine_version": plan.version, "runner": plan.runner}
    for sub in ("state", "logs"):
        (state_dir / sub).mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    outcomes, pending = _pending(plan, state_dir)
    order = {(s.sid, st.name): i for i, (s, st) in
             enumerate((s, st) for s in plan.scans for st in s.steps)}  # fmt: skip

    def finish() -> None:
        result.outcomes = sorted(outcomes.values(), key=lambda o: order[(o.sid, o.step)])
        result.elapsed = time.monotonic() - start
        _write_summary(state_dir, result)

    def ingest_finished(client: Any) -> None:
        if ingest_args is not None and result.finished_sids:
            from morphml.db import ingest
            from morphml.qc import qc_at_ingest

            result.ingest = ingest([Path(out_dir) / sid for sid in result.finished_sids],
                                   on_error="skip", scheduler=client,
                                   quality_control=qc_at_ingest, **ingest_args)  # fmt: skip

    def make_task(scan: PlannedScan, step: StepTemplate) -> _StepTask:
        return _StepTask(scan.sid, step, result.values, str(state_dir), out_dir, gpu_mode,
                         gpu_ids, meta, scrub, scan.steps[-1].outputs)  # fmt: skip

    if not pending:  # everything done: no cluster to start
        finish()
        ingest_finished(scheduler)
        return result
    resources, threads_per_worker = _local_resources(len(gpu_ids), jobs, cluster_args["n_workers"])
    try:
        with dask_client(scheduler, threads_per_worker=threads_per_worker, resources=resources,
                         **cluster_args) as client:  # fmt: skip
            _check_cluster_resources(client, {st.resource for _, sts in pending for st in sts})
            _run_pending(client, pending, make_task, outcomes, progress)
            finish()
            ingest_finished(client)
    finally:
        if not result.outcomes and outcomes:  # interrupted: keep what is known
            finish()
    return result


def _check_counts(**counts: Any) -> None:
    for name, value in counts.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ProcessingError(f"--{name} must be an integer >= 1, got {value!r}")


def _license(fs_license: str | os.PathLike[str] | None, runner: str) -> Path | None:
    """The FreeSurfer license file, checked; containers need one."""
    license_path = Path(fs_license).resolve() if fs_license is not None else None
    if license_path is not None and not license_path.is_file():
        raise ProcessingError(f"{fs_license}: no such FreeSurfer license file")
    if license_path is None and runner != "native":
        raise ProcessingError(
            f"--runner {runner} needs --fs-license FILE (the container has no FreeSurfer "
            "license; register for free at https://surfer.nmr.mgh.harvard.edu/registration.html)"
        )
    return license_path


def _slurm(scheduler: Any, cluster: str, cluster_config: str | os.PathLike[str] | None) -> Any:
    """The SLURM settings of ``cluster="slurm"`` without a running scheduler, else None."""
    from morphml.scale import load_slurm_settings

    if scheduler is None and cluster == "slurm":
        if cluster_config is None:
            raise ProcessingError("--cluster slurm needs --cluster-config FILE.yaml")
        return load_slurm_settings(cluster_config)
    return None


def _gpu_mode(gpus: Sequence[int] | str, slurm: Any) -> tuple[tuple[int, ...], str]:
    """(local GPU indices, mode): ``local`` indices, ``visible`` (the job's GPU) or ``none``."""
    if isinstance(gpus, str):
        if gpus != "visible":
            raise ProcessingError(f"--gpus must be indices like 0,1 or 'visible', got {gpus!r}")
        return (), "visible"
    gpu_ids = tuple(int(g) for g in gpus)
    if any(g < 0 for g in gpu_ids) or len(set(gpu_ids)) != len(gpu_ids):
        raise ProcessingError(f"--gpus must be distinct indices >= 0, got {gpu_ids}")
    gpu_mode = "local" if gpu_ids else "none"
    if not gpu_ids and slurm is not None and slurm.gpus_per_job:
        gpu_mode = "visible"
    return gpu_ids, gpu_mode


def _plan(
    bids: Path,
    out_dir: Path,
    settings: EngineSettings,
    gpu_mode: str,
    license_path: Path | None,
    *,
    plan_only: bool,
) -> ProcessResult:
    """Plan every scan, write ``plan.json`` (refusing another plan's folder), fill the values."""
    try:
        version: EngineVersion | None = check_engine(settings)
    except ProcessingError:
        if not plan_only:
            raise
        version = None
    inventory = find_t1w(bids)
    plan = make_plan(inventory, settings, version=version, gpu_mode=gpu_mode,
                     license_given=license_path is not None)  # fmt: skip
    state_dir = out_dir / STATE_DIR
    plan_path = state_dir / "plan.json"
    _existing_plan(plan_path, plan)
    plan.write(plan_path)
    exe = shutil.which(settings.program) or settings.program
    values = {"exe": exe, "image": settings.container, "bids": str(bids), "out": str(out_dir),
              "uid": str(os.getuid()), "gid": str(os.getgid())}  # fmt: skip
    if license_path is not None:
        values["license"] = str(license_path)
    return ProcessResult(plan=plan, state_dir=state_dir, planned_only=plan_only, values=values)


def _scrub_pairs(
    bids_dir: str | os.PathLike[str], out: str | os.PathLike[str], values: dict[str, str]
) -> tuple[tuple[str, str], ...]:
    """(path, token) pairs that logs have replaced: no host path reaches a log file."""
    scrub: list[tuple[str, str]] = [(values["bids"], "<bids>"), (values["out"], "<out>")]
    if "license" in values:
        scrub.append((values["license"], "<license>"))
    for raw, token in ((bids_dir, "<bids>"), (out, "<out>")):
        scrub.append((os.path.abspath(raw), token))
    exe = values["exe"]
    if os.path.isabs(exe):  # where the engine is installed (may be under a home folder)
        scrub.append((os.path.dirname(exe), "<engine>"))
    home = os.path.expanduser("~")
    if home not in ("/", "~"):
        scrub.append((home, "<home>"))
    return tuple(scrub)


def _pending(
    plan: Plan, state_dir: Path
) -> tuple[dict[tuple[str, str], StepOutcome], list[tuple[PlannedScan, list[StepTemplate]]]]:
    """The steps already done (as outcomes) and, per scan, the steps still to run."""
    outcomes: dict[tuple[str, str], StepOutcome] = {}
    pending: list[tuple[PlannedScan, list[StepTemplate]]] = []
    for scan in plan.scans:
        todo: list[StepTemplate] = []
        for step in scan.steps:
            marker = read_marker(state_dir, scan.sid, step.name)
            if marker is not None and marker.get("status") == "done" and not todo:
                outcomes[(scan.sid, step.name)] = _outcome(marker, scan.sid, step.name,
                                                           "already_done")  # fmt: skip
            else:
                todo.append(step)
        if todo:
            pending.append((scan, todo))
    return outcomes, pending


def _run_pending(
    client: Any,
    pending: list[tuple[PlannedScan, list[StepTemplate]]],
    make_task: Callable[[PlannedScan, StepTemplate], _StepTask],
    outcomes: dict[tuple[str, str], StepOutcome],
    progress: Callable[[str], None] | None,
) -> None:
    """Submit each scan's steps as a chain of tasks and record every outcome as it comes."""
    futures = []
    for scan, steps in pending:
        previous = None
        for step in steps:
            task = make_task(scan, step)
            args = (task,) if previous is None else (task, previous)
            previous = client.submit(
                run_step, *args, resources={step.resource: 1}, pure=False,
                key=f"morphml-{step.name}-{scan.sid}-{os.getpid()}-{time.time_ns()}",
            )  # fmt: skip
            futures.append(previous)
    from distributed import as_completed

    for future in as_completed(futures):
        outcome: StepOutcome = future.result()
        outcomes[(outcome.sid, outcome.step)] = outcome
        if progress is not None:
            secs = f" {outcome.seconds:.1f} s" if outcome.seconds else ""
            progress(f"{outcome.status:<12} {outcome.sid} {outcome.step}{secs}")


def _write_summary(state_dir: Path, result: ProcessResult) -> None:
    plan = result.plan
    summary = {
        "engine": plan.engine,
        "engine_version": plan.version,
        "runner": plan.runner,
        "scans_planned": len(plan.scans),
        "scans_without_t1w": len(plan.without_t1w),
        "scans_finished": len(result.finished_sids),
        "elapsed_seconds": round(result.elapsed, 3),
        "steps": [o.to_json() for o in result.outcomes],
        "failures": [o.to_json() for o in result.failures],
    }
    tmp = state_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, state_dir / "summary.json")
    rows = ["sid\tstep\tstatus\tseconds\tattempt"]
    rows += [f"{o.sid}\t{o.step}\t{o.status}\t{'' if o.seconds is None else o.seconds}\t"
             f"{o.attempt}" for o in result.outcomes]  # fmt: skip
    (state_dir / "timings.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
