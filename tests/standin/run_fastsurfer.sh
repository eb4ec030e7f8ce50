#!/usr/bin/env python3
"""Stand-in for FastSurfer's run_fastsurfer.sh (a test double; see _standin.py).

Arguments and checks follow run_fastsurfer.sh of FastSurfer 2.x (its usage text and
doc/overview/FLAGS.md): --sid, --sd, --t1, --seg_only, --surf_only, --device,
--viewagg_device, --threads, --parallel, --3T, --fs_license, --allow_root, --version, ...
Outputs follow the real layout: the segmentation step writes mri/orig.mgz,
mri/aparc.DKTatlas+aseg.deep.mgz, stats/aseg+DKT.stats and stats/cerebellum.CerebNet.stats; the
surface step needs those two images and writes the remaining stats files and
scripts/recon-surf.done.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _standin

VALUE_FLAGS = {
    "--sid",
    "--sd",
    "--t1",
    "--t2",
    "--seg_log",
    "--conformed_name",
    "--norm_name",
    "--asegdkt_segfile",
    "--seg",
    "--vox_size",
    "--threads",
    "--py",
    "--device",
    "--batch",
    "--viewagg_device",
    "--fs_license",
    "--cereb_segfile",
    "--hypo_segfile",
    "--reg_mode",
}
SWITCHES = {
    "--allow_root",
    "--3t",
    "--seg_only",
    "--surf_only",
    "--parallel",
    "--no_cereb",
    "--no_hypothal",
    "--no_biasfield",
    "--tal_reg",
    "--fstess",
    "--fsqsphere",
    "--fsaparc",
    "--no_surfreg",
    "--no_fs_t1",
    "--ignore_fs_version",
    "--no_asegdkt",
    "--qc_snap",
}
DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")
SEG_FILES = ("aseg+DKT.stats", "cerebellum.CerebNet.stats")


def fail(message: str) -> None:
    print(message)
    sys.exit(1)


def main(argv: list[str]) -> None:
    if not argv:
        print("Usage: run_fastsurfer.sh --sid <sid> --sd <sdir> --t1 <t1_input> [OPTIONS]")
        return
    opts: dict[str, str] = {}
    flags: set[str] = set()
    args = list(argv)
    while args:
        key = args.pop(0).lower()
        if key == "--version":
            if args and not args[0].startswith("--"):
                args.pop(0)
            print(os.environ.get("MORPHML_STANDIN_VERSION", "2.4.2"))
            return
        if key in ("-h", "--help"):
            print("Usage: run_fastsurfer.sh --sid <sid> --sd <sdir> --t1 <t1_input> [OPTIONS]")
            return
        if key in VALUE_FLAGS:
            if not args:
                fail(f"ERROR: Flag '{key}' needs a value.")
            value = args.pop(0)
            if key == "--fs_license":
                if not Path(value).is_file():
                    fail(
                        f"ERROR: Provided FreeSurfer license file {value} could not be found. "
                        "Make sure to provide the full path and name. Exiting..."
                    )
                os.environ["FS_LICENSE"] = value
            opts[key] = value
        elif key in SWITCHES:
            flags.add(key)
        elif key:
            fail(f"ERROR: Flag '{key}' unrecognized.")
    if "--allow_root" not in flags and os.getuid() == 0:
        fail(
            "You are trying to run 'run_fastsurfer.sh' as root. We advice to avoid running "
            "FastSurfer as root, ... you may pass --allow_root to run_fastsurfer.sh."
        )
    sd, sid = opts.get("--sd", os.environ.get("SUBJECTS_DIR", "")), opts.get("--sid", "")
    if not sd:
        fail("ERROR: No subject directory defined via --sd. This is required!")
    if not sid:
        fail("ERROR: must supply subject name via --sid")
    seg = "--surf_only" not in flags
    surf = "--seg_only" not in flags
    if not seg and not surf:
        fail(
            "ERROR: You specified both --surf_only and --seg_only. Therefore neither part of "
            "the pipeline will be run."
        )
    for key in ("--device", "--viewagg_device"):
        if key in opts and not DEVICE.match(opts[key]):
            fail(f"ERROR: invalid {key} {opts[key]!r}")
    if not opts.get("--threads", "1").isdigit():
        fail(f"ERROR: --threads must be an integer, got {opts['--threads']!r}")
    subject = Path(sd) / sid
    if surf and not seg:
        for name in ("mri/aparc.DKTatlas+aseg.deep.mgz", "mri/orig.mgz"):
            if not (subject / name).is_file():
                fail(
                    "ERROR: To run the surface pipeline, a whole brain segmentation must "
                    f"already exist. You passed --surf_only, but {subject / name} could not "
                    "be found."
                )
    if surf:
        lic = os.environ.get("FS_LICENSE", "")
        home = os.environ.get("FREESURFER_HOME", "")
        if not lic and home and (Path(home) / "license.txt").is_file():
            lic = str(Path(home) / "license.txt")
        if not lic or not Path(lic).is_file():
            fail(
                "ERROR: The surface pipeline and the talairach-registration in the "
                "segmentation pipeline require a FreeSurfer License, but no license was "
                "provided via --fs_license or the FS_LICENSE environment variable."
            )
    t1 = opts.get("--t1", "")
    if seg and (not t1 or not Path(t1).is_file()):
        fail(
            f"ERROR: T1 image ({t1}) could not be found. Must supply an existing T1 input "
            "(full head) via --t1 (absolute path and name) for generating the segmentation."
        )
    Path(sd).mkdir(parents=True, exist_ok=True)
    step = "seg" if seg and not surf else "surf" if surf and not seg else "all"
    device = opts.get("--device", "auto") if seg else "-"
    _standin.record("start", "fastsurfer", sid, step, device)
    print(f"Setting ENV variable FASTSURFER_HOME to script directory {Path(__file__).parent}.")
    print("Version: " + os.environ.get("MORPHML_STANDIN_VERSION", "2.4.2"))
    _standin.chatter([t1, str(subject)])
    _standin.pause()
    if _standin.should_fail(sid, step):
        (subject / "scripts").mkdir(parents=True, exist_ok=True)
        fail(f"ERROR: FastSurfer {'asegdkt segmentation' if seg else 'recon-surf'} failed.")
    _, write_subject_stats = _standin.writer()
    stats = subject / "stats"
    tmp = subject / "tmp" / f"standin-{os.getpid()}"
    write_subject_stats(
        tmp,
        _standin.features(sid, "fastsurfer"),
        software="fastsurfer",
        version="7.4.1",
        identifying={"subjectname": sid, "SUBJECTS_DIR": str(Path(sd).resolve())},
    )
    stats.mkdir(parents=True, exist_ok=True)
    for path in sorted(tmp.iterdir()):
        is_seg = path.name in SEG_FILES
        if (is_seg and seg) or (not is_seg and surf):
            shutil.move(str(path), stats / path.name)
    shutil.rmtree(tmp.parent, ignore_errors=True)
    if seg:
        for name in (
            "orig.mgz",
            "aparc.DKTatlas+aseg.deep.mgz",
            "mask.mgz",
            "aseg.auto_noCCseg.mgz",
            "orig_nu.mgz",
        ):
            _standin.placeholder(subject / "mri" / name)
        (subject / "scripts").mkdir(parents=True, exist_ok=True)
        (subject / "scripts" / "deep-seg.log").write_text("stand-in segmentation\n")
    if surf:
        for name in ("lh.white", "rh.white", "lh.pial", "rh.pial"):
            _standin.placeholder(subject / "surf" / name)
        (subject / "scripts").mkdir(parents=True, exist_ok=True)
        (subject / "scripts" / "recon-surf.done").write_text(f"SUBJECT {sid}\n")
    print(f"run_fastsurfer.sh {step} finished for {sid}")
    _standin.record("end", "fastsurfer", sid, step, device)


if __name__ == "__main__":
    main(sys.argv[1:])
