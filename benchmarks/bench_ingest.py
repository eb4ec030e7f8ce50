"""Ingest and export at scale (issue 3 targets).

Simulates N subjects (mixed FreeSurfer/FastSurfer layout), then times
``morphml ingest SIM --jobs 2`` end to end in a fresh process (peak RSS from the child) and the
wide export to Parquet. Targets for 10,000 subjects on 2 cores: ingest < 60 s with peak memory
< 2 GB, export < 5 s.

With several sizes (``--subjects 1000 10000``) it also prints the growth exponent of the ingest
time between the smallest and the largest (goal <= 1.05: linear); ``--subjects 50000`` gives
the large run's time and peak RSS.

Usage: python benchmarks/bench_ingest.py [--subjects 10000 ...] [--jobs 2] [--workdir DIR]
       [--keep-sim] [--no-export]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from morphml.simulate import simulate_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--subjects", type=int, nargs="+", default=[10_000],
        help="one size, or several (e.g. 1000 10000 50000) for the growth exponent",
    )  # fmt: skip
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--keep-sim", action="store_true", help="reuse a simulated cohort already in --workdir"
    )
    parser.add_argument("--no-export", action="store_true", help="time the ingest only")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="morphml-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    times: dict[int, tuple[float, float]] = {}
    for n in args.subjects:
        times[n] = _one_size(work, n, args)
    sizes = sorted(times)
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        for i, what in enumerate(("wall", "CPU")):
            exponent = math.log(times[hi][i] / times[lo][i]) / math.log(hi / lo)
            print(
                f"growth exponent {lo:,} -> {hi:,} subjects ({what} time): {exponent:.2f} "
                f"(time ~ n^{exponent:.2f}; goal <= 1.05: x{exponent / 1.05:.2f})"
            )


def _one_size(work: Path, subjects: int, args: argparse.Namespace) -> tuple[float, float]:
    """Ingest (and export) ``subjects`` simulated subjects; returns wall and CPU seconds."""
    sim, db = work / f"sim-{subjects}", work / f"bench-{subjects}.duckdb"
    for path in (db, Path(str(db) + ".wal"), work / f"key-{subjects}"):
        if path.exists():
            path.unlink()
    if sim.is_dir() and not args.keep_sim:
        shutil.rmtree(sim)
    if not sim.is_dir():
        t0 = time.perf_counter()
        simulate_cohort(sim, n_subjects=subjects, n_sites=args.sites, seed=1, layout="mixed")
        print(f"simulated {subjects} subjects in {time.perf_counter() - t0:.1f} s")
    n_files = sum(1 for _ in sim.rglob("*.stats"))

    cmd = [sys.executable, "-m", "morphml.cli", "ingest", str(sim), "--db", str(db),
           "--source", "sim", "--key-file", str(work / f"key-{subjects}"), "--jobs",
           str(args.jobs), "--on-error", "skip"]  # fmt: skip
    t0 = time.perf_counter()
    out_path, err_path = work / "ingest.out", work / "ingest.err"
    with out_path.open("w") as out_file, err_path.open("w") as err_file:
        child = subprocess.Popen(cmd, stdout=out_file, stderr=err_file)
        # reaped here, so its own peak RSS is known (RUSAGE_CHILDREN keeps the largest child)
        _, status, usage = os.wait4(child.pid, 0)
    t_ingest = time.perf_counter() - t0
    out = out_path.read_text()
    if os.waitstatus_to_exitcode(status):
        print(out, err_path.read_text())
        raise SystemExit("ingest failed")
    peak = usage.ru_maxrss / 1024  # kB -> MB (Linux)
    # CPU seconds of the ingest and its worker processes: steadier than wall time on a
    # loaded machine
    cpu = usage.ru_utime + usage.ru_stime
    print(out.strip())
    size = db.stat().st_size / 1e6
    print(
        f"ingest {subjects:,} subjects: {t_ingest:.1f} s ({subjects / t_ingest:,.0f} subjects/s, "
        f"{n_files / t_ingest:,.0f} files/s), CPU {cpu:.1f} s, peak RSS {peak:,.0f} MB, "
        f"database {size:,.0f} MB"
    )
    budget = 60 * subjects / 10_000
    print(f"  target < {budget:.0f} s (60 s per 10,000): x{t_ingest / budget:.2f} of the budget; "
          f"memory target < 2048 MB: x{peak / 2048:.2f}")  # fmt: skip
    if args.no_export:
        return t_ingest, cpu

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
    return t_ingest, cpu


if __name__ == "__main__":
    main()
