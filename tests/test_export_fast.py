"""The wide export's read-ahead of DuckDB batches and its two query forms (all features, a
selection of them) give the same matrix."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from morphml.db._report import _prefetched, export_wide
from tests.test_db import build_synthetic_db

SCHEMA = pa.schema([("x", pa.int64())])


def _batches(n: int, fail_at: int | None = None) -> Iterator[pa.RecordBatch]:
    for i in range(n):
        if i == fail_at:
            raise OSError("disk gone")
        yield pa.record_batch([pa.array([i, i + 1])], schema=SCHEMA)


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "morphml-export-reader"]


def test_prefetched_yields_every_batch_in_order() -> None:
    reader = pa.RecordBatchReader.from_batches(SCHEMA, _batches(50))
    got = [b.column(0).to_pylist() for b in _prefetched(reader, depth=2)]
    assert got == [[i, i + 1] for i in range(50)]
    assert not _reader_threads()


def test_prefetched_raises_the_readers_error_in_the_consumer() -> None:
    reader = pa.RecordBatchReader.from_batches(SCHEMA, _batches(10, fail_at=4))
    seen = []
    with pytest.raises(OSError, match="disk gone"):
        for batch in _prefetched(reader, depth=1):
            seen.append(batch.column(0)[0].as_py())
    assert seen == [0, 1, 2, 3]
    assert not _reader_threads()


def test_prefetched_stops_its_thread_when_the_consumer_stops_early() -> None:
    reader = pa.RecordBatchReader.from_batches(SCHEMA, _batches(1000))
    batches = _prefetched(reader, depth=1)
    assert next(batches).column(0)[0].as_py() == 0
    batches.close()  # what a consumer that breaks out of its loop (or raises) does
    assert not _reader_threads()


def test_export_of_all_features_equals_export_of_every_atlas(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """The query without the features filter and the one with it give the same table."""
    matrix = build_synthetic_db(tmp_path / "s.duckdb", 120, 60, rng, missing=0.2)
    export_wide(tmp_path / "s.duckdb", tmp_path / "all.parquet")
    atlases = ["a2009s", "aparc", "aseg", "global"]
    export_wide(tmp_path / "s.duckdb", tmp_path / "some.parquet", atlases=atlases)
    every = pq.read_table(tmp_path / "all.parquet")
    chosen = pq.read_table(tmp_path / "some.parquet")
    assert every.equals(chosen, check_metadata=False)
    got = np.column_stack([every.column(i).to_numpy(zero_copy_only=False) for i in range(10, 70)])
    np.testing.assert_array_equal(got, matrix)
