"""Reader for FreeSurfer / FastSurfer ``*.stats`` files.

One grammar covers every table kind (see FORMATS.md): ``#`` header lines (title, provenance,
``# Measure`` lines, ``# TableCol`` triplets, ``# NTableCols``, ``# ColHeaders``) followed by
whitespace-separated rows. The column layout is always taken from the file's own
``ColHeaders`` / ``TableCol`` lines.

Identifying header fields (``cmdline``, ``hostname``, ``user``, ``SUBJECTS_DIR``,
``subjectname``, time stamps, file paths) are dropped while parsing: a :class:`StatsFile`
carries only non-identifying provenance.

This module parses each file's header (a few regexes with literal prefixes, no per-line
Python loop) and the kinds registry (:mod:`morphml.io._kinds`) classifies file names; the table
rows of a whole batch are split and converted together in :mod:`morphml.io._stattable`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from morphml.exceptions import StatsFileError, UnknownStatsKindError
from morphml.io._dictionary import (
    SEGMENTATION_COLUMNS,
    SURFACE_COLUMNS,
    canonical_global,
    canonical_region,
)
from morphml.io._kinds import KINDS
from morphml.io._stattable import Measure, PendingFile, check_tables, convert_tables, line_of

__all__ = [
    "SKIPPED_KINDS",
    "Measure",
    "StatsFile",
    "classify_stats_name",
    "feature_layout",
    "parse_stats_bytes",
    "read_stats_file",
    "read_stats_files",
]

SURFACE_TITLE = "Table of FreeSurfer cortical parcellation anatomical statistics"
SEGMENTATION_TITLE = "Title Segmentation Statistics"

# file name -> (atlas, table kind), from the registry; hemisphere comes from ``lh.``/``rh.``
_HEMI_KINDS: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(rf"^(lh|rh)\.{k.hemi_pattern}\.stats$"), k.atlas, k.table_kind)
    for k in KINDS
    if k.hemi_pattern
)
_PLAIN_KINDS: dict[str, tuple[str, str]] = {
    name: (k.atlas, k.table_kind) for k in KINDS for name in k.names
}
#: how the "unknown stats kind" message lists the kinds
_KNOWN_NAMES: tuple[str, ...] = (*sorted(_PLAIN_KINDS), *(k.shown for k in KINDS if k.shown))
#: atlases only FastSurfer writes
_FASTSURFER_ATLASES = frozenset(k.atlas for k in KINDS if k.fastsurfer)

#: stats kinds that are recognised but carry no morphometric features, with the reason
SKIPPED_KINDS: dict[str, str] = {k.atlas: k.skipped for k in KINDS if k.skipped}

# header keys kept as provenance: none of them can identify a person or a site's machines
_SAFE_HEADER_KEYS = frozenset(
    {
        "generating_program",
        "cvs_version",
        "mrisurf.c-cvs_version",
        "FastSurfer_version",
        "anatomy_type",
        "hemi",
        "VoxelVolume_mm3",
        "VertexArea_mm2",
        "ExcludeSegId",
    }
)

_CVS_RE = re.compile(r"(\S+?\.c),v ([\d.]+) (\d{4})/")
# (program, CVS revision) -> FreeSurfer release; facts from FORMATS.md and the real files
_CVS_RELEASES: dict[tuple[str, str], str] = {
    ("mri_segstats.c", "1.75.2.2"): "5.1",
    ("mri_segstats.c", "1.121"): "6.0",
    ("mris_anatomical_stats.c", "1.79"): "6.0",
    ("mrisurf.c", "1.693.2.2"): "5.1",
    ("mrisurf.c", "1.693.2.7"): "5.3",
}
_PLAIN_VERSION_RE = re.compile(r"^v?(\d+\.\d+(?:\.\d+)?)\S*$")


@dataclass(eq=False)
class StatsFile:
    """One parsed stats file: table, ``# Measure`` values and safe provenance.

    Attributes
    ----------
    name : str
        The file's base name (never a path).
    atlas : str
        Canonical atlas (``aparc``, ``a2009s``, ``aseg``, ..., ``global`` for brainvol).
    hemi : str
        ``lh``, ``rh`` or ``na``.
    table_kind : str
        ``surface``, ``segmentation``, ``measures`` (brainvol), ``contrast`` (w-g.pct) or
        ``curv``.
    software, version : str
        ``FreeSurfer`` or ``FastSurfer`` and the version read from the headers (``unknown``
        when the headers do not say).
    provenance : Mapping[str, str]
        Non-identifying header values only.
    columns : tuple of str
        The file's ``ColHeaders``.
    structures : tuple of str
        The raw structure names, in file order.
    values : numpy.ndarray
        ``(n_structures, n_numeric_columns)`` float64 values, columns as
        :attr:`numeric_columns`.
    measures : tuple of Measure
    """

    name: str
    atlas: str
    hemi: str
    table_kind: str
    software: str
    version: str
    provenance: Mapping[str, str]
    columns: tuple[str, ...]
    numeric_columns: tuple[str, ...]
    structures: tuple[str, ...]
    values: np.ndarray
    measures: tuple[Measure, ...]
    content_hash: str = ""
    _features: dict[str, float] = field(default_factory=dict, repr=False, compare=False)

    def column(self, header: str) -> np.ndarray:
        """Values of one numeric column, by its ``ColHeaders`` name."""
        try:
            j = self.numeric_columns.index(header)
        except ValueError:
            raise KeyError(
                f"{self.name} has no column {header!r}; columns are {list(self.numeric_columns)}"
            ) from None
        return self.values[:, j]

    def flat_values(self) -> np.ndarray:
        """``values.ravel()`` followed by the ``# Measure`` values: what
        :func:`feature_layout`'s ``take`` indexes."""
        if not self.measures:
            return self.values.ravel()
        return np.concatenate([self.values.ravel(), [m.value for m in self.measures]])

    def features(self) -> dict[str, float]:
        """Canonical feature id -> value for everything this file contributes.

        Examples
        --------
        >>> sf = read_stats_file(path)  # doctest: +SKIP
        >>> sf.features()["aparc.lh.superiorfrontal.thickness"]  # doctest: +SKIP
        2.682
        """
        if not self._features and self.atlas not in SKIPPED_KINDS:
            self._features.update(_features_of(self))
        return dict(self._features)


