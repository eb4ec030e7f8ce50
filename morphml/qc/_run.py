"""Running the QC rules on scans of an open database, and storing their flags."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from morphml._utils._threads import limit_threads
from morphml.db import connect
from morphml.exceptions import QCError
from morphml.qc._report import QCFlag, QCReport
from morphml.qc._rules import (
    RuleResult,
    euler_numbers,
    rule_euler,
    rule_missing,
    rule_multivariate,
    rule_negative,
    rule_thickness,
    rule_zero,
)
from morphml.qc._thresholds import FLAGS, QCThresholds, check_flag_names, resolve_thresholds

__all__ = [
    "QC_COVARIATES",
    "QC_PREFIX",
    "qc_at_ingest",
    "qc_covariates",
    "qc_database",
    "run_qc",
]

#: QC measures a feature spec can add as covariates (``features.qc_covariates``)
QC_COVARIATES: dict[str, str] = {
    "euler": "mean Euler number of the two hemispheres, 2 - (lh + rh SurfaceHoles)",
}
#: prefix of QC covariate columns in a feature matrix
QC_PREFIX = "qc:"


def _site_labels(con: duckdb.DuckDBPyConnection) -> pd.Series:
    scans = con.execute("SELECT scan_key, source, site FROM scans ORDER BY scan_key").df()
    site = scans["site"].astype(object).where(scans["site"].notna(), "unknown")
    return pd.Series(
        (scans["source"].astype(str) + "/" + site.astype(str)).to_numpy(),
        index=pd.Index(scans["scan_key"], name="scan_key"),
        name="site",
    )


def _begin(con: duckdb.DuckDBPyConnection) -> bool:
    """Open a transaction unless the caller has one; True when this call opened it.

    DuckDB has no "in a transaction?" query, and a second BEGIN would abort the caller's
    transaction; but in autocommit mode every statement runs in a new transaction, so two
    statements in a row see the same transaction id only inside an open one.
    """
    sql = "SELECT current_transaction_id()"
    first, second = (con.execute(sql).fetchone() for _ in range(2))
    if first == second:
        return False
    con.execute("BEGIN")
    return True


def run_qc(
    con: duckdb.DuckDBPyConnection,
    scan_keys: Iterable[str] | None = None,
    *,
    thresholds: Mapping[str, Any] | QCThresholds | None = None,
    rules: Sequence[str] | None = None,
) -> QCReport:
    """Compute the QC flags of some scans and store them in ``qc_flags``.

    Earlier flags of these scans from the rules that run are replaced (other rows, such as a
    rule not run this time or a flag a person added, stay), so running QC twice gives the same
    table. Everything happens in the caller's open transaction, or in one of its own when
    none is open: a failure leaves the database as it was.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        An open, writable morphml database (e.g. from :func:`morphml.db.connect`).
    scan_keys : iterable of str, optional
        Pseudonymous scan keys to check; None checks every scan. Scans are compared with
        every scan in the database, whichever are checked.
    thresholds : mapping or QCThresholds, optional
        Overrides of the defaults (see :class:`~morphml.qc.QCThresholds`).
    rules : sequence of str, optional
        Only these rules (names from :data:`~morphml.qc.FLAGS`); None runs them all.

    Returns
    -------
    QCReport

    Raises
    ------
    QCError
        For an unknown rule or threshold name, a bad threshold value, scan keys the database
        does not hold, or a database without scans when ``scan_keys`` is None.

    Examples
    --------
    >>> from morphml.db import connect  # doctest: +SKIP
    >>> with connect("morphml.duckdb") as con:  # doctest: +SKIP
    ...     report = run_qc(con)
    ...     print("\\n".join(report.lines()))
    """
    th = resolve_thresholds(thresholds)
    chosen = tuple(FLAGS) if rules is None else tuple(check_flag_names(rules, where="QC rule"))
    chosen = tuple(f for f in FLAGS if f in chosen)
    labels = _site_labels(con)
    targets = _targets(labels, scan_keys)
    con.register("morphml_qc_targets", pd.DataFrame({"scan_key": targets.astype(str)}))
    own = _begin(con)
    try:
        results = _apply_rules(con, chosen, targets, labels, th)
        flags = sorted(
            (f for res in results.values() for f in res.flags),
            key=lambda f: (FLAGS.index(f.flag), f.scan_key),
        )
        _store(con, chosen, flags)
        if own:
            con.execute("COMMIT")
    except BaseException:
        if own:
            con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("morphml_qc_targets")
    notes: list[str] = []
    for res in results.values():
        notes.extend(n for n in res.notes if n not in notes)
    return QCReport(
        n_scans=len(targets),
        rules=chosen,
        thresholds=th.as_dict(),
        flags=tuple(flags),
        sites={f.scan_key: str(labels[f.scan_key]) for f in flags},
        not_assessed={rule: res.not_assessed for rule, res in results.items()},
        notes=tuple(notes),
    )


def _targets(labels: pd.Series, scan_keys: Iterable[str] | None) -> pd.Index:
    """The scans to check: all of the database's, or the given keys (which it must hold)."""
    if scan_keys is None:
        if labels.empty:
            raise QCError(
                "the database holds no scans to check; ingest some first ('morphml ingest')"
            )
        return labels.index
    wanted = sorted(set(scan_keys))
    unknown = [k for k in wanted if k not in labels.index]
    if unknown:
        raise QCError(
            f"{len(unknown)} scan keys are not in the database (first: {unknown[0]!r}); "
            "expected pseudonymous scan keys such as those 'morphml db export' lists"
        )
    return pd.Index(wanted, name="scan_key")


