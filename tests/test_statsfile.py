"""The stats reader against real files and two independent references."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from morphml.exceptions import MorphmlError, StatsFileError, SubjectDirError, UnknownStatsKindError
from morphml.io import (
    canonical_region,
    classify_stats_name,
    parse_stats_bytes,
    read_stats_file,
    read_stats_files,
    read_subject,
)
from tests.conftest import SHARED_DATA

GOLDEN = SHARED_DATA / "golden" / "freesurfer-stats-1.2.1"
PITT = SHARED_DATA / "golden" / "asegstats2table-Pitt_0050038"
FS51 = SHARED_DATA / "visualqc-abide-fs51" / "id_001"

# freesurfer-stats' column names -> FreeSurfer's ColHeaders
FSSTATS_COLUMNS = {
    "number_of_vertices": "NumVert",
    "surface_area_mm^2": "SurfArea",
    "gray_matter_volume_mm^3": "GrayVol",
    "average_thickness_mm": "ThickAvg",
    "thickness_stddev_mm": "ThickStd",
    "integrated_rectified_mean_curvature_mm^-1": "MeanCurv",
    "integrated_rectified_gaussian_curvature_mm^-2": "GausCurv",
    "folding_index": "FoldInd",
    "intrinsic_curvature_index": "CurvInd",
}

IDENTIFYING_KEYS = ("cmdline", "hostname", "user", "SUBJECTS_DIR", "subjectname", "CreationTime")


def real_stats_files() -> list[Path]:
    return sorted(
        p
        for p in SHARED_DATA.rglob("*")
        if p.is_file() and (p.name.endswith(".stats") or p.name.endswith(".stats.short"))
    )


def _read_real(path: Path):
    as_name = path.name.removesuffix(".short") if path.name.endswith(".short") else None
    return read_stats_file(path, as_name=as_name)


@pytest.mark.parametrize("path", real_stats_files(), ids=lambda p: str(p.relative_to(SHARED_DATA)))
def test_every_real_stats_file_reads(path: Path) -> None:
    sf = _read_real(path)
    assert sf.name == path.name
    assert sf.software in ("FreeSurfer", "FastSurfer", "unknown")
    if sf.table_kind in ("surface", "segmentation"):
        assert sf.values.shape == (len(sf.structures), len(sf.numeric_columns))
        assert len(sf.structures) > 0
        assert sf.features()
    # nothing identifying survives in the object
    blob = repr(sf)
    for key in IDENTIFYING_KEYS:
        assert key not in sf.provenance
    for secret in _identifying_values(path):
        assert secret not in blob, secret


def _identifying_values(path: Path) -> set[str]:
    out = set()
    for line in path.read_text().splitlines():
        key, _, value = line.lstrip("# ").partition(" ")
        keep = key in ("hostname", "user", "SUBJECTS_DIR", "subjectname", "CreationTime")
        if keep and len(value.strip()) >= 4:
            out.add(value.strip())
        if key == "cmdline":
            out.update(t for t in value.split() if "/" in t and len(t) > 8)
    return out


def _golden_entries() -> list[dict[str, str]]:
    return [e for e in json.loads((GOLDEN / "INDEX.json").read_text()) if e.get("golden")]


def _snake(description: str, unit: str) -> str:
    return re.sub(r"\s+", "_", description.strip().lower()) + "_" + unit


@pytest.mark.parametrize("entry", _golden_entries(), ids=lambda e: e["file"])
def test_agrees_with_freesurfer_stats(entry: dict[str, str]) -> None:
    golden = json.loads((SHARED_DATA / entry["golden"]).read_text())
    sf = read_stats_file(SHARED_DATA / entry["file"])
    for key in ("generating_program", "anatomy_type", "hemi"):
        assert sf.provenance[key] == golden["headers"][key]
    assert sf.provenance["cvs_version"] == golden["headers"]["cvs_version"]
    # freesurfer-stats renames the second 'Supratentorial volume' (the NotVent one)
    mine = {
        _snake(
            "Supratentorial volume without ventricles"
            if m.key == "SupraTentorialNotVent"
            else m.description,
            m.unit,
        ): m.value
        for m in sf.measures
    }
    for key, value in golden["whole_brain_measurements"].items():
        assert mine[key] == value, key
    rows = golden["structural_measurements"]
    assert list(sf.structures) == [r["structure_name"] for r in rows]
    for name, header in FSSTATS_COLUMNS.items():
        expected = np.array([r[name] for r in rows], dtype=np.float64)
        np.testing.assert_array_equal(sf.column(header), expected, err_msg=header)


def test_reads_the_file_that_breaks_freesurfer_stats() -> None:
    path = SHARED_DATA / "brainload-subject1/subject1/stats/rh.aparc.a2009s.stats"
    sf = read_stats_file(path)
    assert len(sf.structures) == 74
    measures = {m.name: m for m in sf.measures}
    # the real file lost a comma: '# Measure Cortex, CortexVol Total cortical gray ...'
    assert measures["CortexVol"].value == 536883.609483
    assert measures["CortexVol"].description == "Total cortical gray matter volume"
    feats = sf.features()
    assert feats["a2009s.rh.G_and_S_frontomargin.thickness"] == sf.column("ThickAvg")[0]
    assert feats["global.na.CortexVol.volume"] == 536883.609483


def _pitt_table(name: str) -> dict[str, float]:
    header, row = (PITT / name).read_text().splitlines()[:2]
    return dict(zip(header.split("\t")[1:], map(float, row.split("\t")[1:]), strict=True))


@pytest.mark.parametrize(
    ("table", "atlas"),
    [
        (f"{h}.{a}_table_{m}.tsv", atlas)
        for h in ("lh", "rh")
        for a, atlas in (("aparc", "aparc"), ("aparc.a2009s", "a2009s"))
        for m in ("area", "thickness", "volume")
    ],
)
def test_fs51_raw_files_equal_aparcstats2table(table: str, atlas: str) -> None:
    features = read_subject(FS51).features
    for column, value in _pitt_table(table).items():
        hemi, rest = column.split("_", 1)
        region, measure = rest.rsplit("_", 1)
        if region in ("MeanThickness", "WhiteSurfArea"):
            key = f"global.{hemi}.{region}.{measure}"
        else:
            key = f"{atlas}.{hemi}.{canonical_region(atlas, region)}.{measure}"
        assert features[key] == value, column


def test_fs51_raw_files_equal_asegstats2table() -> None:
    features = read_subject(FS51).features
    table = _pitt_table("aseg_table.tsv")
    globals_ = {
        "lhCortexVol": "global.lh.CortexVol.volume",
        "rhCortexVol": "global.rh.CortexVol.volume",
        "CortexVol": "global.na.CortexVol.volume",
        "lhCorticalWhiteMatterVol": "global.lh.CerebralWhiteMatterVol.volume",
        "rhCorticalWhiteMatterVol": "global.rh.CerebralWhiteMatterVol.volume",
        "CorticalWhiteMatterVol": "global.na.CerebralWhiteMatterVol.volume",
        "SubCortGrayVol": "global.na.SubCortGrayVol.volume",
        "TotalGrayVol": "global.na.TotalGrayVol.volume",
        "SupraTentorialVol": "global.na.SupraTentorialVol.volume",
        "IntraCranialVol": "global.na.eTIV.volume",
    }
    for column, value in table.items():
        key = globals_.get(column) or f"aseg.na.{canonical_region('aseg', column)}.volume"
        assert features[key] == pytest.approx(value, rel=0, abs=5e-7), column
    assert "aseg.na.Left-Thalamus.volume" in features  # FS5 Left-Thalamus-Proper folded


def test_fs51_brainstats_table_agrees() -> None:
    header, row = (PITT / "brainstats_abide_with_pial.txt").read_text().splitlines()[:2]
    table = dict(zip(header.split(), row.split(), strict=True))
    features = read_subject(FS51).features
    assert features["global.na.eTIV.volume"] == float(table["EstimatedTotalIntraCranialVol"])
    assert features["global.na.CerebralWhiteMatterVol.volume"] == float(
        table["CerebralWhiteMatterVol"]
    )
    assert features["global.lh.MeanThickness.thickness"] == float(table["lhMeanThickness"])
    assert features["global.rh.WhiteSurfArea.area"] == float(table["rhWhiteSurfArea"])


@pytest.mark.parametrize(
    ("folder", "software", "version"),
    [
        ("visualqc-abide-fs51/id_001", "FreeSurfer", "5.1"),
        ("brainload-subject1/subject1", "FreeSurfer", "6.0"),
        ("freesurfer-stats-tests/subjects/soichi", "FreeSurfer", "7.0.0"),
        ("sub01-derived-cc0/freesurfer-7.4.1/sub-01", "FreeSurfer", "7.4.1"),
        ("sub01-derived-cc0/freesurfer-8.2.0/sub-01", "FreeSurfer", "8.2.0"),
    ],
)
def test_subject_versions(folder: str, software: str, version: str) -> None:
    rec = read_subject(SHARED_DATA / folder)
    assert (rec.software, rec.version) == (software, version)
    assert "global.na.eTIV.volume" in rec.features
    assert rec.features
    assert all(not f.name.startswith("/") and ".." not in f.name for f in rec.files)


def test_thalamus_spellings_land_on_one_id() -> None:
    fs6 = read_subject(SHARED_DATA / "brainload-subject1/subject1").features
    fs7 = read_subject(SHARED_DATA / "freesurfer-stats-tests/subjects/soichi").features
    key = "aseg.na.Left-Thalamus.volume"
    assert key in fs6 and key in fs7
    assert not any("Thalamus-Proper" in k for k in fs6)


def test_fs8_stiv_and_versions_differ() -> None:
    fs8 = read_subject(SHARED_DATA / "sub01-derived-cc0/freesurfer-8.2.0/sub-01").features
    fs7 = read_subject(SHARED_DATA / "sub01-derived-cc0/freesurfer-7.4.1/sub-01").features
    assert fs8["global.na.sTIV.volume"] == 1675182.9
    assert "global.na.sTIV.volume" not in fs7
    assert fs7["aseg.na.CSF.volume"] != fs8["aseg.na.CSF.volume"]


def test_fs5_ba_and_entorhinal_aliases() -> None:
    feats = read_subject(FS51).features
    assert "BA.lh.BA1_exvivo.thickness" in feats
    assert "entorhinal.rh.entorhinal_exvivo.area" in feats
    assert feats["global.na.eTIV.volume"] == 964342.335086  # FS 5.1 'IntraCranialVol, ICV'


def test_dk_and_dkt_stay_distinct() -> None:
    feats = read_subject(SHARED_DATA / "brainload-subject1/subject1").features
    assert "aparc.lh.superiorfrontal.thickness" in feats
    assert "DKT.lh.superiorfrontal.thickness" in feats
    assert "DKT.lh.bankssts.thickness" not in feats


def test_curv_and_wgpct_are_skipped_with_reason() -> None:
    rec = read_subject(SHARED_DATA / "freesurfer-stats-tests/subjects/soichi")
    assert "curvature" in rec.skipped["stats/lh.curv.stats"]
    assert "contrast" in rec.skipped["stats/lh.w-g.pct.stats"]
    assert "wgpct" not in rec.atlases
    sf = read_stats_file(
        SHARED_DATA / "freesurfer-stats-tests/subjects/soichi/stats/lh.w-g.pct.stats"
    )
    assert np.isnan(sf.column("SNR")[0])  # '-nan' in the real file


def test_batch_equals_single(shared_data: Path) -> None:
    paths = [p for p in real_stats_files() if p.name.endswith(".stats")]
    batch = read_stats_files(paths)
    for path, sf in zip(paths, batch, strict=True):
        single = parse_stats_bytes(path.read_bytes(), path.name)
        np.testing.assert_array_equal(sf.values, single.values)
        assert sf.features() == single.features()


# ----------------------------------------------------------------------------- bad input

AS = (SHARED_DATA / "freesurfer-stats-tests/subjects/soichi/stats/aseg.stats").read_bytes()
AP = (SHARED_DATA / "freesurfer-stats-tests/subjects/soichi/stats/lh.aparc.stats").read_bytes()


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _first_row(data: bytes) -> int:
    lines = _lines(data)
    return next(i for i, line in enumerate(lines) if line.startswith(b"# ColHeaders")) + 1


def _expect(data: bytes, name: str, pattern: str, line: int | None = None) -> StatsFileError:
    with pytest.raises(StatsFileError, match=pattern) as info:
        parse_stats_bytes(data, name)
    err = info.value
    assert err.path == name
    if line is not None:
        assert err.line == line
        assert f"{name} line {line}:" in str(err)
    return err


def test_empty_file() -> None:
    _expect(b"", "aseg.stats", "empty file")


def test_truncated_in_header() -> None:
    _expect(AS[: AS.index(b"# TableCol")], "aseg.stats", "no '# ColHeaders'")


def test_truncated_mid_row() -> None:
    cut = AS[: len(AS) - 30]
    _expect(cut, "aseg.stats", "newline|columns")


def test_truncated_at_row_boundary_with_nrows() -> None:
    lines = _lines(AS)
    cut = b"\n".join(lines[:-5]) + b"\n"
    _expect(cut, "aseg.stats", r"NRows 45' but the table has 41 rows")


def test_row_with_too_few_columns() -> None:
    lines = _lines(AP)
    row = _first_row(AP) + 3
    lines[row - 1] = b" ".join(lines[row - 1].split()[:7])
    _expect(b"\n".join(lines), "lh.aparc.stats", "expected 10 columns, got 7", line=row)


def test_row_with_too_many_columns() -> None:
    lines = _lines(AP)
    row = _first_row(AP) + 1
    lines[row - 1] += b" 99"
    _expect(b"\n".join(lines), "lh.aparc.stats", "expected 10 columns, got 11", line=row)


def test_compensating_column_errors_are_found() -> None:
    lines = _lines(AP)
    row = _first_row(AP) + 2
    moved = lines[row - 1].split()
    lines[row - 1] = b" ".join(moved[:-1])
    lines[row] = moved[-1] + b" " + lines[row]
    _expect(b"\n".join(lines), "lh.aparc.stats", "columns", line=row)


def test_non_numeric_value() -> None:
    lines = _lines(AP)
    row = _first_row(AP) + 4
    parts = lines[row - 1].split()
    parts[4] = b"2.4x1"
    lines[row - 1] = b" ".join(parts)
    err = _expect(b"\n".join(lines), "lh.aparc.stats", "'ThickAvg' value '2.4x1'", line=row)
    assert "not a number" in str(err)


def test_binary_garbage() -> None:
    _expect(AP[:200] + b"\x00\x01\x02\xff" + AP[200:], "lh.aparc.stats", "binary data")


def test_non_utf8_bytes() -> None:
    lines = _lines(AP)
    lines[2] += b" \xe9\xff"
    _expect(b"\n".join(lines), "lh.aparc.stats", "not UTF-8", line=3)


def test_duplicate_structure_rows() -> None:
    lines = _lines(AP)
    row = _first_row(AP) + 1
    lines.insert(row + 2, lines[row - 1])
    _expect(b"\n".join(lines), "lh.aparc.stats", "duplicate structure 'bankssts'", line=row + 3)


def test_ntablecols_disagrees_with_colheaders() -> None:
    data = AP.replace(b"# NTableCols 10", b"# NTableCols 11")
    _expect(data, "lh.aparc.stats", "NTableCols 11' disagrees")


def test_tablecol_disagrees_with_colheaders() -> None:
    data = AP.replace(b"# TableCol  5 ColHeader ThickAvg", b"# TableCol  5 ColHeader Thick")
    _expect(data, "lh.aparc.stats", "TableCol' headers")


def test_wrong_title() -> None:
    _expect(AP, "aseg.stats", "expected the title line", line=1)


def test_bad_measure_value() -> None:
    data = AS.replace(
        b"Brain Segmentation Volume, 1169408.000000", b"Brain Segmentation Volume, x"
    )
    _expect(data, "aseg.stats", "value 'x' is not a number")


def test_unknown_stats_kind(tmp_path: Path) -> None:
    pattern = r"unknown stats kind 'lh\.aparc\.a2005s\.stats'"
    with pytest.raises(UnknownStatsKindError, match=pattern):
        classify_stats_name("lh.aparc.a2005s.stats")
    path = tmp_path / "hipposubfields.stats"
    path.write_bytes(AS)
    with pytest.raises(UnknownStatsKindError):
        read_stats_file(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(StatsFileError, match="file not found"):
        read_stats_file(tmp_path / "aseg.stats")
    (tmp_path / "aseg.stats").mkdir()
    with pytest.raises(StatsFileError, match="is a directory"):
        read_stats_file(tmp_path / "aseg.stats")


def test_missing_stats_folder(tmp_path: Path) -> None:
    with pytest.raises(SubjectDirError, match="no stats/ folder"):
        read_subject(tmp_path)
    with pytest.raises(SubjectDirError, match="no such directory"):
        read_subject(tmp_path / "nobody")
    (tmp_path / "stats").mkdir()
    with pytest.raises(SubjectDirError, match="no FreeSurfer/FastSurfer stats file"):
        read_subject(tmp_path)


def test_errors_are_builtin_subclasses() -> None:
    with pytest.raises(ValueError):
        parse_stats_bytes(b"", "aseg.stats")
    assert issubclass(StatsFileError, MorphmlError)
    assert issubclass(SubjectDirError, FileNotFoundError)
