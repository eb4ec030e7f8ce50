"""FastSurfer and FreeSurfer command lines, per runner, and the engine version check.

Every option written here is one the engines document; where each comes from:

FastSurfer ``run_fastsurfer.sh`` (Deep-MI/FastSurfer, ``doc/overview/FLAGS.md`` and the usage
text of ``run_fastsurfer.sh``, v2.x):

* ``--sid <subjectID>``, ``--sd <subjects_dir>``, ``--t1 <T1_input>`` (absolute path): the
  required arguments;
* ``--seg_only`` / ``--surf_only``: run one of the two pipelines; ``--surf_only`` needs the
  segmentation (``mri/aparc.DKTatlas+aseg.deep.mgz``) and the conformed image
  (``mri/orig.mgz``) of an earlier ``--seg_only`` run in the same ``--sd/--sid``;
* ``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:<n>``, ``mps``) and ``--viewagg_device``
  (``auto`` or a device): where the networks and the view aggregation run;
* ``--threads <int>``, ``--parallel`` (both hemispheres at once), ``--3T`` (3T atlas for the
  Talairach registration / eTIV), ``--fs_license <file>`` (needed by the surface pipeline),
  ``--allow_root``, and ``--version`` (prints the version and exits);
* containers: ``docker run --gpus device=<n> -v <data>:/data -v <out>:/output
  -v <license dir>:/fs_license --rm --user $(id -u):$(id -g) deepmi/fastsurfer:<tag>
  <flags>`` and ``singularity|apptainer exec --nv --no-home -B ... image.sif
  /fastsurfer/run_fastsurfer.sh <flags>`` (``doc/overview/EXAMPLES.md``); splitting the
  GPU segmentation from the CPU surface reconstruction is what FastSurfer's own
  ``srun_fastsurfer.sh`` does on SLURM.

FreeSurfer ``recon-all`` (freesurfer/freesurfer ``scripts/recon-all``, usage and argument
parser; https://surfer.nmr.mgh.harvard.edu/fswiki/recon-all):

* ``-s <subjid>`` (also ``-sid``/``-subjid``/``-subject``), ``-i <invol>`` (repeatable: several
  runs are motion-corrected and averaged), ``-sd <subjects_dir>``, ``-all``;
* ``-parallel`` (hemispheres in parallel, sets 4 OpenMP threads) followed by
  ``-openmp <n>`` (``-threads <n>`` in 6.0+), which overrides that thread count because the
  arguments are parsed in order; ``-3T``; ``-version`` prints the build stamp
  (``freesurfer-linux-..._x86_64-7.4.1-20230613-7eb8460``);
* ``-i`` on an existing subject folder is an error ("You are trying to re-run an existing
  subject with (possibly) new input data (-i)"), so a restarted scan starts from an empty
  folder;
* the license is found through ``FS_LICENSE`` (or ``$FREESURFER_HOME/license.txt``).

Command lines are kept as templates: ``{exe}`` (the native program), ``{image}`` (an Apptainer
image file), ``{bids}``, ``{out}``, ``{license}``, ``{uid}``, ``{gid}`` and ``{gpu}`` stand for
host paths and values filled in only when a step starts, so the plan file holds no host path,
user or host name.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Literal

from morphml.exceptions import ProcessingError

__all__ = [
    "ENGINES",
    "RUNNERS",
    "EngineSettings",
    "EngineVersion",
    "StepTemplate",
    "check_engine",
    "engine_steps",
    "parse_version",
]

ENGINES = ("fastsurfer", "freesurfer")
RUNNERS = ("native", "apptainer", "docker")

#: where containers see the BIDS folder, the derivatives folder and the license file
_DATA, _OUTPUT, _LICENSE = "/data", "/output", "/fs_license/license.txt"
_DEFAULT_EXECUTABLE = {"fastsurfer": "run_fastsurfer.sh", "freesurfer": "recon-all"}
_DEFAULT_IMAGE = {
    "fastsurfer": "deepmi/fastsurfer:latest",
    "freesurfer": "freesurfer/freesurfer:7.4.1",
}
#: FastSurfer inside its images
_FASTSURFER_IN_IMAGE = "/fastsurfer/run_fastsurfer.sh"
#: oldest versions whose options the command lines use
_MIN_FASTSURFER = (2, 0)
_MIN_FREESURFER = (5, 3)
_MIN_FREESURFER_PARALLEL = (6, 0)

#: outputs that prove a step finished (relative to the subject folder)
SEG_OUTPUTS = ("mri/orig.mgz", "mri/aparc.DKTatlas+aseg.deep.mgz")
SURF_OUTPUTS = (
    "scripts/recon-surf.done",
    "stats/aseg.stats",
    "stats/lh.aparc.DKTatlas.mapped.stats",
    "stats/rh.aparc.DKTatlas.mapped.stats",
)
RECON_OUTPUTS = (
    "scripts/recon-all.done",
    "stats/aseg.stats",
    "stats/lh.aparc.stats",
    "stats/rh.aparc.stats",
)


@dataclass(frozen=True)
class EngineSettings:
    """How to call an engine.

    Parameters
    ----------
    engine : {"fastsurfer", "freesurfer"}
    runner : {"native", "apptainer", "docker"}
    executable : str, optional
        Native runner: the program (default ``run_fastsurfer.sh`` / ``recon-all`` on PATH).
    image : str, optional
        Docker image name or Apptainer ``.sif`` file (default ``deepmi/fastsurfer:latest`` /
        ``freesurfer/freesurfer:7.4.1`` for Docker; Apptainer needs one).
    threads : int
        Threads per engine process (``--threads`` / ``-openmp``).
    parallel : bool
        Reconstruct both hemispheres at once (``--parallel`` / ``-parallel``).
    three_t : bool
        3T atlas for the Talairach registration (``--3T`` / ``-3T``).
    viewagg_device : str
        FastSurfer ``--viewagg_device``.
    allow_root : bool
        Pass FastSurfer's ``--allow_root`` (it refuses to run as root otherwise).
    runs : {"first", "last"}
        FastSurfer takes one image: the first or last run of a scan's first acquisition.
    extra_args : tuple of str
        More engine flags, appended as given.
    """

    engine: Literal["fastsurfer", "freesurfer"] = "fastsurfer"
    runner: Literal["native", "apptainer", "docker"] = "native"
    executable: str | None = None
    image: str | None = None
    threads: int = 1
    parallel: bool = True
    three_t: bool = False
    viewagg_device: str = "auto"
    allow_root: bool = False
    runs: Literal["first", "last"] = "first"
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def check(self) -> None:
        """Refuse impossible settings with a message naming the option."""
        if self.engine not in ENGINES:
            raise ProcessingError(f"--engine must be one of {ENGINES}, got {self.engine!r}")
        if self.runner not in RUNNERS:
            raise ProcessingError(f"--runner must be one of {RUNNERS}, got {self.runner!r}")
        if not isinstance(self.threads, int) or self.threads < 1:
            raise ProcessingError(f"--threads must be an integer >= 1, got {self.threads!r}")
        if self.runs not in ("first", "last"):
            raise ProcessingError(f"--runs must be 'first' or 'last', got {self.runs!r}")
        if self.runner == "apptainer" and not self.image:
            raise ProcessingError(
                "--runner apptainer needs --image FILE.sif (e.g. built with 'apptainer build "
                "fastsurfer-gpu.sif docker://deepmi/fastsurfer:<version>')"
            )
        if self.runner == "native" and self.image:
            raise ProcessingError("--image is for --runner docker or apptainer, not native")
        if self.runner != "native" and self.executable:
            raise ProcessingError("--executable is for --runner native; containers use --image")

    @property
    def program(self) -> str:
        return self.executable or _DEFAULT_EXECUTABLE[self.engine]

    @property
    def container(self) -> str:
        return self.image or _DEFAULT_IMAGE[self.engine]


@dataclass(frozen=True)
class StepTemplate:
    """One engine call of a scan, with placeholders for host values."""

    name: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    #: the worker resource it occupies: "GPU" or "CPU"
    resource: str
    #: files that must exist (relative to the subject folder) after a successful run
    outputs: tuple[str, ...]
    #: a fresh attempt starts from an empty subject folder
    clean: bool


@dataclass(frozen=True)
class EngineVersion:
    """The version an engine reported, for provenance."""

    engine: str
    version: str | None
    text: str


def _container_prefix(settings: EngineSettings, *, gpu: bool, needs_license: bool) -> list[str]:
    """``docker run ...`` / ``apptainer exec ...`` up to (not including) the image's command."""
    if settings.runner == "docker":
        argv = ["docker", "run", "--rm", "--user", "{uid}:{gid}"]
        if gpu:
            argv += ["--gpus", "device={gpu}"]
        argv += ["-v", f"{{bids}}:{_DATA}:ro", "-v", f"{{out}}:{_OUTPUT}"]
        if needs_license:
            argv += ["-v", f"{{license}}:{_LICENSE}:ro"]
            if settings.engine == "freesurfer":
                argv += ["-e", f"FS_LICENSE={_LICENSE}"]
        argv.append(settings.container)
        return argv
    argv = ["apptainer", "exec"]
    if gpu:
        argv.append("--nv")
    argv += ["--no-home", "-B", f"{{bids}}:{_DATA}:ro", "-B", f"{{out}}:{_OUTPUT}"]
    if needs_license:
        argv += ["-B", f"{{license}}:{_LICENSE}:ro"]
        if settings.engine == "freesurfer":
            argv += ["--env", f"FS_LICENSE={_LICENSE}"]
    argv.append("{image}")  # a .sif path: filled in at run time, kept out of the plan
    return argv


