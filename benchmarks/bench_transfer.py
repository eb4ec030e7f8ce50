"""The full COBRE transfer comparison against its time target (under 10 minutes on 2 cores).

Runs ``configs/transfer-cobre.yaml`` (every representation, 20 repeats of 5-fold CV, the
learning curve 20/40/80/all, 200 label permutations for the selected representation) on a
database that holds the fcon1000 and COBRE ingests, with a pretrain run of
``configs/pretrain-fcon1000.yaml``; prints the wall time, the time spent in each
representation (summed over its fits, so with ``n_jobs: 2`` the sum exceeds the wall time),
the ratio to the target, and the selected representation's AUC. The run directory goes to a
temporary folder and no run is recorded in the database.

Set up once (see configs/*.yaml):
    morphml ingest ../shared/data/pcntoolkit-demo/fcon1000.csv --map configs/maps/fcon1000.yaml \\
        --source fcon1000 --db DB
    morphml ingest ../shared/data/pcntoolkit-demo/fcon1000_te_Z.csv \\
        --map configs/maps/cobre.yaml --source cobre --db DB
    morphml fit configs/pretrain-fcon1000.yaml --db DB --out PRETRAIN

Usage: python benchmarks/bench_transfer.py --db DB --pretrained PRETRAIN
       [--config configs/transfer-cobre.yaml] [--repeats N] [--permutations N] [--n-jobs N]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from morphml.config import TransferConfig, load_config
from morphml.pipelines import fit_transfer

TARGET_S = 600.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--pretrained", type=Path, required=True)
    parser.add_argument(
        "--config", type=Path, default=Path(__file__).parents[1] / "configs/transfer-cobre.yaml"
    )
    parser.add_argument("--repeats", type=int, help="override protocol.repeats")
    parser.add_argument("--permutations", type=int, help="override protocol.permutations")
    parser.add_argument("--n-jobs", type=int, help="override protocol.n_jobs")
    parser.add_argument("--representations", nargs="+", help="override representations")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    config = load_config(args.config)
    if not isinstance(config, TransferConfig):
        raise SystemExit(f"{args.config} is not a kind: transfer config")
    protocol = config.protocol.model_copy(
        update={
            k: v
            for k, v in {
                "repeats": args.repeats,
                "permutations": args.permutations,
                "n_jobs": args.n_jobs,
            }.items()
            if v is not None
        }
    )
    update: dict[str, object] = {"protocol": protocol}
    if args.representations:
        update["representations"] = args.representations
    config = config.model_copy(update=update)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = fit_transfer(
            config, db=args.db, out=Path(tmp) / "run", pretrained=args.pretrained, record=False
        )
        wall = time.perf_counter() - start
    metrics = result.metrics
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"COBRE transfer: {len(config.representations)} representations, "
        f"{protocol.repeats} repeats x {protocol.folds} folds, sizes {protocol.train_sizes}, "
        f"{protocol.permutations} permutations, n_jobs {protocol.n_jobs}"
    )
    print(f"{'representation':<24} {'fit seconds':>11}")
    for name, sec in sorted(metrics["seconds"].items(), key=lambda kv: -kv[1]):
        print(f"{name:<24} {sec:>11.1f}")
    print(f"wall time {wall:.1f} s (target {TARGET_S:.0f} s): ratio {wall / TARGET_S:.2f}")
    print(f"peak RSS {peak_mb:.0f} MB")
    print(result.table)
    selected = metrics["selected"]
    print(f"selected: {json.dumps(selected)}  permutation p = {metrics.get('permutation_p')}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "wall_s": wall,
                    "target_s": TARGET_S,
                    "ratio": wall / TARGET_S,
                    "peak_rss_mb": peak_mb,
                    "seconds": metrics["seconds"],
                    "selected": selected,
                    "permutation_p": metrics.get("permutation_p"),
                    "transfer": metrics["transfer"],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
