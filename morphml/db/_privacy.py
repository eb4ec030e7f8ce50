"""Pseudonyms: keyed HMAC-SHA256 of (source, original id), with the key outside the database.

The key file holds 32 random bytes (hex). It is created with permissions 0600 on first use;
its location comes from the caller, then ``MORPHML_KEY_FILE``, then
``~/.config/morphml/key``. Whoever holds the key can recompute a pseudonym from an original
id (that is how withdrawal by original id works); the database alone cannot be linked back.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import duckdb

from morphml.exceptions import KeyFileError

__all__ = ["PseudonymKey", "check_key", "default_key_path", "key_required", "load_key"]

_KEY_BYTES = 32
#: hex characters kept from the HMAC: 96 bits, far beyond any cohort's collision risk
_DIGITS = 24


def default_key_path(key_file: str | os.PathLike[str] | None = None) -> Path:
    """The key file to use: the argument, then ``MORPHML_KEY_FILE``, then the default."""
    if key_file is not None:
        return Path(key_file)
    env = os.environ.get("MORPHML_KEY_FILE")
    if env:
        return Path(env)
    return Path.home() / ".config" / "morphml" / "key"


@dataclass(frozen=True)
class PseudonymKey:
    """A loaded secret key that turns original ids into pseudonyms."""

    secret: bytes

    def _mac(self, *parts: str) -> str:
        message = "\x1f".join(parts).encode("utf-8")
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:_DIGITS]

    def subject(self, source: str, original_id: str) -> str:
        """Pseudonym of a person within a source."""
        return "sub-" + self._mac("subject", source, original_id)

    def scan(self, source: str, original_id: str, session: str | None) -> str:
        """Pseudonym of one scan (one session) of a person."""
        return "scan-" + self._mac("scan", source, original_id, session or "")

    def fingerprint(self) -> str:
        """A value that identifies the key (not the people): stored in the database so a
        different key is refused instead of silently producing unrelated pseudonyms."""
        return self._mac("key-fingerprint")

    def withdrawal_token(self, subject_key: str) -> str:
        """A token that recognises a withdrawn person without storing their pseudonym."""
        return self._mac("withdrawn", subject_key)


def load_key(
    key_file: str | os.PathLike[str] | None = None, *, create: bool = True
) -> PseudonymKey:
    """Load the secret key, creating it (mode 0600) on first use when ``create``.

    Raises
    ------
    KeyFileError
        When the file is missing (and ``create`` is false), unreadable, malformed, or readable
        by other users.
    """
    path = default_key_path(key_file)
    if not path.exists():
        if not create:
            raise KeyFileError(
                f"key file {path} does not exist; pass --key-file or set MORPHML_KEY_FILE "
                "to the key used when the data were ingested (nothing was created)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(_KEY_BYTES) + "\n")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run 'chmod 600 {path}'"
        )
    if path.is_dir():
        raise KeyFileError(f"key file {path} is a directory; expected the key file itself")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise KeyFileError(f"key file {path} cannot be read ({err.strerror})") from None
    try:
        secret = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise KeyFileError(
            f"key file {path}: expected {_KEY_BYTES * 2} hex characters on one line "
            "(the file morphml wrote); this file holds something else"
        ) from None
    if len(secret) < 16:
        raise KeyFileError(f"key file {path}: key too short ({len(secret)} bytes, need >= 16)")
    return PseudonymKey(secret)


def key_required(db: str | os.PathLike[str] | None) -> bool:
    """Whether the database already holds data pseudonymised with a key.

    Then the key file must exist: a new key would give everyone new pseudonyms, so it is
    never created for such a database.
    """
    from morphml.db._store import connect, db_path

    path = db_path(db)
    if not path.is_file():
        return False
    with connect(path, read_only=True) as con:
        row = con.execute("SELECT 1 FROM morphml_meta WHERE key = 'key_fingerprint'").fetchone()
    return row is not None


def check_key(con: duckdb.DuckDBPyConnection, key: PseudonymKey, *, record: bool = False) -> None:
    """Refuse a key other than the one this database was ingested with.

    With ``record`` the key's fingerprint is stored when the database has none yet (first
    ingest); call it inside the ingest transaction.
    """
    row = con.execute("SELECT value FROM morphml_meta WHERE key = 'key_fingerprint'").fetchone()
    if row is None:
        if record:
            con.execute(
                "INSERT INTO morphml_meta VALUES ('key_fingerprint', ?)", [key.fingerprint()]
            )
        return
    if row[0] != key.fingerprint():
        raise KeyFileError(
            "this key is not the one the database was ingested with: its pseudonyms would not "
            "match; pass --key-file (or MORPHML_KEY_FILE) with the original key"
        )
