"""The morphometry database: one DuckDB file, pseudonymous, schema-versioned."""

from morphml.db._discover import discover
from morphml.db._errors import database_error, is_duckdb_error
from morphml.db._ingest import IngestSummary, QualityControl, ingest
from morphml.db._privacy import PseudonymKey, check_key, default_key_path, load_key
from morphml.db._report import ExportResult, database_info, export_wide, format_info
from morphml.db._runs import check_stale_run, record_run, run_status, stale_runs
from morphml.db._schema import SCHEMA_VERSION
from morphml.db._store import connect, db_path, upgrade
from morphml.db._withdraw import WithdrawalResult, is_withdrawn, rewrite_database, withdraw

__all__ = [
    "SCHEMA_VERSION",
    "ExportResult",
    "IngestSummary",
    "PseudonymKey",
    "QualityControl",
    "WithdrawalResult",
    "check_key",
    "check_stale_run",
    "connect",
    "database_error",
    "database_info",
    "db_path",
    "default_key_path",
    "discover",
    "export_wide",
    "format_info",
    "ingest",
    "is_duckdb_error",
    "is_withdrawn",
    "load_key",
    "record_run",
    "rewrite_database",
    "run_status",
    "stale_runs",
    "upgrade",
    "withdraw",
]
