"""``morphml audit``: prove that a run directory still reproduces.

An audit answers one question: would fitting this run's resolved config on this database, with
the software installed here, give the same results? It checks, in order:

``config``
    ``config.yaml`` parses, and hashes to the manifest's ``config_hash``. The hash is taken of
    the file as stored as well as of the resolved config, so a morphml that has since gained
    config keys with defaults does not mistake an untouched file for an edited one. The
    manifest stores only the hash; the keys an edit touched are named where the run records
    them (seed, targets, models, validation schemes and folds, ...).
``database``
    The run is recorded in the database's ``runs`` table, with the same config hash, and is not
    marked stale (a withdrawal marks every run that used the person's scans stale).
``scans``
    Every scan key of the manifest is still in the database (withdrawn or removed scans are
    listed), the cohort still selects exactly those scans, and each scan's feature row hashes
    to the manifest's per-scan value (changed scans are named); then the whole feature matrix
    hashes to ``feature_matrix_hash``. Scan keys are pseudonyms, so naming them is safe.
``packages``
    Installed package versions, platform and XGBoost device against the manifest. Differences
    are warnings: results are then compared within the config's ``audit_tolerance`` instead of
    exactly.
``refit``
    The run is fitted again from its resolved config into a fresh directory (without recording
    a run in the database), and its predictions, metrics, tuned parameters and input hashes are
    compared with the stored ones: identical on the same versions, platform and CPU; within
    ``audit_tolerance`` (absolute and relative) otherwise. The re-fit is skipped when an earlier
    check already failed (the run cannot reproduce then), unless ``always_refit``.

The run is reproduced when no check failed and the re-fit matched. Nothing an audit reports
names a person: it holds pseudonymous scan keys, hashes, versions and numbers only, and no
file path.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from morphml._utils import read_yaml
from morphml._version import __version__
from morphml.config import config_hash, parse_config
from morphml.db import connect, db_path, run_status
from morphml.exceptions import AuditError, MorphmlError
from morphml.features import SITE_PREFIX, FeatureFrame, apply_row_transforms, load_frame
from morphml.rundir import (
    CONFIG,
    MANIFEST,
    METRICS,
    RESULT_TABLES,
    RunDir,
    load_pretrained,
    package_versions,
    read_manifest,
    read_metrics,
)

__all__ = ["AuditResult", "Check", "audit_run"]

Status = Literal["ok", "warning", "failed", "skipped"]

#: manifest keys an audit cannot do without
_REQUIRED = ("run_id", "kind", "config_hash", "scan_keys")
#: manifest entries that say which data a fit read
_INPUT_KEYS = ("feature_matrix_hash", "scan_keys", "feature_ids", "scan_hashes")
#: how many keys, metrics or scans a message lists before "..."
_SHOW = 5


@dataclass(frozen=True)
class Check:
    """One named check of an audit.

    Attributes
    ----------
    name : str
        ``config``, ``database``, ``scans``, ``packages`` or ``refit``.
    status : {"ok", "warning", "failed", "skipped"}
    message : str
        One line saying what was found.
    details : dict
        JSON-safe specifics (differing keys, scans, versions, metrics).
    """

    name: str
    status: Status
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class AuditResult:
    """Everything an audit found, with its verdict.

    Attributes
    ----------
    run_id : str
    kind : str
        The run's kind (``pretrain``, ``transfer``).
    checks : list of Check
    tolerance : float
        The tolerance results were compared with (0.0: exact).
    """

    run_id: str
    kind: str
    checks: list[Check]
    tolerance: float = 0.0

    def check(self, name: str) -> Check:
        """The check called ``name``."""
        for item in self.checks:
            if item.name == name:
                return item
        raise KeyError(name)

    @property
    def reproduced(self) -> bool:
        """True when no check failed and the re-fit matched the stored results."""
        refit = [c for c in self.checks if c.name == "refit"]
        return (
            bool(refit)
            and refit[0].status == "ok"
            and all(c.status != "failed" for c in self.checks)
        )

    @property
    def reasons(self) -> list[str]:
        """Why the run is not reproduced (empty when it is)."""
        out = [f"{c.name}: {c.message}" for c in self.checks if c.status == "failed"]
        if not out and not self.reproduced:
            out = [f"{c.name}: {c.message}" for c in self.checks if c.name == "refit"]
        return out

    @property
    def verdict(self) -> str:
        """``REPRODUCED`` or ``NOT REPRODUCED: <reasons>``."""
        if self.reproduced:
            return "REPRODUCED"
        return "NOT REPRODUCED: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (what ``audit.json`` holds); no file path, no identity."""
        return _json_safe(
            {
                "audit_format": 1,
                "run_id": self.run_id,
                "kind": self.kind,
                "reproduced": self.reproduced,
                "verdict": self.verdict,
                "tolerance": self.tolerance,
                "audited_with": {"morphml": __version__},
                "audited_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "checks": [
                    {"name": c.name, "status": c.status, "message": c.message,
                     "details": c.details}
                    for c in self.checks
                ],
            }
        )  # fmt: skip

    def lines(self) -> list[str]:
        """The human-readable report: one line per check, then the verdict."""
        out = [f"audit of run {self.run_id} ({self.kind})"]
        out += [f"  {c.status:<8} {c.name:<9} {c.message}" for c in self.checks]
        out.append(self.verdict)
        return out