def _apply_rules(
    con: duckdb.DuckDBPyConnection,
    chosen: Sequence[str],
    targets: pd.Index,
    labels: pd.Series,
    th: QCThresholds,
) -> dict[str, RuleResult]:
    """The chosen rules' results on the targets (registered as ``morphml_qc_targets``)."""
    results = {rule: RuleResult() for rule in chosen}
    if not len(targets):
        return results
    if "euler_absolute" in chosen or "euler_site_z" in chosen:
        for rule, res in rule_euler(con, targets, labels, th).items():
            if rule in results:
                results[rule] = res
    if "missing_structure" in chosen:
        results["missing_structure"] = rule_missing(con, th)
    if "zero_structure" in chosen:
        results["zero_structure"] = rule_zero(con)
    if "negative_value" in chosen:
        results["negative_value"] = rule_negative(con)
    if "thickness_range" in chosen:
        results["thickness_range"] = rule_thickness(con, th)
    if "multivariate_outlier" in chosen:
        # one BLAS thread: the per-site matrices are small, and OpenBLAS threads cost more
        # than they gain on them (measured 42 s -> 6 s for 1,118 scans at load 18 on 2
        # cores); the thread policy of morphml._utils._threads
        with limit_threads(1, user_api="blas"):
            results["multivariate_outlier"] = rule_multivariate(con, targets, labels, th)
    return results


def _store(con: duckdb.DuckDBPyConnection, rules: Sequence[str], flags: list[QCFlag]) -> None:
    names = ", ".join(f"'{r}'" for r in rules)
    if names:
        con.execute(
            "DELETE FROM qc_flags WHERE scan_key IN (SELECT scan_key FROM morphml_qc_targets) "
            f"AND flag IN ({names})"
        )
    if not flags:
        return
    rows = pd.DataFrame(
        {
            "scan_key": [f.scan_key for f in flags],
            "flag": [f.flag for f in flags],
            "reason": [f.reason for f in flags],
            "value": np.array(
                [np.nan if f.value is None else f.value for f in flags], dtype=np.float64
            ),
        }
    )
    con.register("morphml_qc_new", rows)
    try:
        con.execute(
            "INSERT INTO qc_flags (scan_key, flag, reason, value) "
            "SELECT scan_key, flag, reason, CASE WHEN isnan(value) THEN NULL ELSE value END "
            "FROM morphml_qc_new"
        )
    finally:
        con.unregister("morphml_qc_new")


