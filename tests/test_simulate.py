"""Tests for the cohort simulator (morphml.simulate)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from morphml.exceptions import StatsFileError
from morphml.io import load_column_map, read_subject, read_wide_table
from morphml.simulate import SimulationSummary, simulate_cohort
from morphml.simulate._calibration import load_calibration, natural_spline_basis
from morphml.simulate._design import draw_design
from morphml.simulate._features import CohortModel, Generated, ScanDesign

REPO = Path(__file__).resolve().parents[1]
CANARY = "zzcanary7q"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> SimulationSummary:
    out = tmp_path_factory.mktemp("sim") / "cohort"
    return simulate_cohort(out, n_subjects=40, n_sites=4, seed=7, canary=CANARY)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t" if path.suffix == ".tsv" else ","))


def _subject_folders(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if (p / "stats").is_dir())


def _scan_folder(out: Path, participant: str, session: str) -> Path:
    if not session:
        return out / participant
    candidates = [
        out / f"{participant}_{session}",
        out / f"{participant}_{session}.long.{participant}",
    ]
    found = [c for c in candidates if c.is_dir()]
    assert len(found) == 1, (participant, session, found)
    return found[0]


def test_every_folder_reads_except_the_planted_corrupt_files(cohort: SimulationSummary) -> None:
    corrupt_folders = {Path(c).parts[0] for c in cohort.corrupt_files}
    assert len(cohort.corrupt_files) >= 1
    sites = {r["site"]: r for r in _rows(cohort.truth.parent / "sites.csv")}
    truth = {r["folder"]: r for r in _rows(cohort.truth)}
    folders = _subject_folders(cohort.out)
    assert len(folders) == cohort.n_folders == cohort.n_scans + cohort.n_base_templates
    for folder in folders:
        if folder.name in corrupt_folders:
            with pytest.raises(StatsFileError):
                read_subject(folder)
            continue
        record = read_subject(folder)
        assert record.features["global.na.eTIV.volume"] > 0
        if folder.name in truth:
            site = sites[truth[folder.name]["site"]]
            expected = "FastSurfer" if site["software"] == "fastsurfer" else "FreeSurfer"
            assert record.software == expected
    softwares = {r["software"] for r in sites.values()}
    assert softwares <= {"freesurfer", "fastsurfer"} and len(sites) == 4


def test_participants_rows_match_folders(cohort: SimulationSummary) -> None:
    rows = _rows(cohort.participants)
    assert len(rows) == cohort.n_scans
    assert list(rows[0]) == [
        "participant_id",
        "session_id",
        "age",
        "sex",
        "site",
        "scanner",
        "diagnosis",
        "response",
        "clinical_score",
    ]
    scan_folders = {_scan_folder(cohort.out, r["participant_id"], r["session_id"]) for r in rows}
    assert len(scan_folders) == cohort.n_scans
    on_disk = set(_subject_folders(cohort.out))
    assert on_disk - scan_folders == {cohort.out / b for b in cohort.base_templates}
    assert {r["sex"] for r in rows} == {"1", "2"}
    for r in rows:
        assert (r["response"] == "") == (r["diagnosis"] == "control")


def test_column_map_reads_participants(cohort: SimulationSummary) -> None:
    cmap = load_column_map(cohort.column_map)
    assert cmap.sex is not None and cmap.sex.coding == {"1": "male", "2": "female"}
    table = read_wide_table(cohort.participants, cmap)
    part = table.participants
    assert len(part) == cohort.n_scans and table.features.shape[1] == 0
    rows = _rows(cohort.participants)
    assert list(part["sex"]) == ["M" if r["sex"] == "1" else "F" for r in rows]
    assert set(part["diagnosis"]) == {"control", "patient"}
    assert part["clinical_score"].dtype == np.float64
    assert set(part["response"].dropna()) <= {"responder", "non-responder"}


def test_both_session_forms_and_base_templates(cohort: SimulationSummary) -> None:
    names = [p.name for p in _subject_folders(cohort.out)]
    long_stream = [n for n in names if ".long." in n]
    bids = [n for n in names if "_ses-" in n and ".long." not in n]
    assert long_stream and bids
    for name in long_stream:
        base = name.split(".long.")[1]
        assert base in cohort.base_templates and (cohort.out / base / "stats").is_dir()
    rows = _rows(cohort.participants)
    assert not {b for b in cohort.base_templates} & {
        r["participant_id"] for r in rows if not r["session_id"]
    }
    assert cohort.n_sessions == sum(1 for r in rows if r["session_id"])


def test_truth_lies_outside_subject_folders(cohort: SimulationSummary) -> None:
    truth_dir = cohort.truth.parent
    assert truth_dir == cohort.out / "truth" and not (truth_dir / "stats").exists()
    rows = _rows(cohort.truth)
    assert len(rows) == cohort.n_scans
    assert [r["folder"] for r in rows if r["qc_failure"] == "1"] == list(cohort.qc_failures)
    assert sorted(r["corrupt_file"] for r in rows if r["corrupt_file"]) == sorted(
        cohort.corrupt_files
    )
    assert "sitefree:aparc.lh.superiortemporal.thickness" in rows[0]


def test_qc_failures_have_high_euler_counts(cohort: SimulationSummary) -> None:
    assert cohort.qc_failures
    for folder in cohort.qc_failures:
        holes = read_subject(cohort.out / folder).features["global.na.SurfaceHoles.count"]
        assert holes >= 600


def test_canary_only_in_identifying_headers(cohort: SimulationSummary) -> None:
    folder = cohort.out / "sub-0001"
    text = "".join(p.read_text() for p in (folder / "stats").iterdir())
    assert CANARY in text
    record = read_subject(folder)
    assert CANARY not in repr(record)
    assert CANARY not in cohort.participants.read_text()


def test_both_corruption_modes_raise(tmp_path: Path) -> None:
    summary = simulate_cohort(
        tmp_path / "c", n_subjects=10, n_sites=2, seed=3, corrupt_fraction=0.3, qc_fail_fraction=0
    )
    assert len(summary.corrupt_files) == 3 and not summary.qc_failures
    for rel in summary.corrupt_files:
        with pytest.raises(StatsFileError):
            read_subject(summary.out / Path(rel).parts[0])
    text = (summary.truth.parent / "outcomes.json").read_text()
    assert "truncated" in text and "replaced by" in text


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"n_subjects": 12, "n_sites": 3, "longitudinal_fraction": 0.3}
    first = _tree(simulate_cohort(tmp_path / "a", seed=5, **kwargs).out)
    second = _tree(simulate_cohort(tmp_path / "b", seed=5, **kwargs).out)
    other = _tree(simulate_cohort(tmp_path / "c", seed=6, **kwargs).out)
    assert first == second
    assert first.get("participants.tsv") != other.get("participants.tsv")
    assert first.get("sub-0001/stats/aseg.stats") != other.get("sub-0001/stats/aseg.stats")


@pytest.mark.parametrize("layout", ["freesurfer", "fastsurfer"])
def test_layouts(tmp_path: Path, layout: str) -> None:
    summary = simulate_cohort(tmp_path / layout, n_subjects=8, n_sites=3, seed=1, layout=layout)
    software = {r["software"] for r in _rows(summary.truth.parent / "sites.csv")}
    assert software == {layout}
    if layout == "fastsurfer":
        assert not summary.base_templates


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_subjects": 2, "n_sites": 3}, "n_subjects"),
        ({"layout": "freesurfer6"}, "layout"),
        ({"corrupt_fraction": 1.5}, "corrupt_fraction"),
        ({"canary": "has space"}, "canary"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_parameters(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        simulate_cohort(tmp_path / "x", **kwargs)


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        simulate_cohort(tmp_path, n_subjects=4, n_sites=2)


# --------------------------------------------------------------------------- the model itself


def _generate(n: int, n_sites: int, seed: int) -> tuple[ScanDesign, Generated, CohortModel]:
    """One scan per participant, the same age and sex mix at every site."""
    rng = np.random.default_rng(seed)
    model = CohortModel(load_calibration(), n_sites, rng)
    design = ScanDesign(
        participant=np.arange(n),
        age=rng.uniform(20, 80, n),
        male=(rng.random(n) < 0.5).astype(float),
        site=np.arange(n) % n_sites,
        patient=rng.random(n) < 0.5,
        n_participants=n,
    )
    return design, model.generate(design, rng), model


@pytest.fixture(scope="module")
def generated() -> tuple[ScanDesign, Generated, CohortModel]:
    return _generate(3000, 6, 11)


def _column(gen: Generated, key: str) -> np.ndarray:
    return gen.values[:, gen.keys.index(key)]


def test_site_effects_visible(generated: tuple[ScanDesign, Generated, CohortModel]) -> None:
    design, gen, _ = generated
    values = _column(gen, "global.lh.MeanThickness.thickness")
    groups = [values[design.site == s] for s in range(6)]
    between = np.var([g.mean() for g in groups], ddof=1)
    within = np.mean([g.var(ddof=1) / len(g) for g in groups])
    assert between > 10 * within  # an F statistic far above 1
    # the site-free truth has no such spread
    free = gen.sitefree[:, gen.latent_keys.index("global.lh.MeanThickness.thickness")]
    free_means = [free[design.site == s].mean() for s in range(6)]
    assert np.var(free_means, ddof=1) < between / 5


def test_thickness_declines_with_age(generated: tuple[ScanDesign, Generated, CohortModel]) -> None:
    design, gen, _ = generated
    for hemi in ("lh", "rh"):
        values = _column(gen, f"global.{hemi}.MeanThickness.thickness")
        assert np.polyfit(design.age, values, 1)[0] < -0.002  # mm per year


def test_patients_follow_enigma_effects(
    generated: tuple[ScanDesign, Generated, CohortModel],
) -> None:
    design, gen, model = generated
    diagnosis = model.cal.diagnosis
    observed, expected = [], []
    for fid, d in diagnosis.items():
        values = _column(gen, fid)
        if fid.startswith("aseg."):
            values = np.log(values)
        patients, controls = values[design.patient], values[~design.patient]
        pooled = np.sqrt((patients.var(ddof=1) + controls.var(ddof=1)) / 2)
        observed.append((patients.mean() - controls.mean()) / pooled)
        expected.append(d)
    observed_d, expected_d = np.array(observed), np.array(expected)
    assert np.corrcoef(observed_d, expected_d)[0, 1] > 0.5
    hippocampus = list(diagnosis).index("aseg.na.Left-Hippocampus.volume")
    assert observed_d[hippocampus] < -0.15
    thickness = [i for i, f in enumerate(diagnosis) if f.endswith(".thickness")]
    assert observed_d[thickness].mean() < -0.1


def test_globals_consistent_with_regions(
    generated: tuple[ScanDesign, Generated, CohortModel],
) -> None:
    _, gen, _ = generated
    areas = [k for k in gen.keys if k.startswith("aparc.lh.") and k.endswith(".area")]
    total = gen.values[:, [gen.keys.index(k) for k in areas]].sum(axis=1)
    np.testing.assert_allclose(_column(gen, "global.lh.WhiteSurfArea.area"), total)
    assert np.all(
        _column(gen, "global.na.BrainSegVol.volume")
        < _column(gen, "global.na.MaskVol.volume") * 1.2
    )


def test_design_site_sizes_and_sessions() -> None:
    design = draw_design(np.random.default_rng(0), 50, 5, "mixed", 0.2)
    assert {s.site for s in design.scans} == set(range(5))
    assert sum(1 for s in design.scans if s.session == 0) == 50
    assert all(s.age >= 16 for s in design.scans)
    assert all(s.age >= 18 for s in design.scans if s.patient)


def test_spline_is_linear_beyond_the_boundary_knots() -> None:
    ages = np.array([90.0, 100.0, 110.0])
    basis = natural_spline_basis(ages, [20, 40, 60, 80])
    np.testing.assert_allclose(np.diff(basis, n=2, axis=0), 0.0, atol=1e-9)


def test_calibration_file_is_up_to_date(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The embedded coefficients are what tools/calibrate_simulator.py gives on the real data."""
    spec = importlib.util.spec_from_file_location(
        "calibrate", REPO / "tools" / "calibrate_simulator.py"
    )
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--check", "--data", str(shared_data)]) == 0, capsys.readouterr().out
