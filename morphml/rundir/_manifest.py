"""A run folder's ``manifest.json``: provenance, the one builder, and the one reader.

Every run kind writes the same header (run id, kind, morphml and package versions, platform);
fitted runs (pretrain and transfer) then record their seeds, config hash and the data they
read (:func:`build_manifest`). Reading checks every way the file can be bad, with one clear
error (:func:`read_manifest`).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from morphml._version import __version__
from morphml.config import config_hash
from morphml.features import FeatureFrame, describe
from morphml.rundir._layout import MANIFEST, RunDir, write_json

__all__ = [
    "build_manifest",
    "git_commit",
    "manifest_header",
    "package_versions",
    "read_manifest",
    "write_manifest",
]

_PACKAGES = (
    "numpy", "pandas", "scikit-learn", "xgboost", "optuna", "duckdb", "pyarrow", "pydantic",
    "skops", "scipy", "joblib",
)  # fmt: skip


def package_versions() -> dict[str, str]:
    """Installed versions of morphml and the packages results depend on."""
    out = {"morphml": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    """The commit of the morphml checkout, when it is one (None for an installed package)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def manifest_header(run_id: str, kind: str) -> dict[str, Any]:
    """What every manifest starts with: the run, morphml, the packages and the platform."""
    return {
        "run_id": run_id,
        "kind": kind,
        "morphml_version": __version__,
        "packages": package_versions(),
        "platform": {
            "system": platform.system(),
            "machine": platform.machine(),
            "python": sys.version.split()[0],
        },
    }


def build_manifest(
    kind: str,
    run_id: str,
    *,
    config: Any,
    frame: FeatureFrame,
    feature_ids: list[str],
    device: str | None = None,
    sources: Mapping[str, Any] | None = None,
    site_covariates: list[str] | None = None,
    results: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a fitted run (``pretrain`` or ``transfer``).

    Parameters
    ----------
    kind, run_id : str
    config : PretrainConfig or TransferConfig
        Its seed and hash are recorded.
    frame : FeatureFrame
        The matrix the fit read: its hash, scan keys, per-scan hashes and cohort counts.
    feature_ids : list of str
        The features the models take.
    device : str, optional
        Where XGBoost trained (pretrain runs).
    sources : mapping, optional
        What else the run was made from (a transfer run's ``pretrained`` run).
    site_covariates : list of str, optional
        The site-indicator columns the models take (pretrain runs).
    results : mapping, optional
        Entries recorded after the data (``tuning``, ``final_models``, ``seconds``).
    """
    manifest = manifest_header(run_id, kind)
    if device is not None:
        manifest["device"] = device
    manifest["seeds"] = {"seed": config.seed}
    manifest["config_hash"] = config_hash(config)
    manifest.update(sources or {})
    manifest["feature_matrix_hash"] = frame.data_hash()
    manifest["feature_ids"] = feature_ids
    if site_covariates is not None:
        manifest["site_covariates"] = site_covariates
    manifest["scan_keys"] = list(frame.X.index)
    manifest["scan_hashes"] = frame.scan_hashes()
    manifest["cohort"] = describe(frame)
    manifest.update(results or {})
    manifest["git_commit"] = git_commit()
    return manifest


def write_manifest(run: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    write_json(RunDir(run).manifest, manifest)


def read_manifest(
    run: str | os.PathLike[str],
    error: type[Exception],
    required: Iterable[str] = ("run_id", "kind"),
) -> dict[str, Any]:
    """``run/manifest.json`` as a dict; a missing, unreadable, non-JSON or incomplete file
    raises ``error`` naming the file and what was expected."""
    folder = RunDir(run)
    path = folder.manifest
    if not path.is_file():
        raise error(
            f"{folder.path}: not a morphml run directory (no {MANIFEST}); give the directory "
            "'morphml fit' wrote"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise error(
            f"{path}: not valid JSON ({err}); expected the manifest 'morphml fit' wrote "
            "(restore the run folder from a backup, or fit again)"
        ) from None
    except OSError as err:
        raise error(f"{path}: cannot be read ({err.strerror or err})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object (the manifest 'morphml fit' wrote)")
    missing = [key for key in required if key not in data]
    if missing:
        raise error(
            f"{path}: missing {', '.join(missing)}; expected a JSON object with "
            f"{', '.join(repr(k) for k in missing)} (the manifest 'morphml fit' wrote, "
            "unedited)"
        )
    return data
