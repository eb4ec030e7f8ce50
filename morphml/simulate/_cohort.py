"""``simulate_cohort``: a multi-site cohort written as FreeSurfer / FastSurfer stats folders."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from morphml.simulate._calibration import load_calibration
from morphml.simulate._damage import corrupt_file, qc_failure
from morphml.simulate._design import LAYOUTS, CohortDesign, Scan, draw_design, identifying
from morphml.simulate._features import CohortModel, Generated, ScanDesign
from morphml.simulate._outcomes import (
    CLINICAL_INTERCEPT,
    CLINICAL_MISSING,
    CLINICAL_NOISE,
    CLINICAL_PATIENT_SHIFT,
    CLINICAL_WEIGHTS,
    RESPONSE_NOISE,
    RESPONSE_WEIGHTS,
    clinical_score,
    response_liability,
    response_threshold,
)
from morphml.simulate._template import flavor_keys
from morphml.simulate._writer import write_subject_stats

__all__ = ["SimulationSummary", "simulate_cohort"]

#: participants generated together (bounds memory; part of the seed's meaning: changing it
#: changes the draws)
_BATCH = 256
#: latent features whose site-free values go to the ground truth
_TRUTH_PREFIXES = ("global.", "aparc.", "aseg.")
_PARTICIPANT_COLUMNS = (
    "participant_id",
    "session_id",
    "age",
    "sex",
    "site",
    "scanner",
    "diagnosis",
    "response",
    "clinical_score",
)
_CANARY = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class SimulationSummary:
    """What :func:`simulate_cohort` wrote.

    Attributes
    ----------
    out : Path
        The cohort folder.
    n_subjects : int
        Participants.
    n_scans : int
        Scans (rows of ``participants.tsv``; one subject folder each).
    n_sessions : int
        Scans that carry a session id (participants with several sessions).
    n_longitudinal : int
        Participants with several sessions.
    n_base_templates : int
        FreeSurfer longitudinal base-template folders (not scans; to be skipped on ingest).
    n_folders : int
        Subject folders written (scans + base templates).
    n_files : int
        Stats files written.
    corrupt_files : tuple of str
        Damaged stats files, relative to ``out`` (POSIX separators).
    qc_failures : tuple of str
        Folders of the scans planted to fail QC.
    base_templates : tuple of str
        Base-template folders.
    participants : Path
        ``participants.tsv``.
    column_map : Path
        ``participants.yaml``, the column map that reads it.
    truth : Path
        ``truth/ground_truth.csv``; the other truth files lie beside it.
    sites : tuple of str
        ``site01: FreeSurfer 7.4.1, Siemens Prisma 3T`` ... one line per site.
    """

    out: Path
    n_subjects: int
    n_scans: int
    n_sessions: int
    n_longitudinal: int
    n_base_templates: int
    n_folders: int
    n_files: int
    corrupt_files: tuple[str, ...]
    qc_failures: tuple[str, ...]
    base_templates: tuple[str, ...]
    participants: Path
    column_map: Path
    truth: Path
    sites: tuple[str, ...]


def _check(params: dict[str, Any]) -> None:
    n_subjects, n_sites, seed = params["n_subjects"], params["n_sites"], params["seed"]
    layout, canary = params["layout"], params["canary"]
    fractions = {k: v for k, v in params.items() if k.endswith("_fraction")}
    if isinstance(n_sites, bool) or not isinstance(n_sites, int) or n_sites < 1:
        raise ValueError(
            f"The 'n_sites' parameter of simulate_cohort must be an int >= 1. Got {n_sites!r}."
        )
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, int) or n_subjects < n_sites:
        raise ValueError(
            f"The 'n_subjects' parameter of simulate_cohort must be an int >= n_sites "
            f"({n_sites}): every site needs a participant. Got {n_subjects!r}."
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(
            f"The 'seed' parameter of simulate_cohort must be an int >= 0. Got {seed!r}."
        )
    if layout not in LAYOUTS:
        raise ValueError(
            f"The 'layout' parameter of simulate_cohort must be one of {sorted(LAYOUTS)}. "
            f"Got {layout!r}."
        )
    for name, value in fractions.items():
        if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(
                f"The '{name}' parameter of simulate_cohort must be a number in [0, 1]. "
                f"Got {value!r}."
            )
    if canary is not None and not _CANARY.match(canary):
        raise ValueError(
            f"The 'canary' parameter of simulate_cohort must be letters, digits, '_', '.' or "
            f"'-' (it is planted inside paths and host names). Got {canary!r}."
        )


def _count(fraction: float, n: int) -> int:
    """At least one when the fraction is positive, so a small cohort still has one."""
    return 0 if fraction <= 0 else max(1, round(fraction * n))


def simulate_cohort(
    out: str | Path,
    *,
    n_subjects: int = 500,
    n_sites: int = 6,
    seed: int = 0,
    layout: str = "mixed",
    corrupt_fraction: float = 0.005,
    qc_fail_fraction: float = 0.01,
    longitudinal_fraction: float = 0.1,
    canary: str | None = None,
) -> SimulationSummary:
    """Write a realistic multi-site cohort as FreeSurfer / FastSurfer stats folders.

    Each site runs one software (FreeSurfer 5.3, 6.0, 7.4.1, 8.2.0 or FastSurfer) on one
    scanner. Features follow age, sex and eTIV curves and site effects (additive offsets and
    residual scales) fitted on fcon1000 and IXI, with schizophrenia effect sizes from ENIGMA
    for the patients; a treatment response and a clinical score depend linearly on a few
    features. A few scans fail QC and a few files are corrupt. The ground truth goes to
    ``out/truth/``, which holds no stats folder. See the package docstring for the layout.

    Parameters
    ----------
    out : str or Path
        Output folder; created, and must be empty if it exists.
    n_subjects : int, default 500
        Participants (at least ``n_sites``). Some have several sessions, so there are more
        scans than participants.
    n_sites : int, default 6
    seed : int, default 0
        The same seed writes the same bytes.
    layout : {"mixed", "freesurfer", "fastsurfer"}, default "mixed"
        Software drawn per site: FreeSurfer versions and FastSurfer, FreeSurfer only, or
        FastSurfer only.
    corrupt_fraction : float, default 0.005
        Share of scans with one corrupt stats file (at least one when positive).
    qc_fail_fraction : float, default 0.01
        Share of scans planted to fail QC (at least one when positive).
    longitudinal_fraction : float, default 0.1
        Share of participants with 2 or 3 sessions.
    canary : str, optional
        A string planted in every identifying header field (host, user, paths, subject name,
        times), for tests that it never reaches a database, log or report.

    Returns
    -------
    SimulationSummary

    Raises
    ------
    ValueError
        A parameter is out of range.
    FileExistsError
        ``out`` exists and is not empty.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     summary = simulate_cohort(Path(tmp) / "cohort", n_subjects=12, n_sites=3, seed=1)
    ...     summary.n_subjects, summary.participants.name
    (12, 'participants.tsv')
    """
    params = _params(n_subjects, n_sites, seed, layout, corrupt_fraction, qc_fail_fraction,
                     longitudinal_fraction, canary)  # fmt: skip
    _check(params)
    out = _new_folder(Path(out))

    root = np.random.default_rng(seed)
    rng_design, rng_sites, rng_batches, rng_damage = root.spawn(4)
    calibration = load_calibration()
    design = draw_design(rng_design, n_subjects, n_sites, layout, longitudinal_fraction)
    model = CohortModel(calibration, n_sites, rng_sites)
    batch_seed = int(rng_batches.integers(2**63))
    damage_seed = int(rng_damage.integers(2**63))

    n_scans = len(design.scans)
    order = rng_damage.permutation(n_scans)  # scans planted to fail QC, then corrupt ones
    qc_set = set(order[: _count(qc_fail_fraction, n_scans)].tolist())
    corrupt_set = set(order[len(qc_set) :][: _count(corrupt_fraction, n_scans)].tolist())

    writer = _Writer(out, design, model, canary)
    for start in range(0, n_subjects, _BATCH):
        participants = range(start, min(start + _BATCH, n_subjects))
        rng = np.random.default_rng([batch_seed, start])
        writer.batch(design.scans_of(participants), participants, rng, qc_set, damage_seed)

    corrupt, details = _corrupt(out, design, writer, corrupt_set, damage_seed)
    participants_path = out / "participants.tsv"
    participants_path.write_text(writer.participants_tsv(), encoding="utf-8", newline="\n")
    map_path = out / "participants.yaml"
    map_path.write_text(_COLUMN_MAP, encoding="utf-8", newline="\n")
    truth = _write_truth(out / "truth", design, model, writer, corrupt, details, params)

    paths = (participants_path, map_path, truth)
    return _summary(out, n_subjects, design, writer, corrupt, qc_set, paths)


def _new_folder(out: Path) -> Path:
    """``out``, created; refused when it exists and is not an empty folder."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"{out} exists and is not an empty folder; simulate_cohort writes a whole cohort "
            "and never mixes it with other files. Choose a new folder or remove this one."
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _corrupt(
    out: Path, design: CohortDesign, writer: _Writer, corrupt_set: set[int], damage_seed: int
) -> tuple[list[str], dict[str, str]]:
    """Damage one stats file of each chosen scan; (relative paths, how each was damaged)."""
    corrupt: list[str] = []
    details: dict[str, str] = {}
    for k, index in enumerate(sorted(corrupt_set)):
        scan = design.scans[index]
        rng = np.random.default_rng([damage_seed, 1, index])
        mode = "truncated" if k % 2 == 0 else "garbage"
        path, how = corrupt_file(rng, writer.paths[scan.folder], mode)
        rel = path.relative_to(out).as_posix()
        corrupt.append(rel)
        details[rel] = how
        writer.truth[index]["corrupt_file"] = rel
    return corrupt, details