@lru_cache(maxsize=1024)
def classify_stats_name(name: str) -> tuple[str, str, str]:
    """Return ``(atlas, hemi, table_kind)`` for a stats file name.

    Raises
    ------
    UnknownStatsKindError
        When the name matches no kind morphml knows.

    Examples
    --------
    >>> classify_stats_name("lh.aparc.DKTatlas.mapped.stats")
    ('DKT', 'lh', 'surface')
    """
    base = os.path.basename(name)
    plain = _PLAIN_KINDS.get(base)
    if plain is not None:
        return plain[0], "na", plain[1]
    for pattern, atlas, kind in _HEMI_KINDS:
        match = pattern.match(base)
        if match:
            return atlas, match.group(1), kind
    raise UnknownStatsKindError(
        name,
        None,
        f"unknown stats kind {base!r}; morphml reads {', '.join(_KNOWN_NAMES)} "
        "(pass as_name= to read a renamed copy)",
    )


# --------------------------------------------------------------------------- parsing


def _decode(data: bytes, label: str) -> str:
    if not data:
        raise StatsFileError(
            label, None, "empty file; expected a FreeSurfer/FastSurfer stats table"
        )
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise StatsFileError(label, line, "binary data (NUL byte); expected a text stats file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise StatsFileError(
            label, line, f"bytes that are not UTF-8 text at byte {err.start}; expected text"
        ) from None


def _parse_measure(body: str, label: str, header: str, pos: int) -> Measure:
    parts = body.split(",")
    if len(parts) == 4:
        # a real FS6 file (brainload subject1) lost the comma between name and description
        head, _, desc = parts[1].strip().partition(" ")
        parts = [parts[0], head, desc, parts[2], parts[3]]
    if len(parts) != 5:
        raise StatsFileError(
            label,
            line_of(header, pos),
            f"expected '# Measure key, name, description, value, unit' (5 fields), "
            f"got {len(parts)} fields",
        )
    key, name, desc, value, unit = parts
    try:
        number = float(value)
    except ValueError:
        raise StatsFileError(
            label,
            line_of(header, pos),
            f"'# Measure {key.strip()}' value {value.strip()!r} is not a number",
        ) from None
    return Measure(key.strip(), name.strip(), desc.strip(), number, unit.strip())


def _detect_version(label: str, atlas: str, prov: Mapping[str, str], base: str) -> tuple[str, str]:
    return _detect_version_cached(
        atlas,
        base.endswith(".mapped.stats"),
        prov.get("generating_program"),
        prov.get("FastSurfer_version"),
        prov.get("cvs_version"),
        prov.get("mrisurf.c-cvs_version"),
        bool(prov),
    )


