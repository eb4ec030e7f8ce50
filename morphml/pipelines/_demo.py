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

from morphml._utils import limit_threads
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
    say = echo or (lambda line: None)
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root} exists and is not empty; give a new folder with --out")
    if subjects < 100 or hospital_subjects < 60:
        raise ConfigError("the demo needs --subjects >= 100 (and 60 hospital subjects)")
    root.mkdir(parents=True, exist_ok=True)
    result = DemoResult(
        root, root / "morphml.duckdb", root / "runs" / "pretrain", root / "runs" / "transfer"
    )
    steps: list[tuple[str, Callable[[], None]]] = [
        ("simulate", lambda: _simulate(result, subjects, hospital_subjects, seed, say)),
        ("ingest", lambda: _ingest(result, say)),
        ("pretrain", lambda: _pretrain(result, seed, say)),
        ("transfer", lambda: _transfer(result, seed, say)),
        ("report", lambda: _report(result, say)),
    ]
    # the demo's matrices are small (a few hundred scans x ~190 features): one BLAS thread
    # (parallel sections divide the cores among their workers as before)
    with limit_threads(1, user_api="blas"):
        for name, step in steps:
            started = time.perf_counter()
            step()
            result.seconds[name] = round(time.perf_counter() - started, 1)
    return result


def _cohort_folders(result: DemoResult) -> dict[str, Path]:
    return {"public": result.out / "data" / "public", "hospital": result.out / "data" / "hospital"}


def _simulate(
    result: DemoResult, subjects: int, hospital_subjects: int, seed: int,
    say: Callable[[str], None],
) -> None:  # fmt: skip
    """Simulate the public and the hospital cohorts' stats folders."""
    from morphml.simulate import simulate_cohort

    say(f"simulating {subjects} public and {hospital_subjects} hospital participants ...")
    folders = _cohort_folders(result)
    simulate_cohort(folders["public"], n_subjects=subjects, n_sites=6, seed=seed)
    hospital = simulate_cohort(
        folders["hospital"], n_subjects=hospital_subjects, n_sites=2, seed=seed + 1
    )
    _rename_sites(hospital.participants, "hospital")


def _ingest(result: DemoResult, say: Callable[[str], None]) -> None:
    """Ingest both cohorts into one database (one pseudonym key)."""
    from morphml.db import ingest
    from morphml.qc import qc_at_ingest

    for name, folder in _cohort_folders(result).items():  # as the simulator wrote them
        summary = ingest(
            [folder], source=name, db=result.db, participants=folder / "participants.tsv",
            column_map=folder / "participants.yaml", key_file=result.out / "pseudonym.key",
            on_error="skip", quality_control=qc_at_ingest,
        )  # fmt: skip
        for line in summary.lines()[:2]:
            say(f"  {line}")


def _pretrain(result: DemoResult, seed: int, say: Callable[[str], None]) -> None:
    """Pretrain brain-age and sex models on the public controls; say their kfold metrics."""
    from morphml.pipelines._fit import fit_pretrain

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
    pre = fit_pretrain(pretrain, db=result.db, out=result.pretrain_run)  # type: ignore[arg-type]
    for model, schemes in pre.metrics["targets"]["age"].items():
        m = schemes["kfold"]
        say(f"  age {model}: MAE {m['mae']:.2f} y [{m['mae_ci'][0]:.2f}, {m['mae_ci'][1]:.2f}]")
    for model, schemes in pre.metrics["targets"]["sex"].items():
        m = schemes["kfold"]
        say(f"  sex {model}: AUC {m['auc']:.3f} [{m['auc_ci'][0]:.3f}, {m['auc_ci'][1]:.3f}]")


def _transfer(result: DemoResult, seed: int, say: Callable[[str], None]) -> None:
    """Transfer the pretrained models to the hospital's patients-vs-controls question."""
    from morphml.pipelines._transfer import fit_transfer

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
    tr = fit_transfer(
        transfer,  # type: ignore[arg-type]
        db=result.db, out=result.transfer_run, pretrained=result.pretrain_run,
    )  # fmt: skip
    result.lines.extend(tr.table.splitlines())


def _report(result: DemoResult, say: Callable[[str], None]) -> None:
    """Render the pretraining and transfer reports."""
    from morphml.reports import write_report

    say("writing the reports ...")
    for run, name in ((result.pretrain_run, "pretrain"), (result.transfer_run, "transfer")):
        out = result.out / "reports" / f"{name}.html"
        result.reports.append(write_report(run, out=out, db=result.db))