def _summary(
    out: Path,
    n_subjects: int,
    design: CohortDesign,
    writer: _Writer,
    corrupt: list[str],
    qc_set: set[int],
    paths: tuple[Path, Path, Path],
) -> SimulationSummary:
    participants_path, map_path, truth = paths
    n_scans = len(design.scans)
    n_sessions = sum(1 for s in design.scans if s.session_id)
    return SimulationSummary(
        out=out,
        n_subjects=n_subjects,
        n_scans=n_scans,
        n_sessions=n_sessions,
        n_longitudinal=len({s.participant for s in design.scans if s.session_id}),
        n_base_templates=len(design.bases),
        n_folders=len(writer.paths),
        n_files=sum(len(p) for p in writer.paths.values()),
        corrupt_files=tuple(corrupt),
        qc_failures=tuple(design.scans[i].folder for i in sorted(qc_set)),
        base_templates=tuple(sorted(design.bases)),
        participants=participants_path,
        column_map=map_path,
        truth=truth,
        sites=tuple(f"{s.name}: {s.label}, {s.scanner}" for s in design.sites),
    )


def _params(*values: Any) -> dict[str, Any]:
    names = (
        "n_subjects",
        "n_sites",
        "seed",
        "layout",
        "corrupt_fraction",
        "qc_fail_fraction",
        "longitudinal_fraction",
        "canary",
    )
    return dict(zip(names, values, strict=True))