def engine_steps(
    settings: EngineSettings,
    sid: str,
    images: tuple[str, ...],
    *,
    gpu_mode: str,
    license_given: bool,
) -> tuple[StepTemplate, ...]:
    """The steps of one scan.

    Parameters
    ----------
    settings : EngineSettings
    sid : str
        Output folder name (``sub-X_ses-Y``).
    images : tuple of str
        T1w paths relative to the BIDS root, in the order the engine takes them.
    gpu_mode : {"none", "local", "visible"}
        ``none``: segmentation on the CPU; ``local``: a GPU index picked at run time
        (``{gpu}``); ``visible``: the GPU the cluster gave the job (``CUDA_VISIBLE_DEVICES``).
    license_given : bool
        Whether a FreeSurfer license file was given (``{license}``).
    """
    native = settings.runner == "native"
    data = "{bids}" if native else _DATA
    out = "{out}" if native else _OUTPUT
    lic = "{license}" if native else _LICENSE
    if settings.engine == "fastsurfer":
        gpu = gpu_mode != "none"
        if not gpu:
            device = "cpu"
        elif native and gpu_mode == "local":
            device = "cuda:{gpu}"
        else:  # one GPU is visible to the process (container, or the cluster's choice)
            device = "cuda"
        root = ["--allow_root"] if settings.allow_root else []
        seg = ["{exe}"] if native else _container_prefix(settings, gpu=gpu, needs_license=False)
        if settings.runner == "apptainer":
            seg.append(_FASTSURFER_IN_IMAGE)
        seg += [
            "--sid", sid, "--sd", out, "--t1", f"{data}/{images[0]}", "--seg_only",
            "--device", device, "--viewagg_device", settings.viewagg_device,
            "--threads", str(settings.threads), *root, *settings.extra_args,
        ]  # fmt: skip
        surf = (
            ["{exe}"]
            if native
            else _container_prefix(settings, gpu=False, needs_license=license_given)
        )
        if settings.runner == "apptainer":
            surf.append(_FASTSURFER_IN_IMAGE)
        surf += ["--sid", sid, "--sd", out, "--surf_only", "--threads", str(settings.threads)]
        if settings.parallel:
            surf.append("--parallel")
        if settings.three_t:
            surf.append("--3T")
        if license_given:
            surf += ["--fs_license", lic]
        surf += [*root, *settings.extra_args]
        seg_env: tuple[tuple[str, str], ...] = ()
        if settings.runner == "apptainer" and gpu_mode == "local":
            # --nv exposes every GPU; Apptainer sets APPTAINERENV_<NAME> as <NAME> inside
            seg_env = (("APPTAINERENV_CUDA_VISIBLE_DEVICES", "{gpu}"),)
        return (
            StepTemplate("seg", tuple(seg), seg_env, "GPU" if gpu else "CPU", SEG_OUTPUTS, True),
            StepTemplate("surf", tuple(surf), (), "CPU", SURF_OUTPUTS, False),
        )
    recon = (
        ["{exe}"]
        if native
        else _container_prefix(settings, gpu=False, needs_license=license_given)
    )
    if not native:
        recon.append("recon-all")
    recon += ["-s", sid]
    for image in images:
        recon += ["-i", f"{data}/{image}"]
    recon += ["-sd", out, "-all"]
    if settings.parallel:
        recon.append("-parallel")
    recon += ["-openmp", str(settings.threads)]
    if settings.three_t:
        recon.append("-3T")
    recon += list(settings.extra_args)
    env = (("FS_LICENSE", "{license}"),) if native and license_given else ()
    return (StepTemplate("recon", tuple(recon), env, "CPU", RECON_OUTPUTS, True),)


