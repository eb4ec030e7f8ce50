"""Cohort facts of a run's scans, from the manifest or the database (counts only, no keys)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from morphml.config import CohortSpec, QCSpec

__all__ = ["SEX_LABELS", "age_histogram", "cohort_from_db", "cohort_from_manifest"]

#: how the database's sex codes are shown
SEX_LABELS = {"F": "female", "M": "male"}

#: what each QC rule checks, in words (see morphml.qc for the full definitions)
QC_RULES = {
    "euler_absolute": "mean Euler number of the white surfaces below the absolute cut-off",
    "euler_site_z": "mean Euler number far below the scan's site (robust z)",
    "missing_structure": "a structure most comparable scans have is missing",
    "zero_structure": "a structure that exists in every brain measures exactly 0",
    "negative_value": "a volume, area, count or thickness below 0",
    "thickness_range": "a cortical thickness outside 0.5-5 mm",
    "multivariate_outlier": "robust multivariate outlier of its site (age/sex adjusted)",
}

#: reasons longer than this are cut (they are machine-written one-liners)
_MAX_REASON = 140


def _counts(values: pd.Series) -> dict[str, int]:
    counts = values.value_counts()
    return {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}


#: how a missing software or version reads in the manifest's "software version" keys
_MISSING = {"", "nan", "none", "null", "unknown", "?", "<na>"}


def software_label(software: object, version: object) -> str:
    """``FreeSurfer 7.4.1``; scans imported from tables record neither, and say so."""
    sw = "" if software is None else str(software).strip()
    ver = "" if version is None else str(version).strip()
    sw = "" if sw.lower() in _MISSING else sw
    ver = "" if ver.lower() in _MISSING else ver
    if not sw and not ver:
        return "tables (software not recorded)"
    if not ver:
        return f"{sw} (version not recorded)"
    return f"{sw or 'software not recorded'} {ver}"


def _software_counts(recorded: dict[str, Any]) -> dict[str, int]:
    """The manifest's ``{"software version": n}`` with missing parts said in words."""
    out: dict[str, int] = {}
    for key, n in recorded.items():
        software, _, version = str(key).partition(" ")
        label = software_label(software, version)
        out[label] = out.get(label, 0) + int(n)
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def age_histogram(age: np.ndarray, sex: np.ndarray, width: float = 5.0) -> dict[str, Any] | None:
    """Counts of ages in ``width``-year bins, by sex label (``female``, ``male``, ...)."""
    age = np.asarray(age, dtype=np.float64)
    known = np.isfinite(age)
    if not known.any():
        return None
    lo = float(np.floor(age[known].min() / width) * width)
    hi = float(np.ceil(age[known].max() / width) * width)
    if hi <= lo:
        hi = lo + width
    edges = np.arange(lo, hi + width / 2, width)
    labels = np.asarray(sex, dtype=object)
    out: dict[str, list[int]] = {}
    for label in sorted({str(v) for v in labels[known]}):
        mask = known & (labels.astype(str) == label)
        out[label] = [int(c) for c in np.histogram(age[mask], bins=edges)[0]]
    return {
        "edges": [float(e) for e in edges],
        "counts": out,
        "n_missing_age": int((~known).sum()),
    }


def cohort_from_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The cohort counts the run recorded when it was fitted."""
    recorded = dict(manifest.get("cohort") or {})
    sex = {SEX_LABELS.get(k, k): v for k, v in (recorded.get("sex") or {}).items()}
    return {
        "origin": "manifest",
        "n_scans": recorded.get("n_scans", len(manifest.get("scan_keys") or [])),
        "n_subjects": recorded.get("n_subjects"),
        "sources": recorded.get("sources") or {},
        "sites": recorded.get("sites") or {},
        "sex": sex,
        "software": _software_counts(recorded.get("software") or {}),
        "age": recorded.get("age") or {},
        "age_histogram": None,
    }


def _pre_qc_candidates(con: Any, cohort: CohortSpec) -> pd.Index:
    """Scans the cohort's other rules select when its QC rule is left out."""
    from morphml.features import cohort_scans

    return cohort_scans(con, cohort.model_copy(update={"qc": QCSpec()})).index


