"""The database beyond ingest: withdrawal, runs, info, the wide export, versions and upgrades.

Databases are built by inserting rows directly (no stats files), so each test states exactly
what the file holds.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from morphml._version import __version__
from morphml.db import connect, load_key, upgrade
from morphml.db._privacy import PseudonymKey
from morphml.db._report import database_info, export_wide, format_info
from morphml.db._runs import record_run, run_status, stale_runs
from morphml.db._schema import SCHEMA_VERSION, create_schema_v1
from morphml.db._withdraw import (
    _delete_person,
    is_withdrawn,
    rewrite_database,
    withdraw,
)
from morphml.exceptions import DatabaseError, ExportError, KeyFileError, WithdrawalError

FEATURES = [
    (0, "aparc.lh.superiorfrontal.thickness", "aparc", "lh", "superiorfrontal", "thickness"),
    (1, "aparc.rh.superiorfrontal.thickness", "aparc", "rh", "superiorfrontal", "thickness"),
    (2, "aparc.lh.superiorfrontal.area", "aparc", "lh", "superiorfrontal", "area"),
    (3, "aseg.na.Left-Thalamus.volume", "aseg", "na", "Left-Thalamus", "volume"),
    (4, "global.na.eTIV.volume", "global", "na", "eTIV", "volume"),
    # in the dictionary but measured in no scan: left out of exports
    (5, "a2009s.lh.G_and_S_frontomargin.thickness", "a2009s", "lh", "G_and_S_frontomargin",
     "thickness"),
]  # fmt: skip
FEATURE_IDS = [f[1] for f in FEATURES]

#: the person who withdraws, and the values that must not survive in the file's bytes
VICTIM = ("hospital", "P0042")
VICTIM_VALUE = 123456.789012
VICTIM_TEXT = "Zebrafinch-syndrome-7Q"
#: another person's planted values: they must survive (shows the byte search works)
OTHER_VALUE = 654321.123456
OTHER_TEXT = "Okapi-condition-3Z"


@dataclass
class Person:
    source: str
    original_id: str
    sex: str | None
    #: one (session label, age, site, software, version, phenotypes) per scan
    scans: list[tuple[str | None, float | None, str, str, str, dict[str, Any]]]
    planted: float | None = None


PEOPLE = [
    Person("hospital", "P0042", "F", [
        ("ses-1", 61.5, "H1", "freesurfer", "7.4.1", {"diagnosis": VICTIM_TEXT, "panss": 88.0}),
        ("ses-2", 63.0, "H1", "freesurfer", "7.4.1", {"diagnosis": VICTIM_TEXT, "panss": 91.0}),
    ], planted=VICTIM_VALUE),
    Person("hospital", "P0007", "M", [
        ("ses-1", 35.0, "H1", "freesurfer", "7.4.1", {"diagnosis": OTHER_TEXT, "panss": 30.0}),
    ], planted=OTHER_VALUE),
    Person("hospital", "P0100", None, [
        (None, None, "H2", "freesurfer", "6.0", {"diagnosis": None, "panss": None}),
    ]),
    Person("public", "sub-01", "F", [
        (None, 22.0, "NYU", "fastsurfer", "2.2.0", {"diagnosis": "control"}),
    ]),
    Person("public", "sub-02", "M", [
        (None, 71.25, "NYU", "fastsurfer", "2.2.0", {"diagnosis": "control"}),
    ]),
]  # fmt: skip


@dataclass
class Built:
    path: Path
    key: PseudonymKey
    key_file: Path
    #: scan_key -> {feature_id: value}
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    #: subject_key -> scan keys
    scans_of: dict[str, list[str]] = field(default_factory=dict)
    #: scan_key -> (subject_key, source, session rank, site, software, version, age, sex)
    meta: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    #: scan_key -> phenotypes
    phenotypes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def subject(self, source: str, original_id: str) -> str:
        return self.key.subject(source, original_id)


def build_db(tmp_path: Path, rng: np.random.Generator) -> Built:
    """A small database of PEOPLE, with every per-scan table filled, and two runs."""
    key_file = tmp_path / "key"
    key = load_key(key_file)
    built = Built(tmp_path / "morphml.duckdb", key, key_file)
    with connect(built.path, create=True) as con:
        con.execute("INSERT INTO sources VALUES ('hospital', 'stats'), ('public', 'table')")
        con.executemany("INSERT INTO features VALUES (?, ?, ?, ?, ?, ?)", FEATURES)
        con.execute("INSERT INTO ingests VALUES (1, 'hospital', 3, 4, 4, 0, 0, 1, 20, ?)",
                    [__version__])  # fmt: skip
        con.execute("INSERT INTO ingests VALUES (2, 'public', 2, 2, 2, 0, 0, 0, 8, ?)",
                    [__version__])  # fmt: skip
        measures: list[tuple[str, int, float | None]] = []
        for person in PEOPLE:
            subject_key = key.subject(person.source, person.original_id)
            con.execute(
                "INSERT INTO subjects VALUES (?, ?, ?)", [subject_key, person.source, person.sex]
            )
            built.scans_of[subject_key] = []
            for rank, (label, age, site, software, version, phenos) in enumerate(person.scans, 1):
                scan_key = key.scan(person.source, person.original_id, label)
                built.scans_of[subject_key].append(scan_key)
                # the public table lacks the area feature
                measured = [0, 1, 3, 4] if person.source == "public" else [0, 1, 2, 3, 4]
                vals = {FEATURE_IDS[i]: float(np.round(rng.normal(2.5, 0.3), 4)) for i in measured}
                if person.planted is not None and rank == 1:
                    vals[FEATURE_IDS[3]] = person.planted
                built.values[scan_key] = vals
                measures.extend((scan_key, FEATURE_IDS.index(f), v) for f, v in vals.items())
                ingest_id = 1 if person.source == "hospital" else 2
                con.execute(
                    "INSERT INTO scans VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?)",
                    [scan_key, subject_key, person.source, rank, site, software, version, age,
                     len(vals), ingest_id],
                )  # fmt: skip
                built.meta[scan_key] = (subject_key, person.source, rank, site, software,
                                        version, age, person.sex)  # fmt: skip
                built.phenotypes[scan_key] = phenos
                for name, value in phenos.items():
                    if name == "panss":
                        con.execute("INSERT INTO phenotypes VALUES (?, ?, 'continuous', ?, NULL)",
                                    [scan_key, name, value])  # fmt: skip
                    else:
                        con.execute("INSERT INTO phenotypes VALUES (?, ?, 'categorical', NULL, ?)",
                                    [scan_key, name, value])  # fmt: skip
                con.execute(
                    "INSERT INTO files VALUES (?, 'stats/aseg.stats', 'segmentation', 'aseg', ?, "
                    "?, ?)",
                    [scan_key, software, version, f"hash-{scan_key}"],
                )
                con.execute(
                    "INSERT INTO changes VALUES (?, ?, 'stats/aseg.stats', 'old', 'new')",
                    [ingest_id, scan_key],
                )
        con.executemany("INSERT INTO measures VALUES (?, ?, ?)", measures)
        victim = key.subject(*VICTIM)
        other = key.subject("hospital", "P0007")
        public = key.subject("public", "sub-01")
        con.execute(
            "INSERT INTO ingest_errors VALUES (1, 'hospital', ?, ?, 'stats/lh.aparc.stats', 3, "
            "'expected 10 columns')",
            [victim, built.scans_of[victim][1]],
        )
        con.execute(
            "INSERT INTO ingest_errors VALUES (1, 'hospital', ?, ?, NULL, NULL, 'warning')",
            [other, built.scans_of[other][0]],
        )
        con.execute(
            "INSERT INTO qc_flags VALUES (?, 'outlier', 'eTIV beyond 4 SD', ?)",
            [built.scans_of[victim][0], VICTIM_VALUE],
        )
        con.execute(
            "INSERT INTO qc_flags VALUES (?, 'euler', 'Euler number below -200', -250)",
            [built.scans_of[public][0]],
        )
        assert record_run(con, "run-with-victim", "pretrain", "cfg-a",
                          [*built.scans_of[victim], *built.scans_of[other]])  # fmt: skip
        assert record_run(con, "run-without", "transfer", "cfg-b", built.scans_of[public])
    return built


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted."""
    with connect(path, read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return {
            t: sorted(map(tuple, con.execute(f"SELECT * FROM {t}").fetchall()), key=repr)
            for t in tables
        }


def person_keys(built: Built, subject_key: str) -> set[str]:
    return {subject_key, *built.scans_of[subject_key]}


def mentions(row: tuple[Any, ...], keys: set[str]) -> bool:
    return any(isinstance(cell, str) and cell in keys for cell in row)


def file_bytes(path: Path) -> bytes:
    """The database file and any write-ahead log beside it."""
    data = path.read_bytes()
    wal = path.with_name(path.name + ".wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


def holds(data: bytes, value: float | str) -> bool:
    needle = struct.pack("<d", value) if isinstance(value, float) else value.encode()
    return needle in data


# ----------------------------------------------------------------------------- withdrawal


@pytest.mark.parametrize("by", ["original_id", "subject_pseudonym", "scan_pseudonym"])
def test_withdraw_removes_every_row_of_the_person_and_only_theirs(
    tmp_path: Path, rng: np.random.Generator, by: str
) -> None:
    built = build_db(tmp_path, rng)
    victim = built.subject(*VICTIM)
    keys = person_keys(built, victim)
    before = dump(built.path)
    assert sum(mentions(r, keys) for rows in before.values() for r in rows) > 10

    if by == "original_id":
        ident: dict[str, str] = {"original_id": VICTIM[1]}
    elif by == "subject_pseudonym":
        ident = {"pseudonym": victim}
    else:
        ident = {"pseudonym": built.scans_of[victim][1]}
    result = withdraw(built.path, source=VICTIM[0], key_file=built.key_file, **ident)

    assert (result.withdrawal_id, result.n_scans, result.n_runs_marked) == (1, 2, 1)
    after = dump(built.path)
    for table, rows in after.items():
        assert not [r for r in rows if mentions(r, keys)], f"{table} still names the person"
    # every other row is exactly as it was (runs and withdrawals checked below)
    for table in before.keys() - {"runs", "withdrawals"}:
        assert after[table] == [r for r in before[table] if not mentions(r, keys)], table
    assert after["runs"] == [
        # no folder recorded for these runs (run_dir NULL): nothing to scrub, and they say so
        ("run-with-victim", "pretrain", "cfg-a", True, "subject withdrawn (withdrawal 1)", None),
        ("run-without", "transfer", "cfg-b", False, None, None),
    ]
    assert result.not_scrubbed == ("run run-with-victim: the run did not record its folder",)
    (row,) = after["withdrawals"]
    assert row == (1, built.key.withdrawal_token(victim), "hospital", 2, 1)
    assert row[1] != victim and victim[4:] not in row[1]
    with connect(built.path, read_only=True) as con:
        assert is_withdrawn(con, built.key, victim)
        assert not is_withdrawn(con, built.key, built.subject("hospital", "P0007"))
        assert stale_runs(con) == [("run-with-victim", "subject withdrawn (withdrawal 1)")]
        assert run_status(con, "run-without") == (False, None)


def test_withdrawn_values_are_gone_from_the_file_bytes(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    built = build_db(tmp_path, rng)
    data = file_bytes(built.path)
    assert holds(data, VICTIM_VALUE) and holds(data, VICTIM_TEXT)

    withdraw(built.path, source=VICTIM[0], original_id=VICTIM[1], key_file=built.key_file)

    data = file_bytes(built.path)
    assert not holds(data, VICTIM_VALUE)
    assert not holds(data, VICTIM_TEXT)
    victim = built.subject(*VICTIM)
    for key in person_keys(built, victim):
        assert not holds(data, key)
    # the search does find what should still be there
    assert holds(data, OTHER_VALUE) and holds(data, OTHER_TEXT)
    # no copy, log or temporary file left beside the database
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key", "morphml.duckdb"]


def test_deleting_without_the_rewrite_leaves_the_values_in_the_file(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    # the control for the test above: rows deleted and committed, file not rewritten
    built = build_db(tmp_path, rng)
    victim = built.subject(*VICTIM)
    with connect(built.path) as con:
        _delete_person(con, built.key, VICTIM[0], victim)
        assert con.execute("SELECT count(*) FROM measures WHERE value = ?",
                           [VICTIM_VALUE]).fetchone() == (0,)  # fmt: skip
    data = file_bytes(built.path)
    assert holds(data, VICTIM_VALUE)
    assert holds(data, VICTIM_TEXT)

    rewrite_database(built.path)
    data = file_bytes(built.path)
    assert not holds(data, VICTIM_VALUE) and not holds(data, VICTIM_TEXT)
    assert holds(data, OTHER_VALUE) and holds(data, OTHER_TEXT)


def test_rewritten_file_keeps_schema_constraints_and_permissions(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    built = build_db(tmp_path, rng)
    built.path.chmod(0o600)
    withdraw(built.path, source=VICTIM[0], original_id=VICTIM[1], key_file=built.key_file)
    assert built.path.stat().st_mode & 0o777 == 0o600
    other_scan = built.scans_of[built.subject("hospital", "P0007")][0]
    with connect(built.path) as con:
        assert con.execute("SELECT value FROM morphml_meta WHERE key = 'schema_version'"
                           ).fetchone() == (str(SCHEMA_VERSION),)  # fmt: skip
        with pytest.raises(duckdb.ConstraintException):
            con.execute("INSERT INTO scans (scan_key, subject_key, source) VALUES (?, 'x', 'x')",
                        [other_scan])  # fmt: skip
        with pytest.raises(duckdb.ConstraintException):
            con.execute("INSERT INTO features VALUES (99, ?, 'aparc', 'lh', 'x', 'area')",
                        [FEATURE_IDS[0]])  # fmt: skip
        con.execute("INSERT INTO runs (run_id) VALUES ('r')")
        assert con.execute("SELECT stale FROM runs WHERE run_id = 'r'").fetchone() == (False,)


def test_rewrite_removes_a_copy_left_by_an_interrupted_rewrite(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    built = build_db(tmp_path, rng)
    leftover = tmp_path / "morphml.duckdb.rewrite"
    leftover.write_bytes(b"partial copy " + VICTIM_TEXT.encode())
    before = dump(built.path)
    rewrite_database(built.path)
    assert not leftover.exists()
    assert dump(built.path) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "hospital", "original_id": "P9999"},
         r"no person with the given original id \(pseudonym sub-\w+\) in source 'hospital'"),
        ({"source": "public", "original_id": "P0042"}, "no person .* in source 'public'"),
        ({"source": "clinic", "original_id": "P0042"},
         r"source 'clinic' is not in the database \(sources: hospital, public\)"),
        ({"source": "hospital", "pseudonym": "sub-000000000000000000000000"},
         "no person with pseudonym sub-0+ in source 'hospital'"),
        ({"source": "hospital", "pseudonym": "scan-000000000000000000000000"},
         "no scan with pseudonym scan-0+"),
    ],
)  # fmt: skip
def test_unknown_person_is_a_clear_error_and_changes_nothing(
    tmp_path: Path, rng: np.random.Generator, kwargs: dict[str, str], message: str
) -> None:
    built = build_db(tmp_path, rng)
    before = dump(built.path)
    with pytest.raises(WithdrawalError, match=message) as err:
        withdraw(built.path, key_file=built.key_file, **kwargs)
    assert isinstance(err.value, LookupError)
    assert "P0042" not in str(err.value) and "P9999" not in str(err.value)
    assert dump(built.path) == before


def test_pseudonym_of_another_source_and_second_withdrawal_are_refused(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    built = build_db(tmp_path, rng)
    victim = built.subject(*VICTIM)
    with pytest.raises(WithdrawalError, match="belongs to source 'hospital', not 'public'"):
        withdraw(built.path, source="public", pseudonym=victim, key_file=built.key_file)
    withdraw(built.path, source="hospital", pseudonym=victim, key_file=built.key_file)
    with pytest.raises(WithdrawalError, match=r"withdrew already \(withdrawal 1\)"):
        withdraw(built.path, source="hospital", original_id="P0042", key_file=built.key_file)


def test_withdrawal_needs_the_key_file(tmp_path: Path, rng: np.random.Generator) -> None:
    built = build_db(tmp_path, rng)
    before = dump(built.path)
    with pytest.raises(KeyFileError, match="does not exist"):
        withdraw(built.path, source="hospital", pseudonym=built.subject(*VICTIM),
                 key_file=tmp_path / "missing-key")  # fmt: skip
    with pytest.raises(TypeError, match="exactly one of"):
        withdraw(built.path, source="hospital", key_file=built.key_file)
    assert dump(built.path) == before


# ----------------------------------------------------------------------------------- runs


def test_record_run_links_scans_and_marks_missing_scans_stale(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    built = build_db(tmp_path, rng)
    public = built.scans_of[built.subject("public", "sub-01")]
    with connect(built.path) as con:
        assert record_run(con, "run-2", "transfer", "cfg-c", [*public, *public])
        assert con.execute("SELECT scan_key FROM run_scans WHERE run_id = 'run-2'"
                           ).fetchall() == [(public[0],)]  # fmt: skip
        # a scan withdrawn between reading the data and recording the run
        assert not record_run(con, "run-3", "transfer", "cfg-c", [*public, "scan-gone"])
        assert run_status(con, "run-3") == (
            True, "1 of its 2 scans were no longer in the database when the run was recorded"
        )  # fmt: skip
        assert con.execute("SELECT count(*) FROM run_scans WHERE scan_key = 'scan-gone'"
                           ).fetchone() == (0,)  # fmt: skip
        with pytest.raises(DatabaseError, match="run 'run-2' is already recorded"):
            record_run(con, "run-2", "transfer", "cfg-c", public)
        with pytest.raises(DatabaseError, match="run 'nope' is not recorded"):
            run_status(con, "nope")
        assert [r for r, _ in stale_runs(con)] == ["run-3"]


# ----------------------------------------------------------------------------------- info


def test_database_info_counts(tmp_path: Path, rng: np.random.Generator) -> None:
    built = build_db(tmp_path, rng)
    info = database_info(built.path)
    assert json.loads(json.dumps(info)) == info
    assert info["schema_version"] == SCHEMA_VERSION
    assert info["counts"] == {"sources": 2, "subjects": 5, "scans": 6, "values": 28,
                              "features": 5, "ingests": 2}  # fmt: skip
    assert info["sources"] == [
        {"source": "hospital", "kind": "stats", "subjects": 3, "scans": 4, "values": 20},
        {"source": "public", "kind": "table", "subjects": 2, "scans": 2, "values": 8},
    ]
    assert info["sites"] == [
        {"source": "hospital", "site": "H1", "scans": 3},
        {"source": "hospital", "site": "H2", "scans": 1},
        {"source": "public", "site": "NYU", "scans": 2},
    ]
    assert info["software"] == [
        {"software": "fastsurfer", "version": "2.2.0", "scans": 2},
        {"software": "freesurfer", "version": "6.0", "scans": 1},
        {"software": "freesurfer", "version": "7.4.1", "scans": 3},
    ]
    assert info["atlases"] == [
        {"atlas": "aparc", "features": 3, "scans": 6, "values": 16},
        {"atlas": "aseg", "features": 1, "scans": 6, "values": 6},
        {"atlas": "global", "features": 1, "scans": 6, "values": 6},
    ]
    assert info["sex"] == {"F": 2, "M": 2, "unknown": 1}
    assert info["age"] == {"scans": 5, "min": 22.0, "max": 71.25, "mean": 50.55}
    assert info["qc"] == {
        "flags": [{"flag": "euler", "scans": 1}, {"flag": "outlier", "scans": 1}],
        "scans_flagged": 2,
    }
    assert info["phenotypes"] == [
        {"name": "diagnosis", "type": "categorical", "scans": 5},
        {"name": "panss", "type": "continuous", "scans": 3},
    ]
    assert info["runs"] == {"total": 2, "stale": 0}
    assert info["withdrawals"] == 0
    text = format_info(info)
    assert "hospital  stats  3 subjects  4 scans  20 values" in text
    assert "age (scans): 22 to 71.25, mean 50.55 (5 scans with an age)" in text
    assert "QC flags: euler 1, outlier 1 (2 scans flagged)" in text

    withdraw(built.path, source=VICTIM[0], original_id=VICTIM[1], key_file=built.key_file)
    info = database_info(built.path)
    assert info["counts"]["subjects"] == 4 and info["counts"]["scans"] == 4
    assert info["withdrawals"] == 1 and info["runs"] == {"total": 2, "stale": 1}
    assert info["qc"]["flags"] == [{"flag": "euler", "scans": 1}]


def test_info_of_an_empty_database(tmp_path: Path) -> None:
    with connect(tmp_path / "empty.duckdb", create=True):
        pass
    info = database_info(tmp_path / "empty.duckdb")
    assert info["counts"]["scans"] == 0 and info["age"]["min"] is None
    assert "age (scans): none recorded" in format_info(info)


# --------------------------------------------------------------------------------- export


def expected_row_order(built: Built) -> list[str]:
    return sorted(built.meta, key=lambda s: (built.meta[s][1], built.meta[s][0],
                                             built.meta[s][2], s))  # fmt: skip


def check_export(table: pa.Table, built: Built, feature_ids: list[str]) -> None:
    order = expected_row_order(built)
    assert table.column("scan_key").to_pylist() == order
    scan_cols = ["scan_key", "subject_key", "source", "session", "site", "scanner", "software",
                 "version", "age", "sex"]  # fmt: skip
    assert table.column_names == [*scan_cols, "diagnosis", "panss", *feature_ids]
    for i, scan_key in enumerate(order):
        subject, source, rank, site, software, version, age, sex = built.meta[scan_key]
        row = {name: table.column(name)[i].as_py() for name in table.column_names}
        assert (row["subject_key"], row["source"], row["session"], row["site"]) == (
            subject, source, rank, site)  # fmt: skip
        assert (row["software"], row["version"], row["age"], row["sex"]) == (
            software, version, age, sex)  # fmt: skip
        assert row["scanner"] is None
        assert row["diagnosis"] == built.phenotypes[scan_key].get("diagnosis")
        assert row["panss"] == built.phenotypes[scan_key].get("panss")
        for fid in feature_ids:
            assert row[fid] == built.values[scan_key].get(fid), (scan_key, fid)
    assert table.schema.field("panss").type == pa.float64()
    assert table.schema.field("diagnosis").type == pa.string()
    assert all(table.schema.field(f).type == pa.float64() for f in feature_ids)


def test_export_parquet_and_csv_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    built = build_db(tmp_path, rng)
    result = export_wide(built.path, tmp_path / "wide.parquet")
    assert (result.n_rows, result.n_features, result.n_phenotypes) == (6, 5, 2)
    wide = pq.read_table(tmp_path / "wide.parquet")
    check_export(wide, built, FEATURE_IDS[:5])
    provenance = json.loads(wide.schema.metadata[b"morphml"])
    assert provenance["morphml_version"] == __version__ and provenance["atlases"] is None
    # missing values read as NaN by pandas
    frame = wide.to_pandas()
    public = frame["source"] == "public"
    assert frame.loc[public, "aparc.lh.superiorfrontal.area"].isna().all()

    export_wide(built.path, tmp_path / "new" / "wide.csv")
    options = pacsv.ConvertOptions(
        column_types={"scanner": pa.string(), "session": pa.int32()}, strings_can_be_null=True
    )
    csv = pacsv.read_csv(tmp_path / "new" / "wide.csv", convert_options=options)
    assert csv.column_names == wide.column_names
    for name in wide.column_names:
        assert csv.column(name).to_pylist() == wide.column(name).to_pylist(), name


def test_export_filters(tmp_path: Path, rng: np.random.Generator) -> None:
    built = build_db(tmp_path, rng)
    out = tmp_path / "w.parquet"
    result = export_wide(built.path, out, atlases=["aparc"], measures=["thickness"])
    assert result.n_features == 2
    assert pq.read_table(out).column_names[12:] == FEATURE_IDS[:2]

    export_wide(built.path, out, atlases=["aseg", "global"], sources=["public"])
    table = pq.read_table(out)
    assert set(table.column("source").to_pylist()) == {"public"}
    assert table.column_names[10:] == ["diagnosis", *FEATURE_IDS[3:5]]

    # a feature with no value in the exported scans is left out
    result = export_wide(built.path, out, sources=["public"])
    assert "aparc.lh.superiorfrontal.area" not in pq.read_table(out).column_names
    assert result.n_features == 4


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("wide.xlsx", {}, r"cannot export to '\.xlsx'; name the output \*\.parquet or \*\.csv"),
        ("wide", {}, "a file without a suffix"),
        ("w.csv", {"atlases": ["aprac"]},
         r"no atlas 'aprac' \(did you mean 'aparc'\?\); its atlases are: a2009s, aparc"),
        ("w.csv", {"measures": ["thicknes"]}, "no measure 'thicknes'"),
        ("w.csv", {"sources": ["hostpial"]}, "did you mean 'hospital'"),
        ("w.csv", {"atlases": "aparc"}, "as a list of names"),
        ("w.csv", {"atlases": ["aseg"], "measures": ["area"]}, "no feature has atlas in"),
    ],
)  # fmt: skip
def test_export_errors(
    tmp_path: Path, rng: np.random.Generator, name: str, kwargs: dict[str, Any], message: str
) -> None:
    built = build_db(tmp_path, rng)
    with pytest.raises(ExportError, match=message):
        export_wide(built.path, tmp_path / name, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key", "morphml.duckdb"]


def build_synthetic_db(
    path: Path, n_scans: int, n_features: int, rng: np.random.Generator, missing: float = 0.01
) -> np.ndarray:
    """A database of random values, inserted through Arrow; returns the (scans, features)
    matrix it holds (NaN where a value is missing), rows in scan key order."""
    atlases = ("aparc", "aseg", "a2009s", "global")
    idx = np.arange(n_features, dtype=np.int32)
    feature_rows = pa.table({
        "feature_idx": idx,
        "feature_id": [f"{atlases[i % 4]}.lh.region{i}.thickness" for i in idx],
        "atlas": [atlases[i % 4] for i in idx],
        "hemi": ["lh"] * n_features,
        "region": [f"region{i}" for i in idx],
        "measure": ["thickness"] * n_features,
    })  # fmt: skip
    keys = [f"scan-{i:024x}" for i in range(n_scans)]
    scan_rows = pa.table({
        "scan_key": keys,
        "subject_key": [f"sub-{i:024x}" for i in range(n_scans)],
        "source": ["synthetic"] * n_scans,
        "session": pa.array(np.ones(n_scans, dtype=np.int32)),
        "site": [f"site{i % 7}" for i in range(n_scans)],
        "age": rng.uniform(20, 80, n_scans),
        "n_features": pa.array(np.full(n_scans, n_features, dtype=np.int32)),
    })  # fmt: skip
    matrix = np.round(rng.normal(2.5, 0.5, (n_scans, n_features)), 4)
    matrix[rng.random(matrix.shape) < missing] = np.nan
    with connect(path, create=True) as con:
        con.execute("INSERT INTO sources VALUES ('synthetic', 'table')")
        con.register("feature_rows", feature_rows)
        con.register("scan_rows", scan_rows)
        con.execute("INSERT INTO features SELECT * FROM feature_rows")
        con.execute(
            "INSERT INTO scans (scan_key, subject_key, source, session, site, age, n_features) "
            "SELECT * FROM scan_rows"
        )
        con.execute("INSERT INTO subjects SELECT subject_key, source, 'F' FROM scans")
        step = max(1, 2_000_000 // n_features)
        for start in range(0, n_scans, step):
            block = matrix[start : start + step]
            rows, cols = np.nonzero(~np.isnan(block))
            value_rows = pa.table({
                "scan_key": pa.DictionaryArray.from_arrays(
                    pa.array(rows.astype(np.int32)), pa.array(keys[start : start + step])
                ),
                "feature_idx": pa.array(cols.astype(np.int32)),
                "value": block[rows, cols],
            })  # fmt: skip
            con.register("value_rows", value_rows)
            con.execute("INSERT INTO measures SELECT * FROM value_rows")
    return matrix


def test_export_of_a_larger_random_database(tmp_path: Path, rng: np.random.Generator) -> None:
    matrix = build_synthetic_db(tmp_path / "s.duckdb", 300, 400, rng, missing=0.05)
    result = export_wide(tmp_path / "s.duckdb", tmp_path / "s.parquet")
    assert (result.n_rows, result.n_features) == (300, 400)
    table = pq.read_table(tmp_path / "s.parquet")
    got = np.column_stack([table.column(i).to_numpy(zero_copy_only=False) for i in range(10, 410)])
    np.testing.assert_array_equal(got, matrix)
    assert math.isclose(table.column("age").to_numpy().min(), 20, abs_tol=1)


# ------------------------------------------------------------------------ versions, files


def test_upgrade_from_version_1_keeps_data_and_adds_qc_flags(tmp_path: Path) -> None:
    path = tmp_path / "v1.duckdb"
    con = duckdb.connect(str(path))
    create_schema_v1(con, "0.0.1")
    con.execute("INSERT INTO sources VALUES ('hospital', 'stats')")
    con.execute("INSERT INTO scans (scan_key, subject_key, source, age) "
                "VALUES ('scan-a', 'sub-a', 'hospital', 40.5)")  # fmt: skip
    con.execute("INSERT INTO measures VALUES ('scan-a', 0, 2.75)")
    con.close()
    with (
        pytest.raises(DatabaseError, match=r"schema version 1; .* Run 'morphml db upgrade"),
        connect(path),
    ):
        pass
    assert upgrade(path) == (1, SCHEMA_VERSION)
    with connect(path) as con:
        assert con.execute("SELECT scan_key, age FROM scans").fetchall() == [("scan-a", 40.5)]
        assert con.execute("SELECT * FROM measures").fetchall() == [("scan-a", 0, 2.75)]
        assert con.execute("SELECT count(*) FROM qc_flags").fetchone() == (0,)
        assert con.execute("SELECT value FROM morphml_meta WHERE key = 'created_by'"
                           ).fetchone() == ("0.0.1",)  # fmt: skip
        assert con.execute("SELECT count(*) FROM runs WHERE run_dir IS NULL").fetchone() == (0,)
    assert upgrade(path) == (SCHEMA_VERSION, SCHEMA_VERSION)


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.duckdb"
    with connect(path, create=True) as con:
        con.execute("UPDATE morphml_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(DatabaseError, match="schema version 99, newer than this morphml"):
        database_info(path)
    with pytest.raises(DatabaseError, match="schema version 99"):
        upgrade(path)


@pytest.mark.parametrize("content", [b"participant_id,age\nP1,40\n", b""])
def test_a_file_that_is_not_a_duckdb_database_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "not.duckdb"
    path.write_bytes(content)
    with pytest.raises(DatabaseError, match="not a DuckDB database file"):
        database_info(path)
    assert path.read_bytes() == content


def test_a_duckdb_file_without_morphml_tables_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.duckdb"
    duckdb.connect(str(path)).close()
    with pytest.raises(DatabaseError, match="not a morphml database"):
        export_wide(path, tmp_path / "w.parquet")


def test_a_phenotype_named_like_a_scan_column_is_prefixed(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    built = build_db(tmp_path, rng)
    scan_key = built.scans_of[built.subject("public", "sub-01")][0]
    with connect(built.path) as con:
        con.execute("INSERT INTO phenotypes VALUES (?, 'site', 'categorical', NULL, 'lab 3')",
                    [scan_key])  # fmt: skip
    export_wide(built.path, tmp_path / "w.parquet")
    table = pq.read_table(tmp_path / "w.parquet")
    assert table.column_names[10:13] == ["diagnosis", "panss", "phenotype.site"]
    assert table.column("phenotype.site").to_pylist().count("lab 3") == 1
