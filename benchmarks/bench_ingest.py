"""Ingest and export at scale (issue 3 targets).

Simulates N subjects (mixed FreeSurfer/FastSurfer layout), then times
``morphml ingest SIM --jobs 2`` end to end in a fresh process (peak RSS from the child) and the
wide export to Parquet. Targets for 10,000 subjects on 2 cores: ingest < 60 s with peak memory
< 2 GB, export < 5 s.

With several sizes (``--subjects 1000 10000``) it also prints the growth exponent of the ingest
time between the smallest and the largest (goal <= 1.05: linear); ``--subjects 50000`` gives
the large run's time and peak RSS.

With ``--baseline REF`` (a git ref, e.g. ``main``) every size is also ingested by the code of
that ref (``git archive`` into a temporary folder, run through ``PYTHONPATH``) right before this
checkout's, on the same cohort, and the ratios old/new are printed: on a loaded machine only
side-by-side figures compare. CPU seconds (user + system of the ingest and its workers) are
printed beside wall time; they vary less with load.

Usage: python benchmarks/bench_ingest.py [--subjects 10000 ...] [--jobs 2] [--workdir DIR]
       [--keep-sim] [--no-export] [--baseline REF]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from morphml.simulate import simulate_cohort

REPO = Path(__file__).resolve().parents[1]
GOAL_EXPONENT = 1.05
GOAL_S_PER_10K = 60.0
GOAL_RSS_MB = 2048.0


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
    parser.add_argument("--baseline", default=None, help="git ref of the code to compare with")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="morphml-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    codes: dict[str, Path | None] = {"new": None}
    if args.baseline:
        codes = {"old": _baseline_tree(args.baseline, work), "new": None}
    figures: dict[str, dict[int, tuple[float, float, float]]] = {k: {} for k in codes}
    for n in args.subjects:
        _simulate(work, n, args)
        for name, tree in codes.items():
            code = f"baseline {args.baseline}" if tree else "this checkout"
            load = os.getloadavg()[0]
            print(f"--- {n:,} subjects, {code}; load {load:.1f} on {os.cpu_count()} cores")
            figures[name][n] = _one_size(work, n, args, tree)
    _print_summary(figures, args.baseline)


def _print_summary(
    figures: dict[str, dict[int, tuple[float, float, float]]], baseline: str | None
) -> None:
    """Figure, goal and ratio for each size and code, then the growth exponents."""
    print("\nsummary (figure | goal | figure/goal" + (" | old/new" if baseline else "") + ")")
    for n in sorted(figures["new"]):
        wall, cpu, rss = figures["new"][n]
        budget = GOAL_S_PER_10K * n / 10_000
        old = figures.get("old", {}).get(n)
        ratio = [f" | x{old[i] / (wall, cpu, rss)[i]:.2f}" if old else "" for i in range(3)]
        print(f"  {n:>6,} ingest wall  {wall:8.1f} s | {budget:6.0f} s | x{wall / budget:.2f}"
              f"{ratio[0]}")  # fmt: skip
        print(f"  {n:>6,} ingest CPU   {cpu:8.1f} s |      - |     -{ratio[1]}")
        print(f"  {n:>6,} peak RSS     {rss:8,.0f} MB | {GOAL_RSS_MB:4,.0f} MB | "
              f"x{rss / GOAL_RSS_MB:.2f}{ratio[2]}")  # fmt: skip
        if old:
            print(f"  {n:>6,} baseline     wall {old[0]:.1f} s, CPU {old[1]:.1f} s, "
                  f"peak RSS {old[2]:,.0f} MB")  # fmt: skip
    for name, by_size in figures.items():
        sizes = sorted(by_size)
        if len(sizes) < 2:
            continue
        lo, hi = sizes[0], sizes[-1]
        for i, what in enumerate(("wall", "CPU")):
            exponent = math.log(by_size[hi][i] / by_size[lo][i]) / math.log(hi / lo)
            print(
                f"  growth exponent {lo:,} -> {hi:,} subjects ({what} time, {name} code): "
                f"{exponent:.2f} | goal <= {GOAL_EXPONENT} | x{exponent / GOAL_EXPONENT:.2f}"
            )


def _baseline_tree(ref: str, work: Path) -> Path:
    """The ``morphml`` package of git ``ref``, unpacked under ``work`` (for PYTHONPATH)."""
    tree = work / f"baseline-{ref.replace('/', '_')}"
    if not tree.is_dir():
        data = subprocess.run(
            ["git", "-C", str(REPO), "archive", ref, "morphml"], check=True, capture_output=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(tree, filter="data")
    return tree


def _simulate(work: Path, subjects: int, args: argparse.Namespace) -> None:
    sim = work / f"sim-{subjects}"
    if sim.is_dir() and not args.keep_sim:
        shutil.rmtree(sim)
    if not sim.is_dir():
        t0 = time.perf_counter()
        simulate_cohort(sim, n_subjects=subjects, n_sites=args.sites, seed=1, layout="mixed")
        print(f"simulated {subjects} subjects in {time.perf_counter() - t0:.1f} s")


def _one_size(
    work: Path, subjects: int, args: argparse.Namespace, tree: Path | None
) -> tuple[float, float, float]:
    """Ingest (and export) ``subjects`` simulated subjects with this checkout, or with the
    baseline code in ``tree``; returns wall seconds, CPU seconds and peak RSS (MB)."""
    sim, db = work / f"sim-{subjects}", work / f"bench-{subjects}.duckdb"
    for path in (db, Path(str(db) + ".wal"), work / f"key-{subjects}"):
        if path.exists():
            path.unlink()
    n_files = sum(1 for _ in sim.rglob("*.stats"))
    cmd = [sys.executable, "-m", "morphml.cli", "ingest", str(sim), "--db", str(db),
           "--source", "sim", "--key-file", str(work / f"key-{subjects}"), "--jobs",
           str(args.jobs), "--on-error", "skip"]  # fmt: skip
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")])
    t0 = time.perf_counter()
    out_path, err_path = work / "ingest.out", work / "ingest.err"
    with out_path.open("w") as out_file, err_path.open("w") as err_file:
        child = subprocess.Popen(cmd, stdout=out_file, stderr=err_file, env=env, cwd=work)
        # reaped here, so its own peak RSS is known (RUSAGE_CHILDREN keeps the largest child)
        _, status, usage = os.wait4(child.pid, 0)
    t_ingest = time.perf_counter() - t0
    out = out_path.read_text()
    if os.waitstatus_to_exitcode(status):
        print(out, err_path.read_text())
        raise SystemExit("ingest failed")
    peak = usage.ru_maxrss / 1024  # kB -> MB (Linux); the largest of the ingest's processes
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
    if not args.no_export and tree is None:
        _export(work, db)
    return t_ingest, cpu, peak


def _export(work: Path, db: Path) -> None:
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
        f"({t_cli:.2f} s as a command incl. start-up); goal < 5 s: x{t_export / 5:.2f} "
        "(benchmarks/bench_export.py compares with a baseline)"
    )


if __name__ == "__main__":
    main()
