"""Every failure a user can cause: one line naming the file and what was expected, exit 2.

One table of bad inputs over the commands. For each row the command must exit with status 2,
print a single line on stderr that names the file and says what was expected, print no
traceback, and leave the database exactly as it was (a checksum of a sorted dump of every
table). The database is built once for the module; commands run in-process (CliRunner).
New failure kinds go into ``CASES``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner

from morphml.cli import cli
from morphml.db import connect, ingest, load_key, record_run
from morphml.db._schema import create_schema_v1
from morphml.simulate import example_features, write_subject_stats


@dataclass(frozen=True)
class World:
    """The module's database and the files around it (never changed by a case)."""

    root: Path
    db: Path
    key: Path
    subjects: Path
    person_scan: str


def _subject(folder: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    feats = example_features(rng, software="freesurfer", version="7.4.1")
    write_subject_stats(folder / "stats", feats, software="freesurfer", version="7.4.1")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("bad")
    subjects = root / "subjects"
    for i in range(4):
        _subject(subjects / f"sub-{i:02d}", i)
    db, key = root / "db.duckdb", root / "key"
    ingest([subjects], source="hospital", db=db, key_file=key)
    with connect(db) as con:
        scan = str(con.execute("SELECT min(scan_key) FROM scans").fetchone()[0])  # type: ignore[index]
        # a run whose folder has gone: withdrawing its people must be refused, naming it
        record_run(con, "run-gone", "pretrain", "c0ffee", [scan], root / "moved-away-run")
    return World(root, db, key, subjects, scan)


def checksum(db: Path) -> str:
    """Hash of a sorted dump of every table (the content, not the file's bytes)."""
    digest = hashlib.sha256()
    con = duckdb.connect(str(db), read_only=True)
    try:
        query = "SELECT table_name FROM duckdb_tables() ORDER BY 1"
        tables = [r[0] for r in con.execute(query).fetchall()]
        for table in tables:
            digest.update(table.encode())
            rows = con.execute(f'SELECT * FROM "{table}"').fetchall()
            for row in sorted(map(repr, rows)):
                digest.update(row.encode())
    finally:
        con.close()
    return digest.hexdigest()


# ------------------------------------------------------------------------------- helpers


def _stats_file(case: Path, w: World, name: str, edit: Callable[[str], str]) -> Path:
    """A copy of one good subject whose stats file ``name`` is edited."""
    folder = case / "in" / "sub-bad"
    shutil.copytree(w.subjects / "sub-00", folder)
    path = folder / "stats" / name
    path.write_text(edit(path.read_text()))
    return folder


def _row_value(value: str, name: str = "lh.aparc.stats", column: int = 4) -> Callable[..., Path]:
    def setup(case: Path, w: World) -> Path:
        def edit(text: str) -> str:
            lines = text.split("\n")
            k = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
            parts = lines[k].split()
            parts[column] = value
            lines[k] = " ".join(parts)
            return "\n".join(lines)

        return _stats_file(case, w, name, edit)

    return setup


def _measure_value(value: str, name: str, measure: str) -> Callable[..., Path]:
    def setup(case: Path, w: World) -> Path:
        def edit(text: str) -> str:
            pattern = rf"(# Measure [^,]*, {measure}, [^,]*, )[^,]*,"
            new = re.sub(pattern, rf"\g<1>{value},", text)
            assert new != text
            return new

        return _stats_file(case, w, name, edit)

    return setup


def _no_newline_at_end(case: Path, w: World) -> Path:
    return _stats_file(case, w, "lh.aparc.stats", lambda t: t.rstrip("\n"))


def _raw_file(name: str, data: bytes) -> Callable[..., Path]:
    def setup(case: Path, w: World) -> Path:
        folder = case / "in" / "sub-bad"
        shutil.copytree(w.subjects / "sub-00", folder)
        (folder / "stats" / name).write_bytes(data)
        return folder

    return setup


def _copy_db(case: Path, w: World, edit: Callable[[bytes], bytes] | None = None) -> Path:
    path = case / "copy.duckdb"
    data = w.db.read_bytes()
    path.write_bytes(edit(data) if edit else data)
    return path


def _truncated(case: Path, w: World) -> Path:
    return _copy_db(case, w, lambda d: d[: len(d) // 2])


def _corrupted(case: Path, w: World) -> Path:
    def flip(data: bytes) -> bytes:
        # a data block past the two headers: found by the checksum DuckDB keeps per block
        b = bytearray(data)
        start = 3 * 4096 + 200
        b[start : start + 64] = bytes(x ^ 0xFF for x in b[start : start + 64])
        return bytes(b)

    return _copy_db(case, w, flip)


def _junk_db(case: Path, w: World) -> Path:
    path = case / "junk.duckdb"
    path.write_bytes(b"this is not a database\n" * 100)
    return path


def _foreign_db(case: Path, w: World) -> Path:
    path = case / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (i INTEGER)")
    con.close()
    return path


def _newer_db(case: Path, w: World) -> Path:
    path = _copy_db(case, w)
    con = duckdb.connect(str(path))
    con.execute("UPDATE morphml_meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    return path


def _older_db(case: Path, w: World) -> Path:
    path = case / "v1.duckdb"
    con = duckdb.connect(str(path))
    create_schema_v1(con, "0.0.1")
    con.close()
    return path


def _bad_key(data: bytes, mode: int = 0o600) -> Callable[..., Path]:
    def setup(case: Path, w: World) -> Path:
        path = case / "key"
        path.write_bytes(data)
        path.chmod(mode)
        return path

    return setup


def _other_key(case: Path, w: World) -> Path:
    path = case / "other-key"
    load_key(path)
    return path


def _write(name: str, text: str | bytes) -> Callable[..., Path]:
    def setup(case: Path, w: World) -> Path:
        path = case / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    return setup


MAP = (
    "id: participant_id\nage: age\nsex: {column: sex, coding: {1: male, 2: female}}\nsite: site\n"
)
PRETRAIN = (
    "kind: pretrain\nfeatures: {atlases: [aseg], measures: [volume]}\n"
    "models: {age: [ridge], sex: [logistic]}\nseed: 1\ndevice: cpu\n"
)


def _run_dir(manifest: str | bytes | None, config: str | None = PRETRAIN) -> Callable[..., Path]:
    def setup(case: Path, w: World) -> Path:
        run = case / "run"
        run.mkdir()
        if manifest is not None:
            target = run / "manifest.json"
            if isinstance(manifest, bytes):
                target.write_bytes(manifest)
            else:
                target.write_text(manifest)
        if config is not None:
            (run / "config.yaml").write_text(config)
        return run

    return setup


STALE_MANIFEST = json.dumps(
    {
        "run_id": "r1",
        "kind": "pretrain",
        "config_hash": "x",
        "feature_ids": [],
        "final_models": {},
        "scan_keys": [],
        "withdrawals": [{"withdrawal_id": 1, "n_scans_removed": 1}],
    }
)


@contextmanager
def _unwritable(path: Path) -> Iterator[None]:
    """Make a file or folder unwritable, also for root (immutable flag), then restore it."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: cannot make a file unwritable")
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
        if done.returncode:
            pytest.skip(f"chattr +i is not supported here: {done.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)


@contextmanager
def _locked(db: Path) -> Iterator[None]:
    """Another process holds the database open for writing."""
    code = (
        "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
        "sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


# ---------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One bad input: how to make it, the command, and what the one line must say."""

    id: str
    args: Callable[[World, Path, dict[str, Path]], list[str]]
    expect: tuple[str, ...]
    setup: dict[str, Callable[[Path, World], Path]] | None = None
    wrap: str | None = None  # "locked", "immutable-db", "immutable-folder"
    env: dict[str, str] | None = None


def _ingest(*extra: str) -> Callable[[World, Path, dict[str, Path]], list[str]]:
    def args(w: World, case: Path, made: dict[str, Path]) -> list[str]:
        source = str(made["input"]) if "input" in made else str(w.subjects)
        values = {k: str(v) for k, v in made.items()}
        values.update(db=str(w.db), case=str(case))
        rest = [a.format(**values) for a in extra]
        return ["ingest", source, "--db", str(w.db), "--source", "hospital", *rest]

    return args


def _cmd(*parts: str) -> Callable[[World, Path, dict[str, Path]], list[str]]:
    def args(w: World, case: Path, made: dict[str, Path]) -> list[str]:
        values = {k: str(v) for k, v in made.items()}
        values.setdefault("db", str(w.db))
        values["case"] = str(case)
        values["person"] = w.person_scan
        values["subjects"] = str(w.subjects)
        return [p.format(**values) for p in parts]

    return args


FINITE = "expected a finite number"
DAMAGED = ("is damaged", "restore it from a backup")

# fmt: off
CASES: list[Case] = [
    # ---------------------------------------------------------------- ingest: stats files
    Case("stats-row-nan", _ingest(), ("lh.aparc.stats line", "'bankssts'", FINITE),
         {"input": _row_value("nan")}),
    Case("stats-row-inf", _ingest(), ("lh.aparc.stats line", FINITE),
         {"input": _row_value("inf")}),
    Case("stats-row-minus-inf", _ingest(), ("rh.aparc.stats line", FINITE),
         {"input": _row_value("-inf", "rh.aparc.stats", 2)}),
    Case("stats-row-1e400", _ingest(), ("lh.aparc.stats line", "'1e400'", FINITE),
         {"input": _row_value("1e400")}),
    Case("stats-aseg-row-nan", _ingest(), ("aseg.stats line", FINITE),
         {"input": _row_value("NaN", "aseg.stats", 3)}),
    Case("stats-etiv-nan", _ingest(), ("aseg.stats line", "eTIV", FINITE),
         {"input": _measure_value("nan", "aseg.stats", "eTIV")}),
    Case("stats-etiv-1e400", _ingest(), ("aseg.stats line", "eTIV", FINITE),
         {"input": _measure_value("1e400", "aseg.stats", "eTIV")}),
    Case("stats-brainvol-inf", _ingest(), ("brainvol.stats line", FINITE),
         {"input": _measure_value("inf", "brainvol.stats", "BrainSegVol")}),
    Case("stats-empty", _ingest(), ("lh.aparc.stats", "empty file", "expected"),
         {"input": _raw_file("lh.aparc.stats", b"")}),
    Case("stats-binary", _ingest(), ("aseg.stats line 1", "binary data", "expected a text"),
         {"input": _raw_file("aseg.stats", b"\x00\x01\x02 binary\n")}),
    Case("stats-not-utf8", _ingest(), ("aseg.stats line 1", "not UTF-8", "expected text"),
         {"input": _raw_file("aseg.stats", b"# Title Segmentation\xff\xfe\n")}),
    Case("stats-no-newline", _ingest(), ("lh.aparc.stats line", "truncated"),
         {"input": _no_newline_at_end}),
    Case("stats-short-row", _ingest(), ("lh.aparc.stats line", "expected 10 columns"),
         {"input": _row_value("2.5 extra")}),
    Case("stats-word-for-number", _ingest(), ("lh.aparc.stats line", "is not a number"),
         {"input": _row_value("thick")}),
    Case("stats-wrong-title", _ingest(), ("lh.aparc.stats line 1", "expected the title line"),
         {"input": _raw_file("lh.aparc.stats", b"# something else\n# ColHeaders a\n")}),
    Case("stats-no-colheaders", _ingest(), ("aseg.stats", "no '# ColHeaders' line"),
         {"input": _raw_file("aseg.stats", b"# Title Segmentation Statistics\n#\n")}),
    Case("input-folder-missing", _ingest(), ("nowhere", "expected"),
         {"input": lambda case, w: case / "nowhere"}),
    # ------------------------------------------------------------- ingest: arguments, keys
    Case("ingest-bad-source-name", _cmd("ingest", "{case}", "--db", "{db}", "--source", "a b"),
         ("source name 'a b'", "letters, digits")),
    Case("ingest-jobs-zero", _ingest("--jobs", "0"), ("--jobs must be an integer >= 1",)),
    Case("key-not-text", _ingest("--key-file", "{key}"), ("key", "expected 64 hex characters"),
         {"key": _bad_key(bytes(range(256)))}),
    Case("key-not-hex", _ingest("--key-file", "{key}"), ("key", "expected 64 hex characters"),
         {"key": _bad_key(b"not a key at all\n")}),
    Case("key-too-short", _ingest("--key-file", "{key}"), ("key", "key too short"),
         {"key": _bad_key(b"abcd\n")}),
    Case("key-readable-by-others", _ingest("--key-file", "{key}"),
         ("key", "readable by other users", "chmod 600"),
         {"key": _bad_key(b"ab" * 32 + b"\n", 0o644)}),
    Case("key-is-a-folder", _ingest("--key-file", "{case}"),
         ("is a directory", "expected the key")),
    Case("key-missing-for-existing-db", _ingest("--key-file", "{case}/absent-key"),
         ("absent-key does not exist", "nothing was created")),
    Case("key-of-another-database", _ingest("--key-file", "{key}"),
         ("not the one the database was ingested with",), {"key": _other_key}),
    Case("participants-missing", _ingest("--participants", "{case}/gone.tsv", "--map", "{map}"),
         ("gone.tsv",), {"map": _write("map.yaml", MAP)}),
    Case("participants-without-map", _ingest("--participants", "{p}"),
         ("p.tsv", "needs a column map"), {"p": _write("p.tsv", "participant_id\nsub-00\n")}),
    Case("map-missing", _ingest("--participants", "{p}", "--map", "{case}/nomap.yaml"),
         ("nomap.yaml",), {"p": _write("p.tsv", "participant_id\nsub-00\n")}),
    Case("map-bad-yaml", _ingest("--participants", "{p}", "--map", "{map}"),
         ("map.yaml", "YAML"),
         {"p": _write("p.tsv", "participant_id\nsub-00\n"),
          "map": _write("map.yaml", "id: [unclosed\n")}),
    Case("table-without-map", _cmd("ingest", "{t}", "--db", "{db}", "--source", "tab"),
         ("t.csv", "needs a column map"), {"t": _write("t.csv", "id,age\n1,30\n")}),
    # ------------------------------------------------------------ ingest: the database file
    Case("db-truncated", _cmd("ingest", "{subjects}", "--db", "{db}", "--source", "s"),
         DAMAGED, {"db": _truncated}),
    Case("db-corrupted-block", _cmd("ingest", "{subjects}", "--db", "{db}", "--source", "s"),
         DAMAGED, {"db": _corrupted}),
    Case("db-not-duckdb", _cmd("ingest", "{subjects}", "--db", "{db}", "--source", "s"),
         ("junk.duckdb is not a DuckDB database file",), {"db": _junk_db}),
    Case("db-not-morphml", _cmd("ingest", "{subjects}", "--db", "{db}", "--source", "s"),
         ("other.duckdb is a DuckDB file but not a morphml database",), {"db": _foreign_db}),
    Case("db-newer-schema", _cmd("ingest", "{subjects}", "--db", "{db}", "--source", "s"),
         ("schema version 99", "install a newer morphml"), {"db": _newer_db}),
    Case("db-older-schema", _cmd("ingest", "{subjects}", "--db", "{db}", "--source", "s"),
         ("v1.duckdb has schema version 1", "morphml db upgrade"), {"db": _older_db}),
    Case("db-is-a-folder", _cmd("ingest", "{subjects}", "--db", "{case}", "--source", "s"),
         ("is a directory", "expected a DuckDB database file")),
    Case("db-locked", _ingest(), ("db.duckdb is in use by another process",), wrap="locked"),
    Case("db-immutable", _cmd("ingest", "{subjects}", "--db", "{db}", "--source", "s"),
         ("copy.duckdb", "permission denied"), {"db": _copy_db}, wrap="immutable-db"),
    Case("db-folder-unwritable-wal", _cmd("ingest", "{subjects}", "--db", "{db}", "--source", "s"),
         ("cannot create the write-ahead log", "copy.duckdb.wal", "write access"),
         {"db": _copy_db}, wrap="immutable-folder"),
    # ------------------------------------------------------------------------ withdraw
    Case("withdraw-unknown-person", _cmd("withdraw", "nobody", "--db", "{db}", "--source",
         "hospital"), ("no person with the given original id", "Nothing was changed")),
    Case("withdraw-unknown-source", _cmd("withdraw", "x", "--db", "{db}", "--source", "elsewhere"),
         ("source 'elsewhere' is not in the database",)),
    Case("withdraw-both-ids", _cmd("withdraw", "x", "--pseudonym", "sub-1", "--db", "{db}",
         "--source", "hospital"), ("give exactly one of ORIGINAL_ID or --pseudonym",)),
    Case("withdraw-unknown-scan", _cmd("withdraw", "--pseudonym", "scan-0000", "--db", "{db}",
         "--source", "hospital"), ("no scan with pseudonym scan-0000",)),
    Case("withdraw-key-missing", _cmd("withdraw", "x", "--db", "{db}", "--source", "hospital",
         "--key-file", "{case}/nokey"), ("nokey does not exist",)),
    Case("withdraw-key-not-text", _cmd("withdraw", "x", "--db", "{db}", "--source", "hospital",
         "--key-file", "{key}"), ("key", "expected 64 hex"), {"key": _bad_key(b"\xff\xfe\x00")}),
    Case("withdraw-db-missing", _cmd("withdraw", "x", "--db", "{case}/none.duckdb", "--source",
         "hospital"), ("none.duckdb does not exist",)),
    Case("withdraw-db-truncated", _cmd("withdraw", "x", "--db", "{db}", "--source", "hospital"),
         DAMAGED, {"db": _truncated}),
    Case("withdraw-db-locked", _cmd("withdraw", "x", "--db", "{db}", "--source", "hospital"),
         ("in use by another process",), wrap="locked"),
    Case("withdraw-run-folder-gone", _cmd("withdraw", "--pseudonym", "{person}", "--db", "{db}",
         "--source", "hospital"), ("moved-away-run", "cannot be scrubbed",
         "Nothing was changed", "--allow-unreachable")),
    # ------------------------------------------------------------------------------ db
    Case("db-info-missing", _cmd("db", "info", "--db", "{case}/none.duckdb"),
         ("none.duckdb does not exist",)),
    Case("db-info-truncated", _cmd("db", "info", "--db", "{db}"), DAMAGED, {"db": _truncated}),
    Case("db-info-corrupted", _cmd("db", "info", "--db", "{db}"), DAMAGED, {"db": _corrupted}),
    Case("db-info-junk", _cmd("db", "info", "--db", "{db}"), ("not a DuckDB database file",),
         {"db": _junk_db}),
    Case("db-info-locked", _cmd("db", "info", "--db", "{db}"), ("in use by another process",),
         wrap="locked"),
    Case("db-export-truncated", _cmd("db", "export", "--db", "{db}", "--out", "{case}/w.parquet"),
         DAMAGED, {"db": _truncated}),
    Case("db-export-corrupted", _cmd("db", "export", "--db", "{db}", "--out",
         "{case}/w.parquet"), DAMAGED, {"db": _corrupted}),
    Case("db-export-bad-format", _cmd("db", "export", "--db", "{db}", "--out", "{case}/w.xlsx"),
         ("w.xlsx",)),
    Case("db-export-unknown-atlas", _cmd("db", "export", "--db", "{db}", "--out",
         "{case}/w.csv", "--atlas", "nope"), ("nope",)),
    Case("db-upgrade-newer", _cmd("db", "upgrade", "--db", "{db}"),
         ("schema version 99", "newer"), {"db": _newer_db}),
    Case("db-upgrade-truncated", _cmd("db", "upgrade", "--db", "{db}"), DAMAGED,
         {"db": _truncated}),
    Case("db-rewrite-locked", _cmd("db", "rewrite", "--db", "{db}"),
         ("in use by another process",), wrap="locked"),
    Case("db-rewrite-corrupted", _cmd("db", "rewrite", "--db", "{db}"), DAMAGED,
         {"db": _corrupted}),
    # ------------------------------------------------------------------------------ qc
    Case("qc-set-not-name-value", _cmd("qc", "--db", "{db}", "--set", "euler"),
         ("--set 'euler'", "expected NAME=VALUE")),
    Case("qc-set-not-a-number", _cmd("qc", "--db", "{db}", "--set", "euler_absolute=abc"),
         ("'abc' is not a number",)),
    Case("qc-unknown-rule", _cmd("qc", "--db", "{db}", "--rule", "nonsense"), ("nonsense",)),
    Case("qc-thresholds-missing", _cmd("qc", "--db", "{db}", "--thresholds", "{case}/t.yaml"),
         ("t.yaml",)),
    Case("qc-thresholds-bad-yaml", _cmd("qc", "--db", "{db}", "--thresholds", "{t}"),
         ("t.yaml", "YAML"), {"t": _write("t.yaml", "a: [b\n")}),
    Case("qc-truncated-db", _cmd("qc", "--db", "{db}"), DAMAGED, {"db": _truncated}),
    Case("qc-locked-db", _cmd("qc", "--db", "{db}"), ("in use by another process",),
         wrap="locked"),
    # ----------------------------------------------------------------------------- fit
    Case("fit-config-missing", _cmd("fit", "{case}/none.yaml", "--db", "{db}", "--out",
         "{case}/run"), ("none.yaml",)),
    Case("fit-config-bad-yaml", _cmd("fit", "{c}", "--db", "{db}", "--out", "{case}/run"),
         ("c.yaml", "YAML"), {"c": _write("c.yaml", "kind: [pretrain\n")}),
    Case("fit-config-not-utf8", _cmd("fit", "{c}", "--db", "{db}", "--out", "{case}/run"),
         ("c.yaml",), {"c": _write("c.yaml", b"kind: \xff\xfe\n")}),
    Case("fit-config-unknown-key", _cmd("fit", "{c}", "--db", "{db}", "--out", "{case}/run"),
         ("c.yaml", "seeed"), {"c": _write("c.yaml", PRETRAIN + "seeed: 3\n")}),
    Case("fit-db-missing", _cmd("fit", "{c}", "--db", "{case}/none.duckdb", "--out",
         "{case}/run"), ("none.duckdb does not exist",), {"c": _write("c.yaml", PRETRAIN)}),
    Case("fit-db-truncated", _cmd("fit", "{c}", "--db", "{db}", "--out", "{case}/run"),
         DAMAGED, {"c": _write("c.yaml", PRETRAIN), "db": _truncated}),
    # ------------------------------------------------------------------------- predict
    Case("predict-no-manifest", _cmd("predict", "{run}", "--db", "{db}", "--out",
         "{case}/p.parquet"), ("no manifest.json",), {"run": _run_dir(None)}),
    Case("predict-manifest-corrupt", _cmd("predict", "{run}", "--db", "{db}", "--out",
         "{case}/p.parquet"), ("manifest.json", "not valid JSON", "expected the manifest"),
         {"run": _run_dir('{"run_id": "r1", "kind": ')}),
    Case("predict-manifest-binary", _cmd("predict", "{run}", "--db", "{db}", "--out",
         "{case}/p.parquet"), ("manifest.json", "not valid JSON"),
         {"run": _run_dir(b"\x89PNG\x00\xff")}),
    Case("predict-manifest-not-object", _cmd("predict", "{run}", "--db", "{db}", "--out",
         "{case}/p.parquet"), ("manifest.json", "expected a JSON object"),
         {"run": _run_dir("[1, 2]")}),
    Case("predict-stale-run", _cmd("predict", "{run}", "--db", "{db}", "--out",
         "{case}/p.parquet"), ("is a stale run", "withdrawal 1", "--allow-stale"),
         {"run": _run_dir(STALE_MANIFEST)}),
    Case("predict-config-missing", _cmd("predict", "{run}", "--db", "{db}", "--out",
         "{case}/p.parquet"), ("no config.yaml",),
         {"run": _run_dir('{"feature_ids": [], "final_models": {}}', None)}),
    # ------------------------------------------------------------------------ transfer
    Case("transfer-pretrained-not-a-run", _cmd("fit", "{c}", "--db", "{db}", "--out",
         "{case}/t", "--pretrained", "{case}"), ("no manifest.json",),
         {"c": _write("c.yaml", "kind: transfer\ntarget: {name: dx, type: binary, "
                      "positive: p}\nseed: 1\n")}),
    Case("transfer-pretrained-manifest-corrupt", _cmd("fit", "{c}", "--db", "{db}", "--out",
         "{case}/t", "--pretrained", "{run}"), ("manifest.json",),
         {"c": _write("c.yaml", "kind: transfer\ntarget: {name: dx, type: binary, "
                      "positive: p}\nseed: 1\n"), "run": _run_dir("{not json")}),
    Case("transfer-options-for-pretrain", _cmd("fit", "{c}", "--db", "{db}", "--out",
         "{case}/t", "--allow-stale"), ("apply to kind: transfer",),
         {"c": _write("c.yaml", PRETRAIN)}),
    # -------------------------------------------------------------------------- report
    Case("report-run-missing", _cmd("report", "{case}/none"), ("none does not exist",)),
    Case("report-manifest-corrupt", _cmd("report", "{run}"), ("manifest.json", "JSON"),
         {"run": _run_dir("{")}),
    Case("report-stale-run", _cmd("report", "{run}", "--db", "{db}"),
         ("is a stale run", "--allow-stale"), {"run": _run_dir(STALE_MANIFEST)}),
    # --------------------------------------------------------------------------- audit
    Case("audit-no-manifest", _cmd("audit", "{run}", "--db", "{db}"), ("no manifest.json",),
         {"run": _run_dir(None)}),
    Case("audit-manifest-corrupt", _cmd("audit", "{run}", "--db", "{db}"), ("manifest.json",),
         {"run": _run_dir("{")}),
    Case("audit-manifest-incomplete", _cmd("audit", "{run}", "--db", "{db}"),
         ("manifest.json",), {"run": _run_dir('{"run_id": "r"}')}),
    # ------------------------------------------------------------------------- process
    Case("process-bids-missing", _cmd("process", "{case}/nobids", "--out", "{case}/o",
         "--plan-only"), ("nobids",)),
    # ------------------------------------------------------------------------- inspect
    Case("inspect-nan", _cmd("inspect", "{input}/stats/lh.aparc.stats"),
         ("lh.aparc.stats line", FINITE), {"input": _row_value("nan")}),
]
# fmt: on


def test_the_table_is_large_and_its_ids_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) >= 70
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    case: Case, world: World, tmp_path: Path
) -> None:
    made = {name: make(tmp_path, world) for name, make in (case.setup or {}).items()}
    before = checksum(world.db)
    copies = {name: p.read_bytes() for name, p in made.items() if p.suffix == ".duckdb"}
    env = {"MORPHML_KEY_FILE": str(world.key), "MORPHML_DB": "", **(case.env or {})}
    args = case.args(world, tmp_path, made)
    runner = CliRunner(env=env)
    if case.wrap == "locked":
        with _locked(world.db):
            result = runner.invoke(cli, args)
    elif case.wrap == "immutable-db":
        with _unwritable(made["db"]):
            result = runner.invoke(cli, args)
    elif case.wrap == "immutable-folder":
        with _unwritable(made["db"].parent):
            result = runner.invoke(cli, args)
    else:
        result = runner.invoke(cli, args)
    err = result.stderr
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    (line,) = lines
    assert line.startswith("morphml: error: "), line
    for needle in case.expect:
        assert needle in line, (needle, line)
    assert checksum(world.db) == before
    for name, data in copies.items():
        assert made[name].read_bytes() == data, f"{name} was changed"
    assert not (tmp_path / "absent-key").exists()  # a refused key is never created
    assert not list(tmp_path.glob(".*morphml-probe*"))


def test_stats_errors_are_recorded_with_on_error_skip(world: World, tmp_path: Path) -> None:
    db = tmp_path / "db.duckdb"
    shutil.copyfile(world.db, db)
    bad = _row_value("1e400")(tmp_path, world)
    result = CliRunner().invoke(
        cli,
        [
            "ingest",
            str(bad.parent),
            "--db",
            str(db),
            "--source",
            "other",
            "--key-file",
            str(world.key),
            "--on-error",
            "skip",
        ],
    )
    assert result.exit_code == 0, result.output
    with connect(db, read_only=True) as con:
        rows = con.execute("SELECT path, line, message FROM ingest_errors").fetchall()
        n = con.execute("SELECT count(*) FROM scans WHERE source = 'other'").fetchone()
    assert n == (0,)
    ((path, line, message),) = rows
    assert path == "stats/lh.aparc.stats" and line > 1 and FINITE in message


def test_a_new_database_folder_is_created_and_its_path_printed(
    world: World, tmp_path: Path
) -> None:
    target = tmp_path / "home" / "morphml" / "morphml.duckdb"
    runner = CliRunner(env={"MORPHML_DB": str(target), "MORPHML_KEY_FILE": str(world.key)})
    one = world.subjects / "sub-00"
    result = runner.invoke(cli, ["ingest", str(one), "--source", "x"])
    assert result.exit_code == 0, result.output
    assert f"created a new database {target.resolve()}" in result.output
    again = runner.invoke(cli, ["ingest", str(one), "--source", "x"])
    assert again.exit_code == 0 and "created a new database" not in again.output


def test_without_db_the_new_database_in_the_current_folder_is_named(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    key = tmp_path / "k"
    runner = CliRunner(env={"MORPHML_DB": "", "MORPHML_KEY_FILE": str(key)})
    result = runner.invoke(cli, ["ingest", str(world.subjects / "sub-01"), "--source", "x"])
    assert result.exit_code == 0, result.output
    assert f"created a new database {(tmp_path / 'morphml.duckdb').resolve()}" in result.output
