"""Stats-reader throughput on every real stats file in ../shared/data.

Prints files/s and MB/s for
  * morphml's batch reader (``read_stats_files``: what ``read_subject`` and ingest use),
  * the same plus the SHA-256 content hash ingest records for every file,
  * morphml's one-file reader (``read_stats_file`` in a loop),
  * the bare baseline ``open().read().split()`` over the same files,
and the ratio of each to the baseline. Targets: >= 10,000 files/s on one core (issue 2); the
batch reader's time <= 2.0x the bare loop's, i.e. >= 0.5 of its speed (issue 18).

With ``--freesurfer-stats PYTHON`` (an interpreter where the ``freesurfer-stats`` package is
installed, e.g. a throwaway venv: it pins pandas<2 and numpy<2, so never the project's), it
also times ``CorticalParcellationStats.read`` on every cortical ``?h.aparc*.stats`` file it can
read, and morphml's batch reader on the same files, back to back; goal (issue 18) >= 24x.

With ``--baseline SRC`` (a folder holding another version's ``morphml`` package, e.g.
``git archive main morphml | tar -x -C /tmp/old``), the same bare loop and batch reader are
timed in a second interpreter importing that version, right after this one's, and the two
ratios to the bare loop are printed side by side: on a loaded machine compare those, not
absolute times.

Usage: python benchmarks/bench_read.py [--repeat N] [--data DIR] [--freesurfer-stats PYTHON]
       [--baseline SRC]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from morphml.io import read_stats_file, read_stats_files

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: the clock every timing uses (``--cpu-time`` switches to process CPU time)
_clock, _CLOCK_NAME = time.perf_counter, "perf_counter"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--freesurfer-stats", type=Path, default=None, metavar="PYTHON")
    parser.add_argument("--baseline", type=Path, default=None, metavar="SRC")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time by process CPU time instead of wall time (steadier on a loaded machine)",
    )
    args = parser.parse_args()
    global _clock, _CLOCK_NAME
    if args.cpu_time:
        _clock, _CLOCK_NAME = time.process_time, "process_time"
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
            t0 = _clock()
            for _ in range(args.repeat):
                func()
            best = min(best, _clock() - t0)
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
    ratio = results["morphml batch"] / base
    print(
        f"goal batch time <= 2.0x the bare loop (>= 0.5 of its speed): "
        f"{'MET' if ratio <= 2.0 else 'NOT MET'} (x{ratio:.2f}, {1 / ratio:.2f} of its speed); "
        f"load {os.getloadavg()[0]:.1f}"
    )
    if args.baseline:
        _against_baseline(args.baseline, files, args.repeat, ratio)
    if args.freesurfer_stats:
        _against_freesurfer_stats(args.freesurfer_stats, args.data, args.repeat)


#: run by an interpreter importing another morphml: bare loop and batch reader, best of 3
_BASELINE_TIMER = """
import json, sys, time
import morphml
from morphml.io import read_stats_files
files, repeat = json.loads(sys.argv[1]), int(sys.argv[2])
clock = getattr(time, sys.argv[3])
def bare():
    for p in files:
        with open(p) as handle:
            handle.read().split()
def batch():
    read_stats_files(files, content_hash=False)
out = {"morphml": morphml.__file__}
for name, func in (("bare", bare), ("batch", batch)):
    func()
    best = float("inf")
    for _ in range(3):
        t0 = clock()
        for _ in range(repeat):
            func()
        best = min(best, clock() - t0)
    out[name] = best
print(json.dumps(out))
"""


def _against_baseline(src: Path, files: list[Path], repeat: int, ratio: float) -> None:
    env = dict(os.environ, PYTHONPATH=str(src.resolve()))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _BASELINE_TIMER,
            json.dumps([str(p) for p in files]),
            str(repeat),
            _CLOCK_NAME,
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=src,  # '-c' puts the working folder first on sys.path
    )
    old = json.loads(done.stdout.strip().splitlines()[-1])
    old_ratio = old["batch"] / old["bare"]
    n = len(files) * repeat
    print(
        f"baseline {old['morphml']}: batch {n / old['batch']:,.0f} files/s, time "
        f"x{old_ratio:.2f} of its bare loop; this version x{ratio:.2f}: "
        f"{old_ratio / ratio:.2f}x faster relative to the bare loop"
    )


#: run by the other interpreter: times freesurfer-stats on the files it can read
_FS_TIMER = """
import json, sys, time
from freesurfer_stats import CorticalParcellationStats
files, repeat = json.loads(sys.argv[1]), int(sys.argv[2])
clock = getattr(time, sys.argv[3])
ok = []
for f in files:
    try:
        CorticalParcellationStats.read(f).structural_measurements
        ok.append(f)
    except Exception:
        pass
best = float("inf")
for _ in range(3):
    t0 = clock()
    for _ in range(repeat):
        for f in ok:
            CorticalParcellationStats.read(f).structural_measurements
    best = min(best, clock() - t0)
print(json.dumps({"files": ok, "seconds": best}))
"""


def _against_freesurfer_stats(python: Path, data: Path, repeat: int) -> None:
    cortical = sorted(str(p) for p in data.rglob("?h.aparc*.stats") if p.is_file())
    done = subprocess.run(
        [str(python), "-c", _FS_TIMER, json.dumps(cortical), str(repeat), _CLOCK_NAME],
        check=True,
        capture_output=True,
        text=True,
    )
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    files = theirs["files"]
    read_stats_files(files, content_hash=False)  # warm
    best = float("inf")
    for _ in range(3):
        t0 = _clock()
        for _ in range(repeat):
            read_stats_files(files, content_hash=False)
        best = min(best, _clock() - t0)
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
