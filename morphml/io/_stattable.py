"""The table half of the stats reader: rows of a batch of files to structures and float64.

:mod:`morphml.io._statsfile` parses each file's header into a :class:`PendingFile`; this module
turns the table rows of a whole batch into structure names and one float64 array.

Two paths give the same answer:

* the **batch path** (:func:`_fast_tables`) concatenates the table bodies of a batch, finds
  every token with a few numpy passes over the bytes (no Python object per number), checks the
  row layout of every file at once and converts all numbers with one Arrow cast. It only
  *accepts*: whenever anything is unusual (a bad row, a ``#`` in a table, a control character,
  a token Arrow cannot parse) it gives up and the batch goes down the exact path;
* the **exact path** (:func:`_split_table`, :func:`_convert_one`) tokenises one file with
  ``bytes.split()``, converts with Python's ``float()`` and names the file, line, column and
  structure of the first problem. Small batches (a single file) take it directly.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from morphml.exceptions import StatsFileError

__all__ = ["Measure", "PendingFile", "check_tables", "convert_tables", "line_of"]

#: below this many table bytes in a batch the per-file path is faster than the batch path
FAST_MIN_BYTES = 24_000


class Measure(NamedTuple):
    """One ``# Measure key, name, description, value, unit`` line."""

    key: str
    name: str
    description: str
    value: float
    unit: str


def line_of(text: str, pos: int) -> int:
    """1-based line number of character ``pos`` of ``text``."""
    return text.count("\n", 0, pos) + 1


@dataclass(eq=False, slots=True)
class PendingFile:
    """A file whose header is parsed and whose table still needs splitting and converting.

    ``columns`` is empty for files without a table (``brainvol.stats``, ``?h.curv.stats``).
    ``body_start`` is the byte offset in ``data`` of the first line after ``# ColHeaders``.
    """

    label: str
    text: str
    data: bytes
    atlas: str
    hemi: str
    table_kind: str
    software: str
    version: str
    provenance: dict[str, str]
    columns: tuple[str, ...]
    numeric_columns: tuple[str, ...]
    measures: tuple[Measure, ...]
    gives_features: bool
    colheaders_at: int = 0  # character offset of the '# ColHeaders' line in ``text``
    body_start: int = 0
    nrows: int | None = None
    structures: tuple[str, ...] = ()
    tokens: list[bytes] = field(default_factory=list)

    @property
    def header_line(self) -> int:
        """Line number of ``# ColHeaders`` (only errors need it: counted on demand)."""
        return line_of(self.text, self.colheaders_at)

    @property
    def name_idx(self) -> int:
        return self.columns.index("StructName")

    def body_text(self) -> str:
        return self.data[self.body_start :].decode()


# --------------------------------------------------------------------------- exact path


def _split_table(p: PendingFile) -> None:
    """Tokenise one file's table (``p.structures``, ``p.tokens``) or raise naming the line."""
    body = p.data[p.body_start :]
    tokens = body.split()
    if not tokens:
        raise StatsFileError(
            p.label, p.header_line, "no table rows after '# ColHeaders' (truncated or empty table)"
        )
    ncols = len(p.columns)
    if len(tokens) % ncols or b"#" in body:
        _raise_row_error(p)
    # every row must start a line: catches rows whose columns spill onto the next line
    firsts = [line.lstrip().partition(b" ")[0] for line in body.split(b"\n")]
    if [f for f in firsts if f] != tokens[0::ncols]:
        # slower but exact for tab-separated rows
        exact = [q[0] for q in (line.split(None, 1) for line in body.split(b"\n")) if q]
        if exact != tokens[0::ncols]:
            _raise_row_error(p)
    name_idx = p.name_idx
    p.structures = tuple(b"\n".join(tokens[name_idx::ncols]).decode().split("\n"))
    del tokens[name_idx::ncols]
    p.tokens = tokens
    _check_structures(p)


