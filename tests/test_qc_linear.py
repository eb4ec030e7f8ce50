"""QC at ingest in linear time gives exactly the flags of the former whole-database queries.

The reference below is the former ``rule_missing`` (one SQL query over every value in the
database), kept verbatim here so the streamed version can be compared with it.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import morphml.qc._rules as rules
import morphml.qc._run as qc_run
from morphml.db import connect, ingest
from morphml.qc import qc_at_ingest, run_qc
from morphml.qc._report import QCFlag
from morphml.qc._rules import RuleResult, _listing
from morphml.qc._thresholds import QCThresholds
from tests.test_qc import build_db

_VALID = "m.value IS NOT NULL AND NOT isnan(m.value)"


def reference_missing(con: duckdb.DuckDBPyConnection, th: QCThresholds) -> RuleResult:
    """The former ``missing_structure`` rule (whole-database SQL), for comparison."""
    rows = con.execute(
        f"""
        WITH sc AS (
            SELECT scan_key, source, coalesce(software, '') AS sw, coalesce(version, '') AS ver
            FROM scans
        ),
        v AS (
            SELECT m.scan_key, m.feature_idx, f.atlas, f.measure
            FROM measures m JOIN features f USING (feature_idx) WHERE {_VALID}
        ),
        have AS (
            SELECT DISTINCT v.scan_key, sc.source, sc.sw, sc.ver, v.atlas, v.measure
            FROM v JOIN sc USING (scan_key)
        ),
        n_group AS (SELECT source, sw, ver, atlas, measure, count(*) AS n FROM have GROUP BY ALL),
        n_feature AS (
            SELECT sc.source, sc.sw, sc.ver, v.atlas, v.measure, v.feature_idx, count(*) AS n
            FROM v JOIN sc USING (scan_key) GROUP BY ALL
        ),
        expected AS (
            SELECT nf.source, nf.sw, nf.ver, nf.atlas, nf.measure, nf.feature_idx
            FROM n_feature nf JOIN n_group ng USING (source, sw, ver, atlas, measure)
            WHERE nf.n >= ? * ng.n
        )
        SELECT h.scan_key, f.feature_id
        FROM have h
        JOIN morphml_qc_targets t USING (scan_key)
        JOIN expected e USING (source, sw, ver, atlas, measure)
        JOIN features f ON f.feature_idx = e.feature_idx
        ANTI JOIN v ON v.scan_key = h.scan_key AND v.feature_idx = e.feature_idx
        ORDER BY h.scan_key, f.feature_id
        """,
        [th.missing_min_share],
    ).df()
    out = []
    for key, frame in rows.groupby("scan_key", sort=True):
        ids = list(frame["feature_id"])
        out.append(
            QCFlag(
                str(key),
                "missing_structure",
                f"{len(ids)} values its peers have are missing: {_listing(ids)}",
                float(len(ids)),
            )
        )
    return RuleResult(out)


def _both(
    con: duckdb.DuckDBPyConnection,
    keys: list[str] | None,
    monkeypatch: pytest.MonkeyPatch,
    **kw: object,
) -> tuple[list[QCFlag], list[QCFlag]]:
    new = list(run_qc(con, keys, **kw).flags)  # type: ignore[arg-type]
    with monkeypatch.context() as m:
        m.setattr(qc_run, "rule_missing", reference_missing)
        old = list(run_qc(con, keys, **kw).flags)  # type: ignore[arg-type]
    return new, old


def test_missing_rule_equals_the_whole_database_query(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def edit(v: pd.DataFrame) -> None:
        k = v.index
        v.loc[k[0], "aparc.lh.cuneus.thickness"] = np.nan
        v.loc[
            k[1], ["aparc.lh.cuneus.area", "aparc.rh.insula.area", "aseg.na.Brain-Stem.volume"]
        ] = np.nan
        v.loc[k[2], [c for c in v.columns if c.startswith("aparc.") and c.endswith(".area")]] = (
            np.nan
        )  # the whole measure absent: not expected of this scan
        # a feature few scans have: not expected
        v.loc[k[3:], "aseg.na.Left-vessel.volume"] = np.nan
        for i in range(5, 12):  # several scans missing several values
            v.loc[k[i], rng.choice(v.columns, size=i - 3, replace=False)] = np.nan

    built = build_db(tmp_path / "db.duckdb", rng, {"A": 40, "B": 30, "C": 3}, edit)
    with connect(built.path) as con:
        # another software version among the scans: its own peer group
        con.execute(
            "UPDATE scans SET version = '6.0.0' WHERE scan_key IN (SELECT scan_key FROM scans "
            "ORDER BY scan_key LIMIT 9 OFFSET 20)"
        )
        for keys in (None, built.keys[:7], built.keys[30:50]):
            for share in (0.95, 0.5, 1.0):
                new, old = _both(
                    con, keys, monkeypatch, rules=["missing_structure"],
                    thresholds={"missing_min_share": share},
                )  # fmt: skip
                assert new == old
        new, _ = _both(con, None, monkeypatch, rules=["missing_structure"])
        assert {f.scan_key for f in new} >= {built.keys[0], built.keys[1]}
        assert built.keys[2] not in {f.scan_key for f in new}


@pytest.mark.slow
def test_ingest_qc_flags_equal_the_former_rules_on_a_simulated_cohort(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from morphml.simulate import simulate_cohort

    db = tmp_path / "db.duckdb"
    for name, seed in (("first", 3), ("second", 4)):
        simulate_cohort(
            tmp_path / name, n_subjects=70, n_sites=4, seed=seed, layout="mixed",
            qc_fail_fraction=0.08,
        )  # fmt: skip
        ingest([tmp_path / name], source=name, db=db, key_file=tmp_path / "key", on_error="skip",
               quality_control=qc_at_ingest)  # fmt: skip
    with connect(db) as con:
        stored = con.execute(
            "SELECT q.scan_key, flag, reason, value FROM qc_flags q JOIN scans s USING (scan_key) "
            "WHERE s.source = 'second' ORDER BY ALL"
        ).fetchall()
        second = [
            k
            for (k,) in con.execute(
                "SELECT scan_key FROM scans WHERE source = 'second'"
            ).fetchall()
        ]
        new, old = _both(con, second, monkeypatch)
        assert new == old
        # the flags stored by the ingest are those the former rules give
        got = sorted((f.scan_key, f.flag, f.reason, f.value) for f in old)
        assert got == sorted(stored)
        assert {f.flag for f in old} >= {"multivariate_outlier", "euler_absolute"}
        new, old = _both(con, None, monkeypatch)
        assert new == old


def test_missing_rule_reads_values_in_bounded_batches(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def edit(v: pd.DataFrame) -> None:
        v.loc[v.index[4], ["aparc.lh.cuneus.thickness", "aparc.rh.cuneus.thickness"]] = np.nan

    built = build_db(tmp_path / "db.duckdb", rng, {"A": 25, "B": 25}, edit)
    monkeypatch.setattr(rules, "_STREAM_ROWS", 1000)  # many small batches
    sizes: list[int] = []
    stream = rules._stream_present

    def counted(con: duckdb.DuckDBPyConnection, table: str):  # type: ignore[no-untyped-def]
        for row, fidx in stream(con, table):
            sizes.append(len(row))
            yield row, fidx

    monkeypatch.setattr(rules, "_stream_present", counted)
    with connect(built.path) as con:
        new, old = _both(con, None, monkeypatch, rules=["missing_structure"])
    assert new == old and [f.scan_key for f in new] == [built.keys[4]]
    assert max(sizes) <= 1000 < sum(sizes)
