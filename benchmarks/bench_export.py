"""Wide export at scale: ``export_wide`` to Parquet, new code against a baseline, side by side.

Builds (once, kept under ``--workdir``) a synthetic morphml database of N scans x F features
(default 11,256 x 5,830, the issue-18 size; 1% of values missing, two phenotypes), then times
the export to Parquet with this checkout's ``export_wide`` and with the baseline's (the
``morphml/db/_report.py`` of git ref ``--baseline``, default ``main``; ``none`` times this
checkout alone), alternating them
``--repeat`` times, and checks that both files hold the same table (columns, order, types,
values, metadata). Prints the best time of each, the goal (5 s at 10k scans on 2 cores) and the
ratios.

Usage: python benchmarks/bench_export.py [--scans 11256] [--features 5830] [--repeat 3]
       [--baseline main] [--workdir DIR] [--csv]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from morphml.db._report import export_wide
from morphml.db._store import connect

GOAL_S = 5.0
REPO = Path(__file__).resolve().parents[1]


def build(path: Path, n_scans: int, n_features: int, seed: int = 0) -> None:
    """A database of random values inserted through Arrow (scans in a shuffled key order)."""
    rng = np.random.default_rng(seed)
    atlases = ("aparc", "aseg", "aparc.a2009s", "global")
    idx = np.arange(n_features, dtype=np.int32)
    features = pa.table({
        "feature_idx": idx,
        "feature_id": [f"{atlases[i % 4]}.lh.region{i}.thickness" for i in idx],
        "atlas": [atlases[i % 4] for i in idx],
        "hemi": ["lh"] * n_features,
        "region": [f"region{i}" for i in idx],
        "measure": ["thickness"] * n_features,
    })  # fmt: skip
    order = rng.permutation(n_scans)
    keys = [f"scan-{i:024x}" for i in order]
    scans = pa.table({
        "scan_key": keys,
        "subject_key": [f"sub-{i:024x}" for i in order],
        "source": [("public", "hospital")[i % 2] for i in order],
        "session": pa.array(np.ones(n_scans, dtype=np.int32)),
        "site": [f"site{i % 7}" for i in order],
        "age": np.round(rng.uniform(20, 80, n_scans), 2),
        "n_features": pa.array(np.full(n_scans, n_features, dtype=np.int32)),
    })  # fmt: skip
    pheno = pa.table({
        "scan_key": keys + keys[::3],
        "name": ["panss"] * n_scans + ["diagnosis"] * len(keys[::3]),
        "type": ["continuous"] * n_scans + ["categorical"] * len(keys[::3]),
        "value_num": pa.array(
            list(np.round(rng.normal(60, 10, n_scans), 1)) + [None] * len(keys[::3]),
            type=pa.float64(),
        ),
        "value_text": [None] * n_scans + ["case"] * len(keys[::3]),
    })  # fmt: skip
    with connect(path, create=True) as con:
        con.execute("INSERT INTO sources VALUES ('public', 'stats'), ('hospital', 'stats')")
        for name, table in (("f", features), ("s", scans), ("p", pheno)):
            con.register(f"morphml_bench_{name}", table)
        con.execute("INSERT INTO features SELECT * FROM morphml_bench_f")
        con.execute(
            "INSERT INTO scans (scan_key, subject_key, source, session, site, age, n_features) "
            "SELECT * FROM morphml_bench_s"
        )
        con.execute("INSERT INTO subjects SELECT subject_key, source, 'F' FROM scans")
        con.execute("INSERT INTO phenotypes SELECT * FROM morphml_bench_p")
        step = max(1, 4_000_000 // n_features)
        for start in range(0, n_scans, step):
            block = np.round(rng.normal(2.5, 0.5, (min(step, n_scans - start), n_features)), 4)
            block[rng.random(block.shape) < 0.01] = np.nan
            rows, cols = np.nonzero(~np.isnan(block))
            values = pa.table({
                "scan_key": pa.DictionaryArray.from_arrays(
                    pa.array(rows.astype(np.int32)), pa.array(keys[start : start + step])
                ),
                "feature_idx": pa.array(cols.astype(np.int32)),
                "value": block[rows, cols],
            })  # fmt: skip
            con.register("morphml_bench_v", values)
            con.execute("INSERT INTO measures SELECT * FROM morphml_bench_v")
            con.unregister("morphml_bench_v")


def baseline_module(ref: str) -> ModuleType:
    """``morphml/db/_report.py`` as it is at git ``ref``, imported under another name."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{ref}:morphml/db/_report.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="morphml-bench-export-")) / "baseline_report.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("morphml_baseline_report", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=11_256)
    parser.add_argument("--features", type=int, default=5_830)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", default="main", help="git ref of the baseline code")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--csv", action="store_true", help="also time the export to CSV")
    args = parser.parse_args()
    db = args.workdir / f"morphml-bench-export-{args.scans}x{args.features}.duckdb"
    if not db.exists():
        t0 = time.perf_counter()
        build(db, args.scans, args.features)
        print(f"built {db} in {time.perf_counter() - t0:.1f} s")
    funcs = {"new": export_wide}
    if args.baseline != "none":
        funcs["old"] = baseline_module(args.baseline).export_wide
    suffixes = (".parquet", ".csv") if args.csv else (".parquet",)
    load = os.getloadavg()[0]
    for suffix in suffixes:
        best = dict.fromkeys(funcs, float("inf"))
        cpu = dict.fromkeys(funcs, float("inf"))
        outs = {k: args.workdir / f"morphml-bench-export-{k}{suffix}" for k in best}
        for _ in range(args.repeat):
            for name, func in sorted(funcs.items(), reverse=True):  # old first
                c0, t0 = _cpu_seconds(), time.perf_counter()
                result = func(db, outs[name])
                best[name] = min(best[name], time.perf_counter() - t0)
                cpu[name] = min(cpu[name], _cpu_seconds() - c0)
        print(
            f"export {suffix[1:]}: {result.n_rows:,} x {result.n_features:,} features, "
            f"{result.n_phenotypes} phenotypes; best of {args.repeat}; load {load:.1f} "
            f"on {os.cpu_count()} cores"
        )
        if "old" in funcs:
            speedup = best["old"] / best["new"]
            old_s, old_cpu = best["old"], cpu["old"]
            print(f"  baseline {args.baseline:<10} {old_s:7.2f} s wall {old_cpu:7.2f} s CPU")
        print(f"  this checkout   {best['new']:7.2f} s wall {cpu['new']:7.2f} s CPU")
        if "old" in funcs:
            cpu_speedup = cpu["old"] / cpu["new"]
            print(f"  x{speedup:.2f} faster in wall time, x{cpu_speedup:.2f} in CPU time")
        if suffix == ".parquet":
            goal = GOAL_S * args.scans / 10_000
            print(f"  goal <= {goal:.1f} s (5 s per 10k scans): x{best['new'] / goal:.2f} of it")
        if "old" in funcs:
            if suffix == ".parquet":
                same = pq.read_table(outs["new"]).equals(pq.read_table(outs["old"]), True)
            else:
                same = outs["new"].read_bytes() == outs["old"].read_bytes()
            print(f"  outputs identical: {same}")
            if not same:
                sys.exit(1)
        for path in outs.values():
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
