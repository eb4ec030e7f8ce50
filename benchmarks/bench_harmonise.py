"""ComBat speed and memory at the issue's scale (target: fit + transform of 10,000 scans x
1,000 features under 10 s on 2 cores).

Simulates scans of 20 sites with known site effects (seeded), then times ``ComBat.fit`` and
``ComBat.transform`` for the parametric and the non-parametric estimator, each in a fresh
child process so that its peak resident memory (``resource.getrusage``) is its own. The child
reads the simulated frame from a pickle in a temporary folder (a cache, deleted at the end).

Usage: python benchmarks/bench_harmonise.py [--scans 10000] [--features 1000] [--sites 20]
       [--repeat 3] [--seed 0] [--nan-fraction 0]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from morphml.harmonize import ComBat
from morphml.harmonize._simulate import simulate_site_effects

TARGET_S = 10.0


def _rss_mb() -> float:
    # current (not peak) resident memory, from /proc where there is one
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _child(path: Path, parametric: bool, repeat: int) -> None:
    frame = pd.read_pickle(path)
    before = _rss_mb()
    fits, transforms = [], []
    for _ in range(repeat):
        model = ComBat(parametric=parametric)
        t0 = time.perf_counter()
        model.fit(frame)
        t1 = time.perf_counter()
        out = model.transform(frame)
        t2 = time.perf_counter()
        fits.append(t1 - t0)
        transforms.append(t2 - t1)
        del out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # one more, untimed pass: memory ComBat itself allocates (numpy reports to tracemalloc)
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    model = ComBat(parametric=parametric).fit(frame)
    fit_mb = (tracemalloc.get_traced_memory()[1] - start) / 2**20
    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    model.transform(frame)
    transform_mb = (tracemalloc.get_traced_memory()[1] - start) / 2**20
    tracemalloc.stop()
    print(
        json.dumps(
            {
                "fit": fits,
                "transform": transforms,
                "rss_before_mb": before,
                "peak_rss_mb": peak,
                "fit_alloc_mb": fit_mb,
                "transform_alloc_mb": transform_mb,
                "n_iter": int(model.n_iter_),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=1_000)
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--nan-fraction", type=float, default=0.0, help="share of values set missing (NaN path)"
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--nonparametric", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child, not args.nonparametric, args.repeat)
        return

    t0 = time.perf_counter()
    sim = simulate_site_effects(args.scans, args.features, args.sites, random_state=args.seed)
    frame = sim.frame
    if args.nan_fraction > 0:
        rng = np.random.default_rng(args.seed + 1)
        values = frame[sim.features].to_numpy()
        values[rng.random(values.shape) < args.nan_fraction] = np.nan
        frame = pd.concat([frame.iloc[:, :3], pd.DataFrame(values, columns=sim.features)], axis=1)
    print(
        f"simulated {args.scans:,} scans x {args.features:,} features, {args.sites} sites "
        f"(NaN fraction {args.nan_fraction:g}) in {time.perf_counter() - t0:.1f} s; "
        f"{os.cpu_count()} CPUs visible, BLAS threads as configured"
    )
    with tempfile.TemporaryDirectory(prefix="morphml-bench-harmonise-") as work:
        path = Path(work) / "frame.pkl"
        frame.to_pickle(path)
        del sim, frame
        header = f"{'estimator':<15}{'fit s':>8}{'transform s':>13}{'total s':>9}"
        header += f"{'/ 10 s':>8}{'peak RSS MB':>13}{'data MB':>9}{'alloc MB':>14}{'iter':>6}"
        print(header)
        for label, flag in (("parametric", []), ("non-parametric", ["--nonparametric"])):
            cmd = [sys.executable, __file__, "--child", str(path), "--repeat", str(args.repeat)]
            done = subprocess.run(cmd + flag, capture_output=True, text=True, check=False)
            if done.returncode:
                print(done.stderr[-2000:])
                raise SystemExit(f"{label} run failed")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            fit = float(np.median(result["fit"]))
            transform = float(np.median(result["transform"]))
            total = fit + transform
            print(
                f"{label:<15}{fit:>8.2f}{transform:>13.2f}{total:>9.2f}{total / TARGET_S:>8.2f}"
                f"{result['peak_rss_mb']:>13.0f}{result['rss_before_mb']:>9.0f}"
                f"{result['fit_alloc_mb']:>7.0f} /{result['transform_alloc_mb']:>5.0f}"
                f"{result['n_iter']:>6}"
            )
    print(
        f"(median of {args.repeat} runs; 'data MB': the child's resident memory with the frame "
        "loaded, before ComBat; peak RSS includes it and the pickle load; 'alloc MB': peak "
        "memory ComBat allocates in fit / transform, from tracemalloc)"
    )


if __name__ == "__main__":
    main()
