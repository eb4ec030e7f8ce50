"""Dask scale-out versus one process (issue 8): ingest and pretraining.

1. Ingest of N simulated subjects (mixed FreeSurfer/FastSurfer layout): stats folders parsed on
   a local Dask cluster of W worker processes versus the single-process path (``jobs=1``);
   the database is written by the calling process in one transaction either way.
2. A pretraining with T Optuna trials per study (brain age, one model, k-fold evaluation plus
   the final model): trials run on the cluster's workers, sharing each study through a journal
   file, versus the single-process path.

Prints both times and their ratio (single / Dask: above 1 means Dask was faster). The cluster's
start-up is timed separately and not part of either ratio.

Usage: python benchmarks/bench_scale.py [--subjects 10000] [--trials 20] [--workers 2]
       [--model xgboost] [--folds 3] [--workdir DIR] [--skip-ingest] [--skip-fit]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def _fresh(*paths: Path) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="xgboost", help="age model (ridge, xgboost, ...)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-fit", action="store_true")
    args = parser.parse_args()

    from morphml.config import parse_config
    from morphml.db import ingest
    from morphml.pipelines import fit_pretrain
    from morphml.scale import dask_client
    from morphml.simulate import simulate_cohort

    work = Path(args.workdir or tempfile.mkdtemp(prefix="morphml-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    sim, key = work / "sim", work / "key"
    db1, db2 = work / "single.duckdb", work / "dask.duckdb"
    if not (sim / "participants.tsv").exists():
        _fresh(sim)
        t0 = time.perf_counter()
        summary = simulate_cohort(sim, n_subjects=args.subjects, n_sites=args.sites, seed=1,
                                  layout="mixed")  # fmt: skip
        print(f"simulated {args.subjects} subjects ({summary.n_scans} scans) in "
              f"{time.perf_counter() - t0:.1f} s (not timed below)")  # fmt: skip

    t0 = time.perf_counter()
    with dask_client(n_workers=args.workers, threads_per_worker=1, processes=True) as client:
        t_start = time.perf_counter() - t0
        print(f"local Dask cluster: {args.workers} worker processes x 1 thread, started in "
              f"{t_start:.1f} s")  # fmt: skip

        if not args.skip_ingest:
            _fresh(db1, db2, Path(f"{db1}.wal"), Path(f"{db2}.wal"))
            t0 = time.perf_counter()
            one = ingest([sim], source="sim", db=db1, key_file=key, on_error="skip", jobs=1)
            t_one = time.perf_counter() - t0
            t0 = time.perf_counter()
            many = ingest([sim], source="sim", db=db2, key_file=key, on_error="skip",
                          scheduler=client)  # fmt: skip
            t_many = time.perf_counter() - t0
            if (one.n_scans, one.n_values) != (many.n_scans, many.n_values):
                raise SystemExit("the two ingests differ")
            print(f"ingest {one.n_scans} scans, {one.n_values:,} values: single process "
                  f"{t_one:.1f} s, Dask {args.workers} workers {t_many:.1f} s, "
                  f"ratio {t_one / t_many:.2f}")  # fmt: skip
        elif not db1.exists():
            ingest([sim], source="sim", db=db1, key_file=key, on_error="skip")

        if not args.skip_fit:
            config = parse_config({
                "kind": "pretrain", "name": "bench-scale",
                "cohort": {"sources": ["sim"]},
                "features": {"atlases": ["aseg", "global"]},
                "targets": ["age"],
                "models": {"age": [args.model]},
                "tuning": {"trials": args.trials, "inner_folds": 3},
                "validation": {"schemes": ["kfold"], "folds": args.folds, "bootstrap": 200},
                "seed": 0,
                "device": "cpu",
            })  # fmt: skip
            run1, run2 = work / "run-single", work / "run-dask"
            _fresh(run1, run2)
            n_studies = args.folds + 1
            t0 = time.perf_counter()
            r1 = fit_pretrain(config, db=db1, out=run1, record=False)
            t_one = time.perf_counter() - t0
            t0 = time.perf_counter()
            r2 = fit_pretrain(config, db=db1, out=run2, record=False, scheduler=client)
            t_many = time.perf_counter() - t0
            m1 = r1.metrics["targets"]["age"][args.model]["kfold"]["mae"]
            m2 = r2.metrics["targets"]["age"][args.model]["kfold"]["mae"]
            print(f"pretraining ({args.model}, {n_studies} studies x {args.trials} trials, "
                  f"{args.folds}-fold): single process {t_one:.1f} s (MAE {m1:.2f}), Dask "
                  f"{args.workers} workers {t_many:.1f} s (MAE {m2:.2f}), "
                  f"ratio {t_one / t_many:.2f}")  # fmt: skip
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
