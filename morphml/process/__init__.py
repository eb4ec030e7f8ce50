"""From T1w images to stats folders: FastSurfer / FreeSurfer runs planned, run and resumed.

``morphml process BIDS_DIR --out DERIVATIVES`` finds the T1w images of a BIDS dataset, writes a
plan (one job per scan with the engine's exact command lines), runs it on a Dask cluster (one
GPU per FastSurfer segmentation, CPU slots for surface reconstructions and recon-all), skips
what is done, resumes after an interruption, keeps scrubbed per-step logs and timings, collects
failures with the end of their logs, and can ingest the finished scans.
"""

from morphml.process._bids import BidsInventory, Scan, T1Image, find_t1w
from morphml.process._engines import (
    EngineSettings,
    EngineVersion,
    StepTemplate,
    check_engine,
    engine_steps,
    parse_version,
)
from morphml.process._plan import STATE_DIR, Plan, PlannedScan, make_plan, resolve
from morphml.process._runner import ProcessResult, StepOutcome, process, read_marker

__all__ = [
    "STATE_DIR",
    "BidsInventory",
    "EngineSettings",
    "EngineVersion",
    "Plan",
    "PlannedScan",
    "ProcessResult",
    "Scan",
    "StepOutcome",
    "StepTemplate",
    "T1Image",
    "check_engine",
    "engine_steps",
    "find_t1w",
    "make_plan",
    "parse_version",
    "process",
    "read_marker",
    "resolve",
]
