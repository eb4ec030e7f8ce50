"""The morphometry database: one DuckDB file, pseudonymous, schema-versioned."""

from morphml.db._ingest import IngestSummary, ingest
from morphml.db._privacy import PseudonymKey, default_key_path, load_key
from morphml.db._schema import SCHEMA_VERSION
from morphml.db._store import connect, db_path, upgrade

__all__ = [
    "SCHEMA_VERSION",
    "IngestSummary",
    "PseudonymKey",
    "connect",
    "db_path",
    "default_key_path",
    "ingest",
    "load_key",
    "upgrade",
]
