"""Every benchmark at a small size, and one summary table (figure, goal, ratio).

Each benchmark runs as its own child process (so one failing or running long does not stop
the others) with the sizes of ``--quick`` (a review in a few minutes on 2 idle cores) or its
defaults (the issue's targets, hours). The table lists each figure, its goal, the ratio of the
figure to the goal (below 1 is within the goal for times and memory), and, with
``--baseline`` (the ``--json`` of an earlier run, e.g. of the main branch), the ratio of the
figure to that run's. Quick sizes are far below the goals' sizes, so their ratios to the goals
are scaled (per 10,000 subjects for ingest, linearly) and only indicative; compare quick runs
with quick baselines.

``bench_transfer`` needs a database with fcon1000 and COBRE and a pretrain run (see its
docstring): give them as ``--transfer-db`` and ``--pretrained``, or it is skipped.

Usage: python benchmarks/run_all.py [--quick] [--json OUT.json] [--baseline OLD.json]
       [--only read,ingest,...] [--transfer-db DB --pretrained RUN]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class Figure:
    bench: str
    name: str
    value: float | None
    unit: str
    goal: str
    ratio: float | None  # value / goal (None: no goal or not measured)


def _num(pattern: str, text: str, group: int = 1) -> float | None:
    found = re.search(pattern, text, flags=re.MULTILINE)
    return float(found.group(group).replace(",", "")) if found else None


def _read(text: str) -> list[Figure]:
    rate = _num(r"^morphml batch\s+([\d,]+) files/s", text)
    rel = _num(r"^morphml batch\s+.*time x([\d.]+) of the bare loop", text)
    share = None if rel is None else 1.0 / rel
    return [
        Figure("read", "batch reader files/s", rate, "files/s", ">= 10,000",
               None if rate is None else 10_000 / rate),
        Figure("read", "share of a bare read().split() loop", share, "", ">= 0.5",
               None if share is None else 0.5 / share),
    ]  # fmt: skip


def _ingest(text: str) -> list[Figure]:
    out = []
    for m in re.finditer(
        r"^ingest ([\d,]+) subjects: ([\d.]+) s .*?CPU ([\d.]+) s, peak RSS ([\d,]+) MB", text,
        flags=re.MULTILINE,
    ):  # fmt: skip
        n = int(m.group(1).replace(",", ""))
        wall, peak = float(m.group(2)), float(m.group(4).replace(",", ""))
        budget = 60.0 * n / 10_000
        out.append(Figure("ingest", f"ingest {n:,} subjects", wall, "s",
                          f"< {budget:.0f} s (60 s / 10k)", wall / budget))  # fmt: skip
        out.append(Figure("ingest", f"ingest {n:,} peak RSS", peak, "MB", "< 2048", peak / 2048))
    for what in ("wall", "CPU"):
        e = _num(rf"^growth exponent .* \({what} time\): ([\d.-]+)", text)
        out.append(Figure("ingest", f"growth exponent ({what})", e, "", "<= 1.05",
                          None if e is None else e / 1.05))  # fmt: skip
    export = _num(r"^export: .* in ([\d.]+) s in-process", text)
    rows = _num(r"^export: ([\d,]+) x", text)
    out.append(Figure("ingest", f"wide export ({rows or 0:,.0f} scans)", export, "s",
                      "< 5 s at 10k", None))  # fmt: skip
    return out


def _fit(text: str) -> list[Figure]:
    minutes = _num(r"^fit: .*: ([\d.]+) min", text)
    peak = _num(r"^fit: .*peak RSS ([\d,]+) MB", text)
    return [
        Figure("fit", "pretraining", minutes, "min", "< 15 min at 10k x 1k",
               None if minutes is None else minutes / 15),
        Figure("fit", "pretraining peak RSS", peak, "MB", "< 4096",
               None if peak is None else peak / 4096),
    ]  # fmt: skip


def _harmonise(text: str) -> list[Figure]:
    out = []
    for label in ("parametric", "non-parametric"):
        m = re.search(rf"^{label}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", text, flags=re.MULTILINE)
        total = float(m.group(3)) if m else None
        ratio = None if total is None else total / 10
        out.append(Figure("harmonise", f"ComBat {label}", total, "s", "< 10 s at 10k x 1k", ratio))
    return out


def _transfer(text: str) -> list[Figure]:
    wall = _num(r"^wall time ([\d.]+) s", text)
    return [Figure("transfer", "COBRE transfer comparison", wall, "s", "< 600 s",
                   None if wall is None else wall / 600)]  # fmt: skip


def _export(text: str) -> list[Figure]:
    found = re.search(r"^export parquet: ([\d,]+) x", text, flags=re.MULTILINE)
    wall = _num(r"^  this checkout\s+([\d.]+) s wall", text)
    if not found or wall is None:
        return [Figure("export", "wide export to Parquet", None, "s", "<= 5 s at 10k", None)]
    per_10k = wall * 10_000 / float(found.group(1).replace(",", ""))
    return [Figure("export", "wide export to Parquet, per 10k scans", per_10k, "s",
                   "<= 5 s at 10k", per_10k / 5)]  # fmt: skip


def _benches(args: argparse.Namespace, work: Path) -> list[tuple[str, list[str], Callable]]:
    q = args.quick
    py = [sys.executable]
    out: list[tuple[str, list[str], Callable]] = [
        ("read", [*py, str(HERE / "bench_read.py"), "--repeat", "3" if q else "30"], _read),
        ("ingest", [*py, str(HERE / "bench_ingest.py"), "--workdir", str(work / "ingest"),
                    "--subjects", *(["150", "600"] if q else ["1000", "10000"])], _ingest),
        ("export", [*py, str(HERE / "bench_export.py"), "--workdir", str(work),
                    "--baseline", "none", *(["--scans", "2000", "--repeat", "1"] if q else [])],
         _export),
        ("harmonise", [*py, str(HERE / "bench_harmonise.py"),
                       *(["--scans", "2000", "--features", "300", "--repeat", "1"] if q else [])],
         _harmonise),
        ("fit", [*py, str(HERE / "bench_fit.py"), "--workdir", str(work / "fit"),
                 *(["--subjects", "300", "--trials", "2", "--models", "ridge", "--targets",
                    "age"] if q else [])], _fit),
    ]  # fmt: skip
    if args.transfer_db and args.pretrained:
        out.append(("transfer", [*py, str(HERE / "bench_transfer.py"), "--db",
                                 str(args.transfer_db), "--pretrained", str(args.pretrained),
                                 *(["--repeats", "1", "--permutations", "5"] if q else [])],
                    _transfer))  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--baseline", type=Path, help="the --json of an earlier run")
    parser.add_argument(
        "--only", help="comma-separated: read,ingest,export,harmonise,fit,transfer"
    )
    parser.add_argument("--transfer-db", type=Path)
    parser.add_argument("--pretrained", type=Path)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per benchmark")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="morphml-run-all-"))
    work.mkdir(parents=True, exist_ok=True)
    wanted = set(args.only.split(",")) if args.only else None
    timeout = args.timeout or (240.0 if args.quick else None)
    figures: list[Figure] = []
    started = time.perf_counter()
    if not (args.transfer_db and args.pretrained):
        print("transfer: skipped (needs --transfer-db and --pretrained)")
    for name, cmd, parse in _benches(args, work):
        if wanted is not None and name not in wanted:
            continue
        t0 = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            text, code = done.stdout, done.returncode
        except subprocess.TimeoutExpired as exc:
            text, code = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (
                exc.stdout or ""), -1  # fmt: skip
        print(f"{name}: {time.perf_counter() - t0:.0f} s{'' if code == 0 else ' (FAILED)'}")
        if code != 0:
            print(text[-1500:])
        figures.extend(parse(text))
    base: dict[tuple[str, str], float] = {}
    if args.baseline is not None:
        for row in json.loads(args.baseline.read_text())["figures"]:
            if row["value"] is not None:
                base[(row["bench"], row["name"])] = float(row["value"])
    print(f"\n{'benchmark':<10} {'figure':<38} {'value':>10} {'goal':<26} {'/goal':>6} "
          f"{'/baseline':>9}")  # fmt: skip
    for f in figures:
        value = "-" if f.value is None else f"{f.value:,.4g} {f.unit}".strip()
        ratio = "-" if f.ratio is None else f"{f.ratio:.2f}"
        old = base.get((f.bench, f.name))
        vs = "-" if not old or f.value is None else f"{f.value / old:.2f}"
        print(f"{f.bench:<10} {f.name:<38} {value:>10} {f.goal:<26} {ratio:>6} {vs:>9}")
    total = time.perf_counter() - started
    print(f"\nall benchmarks: {total:.0f} s ({'quick' if args.quick else 'full'} sizes)")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"quick": args.quick, "seconds": total, "figures": [asdict(f) for f in figures]},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