def version_command(settings: EngineSettings) -> list[str]:
    """The command that prints the engine's version."""
    if settings.engine == "fastsurfer":
        if settings.runner == "native":
            return [settings.program, "--version"]
        if settings.runner == "docker":
            return ["docker", "run", "--rm", settings.container, "--version"]
        return ["apptainer", "exec", settings.container, _FASTSURFER_IN_IMAGE, "--version"]
    if settings.runner == "native":
        return [settings.program, "-version"]
    if settings.runner == "docker":
        return ["docker", "run", "--rm", settings.container, "recon-all", "-version"]
    return ["apptainer", "exec", settings.container, "recon-all", "-version"]


_FREESURFER_STAMP = re.compile(r"freesurfer-\S*?-(\d+\.\d+\.\d+)(?:-|$)")
_VERSION = re.compile(r"(?<![\w.])v?(\d+\.\d+(?:\.\d+)?(?:[-+.][0-9A-Za-z.+-]*)?)")


def parse_version(engine: str, text: str) -> str | None:
    """The version number in an engine's ``--version`` / ``-version`` output.

    Examples
    --------
    >>> parse_version("freesurfer", "freesurfer-linux-ubuntu22_x86_64-7.4.1-20230613-7eb8460")
    '7.4.1'
    >>> parse_version("fastsurfer", "Setting ENV variable FASTSURFER_HOME ...\\n2.4.2")
    '2.4.2'
    """
    if engine == "freesurfer":
        stamp = _FREESURFER_STAMP.search(text)
        if stamp:
            return stamp.group(1)
    for line in text.splitlines():
        if "FASTSURFER_HOME" in line:  # run_fastsurfer.sh announces where it lives first
            continue
        found = _VERSION.search(line)
        if found:
            return found.group(1)
    return None


