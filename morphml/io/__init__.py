"""Readers: FreeSurfer / FastSurfer stats files, subject folders, table exports."""

from morphml.io._dictionary import (
    ATLASES,
    GLOBAL_MEASURES,
    MEASURES,
    Alias,
    FeatureId,
    alias_table,
    canonical_global,
    canonical_region,
    dictionary_table,
    feature_id,
    known_regions,
    parse_feature_id,
)
from morphml.io._statsfile import (
    Measure,
    StatsFile,
    classify_stats_name,
    parse_stats_bytes,
    read_stats_file,
    read_stats_files,
)
from morphml.io._subject import FileRecord, SubjectRecord, find_stats_dir, read_subject

__all__ = [
    "ATLASES",
    "GLOBAL_MEASURES",
    "MEASURES",
    "Alias",
    "FeatureId",
    "FileRecord",
    "Measure",
    "StatsFile",
    "SubjectRecord",
    "alias_table",
    "canonical_global",
    "canonical_region",
    "classify_stats_name",
    "dictionary_table",
    "feature_id",
    "find_stats_dir",
    "known_regions",
    "parse_feature_id",
    "parse_stats_bytes",
    "read_stats_file",
    "read_stats_files",
    "read_subject",
]