class _Writer:
    """Writes batches of scans and keeps what the participants and truth files need."""

    def __init__(
        self, out: Path, design: CohortDesign, model: CohortModel, canary: str | None
    ) -> None:
        self.out = out
        self.design = design
        self.model = model
        self.canary = canary
        self.paths: dict[str, list[Path]] = {}
        self.rows: dict[int, dict[str, str]] = {}
        self.truth: dict[int, dict[str, Any]] = {}
        self.columns: dict[tuple[str, str], np.ndarray] = {}
        self.threshold = response_threshold(model.cal.diagnosis)
        self.truth_fids = [f for f in model.fids if f.startswith(_TRUTH_PREFIXES)]

    def _columns(self, gen: Generated, software: str, version: str) -> np.ndarray:
        key = (software, version)
        if key not in self.columns:
            index = {k: i for i, k in enumerate(gen.keys)}
            self.columns[key] = np.array([index[k] for k in flavor_keys(software, version)])
        return self.columns[key]

    def features(self, gen: Generated, row: np.ndarray, i: int, site_index: int) -> dict:
        site = self.design.sites[site_index]
        keys = flavor_keys(site.software, site.version)
        values = row[self._columns(gen, site.software, site.version)].tolist()
        features = dict(zip(keys, values, strict=True))
        if site.software == "freesurfer" and site.version.startswith("8."):
            for key, column in gen.fs8.items():
                if key in features:
                    features[key] = float(column[i])
        return features

    def write(self, folder: str, features: dict, site_index: int, when: Any) -> None:
        site = self.design.sites[site_index]
        self.paths[folder] = write_subject_stats(
            self.out / folder / "stats",
            features,
            software=site.software,
            version=site.version,
            identifying=identifying(site, folder, when, self.canary),
            fastsurfer_version=site.fastsurfer_version,
        )

    def batch(
        self,
        scans: Sequence[Scan],
        participants: range,
        rng: np.random.Generator,
        qc_set: set[int],
        damage_seed: int,
    ) -> None:
        local = np.array([s.participant - participants.start for s in scans])
        design = ScanDesign(
            participant=local,
            age=np.array([s.age for s in scans]),
            male=np.array([s.male for s in scans], dtype=float),
            site=np.array([s.site for s in scans]),
            patient=np.array([s.patient for s in scans]),
            n_participants=len(participants),
        )
        gen = self.model.generate(design, rng)
        col = {f: i for i, f in enumerate(gen.latent_keys)}
        deviation = {f: gen.deviation[:, col[f]] for f in (*RESPONSE_WEIGHTS, *CLINICAL_WEIGHTS)}
        signal, liability = response_liability(rng, deviation)
        first: dict[int, int] = {}
        for i, s in enumerate(scans):
            first.setdefault(s.participant, i)
        clinical_signal, clinical = clinical_score(rng, deviation, design.patient)
        for i, scan in enumerate(scans):
            features = self.features(gen, gen.values[i], i, scan.site)
            qc: list[str] = []
            if scan.index in qc_set:
                qc = qc_failure(np.random.default_rng([damage_seed, 0, scan.index]), features)
            self.write(scan.folder, features, scan.site, scan.date)
            j = first[scan.participant]
            responder = bool(liability[j] > self.threshold)
            response = ("responder" if responder else "non-responder") if scan.patient else ""
            score = "" if np.isnan(clinical[i]) else f"{clinical[i]:.2f}"
            site = self.design.sites[scan.site]
            self.rows[scan.index] = {
                "participant_id": scan.participant_id,
                "session_id": scan.session_id,
                "age": f"{scan.age:.2f}",
                "sex": "1" if scan.male else "2",
                "site": site.name,
                "scanner": site.scanner,
                "diagnosis": "patient" if scan.patient else "control",
                "response": response,
                "clinical_score": score,
            }
            truth: dict[str, Any] = {
                "folder": scan.folder,
                "base_template": scan.base or "",
                "software": site.software,
                "version": site.fastsurfer_version
                if site.software == "fastsurfer"
                else site.version,
                "response_signal": float(signal[j]) if scan.patient else np.nan,
                "response_liability": float(liability[j]) if scan.patient else np.nan,
                "clinical_signal": float(clinical_signal[i]),
                "qc_failure": int(bool(qc)),
                "qc_changes": "; ".join(qc),
                "corrupt_file": "",
            }
            for f in self.truth_fids:
                truth[f"sitefree:{f}"] = float(gen.sitefree[i, col[f]])
            for f in deviation:
                truth[f"deviation:{f}"] = float(deviation[f][i])
            self.truth[scan.index] = truth
        position = {s.index: i for i, s in enumerate(scans)}
        for base, members in self.design.bases.items():
            if members[0] not in position:
                continue
            rows = [position[m] for m in members]
            scan = scans[rows[0]]
            mean = gen.values[rows].mean(axis=0)
            features = self.features(gen, mean, rows[0], scan.site)
            self.write(base, features, scan.site, scans[rows[-1]].date)

    def participants_tsv(self) -> str:
        buffer = io.StringIO()
        w = csv.writer(buffer, delimiter="\t", lineterminator="\n")
        w.writerow(_PARTICIPANT_COLUMNS)
        for index in sorted(self.rows):
            row = self.rows[index]
            w.writerow([row[c] for c in _PARTICIPANT_COLUMNS])
        return buffer.getvalue()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.6g}"
    return str(value)


