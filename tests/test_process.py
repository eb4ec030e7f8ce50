"""morphml process: BIDS discovery, plans, command lines, Dask runs, resume, failures, privacy.

FastSurfer and FreeSurfer cannot be installed here, so the runs use the stand-ins in
tests/standin/ (same arguments and refusals as the real programs, FastSurfer/FreeSurfer-format
stats written with morphml's fixture writer, a configurable delay, failures on request).
"""

from __future__ import annotations

import itertools
import json
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from morphml.cli import cli
from morphml.exceptions import ProcessingError
from morphml.io import read_subject
from morphml.process import (
    STATE_DIR,
    EngineSettings,
    engine_steps,
    find_t1w,
    parse_version,
    process,
    read_marker,
)
from tests.conftest import needs_dask

# processing always runs on a Dask cluster (a local one by default); without the scale extra
# the whole module skips, saying why
pytestmark = needs_dask

STANDIN = Path(__file__).resolve().parent / "standin"
FASTSURFER = str(STANDIN / "run_fastsurfer.sh")
RECON_ALL = str(STANDIN / "recon-all")
ROOT = os.geteuid() == 0

# Documented options (see morphml/process/_engines.py for the sources):
# FastSurfer run_fastsurfer.sh usage text and doc/overview/FLAGS.md (Deep-MI/FastSurfer 2.x)
FASTSURFER_VALUE_FLAGS = {
    "--sid", "--sd", "--t1", "--device", "--viewagg_device", "--threads", "--fs_license",
    "--vox_size", "--batch", "--py", "--seg_log", "--conformed_name", "--asegdkt_segfile",
}  # fmt: skip
FASTSURFER_SWITCHES = {
    "--seg_only", "--surf_only", "--parallel", "--3T", "--allow_root", "--no_cereb",
    "--no_hypothal", "--no_biasfield", "--tal_reg", "--fsaparc", "--no_surfreg", "--no_fs_T1",
}  # fmt: skip
# recon-all's argument parser (freesurfer/freesurfer scripts/recon-all)
RECON_VALUE_FLAGS = {"-s", "-sid", "-subjid", "-subject", "-i", "-sd", "-openmp", "-threads"}
RECON_SWITCHES = {"-all", "-autorecon-all", "-parallel", "-3T"}
_DATE = re.compile(
    r"\d{4}-\d{2}-\d{2}|\d{4}/\d{2}/\d{2}|\b(Mon|Tue|Wed|Thu|Fri|Sat|Sun),? "
    r"|\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +\d{1,2}\b"
)


def make_bids(root: Path, layout: dict[str, dict[str | None, list[str]]]) -> Path:
    """layout: subject -> session (None: no sessions) -> file names in anat/."""
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    for subject, sessions in layout.items():
        for session, names in sessions.items():
            anat = root / subject / (session or "") / "anat"
            anat.mkdir(parents=True, exist_ok=True)
            for name in names:
                (anat / name).write_bytes(b"\x1f\x8b not a real image")
    return root