def audit_run(
    run_dir: str | os.PathLike[str],
    *,
    db: str | os.PathLike[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    always_refit: bool = False,
) -> AuditResult:
    """Check that a run directory still reproduces from the database and its config.

    Parameters
    ----------
    run_dir : path-like
        A run directory written by ``morphml fit`` (``manifest.json``, ``config.yaml``,
        ``metrics.json``, ``predictions.parquet``).
    db : path-like, optional
        The database (``MORPHML_DB`` / ``morphml.duckdb`` by default). It is only read: the
        re-fit records no run in it.
    workdir : path-like, optional
        An empty or missing directory for the re-fit, kept afterwards; by default a temporary
        directory that is removed.
    always_refit : bool, default False
        Re-fit even when the config or data checks already failed (to see how far the results
        moved).

    Returns
    -------
    AuditResult
        ``result.reproduced`` and ``result.verdict`` say whether the run reproduced.

    Raises
    ------
    AuditError
        When ``run_dir`` is not a run directory (no or unreadable ``manifest.json``), the run's
        kind cannot be re-fitted by this morphml, or ``workdir`` is not empty.
    DatabaseError
        When the database cannot be opened.

    Examples
    --------
    >>> from morphml.audit import audit_run  # doctest: +SKIP
    >>> result = audit_run("runs/pretrain", db="morphml.duckdb")  # doctest: +SKIP
    >>> result.verdict  # doctest: +SKIP
    'REPRODUCED'
    """
    run = Path(run_dir)
    manifest = _read_manifest(run)
    kind = str(manifest["kind"])
    how = _kind(kind)
    db_file = db_path(db)
    if not db_file.is_file():
        raise AuditError(
            f"database {db_file} does not exist; give the database the run was fitted on "
            "with --db (or MORPHML_DB)"
        )
    config, config_check = _check_config(run, manifest)
    checks = [config_check, _check_database(db_file, manifest)]
    usable = config if config_check.status != "failed" else None
    checks.append(_check_scans(db_file, run, manifest, usable, how))
    packages_check, exact = _check_packages(manifest, config)
    checks.append(packages_check)
    tolerance = 0.0 if exact else float(getattr(config, "audit_tolerance", 0.0) or 0.0)
    failed = [c.name for c in checks if c.status == "failed"]
    if config is None:
        checks.append(Check("refit", "skipped", "no usable config.yaml to re-fit from"))
    elif failed and not always_refit:
        checks.append(
            Check(
                "refit",
                "skipped",
                f"not attempted: {', '.join(failed)} already failed (use --always-refit to "
                "re-fit anyway)",
            )
        )
    else:
        checks.append(_check_refit(run, manifest, config, db_file, workdir, how.refit, tolerance))
    return AuditResult(str(manifest["run_id"]), kind, checks, tolerance)


# --- manifest and dispatch ------------------------------------------------------------------


def _read_manifest(run: Path) -> dict[str, Any]:
    if not run.is_dir():
        raise AuditError(
            f"{run} is not a directory; expected a run directory written by morphml fit"
        )
    return read_manifest(run, AuditError, _REQUIRED)


#: ``(config, db, run_dir, manifest) -> FeatureFrame``: the matrix a fit of the kind reads
FrameLoader = Callable[[Any, Path, Path, dict[str, Any]], FeatureFrame]
#: ``(config, db, out, run_dir, manifest)``: fit the kind again into ``out``, recording nothing
Refit = Callable[[Any, Path, Path, Path, dict[str, Any]], None]


@dataclass(frozen=True)
class _Kind:
    """How an audit rebuilds the inputs of one run kind and fits it again."""

    needs: str  #: the morphml.pipelines function the kind is fitted with
    frame: FrameLoader
    refit: Refit


def _pretrain_frame(config: Any, db: Path, run: Path, manifest: dict[str, Any]) -> FeatureFrame:
    return load_frame(db, config.cohort, config.features)


def _refit_pretrain(config: Any, db: Path, out: Path, run: Path, manifest: dict[str, Any]) -> None:
    from morphml.pipelines import fit_pretrain

    fit_pretrain(config, db=db, out=out, resume=False, record=False)


def _pretrained_dir(config: Any, run: Path, manifest: dict[str, Any]) -> Path:
    """The pretrain run a transfer run used: its config's path or a sibling of the run."""
    recorded = manifest.get("pretrained") or {}
    candidates = []
    if getattr(config, "pretrained", None):
        given = Path(config.pretrained)
        candidates += [given] if given.is_absolute() else [given, run.parent / given]
    if recorded.get("directory"):
        candidates.append(run.parent / str(recorded["directory"]))
    for path in candidates:
        try:
            found = json.loads(RunDir(path).manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if recorded.get("run_id") in (None, found.get("run_id")):
            return path
    raise AuditError(
        f"the pretrain run {recorded.get('run_id')} this transfer run used was not found "
        f"(looked in {', '.join(str(c) for c in candidates) or 'no place recorded'}); put it "
        "beside the run directory"
    )


def _transfer_frame(config: Any, db: Path, run: Path, manifest: dict[str, Any]) -> FeatureFrame:
    from morphml.pipelines import load_transfer_data

    pretrained = load_pretrained(_pretrained_dir(config, run, manifest))
    return load_transfer_data(config, pretrained, db)[0]


def _refit_transfer(config: Any, db: Path, out: Path, run: Path, manifest: dict[str, Any]) -> None:
    import morphml.pipelines as pipelines

    fit = pipelines.fit_transfer
    kwargs: dict[str, Any] = {
        "db": db,
        "out": out,
        "pretrained": _pretrained_dir(config, run, manifest),
        # a run made from a stale pretrain run (--allow-stale) is re-fitted the same way
        "allow_stale": bool((manifest.get("pretrained") or {}).get("stale")),
    }
    if "record" in inspect.signature(fit).parameters:
        kwargs["record"] = False
    else:
        # this fit always records its run: let it record into a copy of the database
        copy = out.parent / f"{out.name}-db.duckdb"
        shutil.copyfile(db, copy)
        kwargs["db"] = copy
    fit(config, **kwargs)


#: run kind (manifest "kind") -> how to audit it
_KINDS: dict[str, _Kind] = {
    "pretrain": _Kind("fit_pretrain", _pretrain_frame, _refit_pretrain),
    "transfer": _Kind("fit_transfer", _transfer_frame, _refit_transfer),
}


def _kind(kind: str) -> _Kind:
    if kind not in _KINDS:
        raise AuditError(
            f"{MANIFEST}: run kind {kind!r} cannot be audited; expected one of "
            f"{', '.join(sorted(_KINDS))}"
        )
    import morphml.pipelines as pipelines

    if not hasattr(pipelines, _KINDS[kind].needs):
        raise AuditError(
            f"run kind {kind!r} needs morphml.pipelines.{_KINDS[kind].needs}, which this "
            f"morphml {__version__} lacks; audit with the morphml that wrote the run"
        )
    return _KINDS[kind]


# --- config ---------------------------------------------------------------------------------


def _raw_hash(data: Any) -> str:
    """config_hash of the mapping as stored (what fit hashed when it wrote the file)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def _check_config(run: Path, manifest: dict[str, Any]) -> tuple[Any, Check]:
    try:
        raw = read_yaml(
            RunDir(run).config, AuditError, f"{CONFIG} is missing from the run directory"
        )
        config = parse_config(raw, source=CONFIG)
    except MorphmlError as err:
        return None, Check("config", "failed", str(err))
    want = str(manifest["config_hash"])
    resolved = config_hash(config)
    if resolved == want:
        return config, Check("config", "ok", f"{CONFIG} matches the manifest ({want[:12]})")
    if _raw_hash(raw) == want:
        # untouched file, resolved by a morphml with more config keys than the one that wrote it
        new = sorted(set(_flat(config.model_dump(mode="json"))) - set(_flat(raw)))
        config = _as_fitted_then(config, raw)
        return config, Check(
            "config",
            "warning",
            f"{CONFIG} is unchanged, but this morphml resolves it with keys the run did not "
            f"have: {_listing(new)} (defaults; the re-fit shows whether they matter)",
            {"new_keys": new},
        )
    hints = _config_hints(config, manifest, run)
    message = f"{CONFIG} was edited after the run (sha256 {resolved[:12]} != manifest {want[:12]})"
    if hints:
        message += "; keys that no longer match the run: " + ", ".join(
            f"{k} (run {v['run']!r}, {CONFIG} {v['config']!r})" for k, v in hints.items()
        )
    else:
        message += "; the manifest stores only the hash, so the edited keys cannot be named"
    details = {"config_hash": resolved, "manifest_config_hash": want, "changed_keys": hints}
    return config, Check("config", "failed", message, details)


def _as_fitted_then(config: Any, raw: Any) -> Any:
    """A config written before a key existed, with the value that morphml then used.

    Before ``bias_correction`` was a key, pretrain runs corrected brain age with the Cole /
    de Lange formula and a minimum slope of 0.05 (their sidecars say ``linear-beheshti``);
    the re-fit must do the same to reproduce them.
    """
    from morphml.config import BiasCorrectionSpec, PretrainConfig

    if (
        isinstance(config, PretrainConfig)
        and isinstance(raw, dict)
        and "bias_correction" not in raw
    ):
        spec = BiasCorrectionSpec(method="cole", min_slope=0.05)
        return config.model_copy(update={"bias_correction": spec})
    return config


def _config_hints(config: BaseModel, manifest: dict[str, Any], run: Path) -> dict[str, Any]:
    """Config keys whose values disagree with what the run directory recorded."""
    hints: dict[str, Any] = {}

    def note(key: str, recorded: Any, current: Any) -> None:
        if recorded != current:
            hints[key] = {"run": recorded, "config": current}

    seed = (manifest.get("seeds") or {}).get("seed")
    if seed is not None and hasattr(config, "seed"):
        note("seed", seed, config.seed)
    if manifest.get("kind") != "pretrain":
        return hints
    cfg: Any = config
    finals = [str(k).split("/", 1) for k in manifest.get("final_models") or {}]
    if finals:
        note("targets", sorted({t for t, _ in finals}), sorted(cfg.targets))
        for target in sorted({t for t, _ in finals}):
            run_models = sorted(
                {m.removesuffix("_etiv_adjusted") for t, m in finals if t == target}
            )
            note(f"models.{target}", run_models, sorted(cfg.models.get(target) or []))
    try:
        metrics = read_metrics(run)
        from morphml.evaluation import SCHEME_KEYS, scheme_key

        recorded = {
            scheme_key(scheme)
            for models in metrics["targets"].values()
            for schemes in models.values()
            for scheme in schemes
        }
        note(
            "validation.schemes",
            sorted(recorded),
            sorted(SCHEME_KEYS[s] for s in cfg.validation.schemes),
        )
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        pass
    folds = {
        str(k).rsplit("/", 1)[-1] for k in manifest.get("tuning") or {} if "/kfold/" in str(k)
    }
    if folds and "kfold" in cfg.validation.schemes:
        note("validation.folds", len(folds), cfg.validation.folds)
    if "site_covariates" in manifest:
        note(
            "features.site_covariates",
            bool(manifest["site_covariates"]),
            cfg.features.site_covariates,
        )
    atlases = sorted({str(f).split(".", 1)[0] for f in manifest.get("feature_ids") or []})
    if atlases and cfg.features.atlases is not None:
        note("features.atlases", atlases, sorted(cfg.features.atlases))
    for sidecar in RunDir(run).model_sidecars():
        try:
            transforms = json.loads(sidecar.read_text(encoding="utf-8"))["feature_transforms"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for key in ("log_volumes", "relative_thickness"):
            if key in transforms:
                note(f"features.{key}", transforms[key], getattr(cfg.features, key))
        break
    return hints


# --- database record ------------------------------------------------------------------------


def _check_database(db: Path, manifest: dict[str, Any]) -> Check:
    run_id = str(manifest["run_id"])
    with connect(db, read_only=True) as con:
        try:
            stale, reason = run_status(con, run_id)
        except MorphmlError:
            return Check(
                "database",
                "warning",
                f"run {run_id} is not recorded in this database (was it fitted on another "
                "database?); its scans are still checked below",
            )
        row = con.execute("SELECT config_hash FROM runs WHERE run_id = ?", [run_id]).fetchone()
    recorded_hash = row[0] if row else None
    if stale:
        return Check(
            "database",
            "failed",
            f"the database marks this run stale: {reason or 'no reason recorded'}",
            {"stale": True, "stale_reason": reason},
        )
    if recorded_hash is not None and recorded_hash != manifest["config_hash"]:
        return Check(
            "database",
            "failed",
            f"{MANIFEST}'s config hash {str(manifest['config_hash'])[:12]} differs from the "
            f"one the database recorded for this run ({str(recorded_hash)[:12]}): the manifest "
            "was edited",
        )
    return Check("database", "ok", "run recorded in the database and not stale")


# --- scans ----------------------------------------------------------------------------------


def _check_scans(db: Path, run: Path, manifest: dict[str, Any], config: Any, how: _Kind) -> Check:
    keys = [str(k) for k in manifest["scan_keys"]]
    present = _present_scans(db, keys)
    gone = [k for k in keys if k not in present]
    problems: list[str] = []
    details: dict[str, Any] = {"n_scans": len(keys)}
    scrubbed = [w for w in manifest.get("withdrawals") or [] if isinstance(w, dict)]
    if scrubbed:
        # a withdrawal took the person out of the run's files too: the recorded hashes and
        # results were computed with them, so nothing below can match
        n_removed = sum(int(w.get("n_scans_removed") or 0) for w in scrubbed)
        ids = ", ".join(str(w.get("withdrawal_id")) for w in scrubbed)
        problems.append(
            f"withdrawal {ids} removed {n_removed} scan{'' if n_removed == 1 else 's'} from this "
            "run's files (manifest and predictions no longer name them); the run was fitted "
            "with them, so its feature-matrix hash and results cannot be reproduced: fit it "
            "again"
        )
        details["withdrawals"] = scrubbed
    if gone:
        problems.append(
            f"{_count(gone, 'scan')} the run used {_be(gone)} no longer in the database "
            f"(withdrawn or removed): {_listing(gone)}"
        )
        details["withdrawn_or_removed"] = gone
    if config is None:
        if gone or scrubbed:
            return Check("scans", "failed", "; ".join(problems), details)
        return Check(
            "scans",
            "warning",
            f"all {len(keys)} scans are still in the database; values not compared "
            f"({CONFIG} does not match the run)",
            details,
        )
    try:
        frame = how.frame(config, db, run, manifest)
    except MorphmlError as err:
        problems.append(f"the run's cohort cannot be selected now: {err}")
        return Check("scans", "failed", "; ".join(problems), details)
    now_hash = frame.data_hash()
    if (
        not gone
        and list(frame.X.index) == keys
        and now_hash == manifest.get("feature_matrix_hash")
    ):
        return Check(
            "scans",
            "ok",
            f"{len(keys)} scans unchanged; feature matrix hash matches ({now_hash[:12]})",
            details,
        )
    problems += _scan_differences(db, manifest, config, frame, present, details, bool(problems))
    return Check("scans", "failed", "; ".join(problems), details)


def _present_scans(db: Path, keys: list[str]) -> set[str]:
    """Which of the run's scan keys the database still holds."""
    with connect(db, read_only=True) as con:
        con.register("morphml_audit_keys", pd.DataFrame({"scan_key": keys}))
        try:
            return {
                row[0]
                for row in con.execute(
                    "SELECT scan_key FROM scans WHERE scan_key IN "
                    "(SELECT scan_key FROM morphml_audit_keys)"
                ).fetchall()
            }
        finally:
            con.unregister("morphml_audit_keys")


def _scan_differences(
    db: Path,
    manifest: dict[str, Any],
    config: Any,
    frame: FeatureFrame,
    present: set[str],
    details: dict[str, Any],
    reported: bool,
) -> list[str]:
    """How the cohort selected now differs from the run's: scans deselected or added, values
    changed, columns lost or added (``details`` gets the lists); when nothing names the
    difference and no problem was ``reported`` already, the hashes that differ."""
    keys = [str(k) for k in manifest["scan_keys"]]
    now_hash, want_hash = frame.data_hash(), manifest.get("feature_matrix_hash")
    problems: list[str] = []
    now_keys = set(frame.X.index)
    deselected = [k for k in keys if k in present and k not in now_keys]
    added = [k for k in frame.X.index if k not in set(keys)]
    if deselected:
        problems.append(
            f"{_count(deselected, 'scan')} {_be(deselected)} still in the database but no "
            "longer selected by the cohort (QC flags, phenotypes or sessions changed): "
            f"{_listing(deselected)}"
        )
        details["deselected"] = deselected
    if added:
        problems.append(
            f"{_count(added, 'scan')} now selected that the run did not use: {_listing(added)}"
        )
        details["added"] = added
    columns = list(manifest.get("feature_ids") or []) + list(manifest.get("site_covariates") or [])
    common = [k for k in keys if k in now_keys]
    stored: dict[str, str] = manifest.get("scan_hashes") or {}
    if list(frame.X.columns) == columns:
        now = frame.scan_hashes()
        changed = [k for k in common if k in stored and now.get(k) != stored[k]]
    elif manifest["kind"] == "pretrain":
        changed = _changed_scans(db, manifest, config, common)
    else:
        changed = []
    if changed:
        problems.append(
            f"{_count(changed, 'scan')} whose stored values changed since the run: "
            f"{_listing(changed)}"
        )
        details["changed"] = changed
    if columns and list(frame.X.columns) != columns:
        lost = [c for c in columns if c not in set(frame.X.columns)]
        extra = [c for c in frame.X.columns if c not in set(columns)]
        problems.append(
            "the feature columns differ from the run's"
            + (f"; no longer selected: {_listing(lost)}" if lost else "")
            + (f"; newly selected: {_listing(extra)}" if extra else "")
        )
        details["columns_lost"], details["columns_added"] = lost, extra
    details["feature_matrix_hash"] = {"manifest": want_hash, "now": now_hash}
    if not problems and not reported:
        problems.append(
            f"the feature matrix hashes to {now_hash[:12]}, not the manifest's "
            f"{str(want_hash)[:12]}"
        )
    return problems


def _changed_scans(db: Path, manifest: dict[str, Any], config: Any, keys: list[str]) -> list[str]:
    """Pretrain runs whose columns changed: scans whose row, rebuilt on the run's columns with
    the run's transforms, hashes differently."""
    spec, cohort = config.features, config.cohort
    stored: dict[str, str] = manifest.get("scan_hashes") or {}
    if not keys or not stored:
        return []
    feature_ids = list(manifest.get("feature_ids") or [])
    site_cols = list(manifest.get("site_covariates") or [])
    # raw values of every feature, then exactly the run's columns, then the row-wise transforms
    # on those columns (as load_frame applies them after choosing its columns)
    raw_spec = spec.model_copy(
        update={"max_missing": 1.0, "site_covariates": False, "log_volumes": False,
                "relative_thickness": False, "exclude": []}
    )  # fmt: skip
    try:
        frame = load_frame(db, cohort, raw_spec)
    except MorphmlError:
        return []
    X = apply_row_transforms(frame.X.reindex(index=keys, columns=feature_ids), spec)
    sites = frame.meta["site"].reindex(keys).fillna("unknown").astype(str)
    for col in site_cols:
        X[col] = (sites == col[len(SITE_PREFIX) :]).astype(np.float64).to_numpy()
    now = FeatureFrame(X, frame.meta.reindex(keys)).scan_hashes()
    return [k for k in keys if k in stored and now.get(k) != stored[k]]


# --- packages -------------------------------------------------------------------------------


def _check_packages(manifest: dict[str, Any], config: Any) -> tuple[Check, bool]:
    """Version, platform and device differences; whether exact equality can be expected."""
    recorded: dict[str, Any] = manifest.get("packages") or {}
    installed = package_versions()
    diffs = {
        name: {"run": recorded.get(name), "now": installed.get(name)}
        for name in sorted(set(recorded) | set(installed))
        if recorded.get(name) != installed.get(name)
    }
    plat_now = {
        "system": platform.system(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
    }
    plat_run: dict[str, Any] = manifest.get("platform") or {}
    plat_diffs = {
        k: {"run": plat_run.get(k), "now": v} for k, v in plat_now.items() if plat_run.get(k) != v
    }
    device_run = manifest.get("device")
    device_now = None
    if config is not None and hasattr(config, "device"):
        from morphml.models import resolve_device

        try:
            device_now = resolve_device(config.device)
        except MorphmlError as err:
            device_now = f"unavailable ({err})"
    notes = [f"{name} {d['run']} -> {d['now']}" for name, d in diffs.items()]
    notes += [f"{k} {d['run']} -> {d['now']}" for k, d in plat_diffs.items()]
    if device_now is not None and device_run is not None and device_now != device_run:
        notes.append(f"device {device_run} -> {device_now}")
    on_cpu = device_run in (None, "cpu") and device_now in (None, "cpu")
    exact = not diffs and not plat_diffs and on_cpu
    details = {
        "packages": diffs,
        "platform": plat_diffs,
        "device": {"run": device_run, "now": device_now},
    }
    if notes:
        tol = float(getattr(config, "audit_tolerance", 0.0) or 0.0)
        return (
            Check(
                "packages",
                "warning",
                f"{'; '.join(notes)} (results compared within audit_tolerance = {tol:g})",
                details,
            ),
            exact,
        )
    if not on_cpu:
        return (
            Check(
                "packages",
                "warning",
                f"same versions, but the models train on {device_run}: GPU results may differ in "
                "the last digits; compared within audit_tolerance",
                details,
            ),
            exact,
        )
    return Check(
        "packages", "ok", "same package versions, platform and device (cpu)", details
    ), exact


# --- refit ----------------------------------------------------------------------------------


@contextmanager
def _work_directory(workdir: str | os.PathLike[str] | None) -> Iterator[Path]:
    if workdir is not None:
        path = Path(workdir)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise AuditError(f"--workdir {path} is not an empty directory; give a new one")
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="morphml-audit-") as tmp:
        yield Path(tmp)


def _check_refit(
    run: Path,
    manifest: dict[str, Any],
    config: Any,
    db: Path,
    workdir: str | os.PathLike[str] | None,
    refit: Refit,
    tolerance: float,
) -> Check:
    with _work_directory(workdir) as work:
        out = work / "refit"
        try:
            refit(config, db, out, run, manifest)
        except MorphmlError as err:
            return Check("refit", "failed", f"the re-fit failed: {err}")
        problems: list[str] = []
        details: dict[str, Any] = {}
        new_manifest = read_manifest(out, AuditError)
        # only what the run recorded (older manifests have no per-scan hashes)
        recorded = [k for k in _INPUT_KEYS if k in manifest]
        inputs = _compare_json(
            {k: manifest[k] for k in recorded}, {k: new_manifest.get(k) for k in recorded}, 0.0
        )
        if inputs:
            problems.append(f"the re-fit read other data: {_listing(inputs, 3)}")
            details["inputs"] = inputs
        rows: dict[str, int] = {}
        old_run, new_run = RunDir(run), RunDir(out)
        for name in RESULT_TABLES:
            if (
                name != RESULT_TABLES[0]
                and not old_run.table(name).exists()
                and not new_run.table(name).exists()
            ):
                continue
            try:
                old = pd.read_parquet(old_run.table(name))
                new = pd.read_parquet(new_run.table(name))
            except (OSError, ValueError) as err:
                where = "the run's" if new_run.table(name).exists() else "the re-fit's"
                problems.append(f"{where} {name} cannot be read ({type(err).__name__})")
                continue
            rows[name] = len(old)
            if "scheme" in old.columns:  # runs before the cv -> kfold rename
                from morphml.evaluation import scheme_key

                old = old.assign(scheme=old["scheme"].map(scheme_key).astype(old["scheme"].dtype))
            diff = _compare_predictions(old, new, tolerance)
            if diff:
                problems.append(f"{name}: {diff}")
                details[name] = diff
        try:
            old_metrics = read_metrics(run)
        except (OSError, ValueError) as err:
            problems.append(f"{METRICS} cannot be read ({type(err).__name__})")
        else:
            new_metrics = read_metrics(out)
            from morphml.evaluation import scheme_keys_current

            # a run written before the scheme keys were renamed (cv -> kfold) still compares
            metric_diff = _compare_json(
                _results_only(scheme_keys_current(old_metrics)),
                _results_only(new_metrics),
                tolerance,
            )
            if metric_diff:
                problems.append(
                    f"{_count(metric_diff, 'metric value')} {_differ(metric_diff)}: "
                    f"{_listing(metric_diff, 3)}"
                )
                details["metrics"] = metric_diff
        tuned = _compare_json(
            {k: manifest.get(k) for k in ("tuning", "final_models")},
            {k: new_manifest.get(k) for k in ("tuning", "final_models")},
            tolerance,
        )
        if tuned:
            problems.append(
                f"{_count(tuned, 'tuned value')} {_differ(tuned)}: {_listing(tuned, 3)}"
            )
            details["tuning"] = tuned
    how = "identical" if tolerance == 0 else f"equal within {tolerance:g}"
    if problems:
        return Check("refit", "failed", "; ".join(problems), details)
    tables = ", ".join(f"{name} ({n} rows)" for name, n in rows.items())
    return Check("refit", "ok", f"{tables}, metrics and tuned parameters {how}", details)


def _results_only(metrics: Any) -> Any:
    """metrics.json without what differs on every fit by design (run id, wall-clock time)."""
    if isinstance(metrics, dict):
        return {k: v for k, v in metrics.items() if k not in ("run_id", "seconds")}
    return metrics


def _close(a: float, b: float, tolerance: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if tolerance == 0:
        return a == b
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)


def _compare_json(old: Any, new: Any, tolerance: float, path: str = "") -> list[str]:
    """Every place where two JSON values differ, as ``path: old != new`` (numbers within tol)."""
    where = path or "(top level)"
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in new:
                out.append(f"{sub}: missing from the re-fit")
            elif key not in old:
                out.append(f"{sub}: only in the re-fit")
            else:
                out += _compare_json(old[key], new[key], tolerance, sub)
        return out
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{where}: {len(old)} items != {len(new)} in the re-fit"]
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out += _compare_json(a, b, tolerance, f"{path}[{i}]")
        return out
    numbers = (int, float)
    if (
        isinstance(old, numbers)
        and isinstance(new, numbers)
        and not isinstance(old, bool)
        and not isinstance(new, bool)
    ):
        return (
            [] if _close(float(old), float(new), tolerance) else [f"{where}: {old!r} != {new!r}"]
        )
    return [] if old == new else [f"{where}: {_short(old)} != {_short(new)}"]


def _compare_predictions(old: pd.DataFrame, new: pd.DataFrame, tolerance: float) -> str:
    """How two prediction tables differ ('' when equal; floats within ``tolerance``)."""
    if list(old.columns) != list(new.columns):
        return f"columns {list(old.columns)} != {list(new.columns)} in the re-fit"
    if len(old) != len(new):
        return f"{len(old)} rows != {len(new)} in the re-fit"
    for col in old.columns:
        a, b = old[col], new[col]
        if pd.api.types.is_float_dtype(a) and pd.api.types.is_float_dtype(b):
            x, y = a.to_numpy(np.float64), b.to_numpy(np.float64)
            if tolerance == 0:
                same = (x == y) | (np.isnan(x) & np.isnan(y))
            else:
                same = np.isclose(x, y, rtol=tolerance, atol=tolerance, equal_nan=True)
        else:
            same = ((a == b) | (a.isna() & b.isna())).to_numpy(bool)
        if not same.all():
            bad = np.flatnonzero(~same)
            row = old.iloc[int(bad[0])]
            at = ", ".join(
                f"{k} {row[k]}" for k in ("scan_key", "target", "model", "scheme") if k in old
            )
            text = f"{col} differs in {len(bad)} of {len(old)} rows (first: {at}"
            if pd.api.types.is_float_dtype(a) and pd.api.types.is_float_dtype(b):
                gap = np.abs(a.to_numpy(np.float64) - b.to_numpy(np.float64))[bad]
                text += f"; max |difference| {np.nanmax(gap) if np.isfinite(gap).any() else 'nan'}"
            return text + ")"
    return ""


# --- small helpers --------------------------------------------------------------------------


def _count(items: list[str], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _differ(items: list[str]) -> str:
    return "differs" if len(items) == 1 else "differ"


def _be(items: list[str]) -> str:
    return "is" if len(items) == 1 else "are"


def _listing(items: list[str], show: int = _SHOW) -> str:
    shown = ", ".join(str(i) for i in items[:show])
    return shown + (f", ... ({len(items) - show} more)" if len(items) > show else "")


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) > 16:  # hashes: the first digits tell them apart
        return repr(value[:12] + "...")
    if isinstance(value, (list, dict)):
        return f"{type(value).__name__} of {len(value)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)