@lru_cache(maxsize=512)
def _detect_version_cached(
    atlas: str,
    mapped: bool,
    program: str | None,
    fastsurfer_version: str | None,
    cvs: str | None,
    mrisurf: str | None,
    has_headers: bool,
) -> tuple[str, str]:
    fastsurfer = (
        program == "segstats.py"
        or fastsurfer_version is not None
        or atlas in _FASTSURFER_ATLASES
        or mapped
    )
    if fastsurfer:
        return "FastSurfer", fastsurfer_version or "unknown"
    if cvs is None:
        return ("FreeSurfer" if has_headers else "unknown"), "unknown"
    plain = _PLAIN_VERSION_RE.match(cvs)
    if plain:
        return "FreeSurfer", plain.group(1)
    releases = []
    for text in (cvs, mrisurf or ""):
        match = _CVS_RE.search(text)
        if match:
            release = _CVS_RELEASES.get((match.group(1), match.group(2)))
            if release:
                releases.append(release)
    if releases:
        # mrisurf.c tells 5.1 from 5.3 where mris_anatomical_stats.c did not change
        return "FreeSurfer", max(releases)
    return "FreeSurfer", "unknown"


# Header scanning uses regexes with a literal prefix ('# Measure', '\n# key'), which Python's
# re engine finds with a fast substring search; a per-line Python loop was 3x slower.
_TABLECOL_RE = re.compile(r"# TableCol[ \t]+(\S+)[ \t]+ColHeader[ \t]+(\S+)")
_MEASURE_RE = re.compile(r"# Measure ([^\n]*)")
# The name/description separator is ', ' or, in one real FS6 file that lost a comma, ' '
_MEASURE_FAST_RE = re.compile(
    r"# Measure ([^,\n]*), ([^, \n]*)(?:, | )([^,\n]*), ([^,\n]*), ([^,\s]*)[ \t\r]*\n"
)
# the look-ahead (first letters of the keys) skips the many TableCol and Measure lines fast
_KEY_RE = re.compile(
    r"\n# (?=[gcmFahVEAN])(generating_program|cvs_version|mrisurf\.c-cvs_version"
    r"|FastSurfer_version|anatomy_type|hemi|VoxelVolume_mm3|VertexArea_mm2|ExcludeSegId|AnnotationFile|Annot"
    r"|NTableCols|NRows)[ \t]+([^\n]*)"
)
_STRAY_RE = re.compile(r"\n[ \t]*[^#\s]")
_STRAY_FIRST_RE = re.compile(r"[ \t]*[^#\s]")
_new_tuple = tuple.__new__


def _pop_int(prov: dict[str, str], key: str, label: str, header: str) -> int | None:
    if key not in prov:
        return None
    value = prov.pop(key).strip()
    try:
        return int(value)
    except ValueError:
        line = line_of(header, header.find(f"# {key}"))
        raise StatsFileError(label, line, f"'# {key}' value {value!r} is not an integer") from None