def _check_structures(p: PendingFile) -> None:
    """Refuse a row count that disagrees with ``# NRows`` and a structure listed twice."""
    if p.nrows is not None and p.nrows != len(p.structures):
        raise StatsFileError(
            p.label,
            line_of(p.text, len(p.text)),
            f"'# NRows {p.nrows}' but the table has {len(p.structures)} rows (truncated?)",
        )
    if len(set(p.structures)) != len(p.structures):
        seen: dict[str, int] = {}
        for offset, line in enumerate(p.body_text().split("\n")):
            parts = line.split()
            if not parts:
                continue
            struct = parts[p.name_idx]
            lineno = p.header_line + 1 + offset
            if struct in seen:
                raise StatsFileError(
                    p.label,
                    lineno,
                    f"duplicate structure {struct!r} (first on line {seen[struct]}); "
                    "expected each structure once",
                )
            seen[struct] = lineno


def _raise_row_error(p: PendingFile) -> None:
    _check_row_lengths(p.body_text().split("\n"), p.header_line, len(p.columns), p.label)
    raise StatsFileError(p.label, None, "table rows do not line up with '# ColHeaders'")


def _check_row_lengths(
    body_lines: Sequence[str], header_line: int, ncols: int, label: str
) -> None:
    """Raise for the first row line (after line ``header_line``) with a wrong column count."""
    for offset, line in enumerate(body_lines):
        lineno = header_line + 1 + offset
        if line.lstrip().startswith("#"):
            raise StatsFileError(label, lineno, "header line inside the table; expected a row")
        parts = line.split()
        if parts and len(parts) != ncols:
            raise StatsFileError(label, lineno, f"expected {ncols} columns, got {len(parts)}")


def _convert_one(p: PendingFile) -> np.ndarray:
    """Convert one file's tokens with Python floats, naming the first bad value."""
    try:
        flat = [float(t) for t in p.tokens]
    except ValueError:
        _raise_value_error(p)
        raise  # pragma: no cover - _raise_value_error always raises
    return np.asarray(flat, dtype=np.float64).reshape(-1, len(p.numeric_columns))


def _raise_value_error(p: PendingFile) -> None:
    lines = p.text.split("\n")
    start = p.header_line
    _check_row_lengths(lines[start:], start, len(p.columns), p.label)
    name_idx = p.name_idx
    for lineno in range(p.header_line + 1, len(lines) + 1):
        parts = lines[lineno - 1].split()
        for j, tok in enumerate(parts):
            if j == name_idx:
                continue
            try:
                float(tok)
            except ValueError:
                raise StatsFileError(
                    p.label,
                    lineno,
                    f"column {p.columns[j]!r} value {tok!r} is not a number "
                    f"(structure {parts[name_idx]!r})",
                ) from None
    raise StatsFileError(p.label, None, "a table value is not a number")


# --------------------------------------------------------------------------- batch path

# bytes.split() splits on these and nothing else below 0x21
_ASCII_SPACE = np.array([9, 10, 11, 12, 13, 32], dtype=np.uint8)


@dataclass
class _Tokens:
    """Token positions in the concatenated table bodies of a batch."""

    buf: bytes
    starts: np.ndarray
    ends: np.ndarray
    row_file: np.ndarray  # per row: index of its file in the batch
    row_first: np.ndarray  # per row: index of its first token
    rows: np.ndarray  # per file: number of rows
    _strings: Any = None

    @property
    def offset_type(self) -> type[np.integer[Any]]:
        return np.int64 if len(self.buf) >= 2**31 - 1 else np.int32

    def strings(self) -> Any:
        """Arrow string array: element ``2k`` is token ``k``, ``2k + 1`` the gap after it."""
        if self._strings is None:
            import pyarrow as pa

            offsets = np.empty(2 * len(self.starts) + 1, dtype=self.offset_type)
            offsets[0:-1:2] = self.starts
            offsets[1::2] = self.ends
            offsets[-1] = len(self.buf)
            kind = pa.string() if self.offset_type is np.int32 else pa.large_string()
            self._strings = pa.Array.from_buffers(
                kind, len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(self.buf)]
            )
        return self._strings


