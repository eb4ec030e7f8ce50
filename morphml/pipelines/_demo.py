"""``morphml demo``: the whole job on a simulated cohort, from stats folders to a report.

Simulates a public multi-site cohort and a smaller hospital cohort as FreeSurfer/FastSurfer
stats folders, ingests both into one database, pretrains brain-age and sex models on the
public controls, transfers them to the hospital's patients-vs-controls question, and renders
the reports. Nothing is downloaded; everything is written under one folder.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from morphml.config import parse_config
from morphml.exceptions import ConfigError

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    """What the demo wrote."""

    out: Path
    db: Path
    pretrain_run: Path
    transfer_run: Path
    reports: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


def _rename_sites(participants: Path, prefix: str) -> None:
    """Give the hospital's sites their own names (both simulations number sites from 1)."""
    with participants.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows:
        return
    for row in rows:
        row["site"] = f"{prefix}-{row['site']}"
    with participants.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)


def run_demo(
    out: str | os.PathLike[str],
    *,
    subjects: int = 400,
    hospital_subjects: int = 160,
    seed: int = 0,
    echo: Callable[[str], None] | None = None,
) -> DemoResult:
    """Simulate, ingest, pretrain, transfer and report under ``out``.

    Parameters
    ----------
    out : path-like
        A new or empty folder.
    subjects : int, default 400
        People in the simulated public cohort (pretraining uses its controls).
    hospital_subjects : int, default 160
        People in the simulated hospital cohort (controls and patients, two sites).
    seed : int
    echo : callable, optional
        Receives one line per step.
    """
    from morphml.db import ingest
    from morphml.pipelines._fit import fit_pretrain
    from morphml.pipelines._transfer import fit_transfer
    from morphml.qc import qc_at_ingest
    from morphml.simulate import simulate_cohort

    say = echo or (lambda line: None)
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root} exists and is not empty; give a new folder with --out")
    if subjects < 100 or hospital_subjects < 60:
        raise ConfigError("the demo needs --subjects >= 100 (and 60 hospital subjects)")
    root.mkdir(parents=True, exist_ok=True)
    db, key = root / "morphml.duckdb", root / "pseudonym.key"
    result = DemoResult(root, db, root / "runs" / "pretrain", root / "runs" / "transfer")
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.seconds[name] = round(now - clock, 1)
        clock = now

    say(f"simulating {subjects} public and {hospital_subjects} hospital participants ...")
    public = simulate_cohort(root / "data" / "public", n_subjects=subjects, n_sites=6, seed=seed)
    hospital = simulate_cohort(
        root / "data" / "hospital", n_subjects=hospital_subjects, n_sites=2, seed=seed + 1
    )
    _rename_sites(hospital.participants, "hospital")
    lap("simulate")
    for name, cohort in (("public", public), ("hospital", hospital)):
        summary = ingest(
            [cohort.out], source=name, db=db, participants=cohort.participants,
            column_map=cohort.column_map, key_file=key, on_error="skip",
            quality_control=qc_at_ingest,
        )  # fmt: skip
        for line in summary.lines()[:2]:
            say(f"  {line}")
    lap("ingest")
    say("pretraining brain-age and sex models on the public controls ...")
    pretrain = parse_config({
        "kind": "pretrain", "name": "demo-pretrain",
        "cohort": {"sources": ["public"], "filters": {"diagnosis": ["control"]},
                   "qc": {"exclude": ["negative_value", "thickness_range", "missing_structure"]}},
        # DKT (FreeSurfer and FastSurfer both write it) thickness and volumes: ~190 features
        "features": {"atlases": ["DKT", "aseg", "global"], "measures": ["thickness", "volume"],
                     "max_missing": 0.0},
        "targets": ["age", "sex"],
        "models": {"age": ["ridge", "xgboost"], "sex": ["logistic"]},
        "tuning": {"trials": 3, "inner_folds": 3},
        "validation": {"schemes": ["kfold"], "folds": 5, "bootstrap": 500},
        "seed": seed, "device": "cpu",
    })  # fmt: skip
    pre = fit_pretrain(pretrain, db=db, out=result.pretrain_run)  # type: ignore[arg-type]
    for model, schemes in pre.metrics["targets"]["age"].items():
        m = schemes["kfold"]
        say(f"  age {model}: MAE {m['mae']:.2f} y [{m['mae_ci'][0]:.2f}, {m['mae_ci'][1]:.2f}]")
    for model, schemes in pre.metrics["targets"]["sex"].items():
        m = schemes["kfold"]
        say(f"  sex {model}: AUC {m['auc']:.3f} [{m['auc_ci'][0]:.3f}, {m['auc_ci'][1]:.3f}]")
    lap("pretrain")
    say("transferring to the hospital's patients vs controls ...")
    transfer = parse_config({
        "kind": "transfer", "name": "demo-transfer",
        "cohort": {"sources": ["hospital"], "filters": {"diagnosis": ["control", "patient"]},
                   "qc": {"exclude": ["negative_value", "thickness_range", "missing_structure"]}},
        "target": {"name": "diagnosis", "type": "binary", "positive": "patient"},
        "covariates": ["age", "sex", "site"],
        "protocol": {"folds": 5, "repeats": 3, "train_sizes": [40, "all"], "permutations": 20,
                     "n_jobs": 2},
        "seed": seed,
    })  # fmt: skip
    tr = fit_transfer(transfer, db=db, out=result.transfer_run, pretrained=result.pretrain_run)  # type: ignore[arg-type]
    result.lines.extend(tr.table.splitlines())
    lap("transfer")
    say("writing the reports ...")
    from morphml.reports import write_report

    for run, name in ((result.pretrain_run, "pretrain"), (result.transfer_run, "transfer")):
        result.reports.append(write_report(run, out=root / "reports" / f"{name}.html", db=db))
    lap("report")
    return result