def _csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    w = csv.writer(buffer, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([_fmt(v) for v in row])
    path.write_text(buffer.getvalue(), encoding="utf-8", newline="\n")


def _write_truth(
    folder: Path,
    design: CohortDesign,
    model: CohortModel,
    writer: _Writer,
    corrupt: list[str],
    details: dict[str, str],
    params: dict[str, Any],
) -> Path:
    folder.mkdir()
    ground_truth = _write_ground_truth(folder, writer)
    _write_effects(folder, model)
    _write_sites(folder, design, model)
    outcomes = _outcomes(design, writer, details, params)
    text = json.dumps(outcomes, indent=1, sort_keys=True) + "\n"
    (folder / "outcomes.json").write_text(text, encoding="utf-8", newline="\n")
    return ground_truth


def _write_ground_truth(folder: Path, writer: _Writer) -> Path:
    """``ground_truth.csv``: one row per scan, its participant columns and what was planted."""
    first = writer.truth[0]
    columns = [
        "participant_id",
        "session_id",
        "site",
        "age",
        "sex",
        "diagnosis",
        "response",
        "clinical_score",
        *first,
    ]
    rows = []
    for index in sorted(writer.truth):
        part = writer.rows[index]
        rows.append([part[c] for c in columns[:8]] + list(writer.truth[index].values()))
    ground_truth = folder / "ground_truth.csv"
    _csv(ground_truth, columns, rows)
    return ground_truth


def _write_effects(folder: Path, model: CohortModel) -> None:
    """``effects.csv``: per feature, its calibration, patient shift, site spread and weights."""
    cal = model.cal
    effects = []
    for i, fid in enumerate(model.fids):
        m = cal.features[fid]
        effects.append(
            [
                fid,
                m["source"],
                m["transform"],
                cal.diagnosis.get(fid, np.nan),
                model.dx[i],
                m["sigma"],
                m["tau"],
                m["omega"],
                RESPONSE_WEIGHTS.get(fid, 0.0),
                CLINICAL_WEIGHTS.get(fid, 0.0),
            ]
        )
    _csv(
        folder / "effects.csv",
        [
            "feature",
            "calibrated_on",
            "scale",
            "enigma_d",
            "patient_shift",
            "sigma",
            "site_tau",
            "site_omega",
            "response_weight",
            "clinical_weight",
        ],
        effects,
    )


def _write_sites(folder: Path, design: CohortDesign, model: CohortModel) -> None:
    """``sites.csv`` (software, scanner, scans, ages per site) and ``site_effects.csv``."""
    counts = np.bincount([s.site for s in design.scans], minlength=len(design.sites))
    _csv(
        folder / "sites.csv",
        [
            "site",
            "software",
            "freesurfer_version",
            "fastsurfer_version",
            "scanner",
            "longitudinal_stream",
            "n_scans",
            "patient_fraction",
            "age_mean",
            "age_sd",
        ],
        [
            [
                s.name,
                s.software,
                s.version,
                s.fastsurfer_version if s.software == "fastsurfer" else "",
                s.scanner,
                int(s.long_stream),
                int(counts[j]),
                s.patient_fraction,
                s.age_mean,
                s.age_sd,
            ]
            for j, s in enumerate(design.sites)
        ],
    )
    _csv(
        folder / "site_effects.csv",
        ["site", "feature", "gamma", "delta"],
        [
            [s.name, f, float(model.gamma[j, i]), float(model.delta[j, i])]
            for j, s in enumerate(design.sites)
            for i, f in enumerate(model.fids)
        ],
    )


def _outcomes(
    design: CohortDesign, writer: _Writer, details: dict[str, str], params: dict[str, Any]
) -> dict[str, Any]:
    """What ``outcomes.json`` records: parameters, the outcome rules, the planted damage."""
    calibration = resources.files("morphml.simulate").joinpath("data/calibration.json")
    return {
        "parameters": params,
        "calibration_sha256": hashlib.sha256(calibration.read_bytes()).hexdigest(),
        "scales": "features are modelled on log1p(volume / count) and raw thickness; "
        "'deviation' = (site-free value - norm(age, sex, eTIV)) / sigma on that scale",
        "response": {
            "who": "patients; from the deviations at the participant's first session",
            "rule": "responder if sum(weight * deviation) + N(0, noise) > threshold",
            "weights": RESPONSE_WEIGHTS,
            "noise": RESPONSE_NOISE,
            "threshold": writer.threshold,
        },
        "clinical_score": {
            "who": "every scan",
            "rule": "intercept + sum(weight * deviation) + patient_shift * patient + N(0, noise)",
            "intercept": CLINICAL_INTERCEPT,
            "weights": CLINICAL_WEIGHTS,
            "patient_shift": CLINICAL_PATIENT_SHIFT,
            "noise": CLINICAL_NOISE,
            "missing_fraction": CLINICAL_MISSING,
        },
        "corrupt_files": details,
        "qc_failures": [
            writer.truth[i]["folder"]
            for i in sorted(writer.truth)
            if writer.truth[i]["qc_failure"]
        ],
        "base_templates": {
            b: [design.scans[i].folder for i in m] for b, m in design.bases.items()
        },
    }


_COLUMN_MAP = """\
# Column map for participants.tsv of a cohort written by `morphml simulate`
# (morphml.simulate.simulate_cohort). One row per scan; a participant with several sessions has
# one row per session. Subject folders are named from participant_id and session_id:
#   sub-0001                      cross-sectional scan (session_id empty)
#   sub-0002_ses-1                a session processed on its own (BIDS-like / FastSurfer)
#   sub-0003_ses-1.long.sub-0003  FreeSurfer longitudinal stream; the folder sub-0003 beside it
#                                 is the base template (no row here; skip it)
# The ground truth is in truth/ (no stats folder; never ingested).
description: simulated multi-site cohort (morphml simulate), participants and phenotypes

id: participant_id
session: session_id
age: age            # years at this scan
delimiter: tab

# Coded 1 = male, 2 = female on purpose (as IXI and ENIGMA do): a map must state its coding.
sex:
  column: sex
  coding: {1: male, 2: female}

site: site

phenotypes:
  scanner:
    column: scanner
    type: categorical
    description: scanner model and field strength of the site
  diagnosis:
    column: diagnosis
    type: binary
    levels: [control, patient]
    description: patient = schizophrenia-like (ENIGMA effect sizes), control = healthy
  response:
    column: response
    type: binary
    levels: [responder, non-responder]
    description: treatment response of patients (empty for controls)
  clinical_score:
    column: clinical_score
    type: continuous
    description: a continuous clinical measure (e.g. a neurotransmitter level, arbitrary units)
"""
