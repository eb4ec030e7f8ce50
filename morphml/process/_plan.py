"""The processing plan: one job per scan, each a short chain of engine steps.

The plan is written to ``DERIVATIVES/morphml-process/plan.json``. It holds BIDS labels,
image paths relative to the BIDS root, command-line templates and the engine version; no
host path, user name, host name or date (``{bids}``, ``{out}``, ``{license}``, ``{uid}``,
``{gid}`` and ``{gpu}`` are filled in when a step starts, see :func:`resolve`).
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from morphml._version import __version__
from morphml.exceptions import ProcessingError
from morphml.process._bids import BidsInventory, Scan
from morphml.process._engines import EngineSettings, EngineVersion, StepTemplate, engine_steps

__all__ = ["PLAN_VERSION", "STATE_DIR", "Plan", "PlannedScan", "make_plan", "resolve"]

PLAN_VERSION = 1
#: morphml's own folder inside the derivatives folder (plan, state, logs, summary)
STATE_DIR = "morphml-process"


@dataclass(frozen=True)
class PlannedScan:
    """One job: a scan, the images the engine reads, the ones it leaves out, its steps."""

    sid: str
    subject: str
    session: str | None
    images: tuple[str, ...]
    unused: tuple[str, ...]
    steps: tuple[StepTemplate, ...]


@dataclass
class Plan:
    """Everything ``morphml process`` will run, and how."""

    engine: str
    runner: str
    version: str | None
    version_text: str
    settings: dict[str, Any]
    #: "none", "local" (GPU indices picked at run time) or "visible" (the cluster's choice)
    gpu_mode: str
    scans: list[PlannedScan]
    without_t1w: list[tuple[str, str | None]] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)
    license_given: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (what ``plan.json`` holds)."""
        return {
            "plan_version": PLAN_VERSION,
            "morphml_version": __version__,
            "engine": self.engine,
            "runner": self.runner,
            "engine_version": self.version,
            "engine_version_text": self.version_text,
            "settings": self.settings,
            "gpu_mode": self.gpu_mode,
            "license_given": self.license_given,
            "scans": [
                {
                    "sid": s.sid,
                    "subject": s.subject,
                    "session": s.session,
                    "images": list(s.images),
                    "unused_images": list(s.unused),
                    "steps": [
                        {
                            "name": st.name,
                            "resource": st.resource,
                            "argv": list(st.argv),
                            "env": [list(kv) for kv in st.env],
                            "outputs": list(st.outputs),
                            "clean": st.clean,
                        }
                        for st in s.steps
                    ],
                }
                for s in self.scans
            ],
            "without_t1w": [{"subject": sub, "session": ses} for sub, ses in self.without_t1w],
            "ignored": dict(self.ignored),
        }

    def write(self, path: Path) -> None:
        """Write ``plan.json`` atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        """Read what :meth:`to_json` wrote."""
        if data.get("plan_version") != PLAN_VERSION:
            raise ProcessingError(
                f"plan version {data.get('plan_version')!r} is not {PLAN_VERSION}; this "
                "derivatives folder was planned by another morphml"
            )
        scans = [
            PlannedScan(
                sid=s["sid"],
                subject=s["subject"],
                session=s["session"],
                images=tuple(s["images"]),
                unused=tuple(s["unused_images"]),
                steps=tuple(
                    StepTemplate(
                        st["name"],
                        tuple(st["argv"]),
                        tuple(tuple(kv) for kv in st["env"]),
                        st["resource"],
                        tuple(st["outputs"]),
                        bool(st["clean"]),
                    )
                    for st in s["steps"]
                ),
            )
            for s in data["scans"]
        ]
        return cls(
            engine=data["engine"],
            runner=data["runner"],
            version=data["engine_version"],
            version_text=data["engine_version_text"],
            settings=data["settings"],
            gpu_mode=data["gpu_mode"],
            scans=scans,
            without_t1w=[(w["subject"], w["session"]) for w in data["without_t1w"]],
            ignored=dict(data["ignored"]),
            license_given=bool(data.get("license_given", False)),
        )

    def command_lines(self, values: dict[str, str]) -> list[tuple[str, str, str]]:
        """(sid, step, shell command) with the placeholders filled in (for display)."""
        out = []
        for scan in self.scans:
            for step in scan.steps:
                argv, env = resolve(step, values, strict=False)
                prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
                line = shlex.join(argv)
                out.append((scan.sid, step.name, f"{prefix} {line}" if prefix else line))
        return out


def _choose_images(
    scan: Scan, settings: EngineSettings
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """FreeSurfer averages the runs of the scan's first acquisition (several ``-i``);
    FastSurfer reads one image, the first or last of those runs."""
    first = scan.images[0].acquisition
    same = [im.relpath for im in scan.images if im.acquisition == first]
    if settings.engine == "fastsurfer":
        chosen = [same[0] if settings.runs == "first" else same[-1]]
    else:
        chosen = same
    unused = tuple(im.relpath for im in scan.images if im.relpath not in chosen)
    return tuple(chosen), unused


def make_plan(
    inventory: BidsInventory,
    settings: EngineSettings,
    *,
    version: EngineVersion | None,
    gpu_mode: str,
    license_given: bool,
) -> Plan:
    """One job per scan that has a T1w image.

    Examples
    --------
    >>> from morphml.process._bids import BidsInventory, Scan, T1Image
    >>> inv = BidsInventory([Scan("sub-01", None, (T1Image("sub-01/anat/sub-01_T1w.nii.gz"),))])
    >>> plan = make_plan(inv, EngineSettings(), version=None, gpu_mode="none",
    ...                  license_given=False)
    >>> [st.name for st in plan.scans[0].steps]
    ['seg', 'surf']
    """
    settings.check()
    if gpu_mode not in ("none", "local", "visible"):
        raise ProcessingError(f"gpu_mode must be none, local or visible, got {gpu_mode!r}")
    scans = []
    for scan in inventory.scans:
        images, unused = _choose_images(scan, settings)
        steps = engine_steps(
            settings, scan.sid, images, gpu_mode=gpu_mode, license_given=license_given
        )
        scans.append(PlannedScan(scan.sid, scan.subject, scan.session, images, unused, steps))
    described = asdict(settings)
    described["extra_args"] = list(settings.extra_args)
    # only the file names: a path may name a person (/home/<user>/...)
    if settings.executable:
        described["executable"] = os.path.basename(settings.executable)
    if settings.image and settings.runner == "apptainer":
        described["image"] = os.path.basename(settings.image)
    return Plan(
        engine=settings.engine,
        runner=settings.runner,
        version=version.version if version else None,
        version_text=version.text if version else "not checked",
        settings=described,
        gpu_mode=gpu_mode,
        scans=scans,
        without_t1w=list(inventory.without_t1w),
        ignored=dict(inventory.ignored),
        license_given=license_given,
    )


_PLACEHOLDERS = ("{exe}", "{image}", "{bids}", "{out}", "{license}", "{uid}", "{gid}", "{gpu}")


def resolve(
    step: StepTemplate, values: dict[str, str], *, strict: bool = True
) -> tuple[list[str], dict[str, str]]:
    """Fill the placeholders of a step's command and environment.

    ``values`` maps placeholder names (``exe``, ``image``, ``bids``, ``out``, ``license``,
    ``uid``, ``gid``, ``gpu``) to text; a placeholder the step uses but ``values`` lacks is an
    error, or left as it is when not ``strict`` (for display: ``{gpu}`` is chosen at run time).
    """

    def fill(text: str) -> str:
        for token in _PLACEHOLDERS:
            if token in text:
                name = token[1:-1]
                if name not in values:
                    if not strict:
                        continue
                    raise ProcessingError(
                        f"step {step.name}: no value for {token} (a FreeSurfer license "
                        "needs --fs-license FILE; a GPU step needs --gpus or a GPU job)"
                    )
                text = text.replace(token, values[name])
        return text

    return [fill(a) for a in step.argv], {k: fill(v) for k, v in step.env}