def simple_bids(root: Path, n: int) -> Path:
    return make_bids(root, {f"sub-{i:02d}": {None: [f"sub-{i:02d}_T1w.nii.gz"]}
                            for i in range(1, n + 1)})  # fmt: skip


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Path]:
    """Environment for the stand-ins: this venv's python first on PATH, a license file, a
    record of every call, a short delay."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for name in ("FS_LICENSE", "FREESURFER_HOME", "SUBJECTS_DIR", "MORPHML_STANDIN_FAIL",
                 "MORPHML_STANDIN_VERSION"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    record = tmp_path / "calls.txt"
    monkeypatch.setenv("MORPHML_STANDIN_RECORD", str(record))
    monkeypatch.setenv("MORPHML_STANDIN_SECONDS", "0.05")
    license_file = tmp_path / "fs_license" / "license.txt"
    license_file.parent.mkdir()
    license_file.write_text("standin@example.org\n12345\n *Cabc\n FSabc\n")
    return {"record": record, "license": license_file}


def calls(record: Path, event: str = "end") -> list[tuple[str, str, str]]:
    if not record.exists():
        return []
    rows = [line.split() for line in record.read_text().splitlines()]
    return [(r[2], r[3], r[4]) for r in rows if r[0] == event]


def assert_private(text: str, *paths: Path) -> None:
    """No host path, user name, host name or date in text morphml keeps."""
    for path in paths:
        assert str(path) not in text
        assert str(path.resolve()) not in text
    host = socket.gethostname()
    words = {host, host.split(".")[0]}
    words.add(pwd.getpwuid(os.getuid()).pw_name)
    for word in words:
        if len(word) >= 2:
            assert not re.search(rf"(?<![\w.-]){re.escape(word)}(?![\w-])", text), word
    assert not _DATE.search(text), _DATE.search(text)


# ------------------------------------------------------------------------------ discovery


def test_bids_discovery_sessions_runs_and_missing_t1w(tmp_path: Path) -> None:
    root = make_bids(tmp_path / "bids", {
        "sub-01": {"ses-1": ["sub-01_ses-1_T1w.nii.gz", "sub-01_ses-1_T2w.nii.gz"],
                   "ses-2": ["sub-01_ses-2_run-2_T1w.nii.gz", "sub-01_ses-2_run-1_T1w.nii.gz"]},
        "sub-02": {None: ["sub-02_acq-mprage_T1w.nii", "sub-02_acq-fast_T1w.nii.gz"]},
        "sub-03": {"ses-1": ["sub-03_ses-1_T2w.nii.gz"]},
        "sub-04": {"ses-1": ["sub-99_ses-1_T1w.nii.gz"]},
    })  # fmt: skip
    (root / "sub-05" / "ses-1").mkdir(parents=True)  # a session without anat/
    (root / "derivatives" / "sub-01").mkdir(parents=True)
    found = find_t1w(root)
    assert [s.sid for s in found.scans] == ["sub-01_ses-1", "sub-01_ses-2", "sub-02"]
    runs = found.scans[1].images
    assert [im.run for im in runs] == [1, 2]
    assert runs[0].relpath == "sub-01/ses-2/anat/sub-01_ses-2_run-1_T1w.nii.gz"
    assert [im.acq for im in found.scans[2].images] == ["fast", "mprage"]
    assert found.without_t1w == [("sub-03", "ses-1"), ("sub-04", "ses-1"), ("sub-05", "ses-1")]
    assert found.ignored == {"T1w file whose sub-/ses- labels differ from its folders": 1}


def test_bids_refuses_a_folder_without_subjects(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(ProcessingError, match="no sub-<label> folders"):
        find_t1w(tmp_path / "x")
    with pytest.raises(ProcessingError, match="no such BIDS folder"):
        find_t1w(tmp_path / "missing")


# ----------------------------------------------------------------------------------- plans


def test_plan_for_sessions_runs_and_a_scan_without_t1w(
    tmp_path: Path, standin: dict[str, Path]
) -> None:
    root = make_bids(tmp_path / "bids", {
        "sub-01": {"ses-1": ["sub-01_ses-1_T1w.nii.gz"],
                   "ses-2": ["sub-01_ses-2_run-1_T1w.nii.gz", "sub-01_ses-2_run-2_T1w.nii.gz"]},
        "sub-02": {"ses-1": ["sub-02_ses-1_bold.nii.gz"]},
    })  # fmt: skip
    out = tmp_path / "derivatives"
    result = process(root, out, executable=FASTSURFER, allow_root=ROOT, gpus=(0,),
                     fs_license=standin["license"], plan_only=True, three_t=True)  # fmt: skip
    assert calls(standin["record"], "start") == []  # planning runs no engine
    text = (out / STATE_DIR / "plan.json").read_text()
    plan = json.loads(text)
    assert plan["engine"] == "fastsurfer" and plan["engine_version"] == "2.4.2"
    assert [s["sid"] for s in plan["scans"]] == ["sub-01_ses-1", "sub-01_ses-2"]
    assert plan["without_t1w"] == [{"subject": "sub-02", "session": "ses-1"}]
    second = plan["scans"][1]
    assert second["images"] == ["sub-01/ses-2/anat/sub-01_ses-2_run-1_T1w.nii.gz"]
    assert second["unused_images"] == ["sub-01/ses-2/anat/sub-01_ses-2_run-2_T1w.nii.gz"]
    seg, surf = second["steps"]
    assert seg["resource"] == "GPU" and surf["resource"] == "CPU"
    assert seg["argv"] == [
        "{exe}", "--sid", "sub-01_ses-2", "--sd", "{out}",
        "--t1", "{bids}/sub-01/ses-2/anat/sub-01_ses-2_run-1_T1w.nii.gz", "--seg_only",
        "--device", "cuda:{gpu}", "--viewagg_device", "auto", "--threads", "1",
        *(["--allow_root"] if ROOT else []),
    ]  # fmt: skip
    assert surf["argv"] == [
        "{exe}", "--sid", "sub-01_ses-2", "--sd", "{out}", "--surf_only", "--threads", "1",
        "--parallel", "--3T", "--fs_license", "{license}", *(["--allow_root"] if ROOT else []),
    ]  # fmt: skip
    # the plan names scans by BIDS labels only: no host path, user, host or date
    assert_private(text, tmp_path)
    # the full command lines are shown (not stored) with the paths filled in
    lines = dict(((sid, step), line) for sid, step, line in result.command_lines())
    assert (
        f"--t1 {root.resolve()}/sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"
        in lines[("sub-01_ses-1", "seg")]
    )


def test_freesurfer_plan_averages_the_runs(tmp_path: Path, standin: dict[str, Path]) -> None:
    root = make_bids(tmp_path / "bids", {"sub-01": {"ses-1": [
        "sub-01_ses-1_run-1_T1w.nii.gz", "sub-01_ses-1_run-2_T1w.nii.gz",
        "sub-01_ses-1_acq-other_T1w.nii.gz"]}})  # fmt: skip
    result = process(root, tmp_path / "out", engine="freesurfer", executable=RECON_ALL,
                     fs_license=standin["license"], threads=4, plan_only=True)  # fmt: skip
    (step,) = result.plan.scans[0].steps
    assert step.argv == (
        "{exe}", "-s", "sub-01_ses-1",
        "-i", "{bids}/sub-01/ses-1/anat/sub-01_ses-1_run-1_T1w.nii.gz",
        "-i", "{bids}/sub-01/ses-1/anat/sub-01_ses-1_run-2_T1w.nii.gz",
        "-sd", "{out}", "-all", "-parallel", "-openmp", "4",
    )  # fmt: skip
    assert step.env == (("FS_LICENSE", "{license}"),)
    assert result.plan.scans[0].unused == ("sub-01/ses-1/anat/sub-01_ses-1_acq-other_T1w.nii.gz",)
    assert result.plan.version == "7.4.1"


def _check_documented(argv: tuple[str, ...], values: set[str], switches: set[str]) -> None:
    args = list(argv)
    while args:
        flag = args.pop(0)
        if flag in values:
            assert args and not args[0].startswith("-"), f"{flag} needs a value"
            args.pop(0)
        else:
            assert flag in switches, f"{flag} is not a documented option"


@pytest.mark.parametrize("runner", ["native", "docker", "apptainer"])
@pytest.mark.parametrize("gpu_mode", ["none", "local", "visible"])
def test_command_lines_use_documented_options_only(runner: str, gpu_mode: str) -> None:
    settings = EngineSettings(runner=runner,
                              image="fs.sif" if runner == "apptainer" else None,
                              threads=2, three_t=True)  # fmt: skip
    seg, surf = engine_steps(settings, "sub-01", ("sub-01/anat/sub-01_T1w.nii.gz",),
                             gpu_mode=gpu_mode, license_given=True)  # fmt: skip
    for step, only in ((seg, "--seg_only"), (surf, "--surf_only")):
        start = step.argv.index("--sid")
        engine_args = step.argv[start:]
        _check_documented(engine_args, FASTSURFER_VALUE_FLAGS, FASTSURFER_SWITCHES)
        assert only in engine_args
        assert "--sd" in engine_args and engine_args[engine_args.index("--sid") + 1] == "sub-01"
        prefix = step.argv[:start]
        if runner == "native":
            assert prefix == ("{exe}",)
        elif runner == "docker":  # doc/overview/EXAMPLES.md, example 2
            assert prefix[:3] == ("docker", "run", "--rm")
            assert prefix[-1] == "deepmi/fastsurfer:latest"
            assert "{out}:/output" in prefix and "{bids}:/data:ro" in prefix
            assert ("--gpus" in prefix) == (step is seg and gpu_mode != "none")
        else:  # example 1 (Singularity/Apptainer)
            assert prefix[:2] == ("apptainer", "exec") and "--no-home" in prefix
            assert prefix[-2:] == ("{image}", "/fastsurfer/run_fastsurfer.sh")
            assert ("--nv" in prefix) == (step is seg and gpu_mode != "none")
            gpu_env = {"APPTAINERENV_CUDA_VISIBLE_DEVICES": "{gpu}"}
            assert dict(step.env) == (gpu_env if step is seg and gpu_mode == "local" else {})
    device = seg.argv[seg.argv.index("--device") + 1]
    expected = {"none": "cpu", "local": "cuda:{gpu}" if runner == "native" else "cuda",
                "visible": "cuda"}[gpu_mode]  # fmt: skip
    assert device == expected
    t1 = seg.argv[seg.argv.index("--t1") + 1]
    assert t1 == ("{bids}" if runner == "native" else "/data") + "/sub-01/anat/sub-01_T1w.nii.gz"
    assert surf.argv[surf.argv.index("--fs_license") + 1] == (
        "{license}" if runner == "native" else "/fs_license/license.txt"
    )
    assert "--t1" not in surf.argv  # --surf_only reads the segmentation step's outputs

    fs = EngineSettings(engine="freesurfer", runner=runner,
                        image="fs.sif" if runner == "apptainer" else None, threads=3)  # fmt: skip
    (recon,) = engine_steps(fs, "sub-01_ses-1", ("a_T1w.nii.gz", "b_T1w.nii.gz"),
                            gpu_mode=gpu_mode, license_given=True)  # fmt: skip
    start = recon.argv.index("-s")
    _check_documented(recon.argv[start:], RECON_VALUE_FLAGS, RECON_SWITCHES)
    engine_args = recon.argv[start:]
    assert engine_args.count("-i") == 2 and "-all" in engine_args
    # -parallel sets 4 threads; -openmp after it overrides that (parsed in order)
    assert engine_args.index("-parallel") < engine_args.index("-openmp")
    if runner == "native":
        assert recon.argv[0] == "{exe}" and dict(recon.env) == {"FS_LICENSE": "{license}"}
    else:
        assert recon.argv[start - 1] == "recon-all"
        assert "FS_LICENSE=/fs_license/license.txt" in recon.argv


def test_version_parsing_and_old_versions_refused(
    tmp_path: Path, standin: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert parse_version("freesurfer", "freesurfer-linux-centos7_x86_64-7.2.0-20210721-aa8f76b") \
        == "7.2.0"  # fmt: skip
    assert parse_version("fastsurfer", "Setting ENV variable FASTSURFER_HOME to /x/2.0.1\n2.4.2") \
        == "2.4.2"  # fmt: skip
    assert parse_version("fastsurfer", "no version here") is None
    root = simple_bids(tmp_path / "bids", 1)
    monkeypatch.setenv("MORPHML_STANDIN_VERSION", "1.1.2")
    with pytest.raises(ProcessingError, match=r"FastSurfer 1\.1\.2 found.*>= 2\.0"):
        process(root, tmp_path / "out", executable=FASTSURFER, allow_root=ROOT)
    monkeypatch.setenv("MORPHML_STANDIN_VERSION", "5.3.0")
    with pytest.raises(ProcessingError, match=r"-parallel needs 6\.0"):
        process(root, tmp_path / "out", engine="freesurfer", executable=RECON_ALL,
                fs_license=standin["license"])  # fmt: skip
    with pytest.raises(ProcessingError, match="not found on PATH"):
        process(root, tmp_path / "out", executable=str(tmp_path / "nope.sh"))


# ------------------------------------------------------------------------------------ runs


def test_run_on_local_dask_cluster_with_two_workers(
    tmp_path: Path, standin: dict[str, Path]
) -> None:
    root = make_bids(tmp_path / "bids", {
        "sub-01": {"ses-1": ["sub-01_ses-1_T1w.nii.gz"], "ses-2": ["sub-01_ses-2_T1w.nii.gz"]},
        "sub-02": {"ses-1": ["sub-02_ses-1_T1w.nii.gz"]},
        "sub-03": {"ses-1": ["sub-03_ses-1_T1w.nii.gz"]},
    })  # fmt: skip
    out = tmp_path / "derivatives"
    lines: list[str] = []
    result = process(root, out, executable=FASTSURFER, allow_root=ROOT, gpus=(0, 1), jobs=2,
                     workers=2, fs_license=standin["license"], progress=lines.append)  # fmt: skip
    assert result.failures == []
    assert result.finished_sids == ["sub-01_ses-1", "sub-01_ses-2", "sub-02_ses-1", "sub-03_ses-1"]
    assert len(lines) == 8
    for sid in result.finished_sids:
        rec = read_subject(out / sid)
        assert rec.software == "FastSurfer" and len(rec.features) > 500
        for step in ("seg", "surf"):
            marker = read_marker(out / STATE_DIR, sid, step)
            assert marker is not None and marker["status"] == "done"
            assert marker["engine_version"] == "2.4.2" and marker["seconds"] > 0
    # one GPU per segmentation: the same device is never used by two segmentations at once
    rows = [line.split() for line in standin["record"].read_text().splitlines()]
    spans: dict[tuple[str, str], list[float]] = {}
    for _event, _tool, sid, step, device, _pid, when in rows:
        if step == "seg":
            spans.setdefault((sid, device), []).append(float(when))
    devices = {device for _sid, device in spans}
    assert devices <= {"cuda:0", "cuda:1"} and devices
    by_device: dict[str, list[tuple[float, float]]] = {}
    for (_sid, device), (start, end) in spans.items():
        by_device.setdefault(device, []).append((start, end))
    for intervals in by_device.values():
        intervals.sort()
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert start >= end
    # timings, summary and logs, without host paths, names or dates
    state = out / STATE_DIR
    timings = (state / "timings.tsv").read_text().splitlines()
    assert timings[0] == "sid\tstep\tstatus\tseconds\tattempt" and len(timings) == 9
    kept = [p.read_text() for p in sorted((state / "logs").iterdir())]
    kept += [(state / n).read_text() for n in ("summary.json", "timings.tsv", "plan.json")]
    kept += [p.read_text() for p in (state / "state").glob("*.json")]
    seg_log = (state / "logs" / "sub-02_ses-1.seg.log").read_text()
    assert "USER <user>" in seg_log and "<date>" in seg_log and "<host>" in seg_log
    assert "<bids>/sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz" in seg_log
    for text in kept:
        assert_private(text, tmp_path)

    # a second run finds everything done and starts no engine
    before = len(calls(standin["record"], "start"))
    again = process(root, out, executable=FASTSURFER, allow_root=ROOT, gpus=(0, 1), jobs=2,
                    workers=2, fs_license=standin["license"])  # fmt: skip
    assert {o.status for o in again.outcomes} == {"already_done"}
    assert len(calls(standin["record"], "start")) == before


def test_failing_scan_leaves_the_others_finishing(
    tmp_path: Path, standin: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = simple_bids(tmp_path / "bids", 4)
    out = tmp_path / "out"
    monkeypatch.setenv("MORPHML_STANDIN_FAIL", "sub-02:seg,sub-03:surf")
    runner = CliRunner()
    args = [
        "process",
        str(root),
        "--out",
        str(out),
        "--executable",
        FASTSURFER,
        "--jobs",
        "2",
        "--fs-license",
        str(standin["license"]),
        *(["--allow-root"] if ROOT else []),
    ]
    res = runner.invoke(cli, args)
    assert res.exit_code == 1, res.output
    assert "FAILED sub-02 seg: exit status 1" in res.output
    assert "ERROR: FastSurfer asegdkt segmentation failed." in res.output
    assert "FAILED sub-03 surf: exit status 1" in res.output
    summary = json.loads((out / STATE_DIR / "summary.json").read_text())
    assert summary["scans_finished"] == 2
    status = {(s["sid"], s["step"]): s["status"] for s in summary["steps"]}
    assert status[("sub-02", "surf")] == "skipped"
    assert status[("sub-01", "surf")] == status[("sub-04", "surf")] == "done"
    failure = {f["sid"]: f for f in summary["failures"]}
    assert failure["sub-03"]["tail"][-1] == "ERROR: FastSurfer recon-surf failed."
    assert_private(json.dumps(summary), tmp_path)

    # fixed: the next run retries the failed steps only
    monkeypatch.delenv("MORPHML_STANDIN_FAIL")
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    done = json.loads((out / STATE_DIR / "summary.json").read_text())
    status = {(s["sid"], s["step"]): s["status"] for s in done["steps"]}
    assert status == {
        ("sub-01", "seg"): "already_done", ("sub-01", "surf"): "already_done",
        ("sub-02", "seg"): "done", ("sub-02", "surf"): "done",
        ("sub-03", "seg"): "already_done", ("sub-03", "surf"): "done",
        ("sub-04", "seg"): "already_done", ("sub-04", "surf"): "already_done",
    }  # fmt: skip
    assert read_marker(out / STATE_DIR, "sub-03", "surf")["attempt"] == 2
    ends = calls(standin["record"])
    assert len(ends) == len(set(ends)) == 8  # every step finished exactly once


def test_freesurfer_run_then_ingest(tmp_path: Path, standin: dict[str, Path]) -> None:
    from morphml.db import connect

    root = make_bids(tmp_path / "bids", {
        "sub-01": {"ses-1": ["sub-01_ses-1_run-1_T1w.nii.gz", "sub-01_ses-1_run-2_T1w.nii.gz"],
                   "ses-2": ["sub-01_ses-2_T1w.nii.gz"]},
        "sub-02": {"ses-1": ["sub-02_ses-1_T1w.nii.gz"]},
    })  # fmt: skip
    out, db = tmp_path / "out", tmp_path / "db.duckdb"
    result = process(root, out, engine="freesurfer", executable=RECON_ALL, jobs=2,
                     fs_license=standin["license"], ingest_db=db, source="hospital",
                     key_file=tmp_path / "key")  # fmt: skip
    assert result.failures == [] and len(result.finished_sids) == 3
    assert sorted(p.name for p in (out / "sub-01_ses-1" / "mri" / "orig").iterdir()) == [
        "001.mgz", "002.mgz"]  # fmt: skip
    assert result.ingest is not None and result.ingest.n_new == 3
    assert result.ingest.n_subjects == 2
    with connect(db) as con:
        rows = con.execute("SELECT software, version, count(*) FROM scans GROUP BY ALL").fetchall()
    assert rows == [("FreeSurfer", "7.4.1", 3)]


def test_existing_outputs_are_recorded_or_refused(
    tmp_path: Path, standin: dict[str, Path]
) -> None:
    root = simple_bids(tmp_path / "bids", 3)
    out = tmp_path / "out"
    # sub-01: a finished FreeSurfer folder made elsewhere; sub-02: a half-written foreign one
    done = out / "sub-01"
    for rel in ("scripts/recon-all.done", "stats/aseg.stats", "stats/lh.aparc.stats",
                "stats/rh.aparc.stats"):  # fmt: skip
        (done / rel).parent.mkdir(parents=True, exist_ok=True)
        (done / rel).write_text("x")
    (out / "sub-02" / "mri").mkdir(parents=True)
    result = process(root, out, engine="freesurfer", executable=RECON_ALL,
                     fs_license=standin["license"])  # fmt: skip
    outcome = {o.sid: o for o in result.outcomes}
    assert outcome["sub-01"].status == "done" and outcome["sub-01"].found_existing
    assert outcome["sub-02"].status == "failed"
    assert "not made by morphml" in (outcome["sub-02"].reason or "")
    assert outcome["sub-03"].status == "done" and not outcome["sub-03"].found_existing
    assert (out / "sub-02" / "mri").is_dir()  # a folder morphml did not make is left alone
    assert [c[0] for c in calls(standin["record"])] == ["sub-03"]


def test_derivatives_of_another_engine_version_are_refused(
    tmp_path: Path, standin: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = simple_bids(tmp_path / "bids", 1)
    out = tmp_path / "out"
    process(root, out, executable=FASTSURFER, allow_root=ROOT, plan_only=True)
    monkeypatch.setenv("MORPHML_STANDIN_VERSION", "2.5.0")
    with pytest.raises(ProcessingError, match=r"holds fastsurfer 2\.4\.2 outputs"):
        process(root, out, executable=FASTSURFER, allow_root=ROOT, plan_only=True)
    with pytest.raises(ProcessingError, match="holds a run with engine 'fastsurfer'"):
        process(root, out, engine="freesurfer", executable=RECON_ALL,
                fs_license=standin["license"], plan_only=True)  # fmt: skip


def test_scheduler_address_and_worker_resources(tmp_path: Path, standin: dict[str, Path]) -> None:
    from distributed import LocalCluster

    root = simple_bids(tmp_path / "bids", 2)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None, resources={"CPU": 2}) as cluster:  # fmt: skip
        address = cluster.scheduler_address
        with pytest.raises(ProcessingError, match=r"no Dask worker offers the resource\(s\) GPU"):
            process(root, tmp_path / "a", executable=FASTSURFER, allow_root=ROOT, gpus=(0,),
                    fs_license=standin["license"], scheduler=address)  # fmt: skip
        result = process(
            root,
            tmp_path / "b",
            executable=FASTSURFER,
            allow_root=ROOT,
            fs_license=standin["license"],
            scheduler=cluster.scheduler_address,
        )
        assert result.failures == [] and len(result.finished_sids) == 2


def test_plan_only_command_prints_full_command_lines(
    tmp_path: Path, standin: dict[str, Path]
) -> None:
    root = make_bids(tmp_path / "bids", {"sub-01": {None: ["sub-01_T1w.nii.gz"]},
                                         "sub-02": {None: []}})  # fmt: skip
    res = CliRunner().invoke(cli, [
        "process", str(root), "--out", str(tmp_path / "out"), "--engine", "freesurfer",
        "--executable", RECON_ALL, "--fs-license", str(standin["license"]), "--plan-only",
        "--no-parallel", "--threads", "2",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"sub-01 recon: FS_LICENSE={standin['license']} {RECON_ALL} -s sub-01 -i " in res.output
    assert "-sd " + str((tmp_path / "out").resolve()) + " -all -openmp 2" in res.output
    assert "no T1w: sub-02" in res.output
    assert "freesurfer 7.4.1 (native): 1 scans planned, 1 without a T1w image" in res.output
    assert calls(standin["record"], "start") == []


# ---------------------------------------------------------------- the stand-ins themselves


def _run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env},
                          check=False)  # fmt: skip


def test_standins_refuse_what_the_engines_refuse(tmp_path: Path, standin: dict[str, Path]) -> None:
    t1 = tmp_path / "t1.nii.gz"
    t1.write_bytes(b"x")
    sd = tmp_path / "sd"
    root = ["--allow_root"] if ROOT else []
    bad = _run([FASTSURFER, "--sid", "s", "--sd", str(sd), "--t1", str(t1), "--bogus", *root])
    assert bad.returncode == 1 and "Flag '--bogus' unrecognized" in bad.stdout
    surf = _run([FASTSURFER, "--sid", "s", "--sd", str(sd), "--surf_only",
                 "--fs_license", str(standin["license"]), *root])  # fmt: skip
    assert surf.returncode == 1 and "segmentation must already exist" in surf.stdout
    nolic = _run([FASTSURFER, "--sid", "s", "--sd", str(sd), "--t1", str(t1), *root])
    assert nolic.returncode == 1 and "require a FreeSurfer License" in nolic.stdout
    ok = _run([FASTSURFER, "--sid", "s", "--sd", str(sd), "--t1", str(t1), "--seg_only",
               "--device", "cuda:1", *root])  # fmt: skip
    assert ok.returncode == 0, ok.stdout
    assert sorted(p.name for p in (sd / "s" / "stats").iterdir()) == [
        "aseg+DKT.stats", "cerebellum.CerebNet.stats"]  # fmt: skip
    if ROOT:
        refused = _run([FASTSURFER, "--sid", "s", "--sd", str(sd), "--t1", str(t1)])
        assert refused.returncode == 1 and "--allow_root" in refused.stdout
    lic = {"FS_LICENSE": str(standin["license"])}
    first = _run([RECON_ALL, "-s", "r", "-i", str(t1), "-sd", str(sd), "-all"], **lic)
    assert first.returncode == 0, first.stdout
    again = _run([RECON_ALL, "-s", "r", "-i", str(t1), "-sd", str(sd), "-all"], **lic)
    assert again.returncode == 1 and "re-run an existing subject" in again.stdout
    nothing = _run([RECON_ALL, "-s", "q", "-sd", str(sd)], **lic)
    assert nothing.returncode == 1 and "nothing to do" in nothing.stdout
    assert _run([RECON_ALL, "-version"]).stdout.strip().endswith("-7.4.1-20230613-7eb8460")


# ------------------------------------------------------------------------------- resume


@pytest.mark.slow
def test_resume_after_the_process_is_killed(tmp_path: Path, standin: dict[str, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    root = simple_bids(tmp_path / "bids", 6)
    out = tmp_path / "out"
    monkeypatch.setenv("MORPHML_STANDIN_SECONDS", "0.4")
    argv = [sys.executable, "-m", "morphml.cli", "process", str(root), "--out", str(out),
            "--executable", FASTSURFER, "--fs-license", str(standin["license"]),
            "--jobs", "1", "--quiet", *(["--allow-root"] if ROOT else [])]  # fmt: skip
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(calls(standin["record"])) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # mid-run: some steps done, some running, some not begun
    first.wait()
    assert 3 <= len(calls(standin["record"])) < 12
    second = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert second.returncode == 0, second.stdout + second.stderr
    ends = calls(standin["record"])
    # none lost, none processed twice: every (scan, step) finished exactly once
    assert sorted((sid, step) for sid, step, _ in ends) == sorted(
        (f"sub-{i:02d}", step) for i in range(1, 7) for step in ("seg", "surf")
    )
    summary = json.loads((out / STATE_DIR / "summary.json").read_text())
    assert summary["scans_finished"] == 6 and summary["failures"] == []
    statuses = {s["status"] for s in summary["steps"]}
    assert "already_done" in statuses and "done" in statuses
