"""The batch path of the stats reader gives what the per-file path gives, errors included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from morphml.exceptions import StatsFileError
from morphml.io import StatsFile, _stattable, parse_stats_bytes, read_stats_files
from tests.test_fuzz import CONTENT, REAL, corrupted


def _same(a: StatsFile, b: StatsFile) -> None:
    assert (a.name, a.atlas, a.hemi, a.table_kind) == (b.name, b.atlas, b.hemi, b.table_kind)
    assert (a.software, a.version, dict(a.provenance)) == (
        b.software,
        b.version,
        dict(b.provenance),
    )
    assert (a.columns, a.numeric_columns, a.structures) == (
        b.columns,
        b.numeric_columns,
        b.structures,
    )
    assert a.values.shape == b.values.shape
    assert np.array_equal(a.values, b.values, equal_nan=True)
    assert [m[:3] + m[4:] for m in a.measures] == [m[:3] + m[4:] for m in b.measures]
    assert np.array_equal(
        [m.value for m in a.measures], [m.value for m in b.measures], equal_nan=True
    )
    assert a.content_hash == b.content_hash


def _refuse_exact(p: object) -> None:
    raise AssertionError("the exact path ran")


def test_real_batch_takes_the_batch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_stattable, "_split_table", _refuse_exact)
    fast = read_stats_files(REAL)
    monkeypatch.undo()
    for path, quick in zip(REAL, fast, strict=True):
        _same(parse_stats_bytes(CONTENT[path], str(path)), quick)


def test_tabs_and_crlf_rows_take_the_batch_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = []
    for k, path in enumerate(REAL):
        folder = tmp_path / str(k)
        folder.mkdir()
        data = CONTENT[path]
        head, sep, body = data.partition(b"# ColHeaders")
        first, nl, rows = body.partition(b"\n")
        if k % 2:
            rows = rows.replace(b" ", b"\t").replace(b"\n", b"\r\n")
        (folder / path.name).write_bytes(head + sep + first + nl + rows)
        paths.append(folder / path.name)
    monkeypatch.setattr(_stattable, "_split_table", _refuse_exact)
    fast = read_stats_files(paths)
    monkeypatch.undo()
    for path, quick in zip(paths, fast, strict=True):
        _same(parse_stats_bytes(path.read_bytes(), str(path)), quick)


@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batch")


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=corrupted(), where=st.integers(0, len(REAL)))
def test_batch_equals_one_file_on_corrupted_input(
    batch_dir: Path, case: tuple[str, bytes], where: int
) -> None:
    name, data = case
    bad = batch_dir / name
    bad.write_bytes(data)
    paths = [*REAL[:where], bad, *REAL[where:]]
    try:
        alone = parse_stats_bytes(data, name, label=str(bad))
    except StatsFileError as err:
        with pytest.raises(StatsFileError) as caught:
            read_stats_files(paths)
        assert str(caught.value) == str(err)
        return
    result = read_stats_files(paths)[where]
    _same(alone, result)