def cohort_from_db(
    db: str | os.PathLike[str], run_id: str, scan_keys: list[str], cohort: CohortSpec
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Cohort counts, QC flags and the run's database record for the run's scans.

    Returns
    -------
    cohort : dict
        As :func:`cohort_from_manifest`, counted from the database now, with the age
        histogram by sex.
    qc : dict
        Per QC flag: scans used that carry it, scans the config's rule excluded, and the
        reasons the rules gave (only for morphml's own rules).
    record : dict
        Whether the run is recorded, stale (and why), and how many of its scans are gone.
    """
    from morphml.db import connect, run_status
    from morphml.exceptions import MorphmlError
    from morphml.qc import FLAGS

    keys = pd.DataFrame({"scan_key": pd.Series(list(scan_keys), dtype="string")})
    with connect(db, read_only=True) as con:
        con.register("morphml_report_keys", keys)
        try:
            meta = con.execute(
                "SELECT s.scan_key, s.subject_key, s.source, s.site, s.software, s.version, "
                "s.age, j.sex FROM scans s JOIN subjects j USING (subject_key) "
                "JOIN morphml_report_keys k USING (scan_key)"
            ).df()
        finally:
            con.unregister("morphml_report_keys")
        flags = con.execute("SELECT scan_key, flag, reason FROM qc_flags").df()
        candidates = _pre_qc_candidates(con, cohort)
        try:
            stale, reason = run_status(con, run_id)
            record: dict[str, Any] = {"recorded": True, "stale": bool(stale), "reason": reason}
        except MorphmlError:
            record = {"recorded": False, "stale": None, "reason": None}
    record["n_scans_missing"] = len(set(scan_keys) - set(meta["scan_key"]))
    sex = meta["sex"].map(lambda v: SEX_LABELS.get(v, "unknown") if isinstance(v, str) else v)
    sex = sex.fillna("unknown")
    software = pd.Series(
        [software_label(s, v) for s, v in zip(meta["software"], meta["version"], strict=True)],
        dtype=object,
    )
    age = meta["age"].to_numpy(np.float64)
    known = np.isfinite(age)
    facts = {
        "origin": "database",
        "n_scans": len(meta),
        "n_subjects": int(meta["subject_key"].nunique()),
        "sources": _counts(meta["source"].fillna("unknown")),
        "sites": _counts(meta["site"].fillna("unknown")),
        "sex": _counts(sex),
        "software": _counts(software),
        "age": {
            "min": float(age[known].min()) if known.any() else None,
            "max": float(age[known].max()) if known.any() else None,
            "mean": float(age[known].mean()) if known.any() else None,
            "sd": float(age[known].std(ddof=1)) if known.sum() > 1 else None,
            "median": float(np.median(age[known])) if known.any() else None,
        },
        "age_histogram": age_histogram(age, sex.to_numpy()),
    }
    return facts, _qc_summary(flags, set(meta["scan_key"]), candidates, cohort, FLAGS), record


def _qc_summary(
    flags: pd.DataFrame,
    used: set[str],
    candidates: pd.Index,
    cohort: CohortSpec,
    known_flags: tuple[str, ...],
) -> dict[str, Any]:
    excluded_rules = list(cohort.qc.exclude)
    pool = set(candidates)
    in_used = flags[flags["scan_key"].isin(used)]
    in_pool = flags[flags["scan_key"].isin(pool)]
    excluded = in_pool[in_pool["flag"].isin(excluded_rules)]
    present = set(in_used["flag"]) | set(in_pool["flag"]) | set(excluded_rules)
    names = [f for f in known_flags if f in present]
    names += sorted(set(in_used["flag"]) - set(known_flags))
    rows = []
    for name in names:
        mine = in_used[in_used["flag"] == name]
        dropped = excluded[excluded["flag"] == name]
        reasons: list[str] = []
        if name in known_flags:
            # morphml's rules write one-line reasons with numbers only; hand-added flags may
            # hold free text, which is not copied into a report
            seen = pd.concat([dropped, mine])["reason"].dropna().astype(str)
            reasons = [
                r if len(r) <= _MAX_REASON else r[: _MAX_REASON - 1] + "…"
                for r in list(dict.fromkeys(seen))[:3]
            ]
        rows.append({
            "flag": name,
            "n_candidates": int(in_pool.loc[in_pool["flag"] == name, "scan_key"].nunique()),
            "rule": QC_RULES.get(name, "added by hand (reason text not shown)"),
            "n_used": int(mine["scan_key"].nunique()),
            "n_excluded": int(dropped["scan_key"].nunique()),
            "excluded_by_config": name in excluded_rules,
            "example_reasons": reasons,
        })  # fmt: skip
    return {
        "exclude_rules": excluded_rules,
        "n_candidates": len(pool),
        "n_excluded": int(excluded["scan_key"].nunique()),
        "n_used_flagged": int(in_used["scan_key"].nunique()),
        "flags": rows,
    }