def _tokenise(tables: Sequence[PendingFile]) -> _Tokens | None:
    """Find every token and row of the batch, or None if anything needs the exact path."""
    views = [memoryview(p.data)[p.body_start :] for p in tables]
    buf = b"".join(views)
    if b"#" in buf:
        return None
    a = np.frombuffer(buf, dtype=np.uint8)
    newlines = np.flatnonzero(a == 10)
    low = a <= 32
    if np.count_nonzero(a < 32) != len(newlines) and not np.isin(a[low], _ASCII_SPACE).all():
        return None  # a control character bytes.split() keeps inside a token
    # tokens start and end where a byte's whitespace-ness changes (nonzero on bool is fastest);
    # every body ends with a newline, so the last change ends a token
    change = np.flatnonzero(low[1:] != low[:-1]) + 1
    if low[0]:
        starts, ends = change[0::2], change[1::2]
    else:
        starts, ends = np.concatenate(([0], change[1::2])), change[0::2]
    ncols = np.array([len(p.columns) for p in tables], dtype=np.int64)
    bounds = np.cumsum([0] + [len(v) for v in views])
    first_tok = np.searchsorted(starts, bounds)
    ntok = np.diff(first_tok)
    if not ntok.all() or (ntok % ncols).any():
        return None
    rows = ntok // ncols
    row_file = np.repeat(np.arange(len(tables)), rows)
    row_in_file = np.arange(len(row_file)) - np.repeat(np.cumsum(rows) - rows, rows)
    row_first = first_tok[:-1][row_file] + row_in_file * ncols[row_file]
    # the first token of each non-empty line must be the first token of a row, and vice versa
    line_first = np.searchsorted(starts, np.concatenate(([0], newlines[:-1] + 1)))
    keep = np.ones(len(line_first), dtype=bool)
    keep[1:] = line_first[1:] != line_first[:-1]
    line_first = line_first[keep & (line_first < len(starts))]
    if not np.array_equal(line_first, row_first):
        return None
    return _Tokens(buf, starts, ends, row_file, row_first, rows)


def _fast_tables(tables: Sequence[PendingFile]) -> np.ndarray | None:
    """All numbers of ``tables`` in file order, with structures set; None: use the exact path."""
    tok = _tokenise(tables)
    if tok is None:
        return None
    name_tok = tok.row_first + np.array([p.name_idx for p in tables])[tok.row_file]
    for p, names in zip(tables, _structure_names(tok, name_tok), strict=True):
        p.structures = names
    for p in tables:
        _check_structures(p)
    is_number = np.ones(len(tok.starts), dtype=bool)
    is_number[name_tok] = False
    return _arrow_cast(tok, np.flatnonzero(is_number))


def _structure_names(tok: _Tokens, name_tok: np.ndarray) -> list[tuple[str, ...]]:
    """Per file, its structure names (tokens ``name_tok``), decoded once per distinct list."""
    # each name with the gap after it (gaps hold nothing but ASCII whitespace)
    taken = tok.strings().take(np.stack([2 * name_tok, 2 * name_tok + 1], axis=1).ravel())
    offsets = np.frombuffer(taken.buffers()[1], dtype=tok.offset_type)
    text = taken.buffers()[2].to_pybytes()
    bounds = offsets[2 * np.concatenate(([0], np.cumsum(tok.rows)))].tolist()
    out = []
    for start, stop in itertools.pairwise(bounds):
        raw = text[start:stop]
        names = _NAMES.get(raw)
        if names is None:
            # ASCII: str.split() splits exactly where bytes.split() does
            names = tuple(
                raw.decode().split() if raw.isascii() else map(bytes.decode, raw.split())
            )
            if len(_NAMES) >= 512:
                _NAMES.clear()
            _NAMES[raw] = names
        out.append(names)
    return out


#: structure lists seen, by the bytes of their name column: files of one kind share them
_NAMES: dict[bytes, tuple[str, ...]] = {}


