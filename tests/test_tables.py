"""Table importers: aparcstats2table / asegstats2table exports and wide tables with a map."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from morphml.exceptions import ColumnMapError, TableImportError
from morphml.io._columnmap import ColumnMap, load_column_map
from morphml.io._tables import (
    WideTable,
    identifying_kind,
    read_table_export,
    read_wide_table,
    recognise_column,
)

#: real data shared beside the repository (never copied into it)
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MAPS = Path(__file__).resolve().parents[1] / "configs" / "maps"
PCN = SHARED_DATA / "pcntoolkit-demo"
ENIGMA = SHARED_DATA / "enigma-toolbox" / "xdata"
PITT = SHARED_DATA / "golden" / "asegstats2table-Pitt_0050038"
FS51_STATS = SHARED_DATA / "visualqc-abide-fs51" / "id_001" / "stats"


@pytest.fixture(scope="module")
def fcon() -> WideTable:
    return read_wide_table(PCN / "fcon1000.csv", MAPS / "fcon1000.yaml")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def simple_map(**extra: object) -> ColumnMap:
    data: dict[str, object] = {
        "id": "sub",
        "age": "age",
        "sex": {"column": "sex", "coding": {1: "male", 2: "female"}},
        "site_value": "A",
        "surface_atlas": "aparc",
    }
    data.update(extra)
    return ColumnMap.from_dict(data)


GOOD = "sub,age,sex,L_insula_thickavg,Lthal\ns1,30,1,2.9,7000\ns2,41.5,2,3.1,6900\n"


# --------------------------------------------------------------------------- recognition


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("lh_G&S_frontomargin_thickness", "a2009s.lh.G_and_S_frontomargin.thickness"),
        ("lh_G_and_S_frontomargin_thickness", "a2009s.lh.G_and_S_frontomargin.thickness"),
        ("rh_G_Ins_lg&S_cent_ins_area", "a2009s.rh.G_Ins_lg_and_S_cent_ins.area"),
        ("rh_G_Ins_lG&S_cent_ins_area", "a2009s.rh.G_Ins_lg_and_S_cent_ins.area"),
        ("lh_superiorfrontal_thicknessstd", "aparc.lh.superiorfrontal.thicknessstd"),
        ("rh_insula_curvind", "aparc.rh.insula.curvind"),
        ("lh_MeanThickness_thickness", "global.lh.MeanThickness.thickness"),
        ("rh_WhiteSurfArea_area", "global.rh.WhiteSurfArea.area"),
        ("lh_NumVert", "global.lh.NumVert.count"),
        ("Left-Thalamus-Proper", "aseg.na.Left-Thalamus.volume"),
        ("Left-Thalamus", "aseg.na.Left-Thalamus.volume"),
        ("CC_Mid_Anterior", "aseg.na.CC_Mid_Anterior.volume"),
        ("EstimatedTotalIntraCranialVol", "global.na.eTIV.volume"),
        ("IntraCranialVol", "global.na.eTIV.volume"),
        ("eTIV", "global.na.eTIV.volume"),
        ("ICV", "global.na.eTIV.volume"),
        ("lhCortexVol", "global.lh.CortexVol.volume"),
        ("lhCorticalWhiteMatterVol", "global.lh.CerebralWhiteMatterVol.volume"),
        ("SurfaceHoles", "global.na.SurfaceHoles.count"),
        ("rhSurfaceHoles", "global.rh.SurfaceHoles.count"),
        ("BrainSegVol-to-eTIV", "global.na.BrainSegVol-to-eTIV.ratio"),
        ("L_bankssts_thickavg", "aparc.lh.bankssts.thickness"),
        ("R_insula_surfavg", "aparc.rh.insula.area"),
        ("LThickness", "global.lh.MeanThickness.thickness"),
        ("RSurfArea", "global.rh.WhiteSurfArea.area"),
        ("LLatVent", "aseg.na.Left-Lateral-Ventricle.volume"),
        ("Rthal", "aseg.na.Right-Thalamus.volume"),
        ("Laccumb", "aseg.na.Left-Accumbens-area.volume"),
        ("Rhippo", "aseg.na.Right-Hippocampus.volume"),
        # not features
        ("age", None),
        ("site", None),
        ("avg_en", None),
        ("lh_nosuchregion_thickness", None),
        ("MeanThickness", None),  # per hemisphere only
        ("lhBrainSegVol", None),  # whole-brain only
        ("totalBrainVolume", None),  # derived sum, not BrainSegVol
        ("totalMeanCorticalThickness", None),
    ],
)
def test_recognise_column(name: str, expected: str | None) -> None:
    assert recognise_column(name) == expected


def test_dk_and_dkt_are_never_merged() -> None:
    assert recognise_column("lh_insula_thickness") == "aparc.lh.insula.thickness"
    assert (
        recognise_column("lh_insula_thickness", surface_atlas="DKT") == "DKT.lh.insula.thickness"
    )
    # bankssts is not a DKT region: not recognised rather than filed under the wrong atlas
    assert recognise_column("lh_bankssts_thickness", surface_atlas="DKT") is None
    # Destrieux names are unambiguous whatever the surface atlas
    assert recognise_column("lh_S_central_area", surface_atlas="DKT") == "a2009s.lh.S_central.area"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("PatientName", "a name"),
        ("first_name", "a name"),
        ("dob", "a date"),
        ("BirthDate", "a date"),
        ("scan_date", "a date"),
        ("MRN", "a patient record number"),
        ("patient_number", "a patient record number"),
        ("Email", "contact details"),
        ("phone", "contact details"),
        ("home_address", "contact details"),
        ("Comments", "free text"),
        ("notes", "free text"),
        ("age", None),
        ("sex", None),
        ("Left-Thalamus", None),
        ("lh_G&S_frontomargin_thickness", None),
        # whole tokens: "date" inside a brain structure or another word is no date
        ("Right-Caudate_Z_predict", None),
        ("Left-Caudate", None),
        ("candidate_group", None),
        ("birthdate", "a date"),
        ("ScanDate", "a date"),
        ("date_of_birth", "a date"),
        ("DateOfScan", "a date"),
        ("dateofbirth", "a date"),
        ("visit_datetime", "a date"),
    ],
)
def test_identifying_kind(name: str, kind: str | None) -> None:
    assert identifying_kind(name) == kind


# --------------------------------------------------------------------------- real wide tables


def test_fcon1000_imports_with_canonical_ids(fcon: WideTable) -> None:
    features, participants = fcon.features, fcon.participants
    assert features.shape[0] == 1078 == len(participants)
    for fid in (
        "a2009s.lh.G_and_S_frontomargin.thickness",
        "a2009s.rh.G_Ins_lg_and_S_cent_ins.thickness",
        "aseg.na.Left-Thalamus.volume",
        "global.na.eTIV.volume",
        "global.lh.MeanThickness.thickness",
        "global.na.SurfaceHoles.count",
    ):
        assert fid in features.columns
    assert all(dt == np.float64 for dt in features.dtypes)
    assert features.index.name == "id" and features.index.is_unique
    assert list(participants["id"]) == list(features.index)
    # eTIV and EstimatedTotalIntraCranialVol are one feature with identical values
    assert fcon.duplicate_columns == {"EstimatedTotalIntraCranialVol": "eTIV"}
    assert len(features.columns) == 222 - 5 - 1
    assert fcon.source_file == "fcon1000.csv"


def test_fcon1000_participants_follow_the_map(fcon: WideTable) -> None:
    participants = fcon.participants
    raw = pd.read_csv(PCN / "fcon1000.csv", usecols=["sub_id", "age", "sex", "avg_en", "site"])
    assert participants["sex"].value_counts().to_dict() == {"F": 589, "M": 489}
    # the map says 0 = female, 1 = male
    expected = raw["sex"].map({0: "F", 1: "M"}).tolist()
    assert participants["sex"].tolist() == expected
    np.testing.assert_array_equal(participants["age"].to_numpy(), raw["age"].to_numpy())
    np.testing.assert_array_equal(participants["euler_mean"].to_numpy(), raw["avg_en"].to_numpy())
    assert participants["site"].nunique() == 23
    assert list(participants.columns) == ["id", "age", "sex", "site", "euler_mean"]


def test_fcon1000_feature_values_match_the_file(fcon: WideTable) -> None:
    # round_trip: pandas' default float parser can be off by one ulp from float(text)
    raw = pd.read_csv(PCN / "fcon1000.csv", index_col="sub_id", float_precision="round_trip")
    features = fcon.features
    pairs = {
        "lh_G&S_frontomargin_thickness": "a2009s.lh.G_and_S_frontomargin.thickness",
        "Left-Thalamus-Proper": "aseg.na.Left-Thalamus.volume",
        "EstimatedTotalIntraCranialVol": "global.na.eTIV.volume",
        "rhSurfaceHoles": "global.rh.SurfaceHoles.count",
    }
    for column, fid in pairs.items():
        np.testing.assert_array_equal(features[fid].to_numpy(), raw[column].to_numpy())


def test_destrieux_spellings_give_one_id(fcon: WideTable) -> None:
    golden = read_table_export(PITT / "lh.aparc.a2009s_table_thickness.tsv")
    fs5 = "lh_G_and_S_frontomargin_thickness"
    fs6 = "lh_G&S_frontomargin_thickness"
    assert fs5 in (PITT / "lh.aparc.a2009s_table_thickness.tsv").read_text()
    assert fs6 in (PCN / "fcon1000.csv").open().readline()
    fid = "a2009s.lh.G_and_S_frontomargin.thickness"
    assert fid in golden.columns and fid in fcon.features.columns
    shared = set(golden.columns) & set(fcon.features.columns)
    assert len([f for f in shared if f.startswith("a2009s.lh.")]) == 74


def test_ixi_imports_with_participants_file() -> None:
    table = read_wide_table(PCN / "IXI_aparc_thickness.csv", MAPS / "ixi.yaml")
    # 576 scans; two ids have contradictory rows in IXI_age_gender.csv and are left out
    assert set(table.dropped_ids) == {"sub-IXI219", "sub-IXI328"}
    assert "IXI_age_gender.csv" in table.dropped_ids["sub-IXI328"]
    assert table.features.shape == (574, 72)
    assert "aparc.lh.bankssts.thickness" in table.features.columns
    assert "global.na.BrainSegVolNotVent.volume" in table.features.columns
    assert table.participants_file == "IXI_age_gender.csv"
    # 18 scans have no row in the participants file: kept, with age and sex missing
    assert len(table.without_participants) == 18
    assert table.participants["age"].isna().sum() == 18
    p = table.participants.set_index("id")
    assert p.loc["sub-IXI002", "sex"] == "F"  # coded 2 = female
    assert p.loc["sub-IXI012", "sex"] == "M"  # coded 1 = male
    assert p.loc["sub-IXI002", "age"] == pytest.approx(35.80013689)
    assert set(p["site"]) == {"ixi"}
    assert table.ignored == ["site"]


def test_ixi_conflicting_duplicates_are_an_error_by_default(tmp_path: Path) -> None:
    data = load_column_map(MAPS / "ixi.yaml").model_dump(exclude={"duplicate_ids"})
    data["participants"] = str(PCN / "IXI_age_gender.csv")
    with pytest.raises(TableImportError, match=r"IXI_age_gender\.csv lines 191 and 192"):
        read_wide_table(PCN / "IXI_aparc_thickness.csv", ColumnMap.from_dict(data))


@pytest.mark.parametrize(
    ("name", "n_features", "probe"),
    [
        ("metr1_SubVol.csv", 17, ("Lthal", "aseg.na.Left-Thalamus.volume")),
        ("metr2_CortThick.csv", 73, ("L_bankssts_thickavg", "aparc.lh.bankssts.thickness")),
        ("metr3_CortSurf.csv", 73, ("RSurfArea", "global.rh.WhiteSurfArea.area")),
    ],
)
def test_enigma_example_imports(name: str, n_features: int, probe: tuple[str, str]) -> None:
    table = read_wide_table(ENIGMA / name, MAPS / "enigma-example.yaml")
    assert table.features.shape == (20, n_features)
    raw = pd.read_csv(ENIGMA / name, index_col="SubjID", float_precision="round_trip")
    column, fid = probe
    np.testing.assert_array_equal(table.features[fid].to_numpy(), raw[column].to_numpy())
    np.testing.assert_array_equal(
        table.features["global.na.eTIV.volume"].to_numpy(), raw["ICV"].to_numpy()
    )
    p = table.participants
    assert p["diagnosis"].value_counts().to_dict() == {"patient": 10, "control": 10}
    assert p["sex"].value_counts().to_dict() == {"F": 14, "M": 6}
    # controls have no age at onset: missing, not an error
    assert p.loc[p["diagnosis"] == "control", "age_at_onset"].isna().all()
    assert table.not_imported == {
        "ICV": "feature global.na.eTIV.volume in the participants file cov.csv"
    }


def test_row_filter_and_ignore_globs(tmp_path: Path) -> None:
    cmap = write(
        tmp_path,
        "cobre.yaml",
        "id: sub_id\nage: age\nsex: {column: sex, coding: {0: female, 1: male}}\nsite: site\n"
        "rows: {column: group, keep: [Control, SZ]}\n"
        "phenotypes:\n  diagnosis: {column: group, type: binary, levels: [Control, SZ]}\n"
        "ignore: ['*_Z_predict', sitenum, avg_en]\n",
    )
    table = read_wide_table(PCN / "fcon1000_te_Z.csv", cmap)
    assert len(table.features) == 124
    assert table.n_filtered_out == 507
    assert table.participants["diagnosis"].value_counts().to_dict() == {"Control": 63, "SZ": 61}
    assert "sitenum" in table.ignored
    assert not any(c.endswith("_Z_predict") for c in table.features.columns)


# --------------------------------------------------------------------------- table exports


def _raw_stats_rows(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if not line.startswith("#")]


def _raw_measures(path: Path) -> dict[str, float]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("# Measure"):
            parts = [p.strip() for p in line[len("# Measure") :].split(",")]
            out[parts[1]] = float(parts[3])
    return out


@pytest.mark.parametrize("hemi", ["lh", "rh"])
@pytest.mark.parametrize(("parc", "atlas"), [("aparc", "aparc"), ("aparc.a2009s", "a2009s")])
def test_golden_surface_tables_equal_the_raw_stats(hemi: str, parc: str, atlas: str) -> None:
    stats = _raw_stats_rows(FS51_STATS / f"{hemi}.{parc}.stats")
    columns = {"area": 2, "volume": 3, "thickness": 4}  # SurfArea GrayVol ThickAvg
    for measure, col in columns.items():
        table = read_table_export(PITT / f"{hemi}.{parc}_table_{measure}.tsv")
        assert list(table.index) == ["Pitt_0050038"]
        row = table.iloc[0]
        for fields in stats:
            fid = f"{atlas}.{hemi}.{fields[0].replace('&', '_and_')}.{measure}"
            assert row[fid] == float(fields[col]), fid
        assert sum(c.startswith(f"{atlas}.") for c in table.columns) == len(stats)
    measures = _raw_measures(FS51_STATS / f"{hemi}.{parc}.stats")
    thick = read_table_export(PITT / f"{hemi}.{parc}_table_thickness.tsv").iloc[0]
    area = read_table_export(PITT / f"{hemi}.{parc}_table_area.tsv").iloc[0]
    if parc == "aparc":  # FreeSurfer 5.1 aparcstats2table adds the globals to DK tables only
        assert thick[f"global.{hemi}.MeanThickness.thickness"] == measures["MeanThickness"]
        assert area[f"global.{hemi}.WhiteSurfArea.area"] == measures["WhiteSurfArea"]


def test_golden_aseg_table_equals_the_raw_stats() -> None:
    table = read_table_export(PITT / "aseg_table.tsv")
    row = table.loc["Pitt_0050038"]
    stats = _raw_stats_rows(FS51_STATS / "aseg.stats")
    for fields in stats:
        name = fields[4].replace("-Proper", "")
        assert row[f"aseg.na.{name}.volume"] == float(fields[3]), name
    measures = _raw_measures(FS51_STATS / "aseg.stats")
    assert row["global.na.eTIV.volume"] == measures["ICV"]
    assert row["global.lh.CortexVol.volume"] == measures["lhCortexVol"]
    assert row["global.na.CerebralWhiteMatterVol.volume"] == measures["CorticalWhiteMatterVol"]
    assert row["global.na.SupraTentorialVol.volume"] == measures["SupraTentorialVol"]
    assert len(table.columns) == len(stats) + len(measures)


def test_golden_tables_equal_their_own_cells() -> None:
    for path in sorted(PITT.glob("*.tsv")):
        _, values = (line.split("\t") for line in path.read_text().splitlines())
        table = read_table_export(path)
        np.testing.assert_array_equal(table.iloc[0].to_numpy(), [float(v) for v in values[1:]])
        assert table.attrs["source_file"] == path.name


def test_brainstats_maps_real_measures_and_lists_derived_ones() -> None:
    table = read_table_export(PITT / "brainstats_abide_with_pial.txt")
    row = table.loc["Pitt_0050038"]
    assert row["global.na.TotalGrayVol.volume"] == 704178.594518
    assert row["global.na.eTIV.volume"] == 964342.335086
    assert row["global.lh.MeanThickness.thickness"] == 2.7559
    assert row["global.rh.PialSurfArea.area"] == 102476
    assert set(table.attrs["not_imported"]) == {
        "totalMeanCorticalThickness",
        "totalPialSurfArea",
        "totalWhiteSurfArea",
        "totalBrainVolume",
    }
    # totalBrainVolume is CortexVol + CerebralWhiteMatterVol + SubCortGrayVol, not BrainSegVol
    assert "global.na.BrainSegVol.volume" not in table.columns
    assert len(table.columns) == 10


def test_export_header_names_the_atlas(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "lh.dkt.tsv",
        "lh.aparc.DKTatlas.thickness\tlh_insula_thickness\tlh_MeanThickness_thickness\n"
        "s1\t2.9\t2.5\n",
    )
    table = read_table_export(path)
    assert list(table.columns) == ["DKT.lh.insula.thickness", "global.lh.MeanThickness.thickness"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lh.aparc.thickness\trh_insula_thickness\ns1\t2.9\n", r"line 1: columns 'rh_insula"),
        ("lh.aparc.thickness\tlh_insula_area\ns1\t2.9\n", r"line 1: columns 'lh_insula_area'"),
        ("lh.aparc.thickness\tlh_foo_thickness\ns1\t2.9\n", r"cannot tell .* 'lh_foo_thickness'"),
        ("Measure:volume\tLeft-Thalamus\ns1\tlarge\n", r"t\.tsv line 2, column 'Left-Thalamus'"),
        ("Measure:volume\tLeft-Thalamus\ns1\t1\ns1\t2\n", r"t\.tsv lines 2 and 3: the same id"),
        ("lh.aparc.a2005s.area\tlh_x_area\ns1\t1\n", r"unknown parcellation 'aparc\.a2005s'"),
        ("Measure:volume\tLeft-Thalamus\n", r"t\.tsv: the file has a header line but no data"),
        ("", r"t\.tsv: the file is empty"),
    ],
)
def test_bad_exports(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TableImportError, match=message):
        read_table_export(write(tmp_path, "t.tsv", text))


# --------------------------------------------------------------------------- bad wide tables


def test_good_small_table_and_missing_cells(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", GOOD + "s3,,2,,\n")
    table = read_wide_table(path, simple_map())
    assert list(table.features.columns) == [
        "aparc.lh.insula.thickness",
        "aseg.na.Left-Thalamus.volume",
    ]
    assert np.isnan(table.features.loc["s3"]).all()
    assert np.isnan(table.participants["age"].iloc[2])
    assert table.participants["sex"].tolist() == ["M", "F", "F"]


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("", TableImportError, r"t\.csv: the file is empty"),
        ("\n" + GOOD, TableImportError, r"t\.csv line 1: blank \(expected the header line\)"),
        ("sub,age,sex\n", TableImportError, r"t\.csv: the file has a header line but no data"),
        (
            GOOD.replace("sub,", "subject,"),
            ColumnMapError,
            r"t\.csv line 1: no id column 'sub' \(map key 'id'\); closest: 'subject'",
        ),
        (
            GOOD + "s1,30,1,2.5,7000\n",
            TableImportError,
            r"t\.csv lines 2 and 4: the same id \(column 'sub'\) appears twice with different "
            r"values in 'L_insula_thickavg'",
        ),
        (GOOD + "  ,30,1,2.5,7000\n", TableImportError, r"t\.csv line 4, column 'sub': the id"),
        (
            GOOD + "s3,30,0,2.5,7000\n",
            ColumnMapError,
            r"t\.csv line 4, column 'sex': value '0' is not in the map's sex\.coding",
        ),
        (
            GOOD + "s3,30,1,2.5,7.000,5\n",
            TableImportError,
            r"t\.csv: cannot be parsed as a table",
        ),
        (
            GOOD + "s3,30,1,thick,7000\n",
            TableImportError,
            r"t\.csv line 4, column 'L_insula_thickavg': expected a finite number .* 'thick'",
        ),
        (
            GOOD + "s3,30,1,inf,7000\n",
            TableImportError,
            r"t\.csv line 4, column 'L_insula_thickavg': expected a finite number",
        ),
        (
            GOOD + "s3,thirty,1,2.5,7000\n",
            TableImportError,
            r"t\.csv line 4, column 'age': expected age in years \(a number\), got 'thirty'",
        ),
        (
            GOOD + "s3,130,1,2.5,7000\n",
            TableImportError,
            r"t\.csv line 4, column 'age': expected age in years between 0 and 120, got 130",
        ),
        (
            "sub,age,sex,L_insula_thickavg,L_insula_thickavg\ns1,3,1,2,2\n",
            TableImportError,
            r"t\.csv line 1: column 'L_insula_thickavg' appears twice",
        ),
        (
            "sub,age,sex,ICV,eTIV\ns1,3,1,1500000,1400000\n",
            TableImportError,
            r"t\.csv line 2: columns 'ICV' and 'eTIV' both hold feature global\.na\.eTIV",
        ),
    ],
)
def test_bad_wide_tables(tmp_path: Path, text: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        read_wide_table(write(tmp_path, "t.csv", text), simple_map())


def test_sessions_let_an_id_repeat(tmp_path: Path) -> None:
    text = "sub,visit,age,sex,L_insula_thickavg\ns1,1,30,1,2.9\ns1,2,32,1,2.8\ns2,1,40,2,3.0\n"
    table = read_wide_table(write(tmp_path, "t.csv", text), simple_map(session="visit"))
    assert list(table.features.index) == ["s1", "s1", "s2"]
    assert table.participants["session"].tolist() == ["1", "2", "1"]
    clash = text + "s1,2,33,1,2.7\n"
    with pytest.raises(TableImportError, match=r"lines 3 and 5: the same id"):
        read_wide_table(write(tmp_path, "u.csv", clash), simple_map(session="visit"))


def test_participants_path_argument_and_filter_in_participants(tmp_path: Path) -> None:
    feats = write(tmp_path, "f.tsv", "id\tLthal\na\t7000\nb\t6900\nc\t6800\n")
    people = write(tmp_path, "p.tsv", "id\tgroup\tage\na\tSZ\t30\nb\tHC\t31\n")
    cmap = ColumnMap.from_dict(
        {"id": "id", "age": "age", "site_value": "A", "rows": {"column": "group", "keep": ["SZ"]}}
    )
    table = read_wide_table(feats, cmap, participants_path=people)
    assert list(table.features.index) == ["a"]
    assert table.n_filtered_out == 2  # b is HC, c has no participants row
    assert table.participants_file == "p.tsv"
    assert table.participants["age"].tolist() == [30.0]


def test_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", GOOD + "\n\ns3,30,1,x,7000\n")
    with pytest.raises(TableImportError, match=r"line 6, column 'L_insula_thickavg'"):
        read_wide_table(path, simple_map())


def test_identical_repeated_rows_collapse(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", GOOD + "s1,30,1,2.9,7000\n")
    assert len(read_wide_table(path, simple_map()).features) == 2


def test_unrecognised_columns_are_one_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", GOOD.replace("Lthal", "scanner").replace(",7000", ",x"))
    path.write_text(path.read_text().replace(",6900", ",y"))
    with pytest.raises(ColumnMapError, match=r"'scanner'.*Add them to 'ignore'.*'features'"):
        read_wide_table(path, simple_map())
    assert read_wide_table(path, simple_map(ignore=["scan*"])).ignored == ["scanner"]
    skipped = read_wide_table(path, simple_map(unrecognised="skip"))
    assert skipped.unrecognised == ["scanner"]
    override = read_wide_table(
        write(tmp_path, "u.csv", GOOD.replace("Lthal", "thal_l")),
        simple_map(features={"thal_l": "aseg.na.Left-Thalamus.volume"}),
    )
    assert "aseg.na.Left-Thalamus.volume" in override.features.columns


@pytest.mark.parametrize("column", ["PatientName", "dob", "Email", "comments", "MRN"])
def test_identifying_columns_are_refused_unless_mapped(tmp_path: Path, column: str) -> None:
    text = GOOD.replace("\ns1,", "\nsecret1,").splitlines()
    lines = [text[0] + f",{column}"] + [line + ",x" for line in text[1:]]
    path = write(tmp_path, "t.csv", "\n".join(lines) + "\n")
    with pytest.raises(ColumnMapError, match=rf"never imported: '{column}' in t\.csv"):
        read_wide_table(path, simple_map())
    table = read_wide_table(path, simple_map(ignore=[column]))
    assert column not in table.participants.columns
    assert table.ignored == [column]


def test_identifying_column_as_phenotype_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "sub,age,scan_date\ns1,30,2020-01-01\n")
    cmap = ColumnMap.from_dict(
        {
            "id": "sub",
            "age": "age",
            "site_value": "A",
            "phenotypes": {"visit": {"column": "scan_date", "type": "categorical"}},
        }
    )
    with pytest.raises(ColumnMapError, match=r"'scan_date', which looks like a date"):
        read_wide_table(path, cmap)


def test_age_derived_from_dates_and_dates_dropped(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.csv",
        "sub,dob,ScanDate,Lthal\ns1,1980-03-01,2020-03-01,7000\ns2,1990-01-01,,6900\n",
    )
    cmap = ColumnMap.from_dict(
        {
            "id": "sub",
            "site_value": "A",
            "identifying": {"birth_date": "dob", "scan_date": "ScanDate"},
        }
    )
    table = read_wide_table(path, cmap)
    assert table.participants["age"].iloc[0] == pytest.approx(40.0, abs=0.01)
    assert np.isnan(table.participants["age"].iloc[1])
    assert list(table.participants.columns) == ["id", "age", "sex", "site"]
    bad = write(tmp_path, "b.csv", "sub,dob,ScanDate,Lthal\ns1,01/03/1980,2020-03-01,7000\n")
    with pytest.raises(TableImportError, match=r"b\.csv line 2, column 'dob'") as info:
        read_wide_table(bad, cmap)
    assert "1980" not in str(info.value)  # a birth date never reaches a message


def test_dkt_table_must_say_so(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "sub,lh_insula_thickness,lh_cuneus_thickness\ns1,2.9,2.0\n")
    base = {"id": "sub", "site_value": "A"}
    with pytest.raises(ColumnMapError, match=r"none of bankssts, frontalpole, temporalpole"):
        read_wide_table(path, ColumnMap.from_dict(base))
    dkt = read_wide_table(path, ColumnMap.from_dict(base | {"surface_atlas": "DKT"}))
    assert list(dkt.features.columns) == ["DKT.lh.insula.thickness", "DKT.lh.cuneus.thickness"]
    dk = read_wide_table(path, ColumnMap.from_dict(base | {"surface_atlas": "aparc"}))
    assert dk.features.columns[0] == "aparc.lh.insula.thickness"


# --------------------------------------------------------------------------- column maps


def test_shipped_maps_load() -> None:
    for path in sorted(MAPS.glob("*.yaml")):
        cmap = load_column_map(path)
        assert cmap.description


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "id: s\nsite_value: A\nphenotypess: {}\n",
            r"unknown key 'phenotypess'; did you mean 'phenotypes'",
        ),
        (
            "id: s\nsite_value: A\nsex: {colum: sex, coding: {1: male}}\n",
            r"'sex\.colum'; did you mean 'column'",
        ),
        (
            "id: s\nsite_value: A\nphenotypes: {dx: {column: Dx, typ: binary}}\n",
            r"'phenotypes\.dx\.typ'; did you mean 'type'",
        ),
        ("id: s\nsite_value: A\nsex: {column: sex}\n", r"missing required key 'sex\.coding'"),
        ("id: s\nsite_value: A\nsex: {column: sex, coding: {1: man}}\n", r"sex\.coding\.1"),
        ("id: s\n", r"exactly one of 'site'"),
        ("id: s\nsite: x\nsite_value: A\n", r"exactly one of 'site'"),
        ("id: s\nsite_value: A\nfeatures: {x: aparc.lh.insula}\n", r"features\.x|column 'x'"),
        (
            "id: s\nsite_value: A\nphenotypes: {dx: {column: Dx, type: binary}}\n",
            r"needs 'coding'",
        ),
        ("id: s\nsite_value: A\nphenotypes: {age: {column: a, type: continuous}}\n", r"clashes"),
        ("id: [s\n", r"line \d+: not valid YAML"),
        ("", r"the column map is empty"),
        ("id: s\nsite_value: A\nsex: {column: sex, coding: {yes: male}}\n", r"quote it"),
    ],
)
def test_bad_maps(tmp_path: Path, yaml_text: str, message: str) -> None:
    with pytest.raises(ColumnMapError, match=message) as info:
        load_column_map(write(tmp_path, "m.yaml", yaml_text))
    assert "m.yaml" in str(info.value)


def test_map_column_missing_from_table(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", GOOD)
    cmap = simple_map(sex={"column": "gender", "coding": {1: "male", 2: "female"}})
    with pytest.raises(ColumnMapError, match=r"map key 'sex\.column' names column 'gender', wh"):
        read_wide_table(path, cmap)


def test_misspelt_map_key_in_yaml_file_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "id: s\nsite_value: A\nignroe: [x]\n")
    with pytest.raises(ColumnMapError, match=re.escape("did you mean 'ignore'")):
        load_column_map(path)
