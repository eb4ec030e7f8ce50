"""Column maps: a YAML file that says what each column of a wide table is.

A wide CSV/TSV (an ENIGMA protocol sheet, a site export, a PCNtoolkit demo table) holds one row
per scan. Feature columns are recognised from their names (see
:func:`morphml.io.recognise_column`); everything else (the id, age, sex, site, phenotypes, the
columns to leave out) is stated in a column map, because guessing it is how data get mixed up.

Example map::

    id: sub_id
    age: age
    sex: {column: sex, coding: {0: female, 1: male}}
    site: site
    phenotypes:
      euler_mean: {column: avg_en, type: continuous}
    ignore: ["*_Z_predict", sitenum]
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from morphml._utils import read_yaml
from morphml.exceptions import ColumnMapError, FeatureIdError
from morphml.io._dictionary import parse_feature_id

__all__ = [
    "DEFAULT_MISSING_VALUES",
    "ColumnMap",
    "IdentifyingColumns",
    "ParticipantsFile",
    "Phenotype",
    "RowFilter",
    "SexColumn",
    "load_column_map",
]

#: cell values read as "missing" unless a map says otherwise (compared after stripping spaces)
DEFAULT_MISSING_VALUES: tuple[str, ...] = ("", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null")

#: ``delimiter`` spellings a map may use -> the separator handed to pandas
DELIMITERS: dict[str, str] = {
    ",": ",",
    "comma": ",",
    "\t": "\t",
    "tab": "\t",
    ";": ";",
    "semicolon": ";",
    "whitespace": r"\s+",
    "space": r"\s+",
}

# Names the participants table gets for its fixed columns; phenotype names must not clash.
RESERVED_COLUMNS = ("id", "age", "sex", "site", "session")


def _stringify_keys(value: Any, where: str) -> Any:
    """YAML reads ``{0: female}`` with int keys and ``{yes: x}`` with bool keys: make them str."""
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(key, bool):
            raise ValueError(
                f"{where} key {key!r} was read by YAML as a boolean; quote it "
                f"(e.g. '{'yes' if key else 'no'}': ...) so it matches the cells as written"
            )
        out[str(key)] = item
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, frozen=True)


class SexColumn(_Strict):
    """The sex column and its coding.

    The coding is required: datasets disagree (fcon1000 0/1, IXI and ENIGMA 1 = male 2 = female)
    and a guessed coding silently flips every sex label.
    """

    column: str
    coding: dict[str, Literal["female", "male"]] = Field(min_length=1)

    @field_validator("coding", mode="before")
    @classmethod
    def _coding_keys(cls, value: Any) -> Any:
        value = _stringify_keys(value, "sex.coding")
        if isinstance(value, dict):
            return {k: v.strip().lower() if isinstance(v, str) else v for k, v in value.items()}
        return value


class Phenotype(_Strict):
    """One phenotype column.

    ``binary`` needs ``coding`` (raw code -> label) or ``levels`` (the two values as written),
    ``categorical`` may have either, ``continuous`` has neither (cells are read as numbers).
    """

    column: str
    type: Literal["binary", "categorical", "continuous"]
    coding: dict[str, str] | None = None
    levels: list[str] | None = None
    description: str | None = None

    @field_validator("coding", mode="before")
    @classmethod
    def _coding_keys(cls, value: Any) -> Any:
        return _stringify_keys(value, "coding")

    @model_validator(mode="after")
    def _check_kind(self) -> Phenotype:
        if self.coding is not None and self.levels is not None:
            raise ValueError("give either 'coding' (code -> label) or 'levels', not both")
        if self.type == "continuous" and (self.coding is not None or self.levels is not None):
            raise ValueError("a continuous phenotype takes no 'coding' or 'levels'")
        if self.type == "binary":
            if self.coding is None and self.levels is None:
                raise ValueError(
                    "a binary phenotype needs 'coding' (e.g. {0: control, 1: patient}) "
                    "or 'levels' (the two values as written in the table)"
                )
            labels = (
                set(self.coding.values()) if self.coding is not None else set(self.levels or ())
            )
            if len(labels) != 2:
                raise ValueError(
                    f"a binary phenotype needs exactly 2 distinct labels, got {sorted(labels)}"
                )
        return self


class RowFilter(_Strict):
    """Keep only the rows whose ``column`` holds one of ``keep`` (e.g. a diagnosis group)."""

    column: str
    keep: list[str] = Field(min_length=1)


class IdentifyingColumns(_Strict):
    """Birth and scan dates, read only to derive age at scan; neither is ever kept.

    ``date_format`` is a ``strftime`` pattern; without it dates must be ISO 8601
    (``1970-01-31``), because ``01/02/1970`` means different days in different countries.
    """

    birth_date: str
    scan_date: str
    date_format: str | None = None


class ParticipantsFile(_Strict):
    """The participants / phenotype file of a table or table set, and its own id column.

    ``path`` relative to the map file's folder (or, when no such file is there, to the folder
    of the table being read); ``id`` is the participants file's id column when it differs from
    the table's (``FILE_ID`` beside a FreeSurfer table export's first column).
    """

    path: str | None = None
    id: str | None = None


class ColumnMap(_Strict):
    """What each column of a wide table is (see the module docstring for a YAML example).

    Parameters
    ----------
    id : str, optional
        Column holding the subject / scan id (pseudonymised later, never stored as is).
        Required for wide tables; ``aparcstats2table`` / ``asegstats2table`` exports hold the
        id in their first column whatever its header says.
    age : str, optional
        Column holding age at scan in years.
    sex : SexColumn, optional
        Column and its required coding, e.g. ``{column: sex, coding: {1: male, 2: female}}``.
    site, site_value : str
        Site column, or one constant site for the whole table (exactly one of the two).
    session : str, optional
        Session / visit column.
    phenotypes : dict of Phenotype
        Output name -> phenotype column.
    rows : RowFilter, optional
        Row filter, e.g. ``{column: group, keep: [Control, SZ]}``.
    ignore : list of str
        Glob patterns (``fnmatch``, case-sensitive) of columns to leave out.
    features : dict of str
        Column -> canonical feature id, overriding the name-based recognition.
    surface_atlas : {"aparc", "DKT"}
        Atlas of Desikan-style region columns (the two share region names).
    delimiter : str, optional
        ``,``/``comma``, ``tab``, ``;``/``semicolon`` or ``whitespace``; guessed from the file
        extension or header line when left out.
    identifying : IdentifyingColumns, optional
        Birth and scan date columns used to derive age at scan.
    participants : str or ParticipantsFile, optional
        A second file holding the participant columns, joined on the id: a path, or
        ``{path: FILE, id: COLUMN}`` when its id column differs from the table's. A relative
        path is relative to the map file's folder; when no such file is there, to the table's
        folder. ``--participants`` (``participants_path=``) overrides it.
    sessions_from : {"age"}, optional
        Rows repeating an id with different ages are sessions of one person, ordered by age
        (for longitudinal tables without a session column).
    duplicate_ids : {"error", "drop"}
        What to do with an id that appears twice with different values. Identical repeated
        rows are always collapsed.
    unrecognised : {"error", "skip"}
        Whether columns the map does not cover stop the import or are listed and left out.
    missing_values : list of str
        Cell values that mean "missing".
    description : str, optional
        Free text documenting the map.
    """

    id: str | None = None
    age: str | None = None
    sex: SexColumn | None = None
    site: str | None = None
    site_value: str | None = None
    session: str | None = None
    phenotypes: dict[str, Phenotype] = Field(default_factory=dict)
    rows: RowFilter | None = None
    ignore: list[str] = Field(default_factory=list)
    features: dict[str, str] = Field(default_factory=dict)
    surface_atlas: Literal["aparc", "DKT"] = "aparc"
    delimiter: str | None = None
    identifying: IdentifyingColumns | None = None
    participants: str | ParticipantsFile | None = None
    sessions_from: Literal["age"] | None = None
    duplicate_ids: Literal["error", "drop"] = "error"
    unrecognised: Literal["error", "skip"] = "error"
    missing_values: list[str] = Field(default_factory=lambda: list(DEFAULT_MISSING_VALUES))
    description: str | None = None
    #: folder of the YAML file the map was read from (relative participants paths)
    _map_dir: Path | None = PrivateAttr(default=None)

    @field_validator("features", mode="before")
    @classmethod
    def _feature_keys(cls, value: Any) -> Any:
        return _stringify_keys(value, "features")

    @field_validator("features")
    @classmethod
    def _feature_ids(cls, value: dict[str, str]) -> dict[str, str]:
        for column, fid in value.items():
            try:
                parse_feature_id(fid)
            except FeatureIdError as exc:
                raise ValueError(f"column {column!r}: {exc}") from None
        return value

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str | None) -> str | None:
        if value is not None and value not in DELIMITERS:
            raise ValueError(
                f"unknown delimiter {value!r}; use one of ',', 'tab', ';', 'whitespace'"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> ColumnMap:
        if (self.site is None) == (self.site_value is None):
            raise ValueError(
                "give exactly one of 'site' (a column) or 'site_value' (one site for every row)"
            )
        if self.age is not None and self.identifying is not None:
            raise ValueError(
                "give either 'age' (a column) or 'identifying' (birth and scan dates to "
                "derive age at scan), not both"
            )
        if self.sessions_from is not None and self.session is not None:
            raise ValueError(
                "give either 'session' (a column) or 'sessions_from: age' (repeated ids are "
                "sessions ordered by age), not both"
            )
        if self.sessions_from == "age" and self.age is None:
            raise ValueError("'sessions_from: age' needs the 'age' column")
        for name in self.phenotypes:
            if name in RESERVED_COLUMNS:
                raise ValueError(
                    f"phenotype name {name!r} clashes with a fixed participants column "
                    f"{list(RESERVED_COLUMNS)}; choose another name"
                )
        return self

    @property
    def participants_path(self) -> str | None:
        """The ``participants`` path as written in the map, or None."""
        if isinstance(self.participants, ParticipantsFile):
            return self.participants.path
        return self.participants

    @property
    def participants_id(self) -> str | None:
        """The participants file's id column: ``participants.id``, else ``id``."""
        if isinstance(self.participants, ParticipantsFile) and self.participants.id:
            return self.participants.id
        return self.id

    @property
    def map_dir(self) -> Path | None:
        """The folder of the YAML file the map came from (None for a map built in code)."""
        return self._map_dir

    @property
    def sep(self) -> str | None:
        """The pandas separator for ``delimiter``, or None to guess it."""
        return None if self.delimiter is None else DELIMITERS[self.delimiter]

    def role_columns(self) -> dict[str, str]:
        """Map each participant-side map key (``age``, ``sex.column`` ...) to its column."""
        roles: dict[str, str] = {}
        if self.age is not None:
            roles["age"] = self.age
        if self.sex is not None:
            roles["sex.column"] = self.sex.column
        if self.site is not None:
            roles["site"] = self.site
        if self.session is not None:
            roles["session"] = self.session
        for name, pheno in self.phenotypes.items():
            roles[f"phenotypes.{name}.column"] = pheno.column
        if self.rows is not None:
            roles["rows.column"] = self.rows.column
        if self.identifying is not None:
            roles["identifying.birth_date"] = self.identifying.birth_date
            roles["identifying.scan_date"] = self.identifying.scan_date
        return roles

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "column map") -> ColumnMap:
        """Validate a mapping (e.g. parsed YAML), turning validation errors into one message.

        Misspelt keys are reported with the closest valid key.

        Examples
        --------
        >>> ColumnMap.from_dict({"id": "sub_id", "site_value": "ixi"}).site_value
        'ixi'
        """
        if not isinstance(data, dict):
            raise ColumnMapError(
                f"{source}: expected a mapping of keys (id, age, sex, site, ...), "
                f"got {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ColumnMapError(f"{source}: {_describe(exc)}") from None


def load_column_map(path: str | Path) -> ColumnMap:
    """Read a YAML column map.

    Parameters
    ----------
    path : str or Path
        The YAML file.

    Returns
    -------
    ColumnMap

    Raises
    ------
    ColumnMapError
        The file is missing, is not YAML, or a key is unknown (the message names the closest
        valid key) or has a wrong value.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "map.yaml"
    >>> _ = p.write_text("id: sub_id\\nsite_value: ixi\\n")
    >>> load_column_map(p).id
    'sub_id'
    """
    path = Path(path)
    data = read_yaml(path, ColumnMapError, f"column map {path} does not exist")
    if data is None:
        raise ColumnMapError(f"{path}: the column map is empty; it needs at least 'id' and a site")
    cmap = ColumnMap.from_dict(data, source=str(path))
    cmap._map_dir = path.parent
    return cmap


def _describe(exc: ValidationError) -> str:
    """One readable line per pydantic error, naming the key path and, for typos, a suggestion."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            valid = _valid_keys(ColumnMap, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(f"unknown key {key!r}{hint} (valid keys here: {', '.join(valid)})")
        elif err["type"] == "missing":
            lines.append(f"missing required key {key!r}")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            given = err.get("input")
            if err["type"] != "value_error" and isinstance(given, (str, int, float)):
                msg += f", got {given!r}"
            lines.append(f"{key}: {msg}" if loc else msg)
    return "; ".join(lines)


def _valid_keys(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """The field names of the (nested) model found at ``loc``, e.g. ('phenotypes', 'dx')."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation
