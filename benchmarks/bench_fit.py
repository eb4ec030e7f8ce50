"""Pretraining at scale (issue 4 target).

Simulates a cohort (default 10,000 subjects, FreeSurfer layout), ingests it, and times
``morphml fit`` on about 1,000 features (aparc and a2009s thickness/area/volume/thicknessstd,
aseg, wmparc, globals) with age and sex, 5 outer folds and N Optuna trials per model, in a
child process whose peak memory (summed with its worker processes) is reported. Target on
2 cores: under 15 minutes and 4 GB.
Run it again with ``--device cuda`` on a machine with a GPU.

Usage: python benchmarks/bench_fit.py [--subjects 10000] [--trials 20]
       [--models ridge,xgboost] [--targets age,sex] [--device cpu] [--jobs 2]
       [--workdir DIR]

``--models ridge`` gives ridge for age and logistic regression for sex; ``xgboost`` adds
XGBoost for both. Sex is always fitted with and without eTIV adjustment, as ``morphml fit``
does. ``--jobs`` is the config's ``tuning.n_jobs`` (outer folds in parallel processes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
    cfg_path = work / "bench-fit.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    run = work / f"run-{int(time.time())}"
    cmd = [sys.executable, "-m", "morphml.cli", "fit", str(cfg_path), "--db", str(db),
           "--out", str(run)]  # fmt: skip
    t0 = time.perf_counter()
    code, out, err, peak = _run_measured(cmd, work)
    seconds = time.perf_counter() - t0
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
    print(f"  target < 15 min: x{seconds / 900:.2f}; memory target < 4096 MB: x{peak / 4096:.2f}")


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