def _header_int(key: str, value: str, label: str, line: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise StatsFileError(label, line, f"'# {key}' value {value!r} is not an integer") from None


def _check_title(text: str, label: str, table_kind: str) -> None:
    if table_kind == "measures":
        return
    expected = SURFACE_TITLE if table_kind == "surface" else SEGMENTATION_TITLE
    end = text.find("\n")
    first = text[:end] if end >= 0 else text
    if first.lstrip("#").strip() != expected:
        raise StatsFileError(
            label,
            1,
            f"expected the title line '# {expected}' for a {table_kind} stats file, "
            f"got {first[:60]!r}",
        )


def _check_no_stray_rows(header: str, label: str, table_kind: str) -> None:
    if header[:1] == "#" and header.count("\n") == header.count("\n#"):
        return  # every line starts with '#': the usual case, without a regex
    if _STRAY_FIRST_RE.match(header):
        line = 1
    else:
        stray = _STRAY_RE.search(header)
        if stray is None:
            return
        line = line_of(header, stray.start() + 1)
    what = (
        "expected only '# Measure' lines in brainvol.stats"
        if table_kind == "measures"
        else "table row before the '# ColHeaders' line; expected a header line"
    )
    raise StatsFileError(label, line, what)


def _header_measures(header: str, label: str) -> tuple[Measure, ...]:
    first = header.find("# Measure ")
    if first < 0:
        return ()
    # every match lies on a line from the first '# Measure ' to the last: scan only those
    end = header.find("\n", header.rfind("# Measure ")) + 1 or len(header)
    try:
        # tuple.__new__ skips the Python-level __new__ of a NamedTuple (3x faster)
        measures = [
            _new_tuple(Measure, (key, name, desc, float(value), unit))
            for key, name, desc, value, unit in _MEASURE_FAST_RE.findall(header, first, end)
        ]
    except ValueError:
        measures = []
    if len(measures) != header.count("# Measure ", first, end):
        # a malformed or unusual line: the careful parser keeps order and names the line
        measures = [
            _parse_measure(m.group(1), label, header, m.start())
            for m in _MEASURE_RE.finditer(header)
        ]
    return tuple(measures)


def _header_provenance(header: str, label: str) -> tuple[dict[str, str], int | None, int | None]:
    """Safe provenance, ``# NTableCols`` and ``# NRows`` of a header."""
    prov = dict(_KEY_RE.findall(header))
    ntablecols = _pop_int(prov, "NTableCols", label, header)
    nrows = _pop_int(prov, "NRows", label, header)
    for key in ("AnnotationFile", "Annot"):
        if key in prov:
            # keep only the annotation's name (e.g. 'aparc.a2009s'), never its path
            words = prov.pop(key).split()
            annot = os.path.basename(words[-1]) if words else ""
            if annot[:3] in ("lh.", "rh."):
                annot = annot[3:]
            annot = annot.removesuffix(".annot")
            if annot:
                prov["annot"] = annot
    for key, value in prov.items():
        if value[:1] == "$" or value[-1:] in " $\r\t":
            prov[key] = value.strip().strip("$").strip()
    return {k: v for k, v in prov.items() if v}, ntablecols, nrows


def _check_columns(
    colheaders: list[str], header: str, label: str, text: str, at: int, ntablecols: int | None
) -> None:
    """``# ColHeaders`` (at ``text[at]``) must agree with ``# NTableCols`` and ``# TableCol``
    and name StructName."""
    if ntablecols is not None and ntablecols != len(colheaders):
        raise StatsFileError(
            label,
            line_of(text, at),
            f"'# NTableCols {ntablecols}' disagrees with the {len(colheaders)} names on "
            f"'# ColHeaders' ({' '.join(colheaders)})",
        )
    # declared TableCol names, in file order (cheap split; the regex only runs on a mismatch)
    declared_fast = [
        piece.split(None, 1)[0] for piece in header.split(" ColHeader ")[1:] if piece.strip()
    ]
    if declared_fast and declared_fast != colheaders:
        tablecols: dict[int, str] = {}
        for m in _TABLECOL_RE.finditer(header):
            index, col = m.groups()
            if not index.isdigit():
                _header_int("TableCol", index, label, line_of(header, m.start()))
            tablecols[int(index)] = col
        declared = [tablecols[k] for k in sorted(tablecols)]
        if declared != colheaders:
            raise StatsFileError(
                label,
                line_of(text, at),
                f"'# TableCol' headers {declared} disagree with '# ColHeaders' {colheaders}",
            )
    if "StructName" not in colheaders:
        raise StatsFileError(
            label, line_of(text, at), f"'# ColHeaders' has no StructName column: {colheaders}"
        )
    if len(set(colheaders)) != len(colheaders):
        raise StatsFileError(
            label, line_of(text, at), f"duplicate names in '# ColHeaders': {colheaders}"
        )


def _parse_header(text: str, label: str, base: str, data: bytes) -> PendingFile:
    """Everything of one file but its table rows (see :mod:`morphml.io._stattable`)."""
    atlas, hemi, table_kind = classify_stats_name(base)
    gives_features = atlas not in SKIPPED_KINDS
    if table_kind == "curv":
        return PendingFile(
            label, text, data, atlas, hemi, table_kind, "FreeSurfer", "unknown", {}, (), (), (),
            gives_features,
        )  # fmt: skip
    _check_title(text, label, table_kind)
    col_pos = text.find("\n# ColHeaders")
    header = text[:col_pos] if col_pos >= 0 else text
    _check_no_stray_rows(header, label, table_kind)
    measures = _header_measures(header, label)
    prov, ntablecols, nrows = _header_provenance(header, label)
    software, version = _detect_version(label, atlas, prov, base)
    if table_kind == "measures":
        if not measures:
            raise StatsFileError(label, None, "no '# Measure' lines; expected brainvol measures")
        return PendingFile(
            label, text, data, atlas, hemi, table_kind, software, version, prov, (), (),
            measures, gives_features,
        )  # fmt: skip
    if col_pos < 0:
        raise StatsFileError(
            label,
            line_of(text, len(text)),
            "no '# ColHeaders' line before the end of the file (truncated?); "
            "expected the header to end with '# ColHeaders ...'",
        )
    col_end = text.find("\n", col_pos + 1)
    colheaders = text[col_pos + 1 : col_end if col_end >= 0 else len(text)].split()[2:]
    _check_columns(colheaders, header, label, text, col_pos + 1, ntablecols)
    if not text.endswith("\n"):
        raise StatsFileError(
            label,
            line_of(text, len(text)),
            "the file does not end with a newline: it looks truncated "
            "(FreeSurfer and FastSurfer end every row with a newline)",
        )
    if len(data) != len(text):  # not ASCII: character and byte offsets differ
        col_end = data.find(b"\n", data.find(b"\n# ColHeaders") + 1)
    columns = tuple(colheaders)
    return PendingFile(
        label, text, data, atlas, hemi, table_kind, software, version, prov, columns,
        _numeric_columns(columns), measures, gives_features, col_pos + 1, col_end + 1, nrows,
    )  # fmt: skip


@lru_cache(maxsize=256)
def _numeric_columns(colheaders: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(c for c in colheaders if c != "StructName")


def _finish(p: PendingFile, values: np.ndarray, base: str, content_hash: str) -> StatsFile:
    return StatsFile(
        name=base,
        atlas=p.atlas,
        hemi=p.hemi,
        table_kind=p.table_kind,
        software=p.software,
        version=p.version,
        provenance=p.provenance,
        columns=p.columns,
        numeric_columns=p.numeric_columns,
        structures=p.structures,
        values=values,
        measures=p.measures,
        content_hash=content_hash,
    )


def parse_stats_bytes(data: bytes, name: str, *, label: str | None = None) -> StatsFile:
    """Parse the bytes of one stats file.

    Parameters
    ----------
    data : bytes
        The file's content.
    name : str
        The file name that decides the stats kind (``aseg.stats``, ``lh.aparc.stats``, ...).
    label : str, optional
        How the file is named in error messages (defaults to ``name``).
    """
    label = label or name
    base = os.path.basename(name)
    pending = _parse_header(_decode(data, label), label, base, data)
    values = convert_tables([pending])[0]
    return _finish(pending, values, base, hashlib.sha256(data).hexdigest())


def read_stats_file(path: str | os.PathLike[str], *, as_name: str | None = None) -> StatsFile:
    """Read one FreeSurfer or FastSurfer stats file.

    Parameters
    ----------
    path : path-like
        The file to read.
    as_name : str, optional
        Classify the file as if it had this name (for renamed copies such as
        ``lh.aparc.stats.bak``).

    Returns
    -------
    StatsFile

    Raises
    ------
    StatsFileError
        Naming the file, the line and what was expected, for any malformed input.

    Examples
    --------
    >>> sf = read_stats_file("subj/stats/lh.aparc.stats")  # doctest: +SKIP
    >>> sf.atlas, sf.hemi, sf.software
    ('aparc', 'lh', 'FreeSurfer')
    """
    return read_stats_files([path], as_names=[as_name] if as_name else None)[0]


#: one read takes any stats file up to this size (a FreeSurfer 7 wmparc.stats is ~22 kB)
_FIRST_READ = 1 << 16


def _read_bytes(path: str) -> bytes:
    # os.open/os.read skip the buffered-file objects of open(): ~2x faster on small files;
    # reading a directory raises IsADirectoryError (EISDIR) without an fstat
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, _FIRST_READ)
        if len(data) < _FIRST_READ:
            return data
        chunks = [data]
        while chunks[-1]:
            chunks.append(os.read(fd, 1 << 20))
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_one(label: str) -> bytes:
    try:
        return _read_bytes(label)
    except IsADirectoryError:
        raise StatsFileError(label, None, "is a directory; expected a stats file") from None
    except FileNotFoundError:
        raise StatsFileError(label, None, "file not found") from None
    except OSError as err:
        raise StatsFileError(label, None, f"cannot be read: {err.strerror}") from None


def read_stats_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    as_names: Sequence[str | None] | None = None,
    content_hash: bool = True,
) -> list[StatsFile]:
    """Read many stats files, converting all their numbers in one batch.

    Equivalent to calling :func:`read_stats_file` on each path, but faster: the table rows of
    the whole batch are split by a few numpy passes over their bytes and their numbers
    converted by one Arrow cast.

    Parameters
    ----------
    paths : iterable of path-like
    as_names : sequence of str or None, optional
        Per path, a file name to classify by (for renamed copies).
    content_hash : bool, default True
        Compute each file's SHA-256 (``StatsFile.content_hash``), which ingest records to
        recognise unchanged files; ``False`` leaves it empty and saves ~4 us a file.
    """
    pending: list[PendingFile] = []
    bases: list[str] = []
    hashes: list[str] = []
    try:
        for k, path in enumerate(paths):
            label = os.fspath(path)
            base = os.path.basename(label)
            alias = as_names[k] if as_names else None
            data = _read_one(label)
            name = os.path.basename(alias) if alias else base
            pending.append(_parse_header(_decode(data, label), label, name, data))
            bases.append(base)
            hashes.append(hashlib.sha256(data).hexdigest() if content_hash else "")
    except StatsFileError:
        check_tables(pending)  # a table error of an earlier file is reported first
        raise
    values = convert_tables(pending)
    return [_finish(*args) for args in zip(pending, values, bases, hashes, strict=True)]


