"""Ingest and export at scale (issue 3 targets).

Simulates N subjects (mixed FreeSurfer/FastSurfer layout), then times
``morphml ingest SIM --jobs 2`` end to end in a fresh process (peak RSS from the child) and the
wide export to Parquet. Targets for 10,000 subjects on 2 cores: ingest < 60 s with peak memory
< 2 GB, export < 5 s.

Usage: python benchmarks/bench_ingest.py [--subjects 10000] [--jobs 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from morphml.simulate import simulate_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="morphml-bench-"))
    sim, db = work / "sim", work / "bench.duckdb"
    for path in (sim, db, Path(str(db) + ".wal")):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    t0 = time.perf_counter()
    summary = simulate_cohort(sim, n_subjects=args.subjects, n_sites=args.sites, seed=1,
                              layout="mixed")  # fmt: skip
    t_sim = time.perf_counter() - t0
    n_files = sum(1 for _ in sim.rglob("*.stats"))
    print(f"simulated {args.subjects} subjects, {summary.n_scans} scans, {n_files} stats files "
          f"in {t_sim:.1f} s")  # fmt: skip

    cmd = [sys.executable, "-m", "morphml.cli", "ingest", str(sim), "--db", str(db),
           "--source", "sim", "--key-file", str(work / "key"), "--jobs", str(args.jobs),
           "--on-error", "skip"]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    t_ingest = time.perf_counter() - t0
    if done.returncode:
        print(done.stdout, done.stderr)
        raise SystemExit("ingest failed")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB -> MB (Linux)
    print(done.stdout.strip())
    size = db.stat().st_size / 1e6
    print(
        f"ingest: {t_ingest:.1f} s ({args.subjects / t_ingest:,.0f} subjects/s, "
        f"{n_files / t_ingest:,.0f} files/s), peak RSS {peak:,.0f} MB, database {size:,.0f} MB"
    )
    print(f"  target < 60 s: x{t_ingest / 60:.2f} of the budget; "
          f"memory target < 2048 MB: x{peak / 2048:.2f}")  # fmt: skip

    cmd = [sys.executable, "-m", "morphml.cli", "db", "export", "--db", str(db),
           "--out", str(work / "wide.parquet")]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    t_cli = time.perf_counter() - t0
    from morphml.db import export_wide

    t0 = time.perf_counter()
    result = export_wide(db, work / "wide2.parquet")
    t_export = time.perf_counter() - t0
    print(
        f"export: {result.n_rows} x {result.n_features} in {t_export:.2f} s in-process "
        f"({t_cli:.2f} s as a command incl. start-up); target < 5 s: x{t_export / 5:.2f}"
    )


if __name__ == "__main__":
    main()
