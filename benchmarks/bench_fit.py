"""Pretraining at scale (issue 4 target).

Simulates a cohort (default 10,000 subjects, FreeSurfer layout), ingests it, and times
(wall and CPU seconds, with the load average) ``morphml fit`` on about 1,000 features (aparc
and a2009s thickness/area/volume/thicknessstd, aseg, wmparc, globals) with age and sex,
5 outer folds and N Optuna trials per model, in a child process whose peak memory (summed
with its worker processes) is reported. Goal on 2 cores: under 15 minutes and 4 GB.
Run it again with ``--device cuda`` on a machine with a GPU.

Usage: python benchmarks/bench_fit.py [--subjects 10000] [--trials 20]
       [--models ridge,xgboost] [--targets age,sex] [--device cpu] [--jobs 2]
       [--workdir DIR] [--pruners median,halving,none]

``--models ridge`` gives ridge for age and logistic regression for sex; ``xgboost`` adds
XGBoost for both. Sex is always fitted with and without eTIV adjustment, as ``morphml fit``
does. ``--jobs`` is the config's ``tuning.n_jobs`` (outer folds in parallel processes).
``--pruners`` fits once per ``tuning.pruner`` on the same database, one after the other, and
prints their times and metrics side by side (``none`` is exhaustive tuning: every trial runs
to the end); the first is the baseline of the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from morphml.db import ingest
from morphml.simulate import simulate_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--models", default="ridge,xgboost")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--targets", default="age,sex")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--pruners", default="median", help="tuning.pruner values, compared")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="morphml-bench-fit-"))
    sim, db = work / "sim", work / "fit.duckdb"
    if not db.exists():
        t0 = time.perf_counter()
        simulate_cohort(sim, n_subjects=args.subjects, n_sites=12, seed=2, layout="freesurfer",
                        longitudinal_fraction=0.0)  # fmt: skip
        ingest([sim], source="sim", db=db, key_file=work / "key", jobs=2, on_error="skip")
        print(
            f"simulated and ingested {args.subjects} subjects in {time.perf_counter() - t0:.0f} s"
        )
    names = args.models.split(",")
    targets = args.targets.split(",")
    config = {
        "kind": "pretrain",
        "name": "bench-fit",
        "cohort": {"sources": ["sim"]},
        "features": {
            "atlases": ["aparc", "a2009s", "aseg", "wmparc", "global"],
            "measures": ["thickness", "area", "volume", "thicknessstd", "count", "ratio"],
        },
        "targets": targets,
        "models": {
            "age": [n for n in names if n in ("ridge", "xgboost")],
            "sex": [{"ridge": "logistic"}.get(n, n) for n in names],
        },
        "tuning": {"trials": args.trials, "inner_folds": 3, "n_jobs": args.jobs},
        "validation": {"schemes": ["kfold"], "folds": 5, "bootstrap": 200},
        "device": args.device,
    }
    rows = []
    for pruner in args.pruners.split(","):
        config["tuning"] = {**config["tuning"], "pruner": pruner}  # type: ignore[dict-item]
        print(f"--- tuning.pruner: {pruner}")
        rows.append((pruner, *_fit_once(config, work, db, args, names, targets)))
    if len(rows) > 1:
        base, base_cpu = rows[0][1], rows[0][2]
        print(f"side by side (kfold outer folds; MAE in years, AUC; ratios to {rows[0][0]}):")
        for pruner, seconds, cpu, scores in rows:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
            print(
                f"  {pruner:>9}: wall {seconds:7.0f} s (x{seconds / base:.2f}), CPU {cpu:7.0f} s "
                f"(x{cpu / base_cpu:.2f}) {shown}"
            )


def _fit_once(
    config: dict[str, object], work: Path, db: Path, args: argparse.Namespace,
    names: list[str], targets: list[str],
) -> tuple[float, float, dict[str, float]]:  # fmt: skip
    """Run ``morphml fit`` once; print its figures; return its wall and CPU seconds and its
    kfold metrics."""
    cfg_path = work / "bench-fit.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    run = work / f"run-{time.time_ns()}"
    cmd = [sys.executable, "-m", "morphml.cli", "fit", str(cfg_path), "--db", str(db),
           "--out", str(run)]  # fmt: skip
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    cpu0 = _children_cpu()
    code, out, err, peak = _run_measured(cmd, work)
    seconds = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0  # the fit and the worker processes it waited for
    print(out.strip())
    if code:
        print(err[-2000:])
        raise SystemExit("fit failed")

    manifest = json.loads((run / "manifest.json").read_text())
    n_features = len(manifest["feature_ids"])
    for key, value in sorted(manifest.get("seconds", {}).items()):
        print(f"  {key}: {value:.0f} s")
    print(
        f"fit: {manifest['cohort']['n_scans']} scans x {n_features} features, {targets}, "
        f"models {names}, "
        f"{args.trials} trials, 5 folds, {args.jobs} processes, device {args.device}: "
        f"{seconds / 60:.1f} min, peak RSS {peak:,.0f} MB (all its processes together)"
    )
    print(
        f"  figure: {seconds / 60:.1f} min wall, {cpu / 60:.1f} CPU-min on {os.cpu_count()} "
        f"cores, load average {load:.1f} -> {os.getloadavg()[0]:.1f}; goal <= 15 min wall: "
        f"ratio x{seconds / 900:.2f} ({'met' if seconds <= 900 else 'NOT met'}); memory "
        f"goal < 4096 MB: x{peak / 4096:.2f}"
    )
    metrics = json.loads((run / "metrics.json").read_text())
    scores = {}
    for target, models in metrics.get("targets", {}).items():
        for label, schemes in models.items():
            fold = schemes.get("kfold", {})
            for name in ("mae", "auc"):
                value = fold.get(name)
                if isinstance(value, dict):  # a point estimate with its interval
                    value = value.get("estimate", value.get("value"))
                if isinstance(value, (int, float)):
                    scores[f"{target}/{label} {name}"] = float(value)
    return seconds, cpu, scores


def _children_cpu() -> float:
    """User + system CPU seconds of the child processes waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_measured(cmd: list[str], work: Path) -> tuple[int, str, str, float]:
    """Run ``cmd``; return its exit code, output, errors and the peak of the summed resident
    memory of it and every process it starts (worker processes included), in MB."""
    import psutil  # a dependency of dask.distributed

    out_path, err_path = work / "fit.out", work / "fit.err"
    peak = 0
    with out_path.open("w") as out, err_path.open("w") as err:
        child = subprocess.Popen(cmd, stdout=out, stderr=err)
        parent = psutil.Process(child.pid)
        while child.poll() is None:
            total = 0
            try:
                for proc in [parent, *parent.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += proc.memory_info().rss
            except psutil.Error:
                pass
            peak = max(peak, total)
            time.sleep(0.5)
    return child.returncode, out_path.read_text(), err_path.read_text(), peak / 2**20


if __name__ == "__main__":
    main()
