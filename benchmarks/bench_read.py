"""Stats-reader throughput on every real stats file in ../shared/data.

Prints files/s and MB/s for
  * morphml's batch reader (``read_stats_files``: what ``read_subject`` and ingest use),
  * the same plus the SHA-256 content hash ingest records for every file,
  * morphml's one-file reader (``read_stats_file`` in a loop),
  * the bare baseline ``open().read().split()`` over the same files,
and the ratio of each to the baseline. Target (issue 2): >= 10,000 files/s on one core.
freesurfer-stats, for reference, reads about 420 cortical files/s on this machine.

With ``--freesurfer-stats PYTHON`` (an interpreter where the ``freesurfer-stats`` package is
installed, e.g. a throwaway venv: it pins pandas<2 and numpy<2, so never the project's), it
also times ``CorticalParcellationStats.read`` on every cortical ``?h.aparc*.stats`` file it can
read, and morphml's batch reader on the same files, back to back; goal (issue 18) >= 24x.

Usage: python benchmarks/bench_read.py [--repeat N] [--data DIR] [--freesurfer-stats PYTHON]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

from morphml.io import read_stats_file, read_stats_files

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--freesurfer-stats", type=Path, default=None, metavar="PYTHON")
    args = parser.parse_args()
    files = sorted(
        p for p in args.data.rglob("*.stats") if p.is_file() and not p.name.endswith("curv.stats")
    )
    nbytes = sum(p.stat().st_size for p in files)
    n = len(files) * args.repeat
    mb = nbytes * args.repeat / 1e6
    print(f"{len(files)} real stats files, {nbytes / 1e3:.0f} kB, x{args.repeat} repeats")

    def bare() -> None:
        for p in files:
            with open(p) as handle:
                handle.read().split()

    def batch() -> None:
        read_stats_files(files, content_hash=False)

    def batch_hash() -> None:
        read_stats_files(files)

    def single() -> None:
        for p in files:
            read_stats_file(p)

    results = {}
    for name, func in (("bare open().read().split()", bare), ("morphml batch", batch),
                       ("morphml batch + sha256", batch_hash),
                       ("morphml one file at a time", single)):  # fmt: skip
        func()  # warm the page cache and imports
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(args.repeat):
                func()
            best = min(best, time.perf_counter() - t0)
        results[name] = best
    base = results["bare open().read().split()"]
    for name, seconds in results.items():
        print(
            f"{name:<28} {n / seconds:>10,.0f} files/s {mb / seconds:>8.1f} MB/s"
            f"   time x{seconds / base:.2f} of the bare loop"
        )
    rate = n / results["morphml batch"]
    print(f"target >= 10,000 files/s on one core: {'MET' if rate >= 10_000 else 'NOT MET'}"
          f" ({rate:,.0f}); cpu count {os.cpu_count()}")  # fmt: skip
    if args.freesurfer_stats:
        _against_freesurfer_stats(args.freesurfer_stats, args.data, args.repeat)


#: run by the other interpreter: times freesurfer-stats on the files it can read
_FS_TIMER = """
import json, sys, time
from freesurfer_stats import CorticalParcellationStats
files, repeat = json.loads(sys.argv[1]), int(sys.argv[2])
ok = []
for f in files:
    try:
        CorticalParcellationStats.read(f).structural_measurements
        ok.append(f)
    except Exception:
        pass
best = float("inf")
for _ in range(3):
    t0 = time.perf_counter()
    for _ in range(repeat):
        for f in ok:
            CorticalParcellationStats.read(f).structural_measurements
    best = min(best, time.perf_counter() - t0)
print(json.dumps({"files": ok, "seconds": best}))
"""


def _against_freesurfer_stats(python: Path, data: Path, repeat: int) -> None:
    cortical = sorted(str(p) for p in data.rglob("?h.aparc*.stats") if p.is_file())
    done = subprocess.run(
        [str(python), "-c", _FS_TIMER, json.dumps(cortical), str(repeat)],
        check=True,
        capture_output=True,
        text=True,
    )
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    files = theirs["files"]
    read_stats_files(files, content_hash=False)  # warm
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeat):
            read_stats_files(files, content_hash=False)
        best = min(best, time.perf_counter() - t0)
    n = len(files) * repeat
    ratio = theirs["seconds"] / best
    print(
        f"freesurfer-stats {n / theirs['seconds']:>8,.0f} files/s on {len(files)} cortical files"
        f" x{repeat}; morphml batch {n / best:>8,.0f} files/s: x{ratio:.1f} faster "
        f"(goal >= 24x: {'MET' if ratio >= 24 else 'NOT MET'}); load "
        f"{os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