def _arrow_cast(tok: _Tokens, numbers: np.ndarray) -> np.ndarray | None:
    """Tokens ``numbers`` of the batch as float64 by one Arrow cast (None if one fails)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        values = pc.cast(tok.strings().take(2 * numbers), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None  # the exact path finds and names the bad value
    flat = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)
    if b"(" in tok.buf and np.isnan(flat).any():
        return None  # Arrow reads 'nan(...)', which float() refuses
    return flat


# --------------------------------------------------------------------------- both


def check_tables(pending: Sequence[PendingFile]) -> None:
    """Raise the first table error of ``pending`` in file order (used before a header error)."""
    for p in pending:
        if p.columns:
            _split_table(p)


def convert_tables(pending: Sequence[PendingFile]) -> list[np.ndarray]:
    """Structures and float64 values of every file, checked to be finite where it matters.

    Errors come in the order of the per-file reader: every file's row layout, then every
    file's numbers, then non-finite values.
    """
    tables = [p for p in pending if p.columns]
    flat = None
    if sum(len(p.data) - p.body_start for p in tables) >= FAST_MIN_BYTES:
        flat = _fast_tables(tables)
    out: dict[int, np.ndarray] = {}
    if flat is not None:
        start = 0
        for p in tables:
            stop = start + len(p.structures) * len(p.numeric_columns)
            out[id(p)] = flat[start:stop].reshape(-1, len(p.numeric_columns))
            start = stop
    else:
        for p in tables:
            _split_table(p)
        for p in tables:
            out[id(p)] = _convert_one(p)
    # one vectorised test for the whole batch; files are looked at one by one only when it
    # finds a nan or inf
    batch_finite = flat is not None and bool(np.isfinite(flat).all())
    results = []
    for p in pending:
        values = out.get(id(p))
        if values is None:
            values = np.empty((0, len(p.numeric_columns)), dtype=np.float64)
        _check_finite(p, values, batch_finite)
        results.append(values)
    return results


_VALUE = operator.itemgetter(3)  # Measure.value


def _check_finite(p: PendingFile, values: np.ndarray, known_finite: bool) -> None:
    """Refuse nan, inf and overflowing numbers (``1e400``) in a file that gives features.

    They would be stored as features and break every fit later. Kinds that give no feature
    keep theirs (real ``?h.w-g.pct.stats`` files hold '-nan' SNRs).
    """
    if not p.gives_features:
        return
    if not known_finite and values.size and not np.isfinite(values).all():
        _raise_not_finite(p, values)
    # a sum is nan or inf when any term is (or, harmlessly, when huge terms overflow)
    if p.measures and not math.isfinite(sum(map(_VALUE, p.measures))):
        _raise_measure_not_finite(p)


def _raise_not_finite(p: PendingFile, values: np.ndarray) -> None:
    """Name the line, structure and column of the first nan/inf value (e.g. ``1e400``)."""
    row, col = (int(i) for i in np.argwhere(~np.isfinite(values))[0])
    lines = p.text.split("\n")
    name_idx = p.name_idx
    lineno, seen = p.header_line + 1, -1
    for lineno in range(p.header_line + 1, len(lines) + 1):
        if lines[lineno - 1].split():
            seen += 1
            if seen == row:
                break
    token = lines[lineno - 1].split()
    raw = [t for j, t in enumerate(token) if j != name_idx][col] if token else "?"
    raise StatsFileError(
        p.label,
        lineno,
        f"column {p.numeric_columns[col]!r} value {raw!r} of structure {p.structures[row]!r} "
        "is not a finite number; expected a finite number (nan, inf and values beyond "
        "1.8e308 are refused)",
    )


def _raise_measure_not_finite(p: PendingFile) -> None:
    """Name the first '# Measure' line whose value is not finite (returns when none is)."""
    for m in p.measures:
        if not math.isfinite(m.value):
            pos = p.text.find(f"# Measure {m.key}, {m.name},")
            if pos < 0:
                pos = p.text.find(f"# Measure {m.key}, {m.name} ")
            line = line_of(p.text, pos) if pos >= 0 else None
            raise StatsFileError(
                p.label,
                line,
                f"'# Measure {m.key}, {m.name}' value {m.value!r} is not a finite number; "
                "expected a finite number (nan, inf and values beyond 1.8e308 are refused)",
            )
