"""Error types raised by morphml.

Every error a user can cause subclasses :class:`MorphmlError` *and* the builtin exception it
refines, so callers can catch what they expect (``except ValueError`` keeps working).
Messages say what went wrong, where (file, line, column), what was expected and, where it
helps, what to do.
"""

from __future__ import annotations

__all__ = [
    "BiasCorrectionError",
    "ColumnMapError",
    "ConfigError",
    "DatabaseError",
    "DeviceError",
    "ExportError",
    "FeatureIdError",
    "FeatureMismatchError",
    "IngestError",
    "KeyFileError",
    "ModelConfigError",
    "ModelFileError",
    "ModelInputError",
    "MorphmlError",
    "ReferenceModelError",
    "StaleRunError",
    "StatsFileError",
    "SubjectDirError",
    "TableImportError",
    "UnknownStatsKindError",
    "UntrustedModelError",
    "UntrustedPickleError",
    "WithdrawalError",
]


class MorphmlError(Exception):
    """Base class of every error morphml raises on purpose."""


class StatsFileError(MorphmlError, ValueError):
    """A FreeSurfer / FastSurfer stats file cannot be read.

    Parameters
    ----------
    path : str
        The file's name as given by the caller (shown in the message).
    line : int or None
        1-based line number of the problem, when it has one.
    message : str
        What was found and what was expected.
    """

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.detail = message
        where = f"{path} line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[type, tuple[str, int | None, str]]:
        # keeps the error picklable across worker processes
        return (type(self), (self.path, self.line, self.detail))


class UnknownStatsKindError(StatsFileError):
    """The file name does not match any stats kind morphml knows."""


class SubjectDirError(MorphmlError, FileNotFoundError):
    """A subject directory is missing, has no ``stats/`` folder, or holds no stats file."""


class TableImportError(MorphmlError, ValueError):
    """A table export or wide CSV/TSV cannot be imported."""


class ColumnMapError(MorphmlError, ValueError):
    """A YAML column map is invalid or does not fit the table it describes."""


class FeatureIdError(MorphmlError, ValueError):
    """A string is not a valid canonical feature id."""


class DatabaseError(MorphmlError, RuntimeError):
    """The database file is missing, not a DuckDB file, or of a newer schema than this code."""


class IngestError(MorphmlError, ValueError):
    """An ingest cannot proceed; the database is left exactly as it was."""


class KeyFileError(MorphmlError, PermissionError):
    """The pseudonym key file is missing, malformed or too widely readable."""


class ExportError(MorphmlError, ValueError):
    """An export cannot be written: unknown format, atlas, measure or source, or no data."""


class WithdrawalError(MorphmlError, LookupError):
    """The person to withdraw is not in the database (or not in the given source)."""


class ConfigError(MorphmlError, ValueError):
    """A run configuration is invalid (unknown key, bad value, impossible request)."""


class FeatureMismatchError(MorphmlError, ValueError):
    """A model is applied to columns other than the ones it was fitted on."""


class ModelInputError(MorphmlError, ValueError):
    """Model input is unusable (not a DataFrame where names matter, eTIV missing or <= 0...)."""


class ModelConfigError(MorphmlError, ValueError):
    """Unknown model or parameter name, or a bad random_state/device."""


class DeviceError(MorphmlError, RuntimeError):
    """A GPU was requested but none is usable."""


class BiasCorrectionError(MorphmlError, ValueError):
    """The brain-age bias correction cannot be fitted or applied."""


class ModelFileError(MorphmlError, ValueError):
    """A model file is missing, changed since it was written, or from a newer morphml."""


class UntrustedModelError(ModelFileError):
    """A skops file holds a type outside morphml's allow-list."""


class HarmonizationError(MorphmlError, ValueError):
    """Site harmonisation cannot be fitted or applied (unseen site, missing covariate...)."""


class QCError(MorphmlError, ValueError):
    """Quality control cannot run (no scans, unknown flag name, bad threshold)."""


class TransferError(MorphmlError, ValueError):
    """A transfer run cannot use its pretrain run or target cohort."""


class ReportError(MorphmlError, ValueError):
    """A run directory cannot be summarised or rendered."""


class AuditError(MorphmlError, ValueError):
    """An audit cannot run (no manifest, unreadable run directory)."""


class StaleRunError(MorphmlError, ValueError):
    """A run is stale (a person it used withdrew) and ``--allow-stale`` was not given."""


class ProcessingError(MorphmlError, RuntimeError):
    """Image processing cannot be planned or run (no T1w, engine missing, bad runner)."""


class ReferenceModelError(MorphmlError, ValueError):
    """A reference model (file or published archive) cannot be read, written or applied."""


class UntrustedPickleError(ReferenceModelError):
    """A pickle in a model archive names a global outside the expected few (never loaded)."""
