"""Tests for the stats-folder writer (fixtures for the readers, the simulator's output)."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np
import pytest

from morphml.simulate import example_features, write_subject_stats

FLAVORS = [
    ("freesurfer", "5.1"),
    ("freesurfer", "6.0"),
    ("freesurfer", "7.4.1"),
    ("freesurfer", "8.2.0"),
    ("fastsurfer", "7.4.1"),
]

SURFACE = (
    "aparc",
    "aparc.a2009s",
    "aparc.pial",
    "aparc.DKTatlas",
    "BA_exvivo",
    "BA_exvivo.thresh",
)
EXPECTED_FILES = {
    ("freesurfer", "5.1"): {"aseg.stats", "wmparc.stats"}
    | {f"{h}.{s}.stats" for h in ("lh", "rh") for s in ("aparc", "aparc.a2009s", "BA")}
    | {f"{h}.entorhinal_exvivo.stats" for h in ("lh", "rh")},
    ("freesurfer", "6.0"): {"aseg.stats", "wmparc.stats"}
    | {f"{h}.{s}.stats" for h in ("lh", "rh") for s in SURFACE},
    ("freesurfer", "7.4.1"): {"aseg.stats", "wmparc.stats", "brainvol.stats"}
    | {f"{h}.{s}.stats" for h in ("lh", "rh") for s in SURFACE},
    ("freesurfer", "8.2.0"): {"aseg.stats", "wmparc.stats", "brainvol.stats"}
    | {f"{h}.{s}.stats" for h in ("lh", "rh") for s in SURFACE},
    ("fastsurfer", "7.4.1"): {
        "aseg.stats",
        "aseg+DKT.stats",
        "brainvol.stats",
        "wmparc.DKTatlas.mapped.stats",
        "cerebellum.CerebNet.stats",
    }
    | {
        f"{h}.{s}.stats"
        for h in ("lh", "rh")
        for s in ("aparc.DKTatlas.mapped", "BA_exvivo", "BA_exvivo.thresh")
    },
}

CANARIES = {
    "subjectname": "canarysubj7",
    "hostname": "canaryhost7",
    "user": "canaryuser7",
    "SUBJECTS_DIR": "/canary/dir7",
    "cmdline_path": "/canary/install7",
    "CreationTime": "1999/01/02-03:04:05-GMT",
    "timestamp": "1999/01/02 03:04:05",
}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple]:
    """One subject per software/version: (features, stats dir, written paths)."""
    out = {}
    for software, version in FLAVORS:
        features = example_features(np.random.default_rng(0), software=software, version=version)
        folder = tmp_path_factory.mktemp(f"{software}{version}") / "sub-001" / "stats"
        paths = write_subject_stats(
            folder, features, software=software, version=version, identifying=CANARIES
        )
        out[(software, version)] = (features, folder, paths)
    return out


def _data_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def _header(text: str, key: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"# {key}")]


# --------------------------------------------------------------------------------------------
# file names and table bookkeeping


@pytest.mark.parametrize("flavor", FLAVORS, ids="-".join)
def test_file_names(written: dict, flavor: tuple[str, str]) -> None:
    _, folder, paths = written[flavor]
    assert {p.name for p in paths} == EXPECTED_FILES[flavor]
    assert {p.name for p in folder.iterdir()} == EXPECTED_FILES[flavor]


@pytest.mark.parametrize("flavor", FLAVORS, ids="-".join)
def test_nrows_and_ntablecols_match_the_table(written: dict, flavor: tuple[str, str]) -> None:
    for path in written[flavor][2]:
        text = path.read_text()
        if path.name == "brainvol.stats":
            assert _data_rows(text) == []
            assert all(line.startswith("# Measure ") for line in text.splitlines())
            continue
        rows = _data_rows(text)
        (colheaders,) = _header(text, "ColHeaders")
        columns = colheaders.split()[2:]
        (ntablecols,) = _header(text, "NTableCols")
        assert int(ntablecols.split()[2]) == len(columns) == 10, path.name
        assert {len(row.split()) for row in rows} == {10}, path.name
        assert len(_header(text, "TableCol ")) == 30, path.name
        nrows = _header(text, "NRows")
        if "Segmentation" in text.splitlines()[0]:
            assert int(nrows[0].split()[2]) == len(rows) > 0, path.name
        else:
            assert nrows == [], path.name


# --------------------------------------------------------------------------------------------
# version spellings


def test_fastsurfer_files(written: dict) -> None:
    _, folder, _ = written[("fastsurfer", "7.4.1")]
    asegdkt = (folder / "aseg+DKT.stats").read_text()
    lines = asegdkt.splitlines()
    assert lines[:4] == [
        "# Title Segmentation Statistics",
        "#",
        "# generating_program segstats.py",
        "# FastSurfer_version 2.4.2",
    ]
    assert lines[4].startswith("# cmdline ")
    assert "# compatibility with freesurfer's mri_segstats: fixed" in lines
    assert "# VoxelVolume_mm3 1.0" in lines
    assert not _header(asegdkt, "Measure")
    names = {row.split()[4] for row in _data_rows(asegdkt)}
    assert {"ctx-lh-insula", "ctx-rh-precuneus", "Left-Cerebral-White-Matter"} <= names
    assert not {n for n in names if re.search("bankssts|frontalpole|temporalpole", n)}
    assert _header(asegdkt, "ColHeaders") == [
        "# ColHeaders  Index SegId NVoxels Volume_mm3 StructName normMean normStdDev normMin "
        "normMax normRange"
    ]
    # segstats.py sizes each column by the digits of its maximum: rows are right-aligned
    # (except that an exact power of ten overflows: row 100 of aseg+DKT.stats, as in FastSurfer)
    aseg_rows = _data_rows((folder / "aseg.stats").read_text())
    assert len({re.match(r"\s*\d+\s+\d+\s+\d+", row).end() for row in aseg_rows}) == 1  # type: ignore[union-attr]
    assert _data_rows(asegdkt)[-1].startswith("100 2035 ")
    # FastSurfer's aseg.stats does carry the measures, in segstats.py's format
    aseg = (folder / "aseg.stats").read_text()
    assert len(_header(aseg, "Measure")) == 20
    assert "# SUBJECT_DIR /canary/dir7" in aseg.splitlines()
    # the surface stats come from FreeSurfer's mris_anatomical_stats, under FastSurfer names
    mapped = (folder / "lh.aparc.DKTatlas.mapped.stats").read_text()
    assert "# generating_program mris_anatomical_stats" in mapped.splitlines()
    assert "# cvs_version 7.4.1" in mapped.splitlines()
    assert not re.search("^(bankssts|frontalpole|temporalpole) ", mapped, re.MULTILINE)
    cerebnet = (folder / "cerebellum.CerebNet.stats").read_text()
    assert not _header(cerebnet, "Measure")
    assert "Cbm_Vermis_VII" in cerebnet


def test_freesurfer_51_spellings(written: dict) -> None:
    _, folder, _ = written[("freesurfer", "5.1")]
    aseg = (folder / "aseg.stats").read_text()
    assert "# cvs_version $Id: mri_segstats.c,v 1.75.2.2 2011/04/27 22:18:58 nicks Exp $" in aseg
    assert "# Measure IntraCranialVol, ICV, Intracranial Volume, " in aseg
    assert "# Measure lhCorticalWhiteMatter, lhCorticalWhiteMatterVol, " in aseg
    assert not re.search("BrainSeg|eTIV|SurfaceHoles|CerebralWhiteMatter", aseg)
    assert " Left-Thalamus-Proper " in aseg
    aparc = (folder / "lh.aparc.stats").read_text()
    assert [line.split(",")[1] for line in _header(aparc, "Measure")] == [
        " NumVert",
        " WhiteSurfArea",
        " MeanThickness",
    ]
    assert "\nG_and_S_frontomargin " in (folder / "lh.aparc.a2009s.stats").read_text()
    assert "\nBA1 " in (folder / "lh.BA.stats").read_text()
    assert "\nlh.entorhinal_exvivo.label " in (folder / "lh.entorhinal_exvivo.stats").read_text()


def test_freesurfer_6_spellings(written: dict) -> None:
    _, folder, _ = written[("freesurfer", "6.0")]
    aseg = (folder / "aseg.stats").read_text()
    assert "mri_segstats.c,v 1.121 2016/05/31" in aseg
    assert " Left-Thalamus-Proper " in aseg
    a2009s = (folder / "lh.aparc.a2009s.stats").read_text()
    assert "\nG&S_frontomargin " in a2009s
    assert "\nG_Ins_lg&S_cent_ins " in a2009s
    # FreeSurfer 6's mris_anatomical_stats drops a comma in this line
    assert "# Measure Cortex, CortexVol Total cortical gray matter volume, " in a2009s
    assert "BrainVolStatsFixed" not in a2009s


@pytest.mark.parametrize("version", ["7.4.1", "8.2.0"])
def test_freesurfer_7_and_8_spellings(written: dict, version: str) -> None:
    _, folder, _ = written[("freesurfer", version)]
    aseg = (folder / "aseg.stats").read_text()
    assert f"# cvs_version {version}" in aseg.splitlines()
    assert " Left-Thalamus " in aseg
    assert "Thalamus-Proper" not in aseg
    assert ("SegmentedTotalIntraCranialVol, sTIV" in aseg) == version.startswith("8")
    a2009s = (folder / "rh.aparc.a2009s.stats").read_text()
    assert "\nG_and_S_frontomargin " in a2009s
    assert "# Measure Cortex, CortexVol, Total cortical gray matter volume, " in a2009s
    assert "# BrainVolStatsFixed-NotNeeded because voxelvolume=1mm3" in a2009s.splitlines()
    brainvol = (folder / "brainvol.stats").read_text()
    assert re.search(r"SupraTentorialVolNotVentVox, .*, \d+\.\d{12}, mm\^3", brainvol)
    th3 = "-no-th3" if version.startswith("8") else "-th3"
    assert f"# cmdline mris_anatomical_stats {th3} -mgz " in a2009s


# --------------------------------------------------------------------------------------------
# identifying fields are written (the reader must strip them)


@pytest.mark.parametrize("flavor", FLAVORS, ids="-".join)
def test_identifying_values_are_planted(written: dict, flavor: tuple[str, str]) -> None:
    for path in written[flavor][2]:
        text = path.read_text()
        if path.name == "brainvol.stats":
            assert not any(value in text for value in CANARIES.values())
            continue
        lines = text.splitlines()
        assert "# hostname canaryhost7" in lines, path.name
        assert any(re.fullmatch(r"# user +canaryuser7", line) for line in lines), path.name
        assert "canarysubj7" in _header(text, "cmdline")[0], path.name
        assert "1999/01/02 03:04:05" in text, path.name
        surface = lines[0].startswith("# Table of FreeSurfer cortical")
        if surface:
            assert "# CreationTime 1999/01/02-03:04:05-GMT" in lines, path.name
            assert "# SUBJECTS_DIR /canary/dir7" in lines, path.name
            assert "# subjectname canarysubj7" in lines, path.name
        else:
            assert "/canary/install7" in _header(text, "cmdline")[0], path.name
        if flavor[0] == "freesurfer" and not surface:
            assert "# SUBJECTS_DIR /canary/dir7" in lines, path.name
            assert "# ColorTable /canary/install7/" in text, path.name


def test_default_identifying_values_are_fake(tmp_path: Path) -> None:
    features = {k: v for k, v in _small_features().items() if k.startswith("aparc.lh.")}
    (path,) = write_subject_stats(tmp_path, features)
    text = path.read_text()
    assert "# subjectname sub-001" in text.splitlines()
    assert "# SUBJECTS_DIR /home/user/subjects" in text.splitlines()


# --------------------------------------------------------------------------------------------
# layout against real files


def _layout(path: Path) -> tuple[list[str], set[tuple[int, ...]]]:
    """Header keys in order (Measure lines by key and name, TableCol lines verbatim) and the
    end positions of the numeric columns of the data rows."""
    keys: list[str] = []
    ends: set[tuple[int, ...]] = set()
    for line in path.read_text().splitlines():
        if line.startswith("# Measure"):
            keys.append(",".join(line.split(",")[:2]))
        elif line.startswith("# TableCol") or line.startswith("# ColHeaders"):
            keys.append(line)
        elif line.startswith("#"):
            keys.append(" ".join(line.split(" ")[:2]))
        elif line:
            positions = [m.end() for m in re.finditer(r"\S+", line)]
            name = 4 if line.split()[0].isdigit() else 0  # the StructName column
            ends.add((*positions[:name], *positions[name + 1 :], len(line)))
    return keys, ends


@pytest.mark.parametrize(
    ("version", "real", "name"),
    [
        ("7.0.0", "freesurfer-stats-tests/subjects/soichi/stats", "lh.aparc.stats"),
        ("7.0.0", "freesurfer-stats-tests/subjects/soichi/stats", "rh.aparc.a2009s.stats"),
        ("7.0.0", "freesurfer-stats-tests/subjects/soichi/stats", "lh.BA_exvivo.thresh.stats"),
        ("7.0.0", "freesurfer-stats-tests/subjects/soichi/stats", "aseg.stats"),
        ("7.0.0", "freesurfer-stats-tests/subjects/soichi/stats", "wmparc.stats"),
        ("5.1", "visualqc-abide-fs51/id_001/stats", "lh.aparc.stats"),
        ("5.1", "visualqc-abide-fs51/id_001/stats", "rh.BA.stats"),
        ("5.1", "visualqc-abide-fs51/id_001/stats", "aseg.stats"),
        ("5.1", "visualqc-abide-fs51/id_001/stats", "wmparc.stats"),
        ("6.0", "brainload-subject1/subject1/stats", "lh.aparc.pial.stats"),
        ("6.0", "brainload-subject1/subject1/stats", "aseg.stats"),
        ("8.2.0", "sub01-derived-cc0/freesurfer-8.2.0/sub-01/stats", "lh.aparc.stats"),
        ("8.2.0", "sub01-derived-cc0/freesurfer-8.2.0/sub-01/stats", "aseg.stats"),
    ],
)
def test_layout_matches_real_file(
    tmp_path: Path, shared_data: Path, version: str, real: str, name: str
) -> None:
    features = example_features(np.random.default_rng(0), version=version)
    write_subject_stats(tmp_path, features, version=version)
    real_keys, real_ends = _layout(shared_data / real / name)
    keys, ends = _layout(tmp_path / name)
    assert keys == real_keys
    assert ends == real_ends
    assert len(real_ends) == 1  # the real file is right-aligned: one layout for every row


def test_rows_and_measures_use_the_real_precision(written: dict) -> None:
    features, folder, _ = written[("freesurfer", "7.4.1")]
    row = next(r for r in _data_rows((folder / "lh.aparc.stats").read_text()))
    assert re.fullmatch(
        r"bankssts +\d+ +\d+ +\d+ +\d\.\d{3} \d\.\d{3} +\d\.\d{3} +\d\.\d{3} +\d+ +\d+\.\d", row
    )
    row = _data_rows((folder / "aseg.stats").read_text())[0]
    norms = r"(\d+\.\d{4} +){4}\d+\.\d{4} "
    assert re.fullmatch(r" +1 +4 +\d+ +\d+\.\d  Left-Lateral-Ventricle +" + norms, row)
    aparc = (folder / "lh.aparc.stats").read_text()
    area = features["global.lh.WhiteSurfArea.area"]
    assert f"White Surface Total Area, {area:g}, mm^2" in aparc
    numvert = features["global.lh.NumVert.count"]
    ba = (folder / "lh.BA_exvivo.stats").read_text()
    assert f"Number of Vertices, {round(numvert * 1.07)}, unitless" in ba


def test_freesurfer_51_wmparc_brainseg_is_the_sum_of_its_rows(written: dict) -> None:
    _, folder, _ = written[("freesurfer", "5.1")]
    text = (folder / "wmparc.stats").read_text()
    total = sum(float(row.split()[3]) for row in _data_rows(text))
    (line,) = [x for x in _header(text, "Measure BrainSeg, BrainSegVol,")]
    assert float(line.split(",")[3]) == pytest.approx(total, abs=0.1 * len(_data_rows(text)))
    assert "# Measure BrainSegNotVent, BrainSegVolNotVent, " in text


# --------------------------------------------------------------------------------------------
# inputs: subsets, errors, randomness, speed


def _small_features() -> dict[str, float]:
    return example_features(np.random.default_rng(0))


def test_only_the_atlases_given_are_written(tmp_path: Path) -> None:
    features = _small_features()
    lh = {k: v for k, v in features.items() if k.startswith("aparc.lh.")}
    lh["global.lh.NumVert.count"] = features["global.lh.NumVert.count"]
    paths = write_subject_stats(tmp_path / "a", lh)
    assert [p.name for p in paths] == ["lh.aparc.stats"]
    assert "# Measure Cortex, NumVert, " in paths[0].read_text()
    only_globals = {"global.na.eTIV.volume": 1.5e6}
    paths = write_subject_stats(tmp_path / "b", only_globals)
    assert sorted(p.name for p in paths) == ["aseg.stats"]
    assert "# NRows 0 " in paths[0].read_text().splitlines()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"aseg_dkt.na.ctx-lh-insula.volume": 1.0}, "does not write"),
        ({"aparc.lh.superiorfrontl.area": 1.0}, "did you mean 'superiorfrontal'"),
        ({"global.na.sTIV.volume": 1.0}, "writes no such measure"),
        ({"global.lh.PialSurfArea.area": 1.0}, "its file is not written"),
        ({"aparc.lh.bankssts.thickness": float("nan")}, "finite"),
        ({"not-a-feature": 1.0}, "4 dot-separated parts"),
    ],
)
def test_bad_features_are_refused_and_nothing_is_written(
    tmp_path: Path, change: dict[str, float], message: str
) -> None:
    features = {k: v for k, v in _small_features().items() if k.startswith("aparc.lh.")}
    features.update(change)
    with pytest.raises(ValueError, match=re.escape(message)):
        write_subject_stats(tmp_path / "stats", features)
    assert not (tmp_path / "stats").exists()


def test_incomplete_row_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"aparc\.lh\.bankssts has thickness but lacks numvert"):
        write_subject_stats(tmp_path, {"aparc.lh.bankssts.thickness": 2.5})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"software": "spm"}, "software must be"),
        ({"version": "6.1"}, "unknown FreeSurfer version"),
        ({"version": "latest"}, "unknown FreeSurfer version"),
        ({"software": "fastsurfer", "version": "6.0"}, "7.x.y"),
        ({"identifying": {"hostnme": "x"}}, "did you mean 'hostname'"),
        ({"identifying": {"user": "two\nlines"}}, "one-line"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        write_subject_stats(tmp_path, {}, **kwargs)


def test_example_features_are_reproducible_and_realistic() -> None:
    a = example_features(np.random.default_rng(0), version="8.2.0")
    b = example_features(np.random.default_rng(0), version="8.2.0")
    c = example_features(np.random.default_rng(1), version="8.2.0")
    assert a == b
    assert a != c
    assert a.keys() == c.keys()
    thickness = [v for k, v in a.items() if k.endswith(".thickness") and "global" not in k]
    assert min(thickness) >= 1.5
    assert max(thickness) <= 4.0
    assert 1.0e6 < a["global.na.eTIV.volume"] < 2.5e6
    assert a["global.na.SurfaceHoles.count"] == (
        a["global.lh.SurfaceHoles.count"] + a["global.rh.SurfaceHoles.count"]
    )
    for key in ("global.lh.NumVert.count", "aparc.rh.insula.numvert", "aseg.na.CSF.nvoxels"):
        assert a[key] == int(a[key]) > 0
    with pytest.raises(TypeError, match="default_rng"):
        example_features(0)  # type: ignore[arg-type]


def test_writing_a_subject_takes_milliseconds(tmp_path: Path) -> None:
    features = _small_features()
    times = []
    for i in range(5):
        start = time.perf_counter()
        write_subject_stats(tmp_path / str(i), features)
        times.append(time.perf_counter() - start)
    assert sorted(times)[2] < 0.05  # ~5 ms on a laptop; generous for CI machines


# --------------------------------------------------------------------------------------------
# round trip through the readers


def _decimals(feature: str, software: str) -> int | str:
    """The precision the real files give a feature: decimals, or 'g' for %g."""
    parts = feature.split(".")
    atlas, region, measure = parts[0], ".".join(parts[2:-1]), parts[-1]
    if atlas == "global":
        if region in ("NumVert", "SurfaceHoles"):
            return 0
        if region in ("WhiteSurfArea", "PialSurfArea", "MeanThickness"):
            return "g"
        return 6  # %f in aseg.stats (brainvol.stats has 12 decimals)
    if atlas in ("aseg", "wmparc", "aseg_dkt", "wmparc_dkt", "cerebnet"):
        if measure == "nvoxels":
            return 0
        if measure == "volume":
            return 3 if software == "fastsurfer" and atlas in ("aseg", "aseg_dkt") else 1
        return 4
    if measure in ("numvert", "area", "volume", "foldind"):
        return 0
    return 1 if measure == "curvind" else 3


def _rounded(feature: str, value: float, software: str) -> float:
    decimals = _decimals(feature, software)
    return float(f"{value:g}") if decimals == "g" else float(f"{value:.{decimals}f}")


def _check_round_trip(expected: dict[str, float], got: dict[str, float], software: str) -> None:
    missing = sorted(k for k in expected if k not in got)
    assert not missing, f"{len(missing)} features not read back, e.g. {missing[:5]}"
    wrong = [
        (k, _rounded(k, v, software), got[k])
        for k, v in expected.items()
        if not math.isclose(got[k], _rounded(k, v, software), rel_tol=0, abs_tol=1.01e-6)
    ]
    assert not wrong, f"{len(wrong)} values differ (feature, expected, read), e.g. {wrong[:5]}"


#: features the writer puts in files beyond the ones asked for (real quirks, see _writer)
EXTRA = {
    ("freesurfer", "5.1"): {
        "global.na.BrainMaskNVox.count",
        "global.na.BrainMaskVol.volume",
        "global.na.BrainSegNVox.count",
        "global.na.BrainSegVol.volume",
        "global.na.BrainSegVolNotVent.volume",
    }
}


@pytest.mark.parametrize("flavor", FLAVORS, ids="-".join)
def test_round_trip_file_by_file(written: dict, flavor: tuple[str, str]) -> None:
    from morphml import io

    features, _, paths = written[flavor]
    tables: set[str] = set()
    for path in paths:
        sf = io.read_stats_file(path)
        # FastSurfer's surface stats are FreeSurfer's mris_anatomical_stats output: either
        # label is fair there; brainvol.stats has no header at all
        text = path.read_text()
        if text.startswith("# Title Segmentation") or (
            flavor[0] == "freesurfer" and text.startswith("# Table")
        ):
            assert sf.software.lower() == flavor[0], path.name
        got = sf.features()
        expected = {k: features[k] for k in got if not k.startswith("global.")}
        tables |= expected.keys()
        # whole-hemisphere NumVert/WhiteSurfArea of ?h.BA* differ from the cortex ones on purpose
        if not re.match(r"[lr]h\.(BA|entorhinal)", path.name):
            globals_ = {k for k in got if k.startswith("global.")}
            unexpected = globals_ - set(features) - EXTRA.get(flavor, set())
            assert not unexpected, (path.name, unexpected)
            expected.update({k: features[k] for k in globals_ if k in features})
        _check_round_trip(expected, got, flavor[0])
    assert tables == {k for k in features if not k.startswith("global.")}


@pytest.mark.parametrize("flavor", [pytest.param(f, id="-".join(f)) for f in FLAVORS])
def test_round_trip_whole_subject(tmp_path: Path, flavor: tuple[str, str]) -> None:
    from morphml import io

    software, version = flavor
    features = example_features(np.random.default_rng(0), software=software, version=version)
    write_subject_stats(tmp_path / "stats", features, software=software, version=version)
    record = io.read_subject(tmp_path)
    assert record.software.lower() == software
    assert record.version == ("2.4.2" if software == "fastsurfer" else version)
    extra = set(record.features) - set(features)
    assert extra == EXTRA.get(flavor, set())
    _check_round_trip(features, record.features, software)
