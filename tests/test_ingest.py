"""morphml ingest: layouts, transactions, re-ingest, bad inputs, privacy, crashes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from morphml.cli import cli
from morphml.db import connect, ingest, load_key
from morphml.exceptions import ColumnMapError, DatabaseError, IngestError, KeyFileError
from morphml.simulate import example_features, write_subject_stats
from tests.conftest import SHARED_DATA

FLAVORS = [("freesurfer", "7.4.1"), ("fastsurfer", "7.4.1"), ("freesurfer", "6.0")]


def make_subject(
    folder: Path, seed: int, flavor: tuple[str, str] = FLAVORS[0], **identifying: str
) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    software, version = flavor
    feats = example_features(rng, software=software, version=version)
    write_subject_stats(
        folder / "stats",
        feats,
        software=software,
        version=version,
        identifying=identifying or None,
    )
    return feats


def participants(root: Path, rows: list[tuple[str, str, float, int, str]]) -> None:
    lines = ["participant_id\tsession_id\tage\tsex\tsite"]
    lines += [f"{i}\t{s}\t{a}\t{x}\t{site}" for i, s, a, x, site in rows]
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")
    (root / "participants.yaml").write_text(
        "id: participant_id\nsession: session_id\nage: age\n"
        "sex: {column: sex, coding: {1: male, 2: female}}\nsite: site\n"
    )


def snapshot(db: Path) -> dict[str, object]:
    with connect(db) as con:
        out: dict[str, object] = {}
        for table in ("scans", "subjects", "files", "phenotypes", "ingests", "changes"):
            out[table] = sorted(map(tuple, con.execute(f"SELECT * FROM {table}").fetchall()))
        out["measures"] = con.execute(
            # order-independent and exact (a float sum's last bits depend on thread order)
            "SELECT count(*), bit_xor(hash(scan_key, feature_idx, value)) FROM measures"
        ).fetchone()
        return out


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return tmp_path / "secret" / "key"


def test_subjects_dir_with_sessions_and_longitudinal(tmp_path: Path, key: Path) -> None:
    root = tmp_path / "subjects"
    make_subject(root / "sub-01_ses-1", 1)
    make_subject(root / "sub-01_ses-2", 2)
    make_subject(root / "sub-02" / "ses-a", 3)
    make_subject(root / "sub-02" / "ses-b", 4)
    make_subject(root / "tp1.long.base3", 5)  # FreeSurfer longitudinal run
    make_subject(root / "tp2.long.base3", 6)
    make_subject(root / "tp1", 7)  # its cross-sectional run: superseded
    make_subject(root / "base3", 8)  # the base template: not a scan
    make_subject(root / "fsaverage", 9)  # template subject: ignored
    make_subject(root / "sub-04", 10, FLAVORS[1])
    summary = ingest([root], source="site1", db=tmp_path / "db.duckdb", key_file=key)
    assert summary.n_scans == 7
    assert summary.n_subjects == 4
    assert summary.skipped["longitudinal base template (not a scan)"] == 1
    assert summary.skipped["cross-sectional run superseded by its longitudinal run"] == 1
    with connect(tmp_path / "db.duckdb") as con:
        sessions = con.execute(
            "SELECT subject_key, list(session ORDER BY session) FROM scans GROUP BY 1"
        ).fetchall()
    assert sorted(s for _, s in sessions) == [[1], [1, 2], [1, 2], [1, 2]]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_values_and_provenance_are_stored(tmp_path: Path, key: Path) -> None:
    feats = make_subject(tmp_path / "in" / "sub-01", 1)
    ingest([tmp_path / "in"], source="s", db=tmp_path / "db.duckdb", key_file=key)
    with connect(tmp_path / "db.duckdb") as con:
        value = con.execute(
            "SELECT m.value FROM measures m JOIN features f USING (feature_idx) "
            "WHERE f.feature_id = 'aseg.na.Left-Hippocampus.volume'"
        ).fetchone()
        paths = {r[0] for r in con.execute("SELECT path FROM files").fetchall()}
        software = con.execute("SELECT software, version FROM scans").fetchone()
    assert value is not None
    assert value[0] == pytest.approx(feats["aseg.na.Left-Hippocampus.volume"], abs=0.06)
    assert all(p.startswith("stats/") for p in paths)
    assert software == ("FreeSurfer", "7.4.1")


def test_reingest_unchanged_changes_nothing_and_changed_file_is_recorded(
    tmp_path: Path, key: Path
) -> None:
    root = tmp_path / "in"
    for i in range(3):
        make_subject(root / f"sub-{i}", i)
    db = tmp_path / "db.duckdb"
    ingest([root], source="s", db=db, key_file=key)
    before = snapshot(db)
    again = ingest([root], source="s", db=db, key_file=key)
    assert (again.n_new, again.n_changed, again.n_unchanged) == (0, 0, 3)
    after = snapshot(db)
    assert {k: v for k, v in after.items() if k != "ingests"} == {
        k: v for k, v in before.items() if k != "ingests"
    }
    aseg = root / "sub-1" / "stats" / "aseg.stats"
    text = aseg.read_text()
    lines = text.splitlines(keepends=True)
    row = next(i for i, line in enumerate(lines) if "Left-Hippocampus" in line)
    parts = lines[row].split()
    lines[row] = lines[row].replace(parts[3], "9999.9", 1)
    aseg.write_text("".join(lines))
    third = ingest([root], source="s", db=db, key_file=key)
    assert (third.n_new, third.n_changed, third.n_unchanged) == (0, 1, 2)
    with connect(db) as con:
        changes = con.execute("SELECT path FROM changes").fetchall()
        value = con.execute(
            "SELECT count(*) FROM measures m JOIN features f USING (feature_idx) "
            "WHERE f.feature_id = 'aseg.na.Left-Hippocampus.volume' AND m.value = 9999.9"
        ).fetchone()
        n_scans = con.execute("SELECT count(*) FROM scans").fetchone()
    assert changes == [("stats/aseg.stats",)]
    assert value == (1,)
    assert n_scans == (3,)


def test_corrupt_file_fail_rolls_back_and_skip_records(tmp_path: Path, key: Path) -> None:
    root = tmp_path / "in"
    for i in range(4):
        make_subject(root / f"sub-{i}", i)
    db = tmp_path / "db.duckdb"
    ingest([SHARED_DATA / "freesurfer-stats-tests/subjects/soichi"], source="x", db=db,
           key_file=key)  # fmt: skip
    before = snapshot(db)
    bad = root / "sub-2" / "stats" / "lh.aparc.stats"
    lines = bad.read_text().splitlines(keepends=True)
    lines[-3] = " ".join(lines[-3].split()[:6]) + "\n"
    bad.write_text("".join(lines))
    with pytest.raises(IngestError) as info:
        ingest([root], source="s", db=db, key_file=key)
    message = str(info.value)
    assert "stats/lh.aparc.stats line" in message and "expected 10 columns, got 6" in message
    assert "sub-2" not in message  # folders are named by pseudonym only
    assert snapshot(db) == before
    summary = ingest([root], source="s", db=db, key_file=key, on_error="skip")
    assert summary.n_new == 3 and summary.n_skipped == 1
    with connect(db) as con:
        errors = con.execute("SELECT scan_key, path, line, message FROM ingest_errors").fetchall()
    assert len(errors) == 1
    assert errors[0][1] == "stats/lh.aparc.stats" and errors[0][2] is not None


def test_participants_join_and_mismatches(tmp_path: Path, key: Path) -> None:
    root = tmp_path / "in"
    make_subject(root / "sub-01_ses-1", 1)
    make_subject(root / "sub-01_ses-2", 2)
    make_subject(root / "sub-02", 3)
    participants(root, [("sub-01", "ses-1", 30.5, 1, "A"), ("sub-01", "ses-2", 32.0, 1, "A"),
                        ("sub-02", "", 40.0, 2, "B")])  # fmt: skip
    db = tmp_path / "db.duckdb"
    ingest([root], source="s", db=db, key_file=key)
    with connect(db) as con:
        rows = con.execute(
            "SELECT s.age, s.site, j.sex FROM scans s JOIN subjects j USING (subject_key) "
            "ORDER BY s.age"
        ).fetchall()
    assert rows == [(30.5, "A", "M"), (32.0, "A", "M"), (40.0, "B", "F")]
    # a participants row for a subject without stats, and a subject without a row
    participants(root, [("sub-01", "ses-1", 30.5, 1, "A"), ("sub-01", "ses-2", 32.0, 1, "A"),
                        ("sub-09", "", 40.0, 2, "B")])  # fmt: skip
    before = snapshot(db)
    with pytest.raises(IngestError, match=r"have no row in participants\.tsv"):
        ingest([root], source="s", db=db, key_file=key)
    participants(root, [("sub-01", "ses-1", 30.5, 1, "A"), ("sub-01", "ses-2", 32.0, 1, "A"),
                        ("sub-02", "", 40.0, 2, "B"), ("sub-09", "", 50.0, 1, "B")])  # fmt: skip
    with pytest.raises(IngestError, match="match no scan folder"):
        ingest([root], source="s", db=db, key_file=key)
    participants(root, [("sub-01", "ses-1", 30.5, 1, "A"), ("sub-01", "ses-2", 32.0, 3, "A"),
                        ("sub-02", "", 40.0, 2, "B")])  # fmt: skip
    with pytest.raises(ColumnMapError, match="3"):
        ingest([root], source="s", db=db, key_file=key)
    assert snapshot(db) == before


def test_conflicting_duplicate_ids(tmp_path: Path, key: Path) -> None:
    root = tmp_path / "in"
    make_subject(root / "sub-01_ses-1", 1)
    make_subject(root / "sub-01" / "ses-1", 2)
    with pytest.raises(IngestError, match="occur more than once"):
        ingest([root], source="s", db=tmp_path / "db.duckdb", key_file=key)
    assert not (tmp_path / "db.duckdb").exists() or snapshot(tmp_path / "db.duckdb")["scans"] == []


def test_two_sources_claiming_one_scan(tmp_path: Path, key: Path) -> None:
    root = tmp_path / "in"
    make_subject(root / "sub-01", 1)
    db = tmp_path / "db.duckdb"
    ingest([root], source="hospital", db=db, key_file=key)
    before = snapshot(db)
    with pytest.raises(IngestError, match="already in the database under source 'hospital'"):
        ingest([root], source="public", db=db, key_file=key)
    assert snapshot(db) == before


def test_not_a_duckdb_file(tmp_path: Path, key: Path) -> None:
    db = tmp_path / "db.duckdb"
    db.write_bytes(b"this is not a database\n" * 100)
    make_subject(tmp_path / "in" / "sub-01", 1)
    with pytest.raises(DatabaseError, match="not a DuckDB database file"):
        ingest([tmp_path / "in"], source="s", db=db, key_file=key)
    assert db.read_bytes() == b"this is not a database\n" * 100


def test_table_import_fcon1000(tmp_path: Path, key: Path) -> None:
    db = tmp_path / "db.duckdb"
    summary = ingest(
        [SHARED_DATA / "pcntoolkit-demo/fcon1000.csv"],
        column_map=Path(__file__).resolve().parents[1] / "configs/maps/fcon1000.yaml",
        source="fcon1000",
        db=db,
        key_file=key,
    )
    assert summary.n_scans == 1078
    with connect(db) as con:
        sex = dict(con.execute("SELECT sex, count(*) FROM subjects GROUP BY 1").fetchall())
        sites = con.execute("SELECT count(DISTINCT site) FROM scans").fetchone()
    assert sex == {"F": 589, "M": 489}
    assert sites == (23,)


def test_linkage_file_is_the_only_link(tmp_path: Path, key: Path) -> None:
    make_subject(tmp_path / "in" / "sub-PERSON1", 1)
    db = tmp_path / "db.duckdb"
    linkage = tmp_path / "linkage.tsv"
    ingest([tmp_path / "in"], source="s", db=db, key_file=key, linkage_out=linkage)
    text = linkage.read_text()
    assert "sub-PERSON1" in text
    assert stat.S_IMODE(linkage.stat().st_mode) == 0o600
    assert b"PERSON1" not in db.read_bytes()


CANARIES = {
    "subjectname": "CANARYsubjname77",
    "hostname": "CANARYhost42",
    "user": "CANARYuser99",
    "SUBJECTS_DIR": "/data/CANARYsubjectsdir13",
    "cmdline_path": "/opt/CANARYinstall55",
    "CreationTime": "2031/01/02-03:04:05-CANARYtime",
    "timestamp": "1987/06/05 04:03:21",
}


def test_planted_identifiers_never_reach_database_exports_or_output(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for i, flavor in enumerate(FLAVORS):
        make_subject(root / f"sub-CANARYfolder{i}", i, flavor, **CANARIES)
    (root / "participants.tsv").write_text(
        "participant_id\tage\tsex\tsite\tcomments\n"
        + "".join(
            f"sub-CANARYfolder{i}\t{30 + i}\t1\tsiteA\tCANARYfreetext{i}\n" for i in range(3)
        )
    )
    (root / "participants.yaml").write_text(
        "id: participant_id\nage: age\nsex: {column: sex, coding: {1: male, 2: female}}\n"
        "site: site\nignore: [comments]\n"
    )
    db = tmp_path / "db.duckdb"
    env = {"MORPHML_KEY_FILE": str(tmp_path / "key")}
    runner = CliRunner(env=env)
    outputs = []
    for args in (
        ["ingest", str(root), "--db", str(db), "--source", "hospital"],
        ["ingest", str(root), "--db", str(db), "--source", "hospital"],
        ["db", "info", "--db", str(db)],
        ["db", "info", "--db", str(db), "--json"],
        ["db", "export", "--db", str(db), "--out", str(tmp_path / "out" / "wide.parquet")],
        ["db", "export", "--db", str(db), "--out", str(tmp_path / "out" / "wide.csv")],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    blobs = [db.read_bytes()]
    wal = Path(str(db) + ".wal")
    if wal.exists():
        blobs.append(wal.read_bytes())
    blobs += [p.read_bytes() for p in (tmp_path / "out").iterdir()]
    blobs += [o.encode() for o in outputs]
    needles = [
        "CANARY",
        "canaryfolder",
        "subjname77",
        "host42",
        "user99",
        "subjectsdir13",
        "install55",
        "freetext",
        "CANARYtime",
        "1987/06/05",
    ]
    for blob in blobs:
        lowered = blob.lower()
        for needle in needles:
            assert needle.lower().encode() not in lowered, needle
        assert b"sub-canaryfolder" not in lowered


@pytest.mark.slow
def test_sigkill_during_ingest_leaves_database_as_before(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for i in range(120):
        make_subject(root / f"sub-{i:03d}", i, FLAVORS[i % 3])
    db = tmp_path / "db.duckdb"
    key = tmp_path / "key"
    ingest([SHARED_DATA / "freesurfer-stats-tests/subjects/soichi"], source="x", db=db,
           key_file=key)  # fmt: skip
    before = snapshot(db)
    cmd = [sys.executable, "-m", "morphml.cli", "ingest", str(root), "--db", str(db),
           "--source", "big", "--key-file", str(key), "--jobs", "2"]  # fmt: skip
    template = db.read_bytes()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    full = time.perf_counter() - t0
    complete = snapshot(db)
    rng = np.random.default_rng(7)
    killed = 0
    rounds = 0
    while killed < 3 and rounds < 25:  # kill at random points until three landed mid-ingest
        rounds += 1
        db.write_bytes(template)  # the state before the ingest, every round
        # every write-ahead file a killed DuckDB can leave (.wal, .wal.checkpoint,
        # .wal.recovery): a leftover of the previous round is not the state before
        for leftover in db.parent.glob(db.name + ".wal*"):
            leftover.unlink()
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
        time.sleep(full * rng.uniform(0.1, 0.8))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # it ended before the kill: the machine got faster, aim earlier from now on
            full = min(full, time.perf_counter() - started)
        proc.wait()
        state = snapshot(db)
        if state not in (before, complete):
            diff = [k for k in state if state[k] not in (before[k], complete[k])]
            as_before = [k for k in state if state[k] == before[k] != complete[k]]
            raise AssertionError(
                f"partial state in {diff}: {[state[k] for k in diff]!r:.800}; tables as "
                f"before the ingest: {as_before}, the others as after it (round {rounds})"
            )
        # all or nothing: a kill after COMMIT leaves the complete ingest, never a part of it
        killed += proc.returncode != 0 and state == before
    assert killed >= 3, f"only {killed} of {rounds} kills landed before the commit"
    subprocess.run(cmd, check=True, capture_output=True)  # running it again completes
    with connect(db) as con:
        n = con.execute("SELECT count(*) FROM scans WHERE source = 'big'").fetchone()
    assert n == (120,)


def test_withdrawal_after_ingest_and_reenrolment(tmp_path: Path, key: Path) -> None:
    root = tmp_path / "in"
    make_subject(root / "sub-01", 1)
    make_subject(root / "sub-02", 2)
    db = tmp_path / "db.duckdb"
    ingest([root], source="hospital", db=db, key_file=key)
    runner = CliRunner(env={"MORPHML_KEY_FILE": str(key)})
    result = runner.invoke(cli, ["withdraw", "sub-01", "--db", str(db), "--source", "hospital"])
    assert result.exit_code == 0, result.output
    assert "sub-01" not in result.output
    with connect(db) as con:
        assert con.execute("SELECT count(*) FROM scans").fetchone() == (1,)
    with pytest.raises(IngestError, match="withdrew earlier"):
        ingest([root], source="hospital", db=db, key_file=key)
    again = ingest([root], source="hospital", db=db, key_file=key, allow_reenrol=True)
    assert again.n_new == 1 and again.n_unchanged == 1


def test_a_different_key_is_refused(tmp_path: Path, key: Path) -> None:
    make_subject(tmp_path / "in" / "sub-01", 1)
    db = tmp_path / "db.duckdb"
    ingest([tmp_path / "in"], source="s", db=db, key_file=key)
    before = snapshot(db)
    load_key(tmp_path / "other-key")  # a valid key, but not this database's
    with pytest.raises(KeyFileError, match="not the one the database was ingested with"):
        ingest([tmp_path / "in"], source="s", db=db, key_file=tmp_path / "other-key")
    assert snapshot(db) == before


def test_simulated_cohort_ingests_directly(tmp_path: Path, key: Path) -> None:
    from morphml.simulate import simulate_cohort

    sim = simulate_cohort(tmp_path / "sim", n_subjects=30, n_sites=3, seed=3)
    db = tmp_path / "db.duckdb"
    with pytest.raises(IngestError, match=r"stats/.*line"):  # the planted corrupt file
        ingest([tmp_path / "sim"], source="sim", db=db, key_file=key)
    summary = ingest([tmp_path / "sim"], source="sim", db=db, key_file=key, on_error="skip")
    assert summary.n_skipped == len(sim.corrupt_files)
    assert summary.n_scans == sim.n_scans - len(sim.corrupt_files)
    with connect(db) as con:
        phenos = {r[0] for r in con.execute("SELECT DISTINCT name FROM phenotypes").fetchall()}
        ages = con.execute("SELECT count(*) FROM scans WHERE age IS NULL").fetchone()
    assert {"diagnosis", "response", "clinical_score"} <= phenos
    assert ages == (0,)


def test_quality_control_runs_inside_the_ingest_transaction(tmp_path: Path, key: Path) -> None:
    root = tmp_path / "in"
    for i in range(3):
        make_subject(root / f"sub-{i}", i)
    db = tmp_path / "db.duckdb"
    calls: list[list[str]] = []

    def qc(con: object, scan_keys: list[str]) -> list[str]:
        import duckdb

        assert isinstance(con, duckdb.DuckDBPyConnection)
        # the scans are visible to QC before the commit
        assert con.execute("SELECT count(*) FROM scans").fetchone() == (3,)
        calls.append(sorted(scan_keys))
        return ["euler_absolute", "euler_absolute", "thickness_range"]

    summary = ingest([root], source="s", db=db, key_file=key, quality_control=qc)
    with connect(db) as con:
        keys = sorted(k for (k,) in con.execute("SELECT scan_key FROM scans").fetchall())
    assert calls == [keys]
    assert summary.qc_flags == {"euler_absolute": 2, "thickness_range": 1}
    # no callable: no QC at ingest
    assert not ingest([root], source="s", db=db, key_file=key).qc_flags

    def failing(con: object, scan_keys: list[str]) -> list[str]:
        raise RuntimeError("QC failed")

    before = snapshot(db)
    make_subject(root / "sub-9", 9)
    with pytest.raises(RuntimeError, match="QC failed"):
        ingest([root], source="s", db=db, key_file=key, quality_control=failing)
    assert snapshot(db) == before  # a failed QC rolls the whole ingest back


def test_db_package_does_not_import_qc() -> None:
    code = "import sys, morphml.db; print(sorted(m for m in sys.modules if 'morphml.qc' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