def qc_at_ingest(con: duckdb.DuckDBPyConnection, scan_keys: list[str]) -> list[str]:
    """QC at ingest: :func:`run_qc` with the default thresholds on the ingested source's scans,
    in the ingest's open transaction; the flag name of each (scan, flag) pair.

    The ``quality_control`` argument of :func:`morphml.db.ingest` (``morphml ingest`` passes
    it), so the database layer runs QC without importing it.

    Examples
    --------
    >>> from morphml.db import ingest  # doctest: +SKIP
    >>> ingest(["subjects/"], source="hospital", quality_control=qc_at_ingest)  # doctest: +SKIP
    """
    return [flag.flag for flag in run_qc(con, scan_keys).flags]


def qc_database(
    db: str | os.PathLike[str] | None = None,
    *,
    sources: Sequence[str] | None = None,
    thresholds: Mapping[str, Any] | QCThresholds | None = None,
    rules: Sequence[str] | None = None,
) -> QCReport:
    """Open the database, run :func:`run_qc` on all scans (or those of ``sources``) in one
    transaction, and close it.

    Raises
    ------
    QCError
        For an unknown source, rule or threshold (see :func:`run_qc`).
    DatabaseError
        When the database cannot be opened.

    Examples
    --------
    >>> report = qc_database("morphml.duckdb", rules=["euler_site_z"])  # doctest: +SKIP
    """
    th = resolve_thresholds(thresholds)
    if rules is not None:
        check_flag_names(rules, where="QC rule")
    with connect(db) as con:
        keys: list[str] | None = None
        if sources is not None:
            known = [r[0] for r in con.execute("SELECT source FROM sources ORDER BY 1").fetchall()]
            unknown = [s for s in sources if s not in known]
            if unknown:
                raise QCError(f"source {unknown[0]!r} is not in the database (sources: {known})")
            keys = [
                r[0]
                for r in con.execute(
                    "SELECT scan_key FROM scans WHERE list_contains(?, source) ORDER BY 1",
                    [list(sources)],
                ).fetchall()
            ]
        return run_qc(con, keys, thresholds=th, rules=rules)


def qc_covariates(
    con: duckdb.DuckDBPyConnection, scan_keys: Sequence[str] | pd.Index, names: Sequence[str]
) -> pd.DataFrame:
    """QC measures as covariate columns ``qc:<name>`` (float64, NaN where a scan has none).

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        An open morphml database.
    scan_keys : sequence of str
        The rows, in this order.
    names : sequence of str
        Names from :data:`QC_COVARIATES` (``euler``: mean Euler number of both hemispheres).

    Raises
    ------
    QCError
        For an unknown name (with the closest valid one), or when none of the scans has the
        measure.

    Examples
    --------
    >>> with connect("morphml.duckdb", read_only=True) as con:  # doctest: +SKIP
    ...     qc_covariates(con, keys, ["euler"])
    """
    import difflib

    index = pd.Index(list(scan_keys), name="scan_key")
    out = pd.DataFrame(index=index)
    for name in names:
        if name not in QC_COVARIATES:
            close = difflib.get_close_matches(name, list(QC_COVARIATES), n=1, cutoff=0.4)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise QCError(
                f"unknown QC covariate {name!r}{hint} (valid: {', '.join(QC_COVARIATES)})"
            )
        values = euler_numbers(con, list(index)).reindex(index)
        if values.isna().all():
            raise QCError(
                f"QC covariate {name!r} needs SurfaceHoles values "
                "(global.lh/rh.SurfaceHoles.count) and none of the cohort's scans has one"
            )
        out[f"{QC_PREFIX}{name}"] = values.to_numpy(dtype=np.float64)
    return out