# --------------------------------------------------------------------------- features

_SURFACE_HEMI_MEASURES = frozenset({"NumVert", "WhiteSurfArea", "MeanThickness", "PialSurfArea"})


def _features_of(sf: StatsFile) -> dict[str, float]:
    ids, take = feature_layout(sf)
    return dict(zip(ids, sf.flat_values()[take].tolist(), strict=True))


def feature_layout(sf: StatsFile) -> tuple[tuple[str, ...], np.ndarray]:
    """Canonical feature ids of a file and where their values are.

    Returns ``(ids, take)``: the value of ``ids[k]`` is ``flat[take[k]]`` where ``flat`` is
    ``values.ravel()`` followed by the ``# Measure`` values in file order. Each id appears once
    (a measure repeated in the file keeps its first value). Layouts are cached, so files with
    the same structures and columns share one answer: ingest maps whole tables at once.
    """
    measures_key = tuple((m.key, m.name, m.unit) for m in sf.measures)
    return _layout(
        sf.atlas, sf.hemi, sf.table_kind, sf.structures, sf.numeric_columns, measures_key
    )


@lru_cache(maxsize=4096)
def _layout(
    atlas: str,
    hemi: str,
    table_kind: str,
    structures: tuple[str, ...],
    numeric_columns: tuple[str, ...],
    measures_key: tuple[tuple[str, str, str], ...],
) -> tuple[tuple[str, ...], np.ndarray]:
    ids: list[str] = []
    take: list[int] = []
    seen: set[str] = set()
    if atlas in SKIPPED_KINDS:
        return (), np.empty(0, dtype=np.int64)
    ncol = len(numeric_columns)
    if table_kind in ("surface", "segmentation"):
        column_map = SURFACE_COLUMNS if table_kind == "surface" else SEGMENTATION_COLUMNS
        row_hemi = hemi if table_kind == "surface" else "na"
        picks = [(j, column_map[c]) for j, c in enumerate(numeric_columns) if c in column_map]
        prefix = f"{atlas}.{row_hemi}."
        for r, raw in enumerate(structures):
            region = canonical_region(atlas, raw)
            for j, measure in picks:
                fid = f"{prefix}{region}.{measure}"
                if fid not in seen:
                    seen.add(fid)
                    ids.append(fid)
                    take.append(r * ncol + j)
    base = len(structures) * ncol
    for k, (key, name, unit) in enumerate(measures_key):
        if table_kind == "surface" and key == "Cortex" and name in _SURFACE_HEMI_MEASURES:
            hemi_m, region_m, measure_m = hemi, name, canonical_global(name, unit)[2]
        else:
            hemi_m, region_m, measure_m = canonical_global(name, unit)
        fid = f"global.{hemi_m}.{region_m}.{measure_m}"
        if fid not in seen:
            seen.add(fid)
            ids.append(fid)
            take.append(base + k)
    return tuple(ids), np.asarray(take, dtype=np.int64)
