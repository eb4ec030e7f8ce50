"""The database schema, its version, and the migrations between versions.

One DuckDB file holds everything. Identifiers are pseudonyms (see ``_privacy``); no original
id, name, path outside a subject folder, host, user or visit date is ever stored. Sessions are
stored as their rank within a subject (1, 2, ...), never as the folder's label, which may hold a
date.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

__all__ = ["SCHEMA_VERSION", "create_schema", "create_schema_v1", "migrations"]

#: the schema version this code writes; a file with a higher one is refused
SCHEMA_VERSION = 3

_TABLES_V1 = """
CREATE TABLE morphml_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE sources (source VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL);
CREATE TABLE subjects (
    subject_key VARCHAR PRIMARY KEY,
    source VARCHAR NOT NULL,
    sex VARCHAR
);
CREATE TABLE scans (
    scan_key VARCHAR PRIMARY KEY,
    subject_key VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    session INTEGER,
    site VARCHAR,
    scanner VARCHAR,
    software VARCHAR,
    version VARCHAR,
    age DOUBLE,
    n_features INTEGER,
    ingest_id INTEGER
);
CREATE TABLE phenotypes (
    scan_key VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    value_num DOUBLE,
    value_text VARCHAR
);
CREATE TABLE features (
    feature_idx INTEGER PRIMARY KEY,
    feature_id VARCHAR NOT NULL UNIQUE,
    atlas VARCHAR NOT NULL,
    hemi VARCHAR NOT NULL,
    region VARCHAR NOT NULL,
    measure VARCHAR NOT NULL
);
CREATE TABLE measures (
    scan_key VARCHAR NOT NULL,
    feature_idx INTEGER NOT NULL,
    value DOUBLE
);
CREATE TABLE files (
    scan_key VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    kind VARCHAR,
    atlas VARCHAR,
    software VARCHAR,
    version VARCHAR,
    content_hash VARCHAR
);
CREATE TABLE ingests (
    ingest_id INTEGER PRIMARY KEY,
    source VARCHAR NOT NULL,
    n_subjects INTEGER,
    n_scans INTEGER,
    n_new INTEGER,
    n_changed INTEGER,
    n_unchanged INTEGER,
    n_skipped INTEGER,
    n_values BIGINT,
    morphml_version VARCHAR
);
CREATE TABLE ingest_errors (
    ingest_id INTEGER NOT NULL,
    source VARCHAR NOT NULL,
    subject_key VARCHAR,
    scan_key VARCHAR,
    path VARCHAR,
    line INTEGER,
    message VARCHAR NOT NULL
);
CREATE TABLE changes (
    ingest_id INTEGER NOT NULL,
    scan_key VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    old_hash VARCHAR,
    new_hash VARCHAR
);
CREATE TABLE withdrawals (
    withdrawal_id INTEGER PRIMARY KEY,
    token VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    n_scans INTEGER,
    n_runs_marked INTEGER
);
CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY,
    kind VARCHAR,
    config_hash VARCHAR,
    stale BOOLEAN NOT NULL DEFAULT FALSE,
    stale_reason VARCHAR
);
CREATE TABLE run_scans (run_id VARCHAR NOT NULL, scan_key VARCHAR NOT NULL);
"""


def create_schema(con: duckdb.DuckDBPyConnection, morphml_version: str) -> None:
    """Create every table of the current schema version in an empty database."""
    con.execute(_TABLES_V1)
    for version in range(2, SCHEMA_VERSION + 1):
        migrations()[version](con)
    con.execute(
        "INSERT INTO morphml_meta VALUES ('schema_version', ?), ('created_by', ?)",
        [str(SCHEMA_VERSION), morphml_version],
    )


def _v2_qc_flags(con: duckdb.DuckDBPyConnection) -> None:
    # version 2: quality-control flags per scan, with the rule that raised them
    con.execute(
        """
        CREATE TABLE qc_flags (
            scan_key VARCHAR NOT NULL,
            flag VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            value DOUBLE
        )
        """
    )


def _v3_run_folders(con: duckdb.DuckDBPyConnection) -> None:
    # version 3: each run's folder (relative to the database's folder when below it), so a
    # withdrawal can scrub the person from the files the run wrote
    con.execute("ALTER TABLE runs ADD COLUMN run_dir VARCHAR")


def create_schema_v1(con: duckdb.DuckDBPyConnection, morphml_version: str) -> None:
    """The first released schema, kept so upgrades can be tested from a real version-1 file."""
    con.execute(_TABLES_V1)
    con.execute(
        "INSERT INTO morphml_meta VALUES ('schema_version', '1'), ('created_by', ?)",
        [morphml_version],
    )


def migrations() -> dict[int, Callable[[duckdb.DuckDBPyConnection], None]]:
    """Migration functions: ``migrations()[v]`` upgrades a version ``v - 1`` file to ``v``."""
    return {2: _v2_qc_flags, 3: _v3_run_folders}