def _release(version: str) -> tuple[int, int]:
    major, minor = [*version.split("."), "0"][:2]
    digits = re.match(r"\d+", minor)
    return int(major), int(digits.group(0)) if digits else 0


def check_engine(settings: EngineSettings, *, timeout: float = 120.0) -> EngineVersion:
    """Run the engine's version command and refuse versions the command lines do not fit.

    Raises
    ------
    ProcessingError
        When the engine (or docker/apptainer) cannot be found or run, prints no version, or
        is too old for the options morphml passes.
    """
    settings.check()
    argv = version_command(settings)
    if shutil.which(argv[0]) is None:
        what = "--executable" if settings.runner == "native" else f"the {argv[0]} command"
        raise ProcessingError(
            f"{settings.engine}: {argv[0]!r} not found on PATH; install it or give {what}"
        )
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, errors="replace", timeout=timeout,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ProcessingError(f"{settings.engine}: the version check failed ({err})") from None
    text = (done.stdout + done.stderr).strip()
    version = parse_version(settings.engine, text)
    if done.returncode != 0 or version is None:
        first = text.splitlines()[0] if text else "no output"
        raise ProcessingError(
            f"{settings.engine}: '{' '.join(argv[1:] or argv)}' gave no version "
            f"(exit status {done.returncode}: {first[:200]})"
        )
    release = _release(version)
    if settings.engine == "fastsurfer" and release < _MIN_FASTSURFER:
        raise ProcessingError(
            f"FastSurfer {version} found; morphml's command lines need FastSurfer >= 2.0 "
            "(--seg_only/--surf_only/--device/--viewagg_device)"
        )
    if settings.engine == "freesurfer":
        needed = _MIN_FREESURFER_PARALLEL if settings.parallel else _MIN_FREESURFER
        if release < needed:
            why = (
                "-parallel needs 6.0 or later (run with --no-parallel)"
                if settings.parallel
                else "-openmp needs 5.3 or later"
            )
            raise ProcessingError(f"FreeSurfer {version} found; recon-all {why}")
    stamp = next((ln for ln in text.splitlines() if version in ln), version)
    return EngineVersion(settings.engine, version, stamp.strip()[:200])
