"""Tables as distributed: FreeSurfer table sets with a phenotype file, PCNtoolkit-style wide
CSVs with their quirks, and external validation of a pretrain run on another source."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from morphml.cli import cli
from morphml.config import CohortSpec, FeatureSpec, PretrainConfig
from morphml.db import connect, ingest
from morphml.exceptions import ConfigError, IngestError, TableImportError
from morphml.features import load_frame
from morphml.io import ColumnMap, is_table_export, read_table_set, read_wide_table
from morphml.pipelines import fit_pretrain, predict_run
from morphml.reports import render_html, summarize
from morphml.simulate import simulate_cohort, write_table_exports, write_wide_csv
from tests.conftest import SHARED_DATA
from tests.test_fit import MAP, synthetic_table
from tests.test_ingest import snapshot

GOLDEN = SHARED_DATA / "golden" / "asegstats2table-Pitt_0050038"
GOLDEN_TABLES = sorted(GOLDEN.glob("*.tsv"))
SET_MAP = """\
participants: {path: ../pheno/phenotype.csv, id: FILE_ID}
age: AGE_AT_SCAN
sex: {column: SEX, coding: {1: male, 2: female}}
site: SITE_ID
"""
WIDE_MAP = """\
id: sub_id
age: age
sex: {column: sex, coding: {0: female, 1: male}}
site: site
sessions_from: age
"""


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return tmp_path / "key"


def run_cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "cohort"
    simulate_cohort(
        out, n_subjects=24, n_sites=2, seed=5, layout="freesurfer", corrupt_fraction=0.0,
        qc_fail_fraction=0.0, longitudinal_fraction=0.3,
    )  # fmt: skip
    return out


def golden_release(tmp_path: Path, extra_rows: str = "") -> tuple[Path, Path]:
    """The 13 real tables, a phenotype CSV beside them and a map in another folder."""
    (tmp_path / "pheno").mkdir()
    (tmp_path / "pheno" / "phenotype.csv").write_text(
        "FILE_ID,AGE_AT_SCAN,SEX,SITE_ID\nPitt_0050038,20.1,1,PITT\n" + extra_rows
    )
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "abide.yaml").write_text(SET_MAP)
    return tmp_path / "maps" / "abide.yaml", tmp_path / "pheno" / "phenotype.csv"


# --------------------------------------------------------------------------- table sets


def test_the_13_golden_tables_ingest_in_one_command(tmp_path: Path, key: Path) -> None:
    assert len(GOLDEN_TABLES) == 13 and all(is_table_export(p) for p in GOLDEN_TABLES)
    cmap, _ = golden_release(tmp_path)
    db = tmp_path / "db.duckdb"
    code, out = run_cli(
        "ingest", *GOLDEN_TABLES, "--map", cmap, "--source", "abide", "--db", db,
        "--key-file", key,
    )  # fmt: skip
    assert code == 0, out
    assert "1 scans" in out
    with connect(db) as con:
        age, n = con.execute(
            "SELECT s.age, count(*) FROM scans s JOIN measures m USING (scan_key) GROUP BY 1"
        ).fetchone()
        sex = con.execute("SELECT sex FROM subjects").fetchone()[0]
        thal = con.execute(
            "SELECT m.value FROM measures m JOIN features f USING (feature_idx) "
            "WHERE f.feature_id = 'aseg.na.Left-Thalamus.volume'"
        ).fetchone()
        dump = str(con.execute("SELECT * FROM scans").fetchall())
    assert age == pytest.approx(20.1) and sex == "M"
    assert n > 600  # DK and Destrieux thickness/area/volume of both hemispheres + aseg
    assert thal is not None
    assert "Pitt" not in dump


def test_table_set_reader_joins_and_lists_one_sided_ids(tmp_path: Path) -> None:
    cmap, _ = golden_release(tmp_path, "Pitt_0050999,30,2,PITT\n")
    table = read_table_set(GOLDEN_TABLES, cmap)
    assert list(table.features.index) == ["Pitt_0050038"]
    assert table.participants_only == ["Pitt_0050999"]
    assert table.without_participants == []
    assert table.participants_file == "phenotype.csv"


def test_one_sided_ids_stop_the_ingest_or_are_skipped(tmp_path: Path, key: Path) -> None:
    cmap, _ = golden_release(tmp_path, "Pitt_0050999,30,2,PITT\n")
    db = tmp_path / "db.duckdb"
    args = ["ingest", *GOLDEN_TABLES, "--map", cmap, "--source", "abide", "--db", db,
            "--key-file", key]  # fmt: skip
    code, out = run_cli(*args)
    assert code == 2
    line = one_line_error(out)
    assert "1 ids of phenotype.csv have no row" in line and "Pitt_0050999" in line
    assert "--on-error skip" in line
    code, out = run_cli(*args, "--on-error", "skip")
    assert code == 0, out
    assert "Pitt_0050999" in out  # listed on the terminal ...
    with connect(db) as con:
        stored = str(con.execute("SELECT * FROM ingest_errors").fetchall())
    assert "Pitt" not in stored  # ... never stored
    assert "matches no table row" in stored


def test_simulated_table_set_keeps_ages_and_sexes(cohort: Path, tmp_path: Path, key: Path) -> None:
    files = write_table_exports(cohort, tmp_path / "release" / "pheno")
    tables = [f for f in files if f.suffix == ".tsv"]
    assert len(tables) == 13
    (tmp_path / "release" / "maps").mkdir()
    (tmp_path / "release" / "maps" / "set.yaml").write_text(SET_MAP)
    db = tmp_path / "db.duckdb"
    summary = ingest(
        tables, column_map=tmp_path / "release" / "maps" / "set.yaml", source="sim", db=db,
        key_file=key,
    )  # fmt: skip
    pheno = pd.read_csv(tmp_path / "release" / "pheno" / "phenotype.csv")
    assert summary.n_scans == len(pheno)
    with connect(db) as con:
        ages = sorted(r[0] for r in con.execute("SELECT age FROM scans").fetchall())
    assert ages == pytest.approx(sorted(pheno["AGE_AT_SCAN"]))


def test_participants_option_wins_over_the_map(tmp_path: Path, key: Path) -> None:
    cmap, pheno = golden_release(tmp_path)
    cmap.write_text(SET_MAP.replace("../pheno/phenotype.csv", "nowhere.csv"))
    code, out = run_cli(
        "ingest", *GOLDEN_TABLES, "--map", cmap, "--participants", pheno, "--source", "abide",
        "--db", tmp_path / "db.duckdb", "--key-file", key,
    )  # fmt: skip
    assert code == 0, out


def test_missing_participants_file_is_one_line_naming_path_and_origin(
    tmp_path: Path, key: Path
) -> None:
    cmap, _ = golden_release(tmp_path)
    db = tmp_path / "db.duckdb"
    base = ["ingest", *GOLDEN_TABLES, "--source", "abide", "--db", db, "--key-file", key]
    assert run_cli(*base, "--map", cmap)[0] == 0
    before = snapshot(db)
    cmap.write_text(SET_MAP.replace("../pheno/phenotype.csv", "gone.csv"))
    code, out = run_cli(*base, "--map", cmap)
    assert code == 2
    line = one_line_error(out)
    assert "'gone.csv'" in line and "the column map's 'participants' key" in line
    assert str(tmp_path / "maps" / "gone.csv") in line
    code, out = run_cli(*base, "--map", cmap, "--participants", tmp_path / "absent.csv")
    assert code == 2
    line = one_line_error(out)
    assert "absent.csv" in line and "--participants" in line
    assert snapshot(db) == before


def test_bad_participants_row_fails_cleanly_or_is_skipped(tmp_path: Path, key: Path) -> None:
    cmap, pheno = golden_release(tmp_path)
    pheno.write_text("FILE_ID,AGE_AT_SCAN,SEX,SITE_ID\nPitt_0050038,20.1,9,PITT\n")
    db = tmp_path / "db.duckdb"
    args = ["ingest", *GOLDEN_TABLES, "--map", cmap, "--source", "abide", "--db", db,
            "--key-file", key]  # fmt: skip
    code, out = run_cli(*args)
    assert code == 2
    line = one_line_error(out)
    assert "phenotype.csv line 2, column 'SEX'" in line and "sex.coding" in line
    assert not db.exists() or snapshot(db)["scans"] == []
    # with a good second person, --on-error skip ingests the rest and records the reason
    pheno.write_text(
        "FILE_ID,AGE_AT_SCAN,SEX,SITE_ID\nPitt_0050038,20.1,9,PITT\nPitt_0050999,30,2,PITT\n"
    )
    code, out = run_cli(*args, "--on-error", "skip")
    assert code == 0, out
    with connect(db) as con:
        errors = con.execute("SELECT path, message FROM ingest_errors").fetchall()
    reasons = " ".join(str(e) for e in errors)
    assert "line 2, column 'SEX'" in reasons
    assert str(tmp_path) not in reasons and "Pitt" not in reasons


def test_cross_file_disagreement_names_both_files(tmp_path: Path) -> None:
    for path in GOLDEN_TABLES:
        shutil.copy(path, tmp_path / path.name)
    lh = tmp_path / "lh.aparc_table_thickness.tsv"
    lines = lh.read_text().splitlines()
    header = lines[0].split("\t")
    pos = header.index("lh_MeanThickness_thickness")
    cells = lines[1].split("\t")
    cells[pos] = "9.9"
    lh.write_text("\n".join([lines[0], "\t".join(cells)]) + "\n")
    cmap = ColumnMap.from_dict({"site_value": "PITT"})
    with pytest.raises(TableImportError, match=r"line 2 and .* line 2: both hold global\.lh"):
        read_table_set(sorted(tmp_path.glob("*.tsv")), cmap)


# --------------------------------------------------------------------------- wide CSVs


def test_wide_csv_with_quirks_keeps_every_scan_as_a_session(
    cohort: Path, tmp_path: Path, key: Path
) -> None:
    csv_path = write_wide_csv(cohort, tmp_path / "wide.csv")
    raw = pd.read_csv(csv_path)
    assert raw["sub_id"].duplicated().any()  # repeated scans, no session column
    (tmp_path / "map.yaml").write_text(WIDE_MAP)
    db = tmp_path / "db.duckdb"
    args = ["ingest", csv_path, "--source", "pcn", "--db", db, "--key-file", key]
    # without saying what repeated ids are: one line naming the fix, nothing written
    (tmp_path / "plain.yaml").write_text(WIDE_MAP.replace("sessions_from: age\n", ""))
    code, out = run_cli(*args, "--map", tmp_path / "plain.yaml")
    assert code == 2
    assert "sessions_from: age" in one_line_error(out)
    code, out = run_cli(*args, "--map", tmp_path / "map.yaml")
    assert code == 0, out
    with connect(db) as con:
        n_scans, n_subjects, top = con.execute(
            "SELECT count(*), count(DISTINCT subject_key), max(session) FROM scans"
        ).fetchone()
        order = con.execute(
            "SELECT subject_key, session, age FROM scans ORDER BY subject_key, session"
        ).fetchall()
    assert n_scans == len(raw) and n_subjects == raw["sub_id"].nunique() and top >= 2
    by_subject: dict[str, list[float]] = {}
    for subject, _, age in order:
        by_subject.setdefault(subject, []).append(age)
    assert all(ages == sorted(ages) for ages in by_subject.values())  # sessions follow age
    notes = [line for line in out.splitlines() if "all-zero or empty columns" in line]
    assert len(notes) == 1  # every alias and .1 copy in one message
    for column in ("Left-Thalamus", "Right-Thalamus", "Left-Lateral-Ventricle.1",
                   "lh_G_and_S_frontomargin_thickness"):  # fmt: skip
        assert f"'{column}'" in notes[0]


def test_real_disagreements_are_listed_all_at_once(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "sub,age,Left-Thalamus,Left-Thalamus-Proper,eTIV,EstimatedTotalIntraCranialVol,"
        "Left-Caudate,Left-Caudate.1\n"
        "s1,30,7000,7100,1500000,1400000,3500,3500\ns2,40,7000,7000,1500000,1500000,3400,0\n"
    )
    cmap = ColumnMap.from_dict({"id": "sub", "age": "age", "site_value": "A"})
    with pytest.raises(TableImportError, match="3 pairs of columns") as info:
        read_wide_table(path, cmap)
    message = str(info.value)
    assert "'Left-Thalamus'" in message and "'EstimatedTotalIntraCranialVol'" in message
    assert "Left-Caudate.1" in message  # a .1 copy that is not all zero disagrees too
    (tmp_path / "map.yaml").write_text("id: sub\nage: age\nsite_value: A\n")
    code, out = run_cli(
        "ingest", path, "--map", tmp_path / "map.yaml", "--source", "t", "--db",
        tmp_path / "db", "--key-file", tmp_path / "key",
    )  # fmt: skip
    assert code == 2 and "3 pairs of columns" in one_line_error(out)


def test_session_column_and_identical_repeats(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "sub,visit,age,L_insula_thickavg\ns1,1,30,2.9\ns1,2,32,2.8\ns1,2,32,2.8\ns2,1,50,2.5\n"
    )
    cmap = ColumnMap.from_dict(
        {"id": "sub", "session": "visit", "age": "age", "site_value": "A", "surface_atlas": "DKT"}
    )
    table = read_wide_table(path, cmap)
    assert list(table.participants["session"]) == ["1", "2", "1"]


def test_same_scan_in_two_tables_collapses_or_names_the_files(tmp_path: Path, key: Path) -> None:
    a, b = tmp_path / "adapt.csv", tmp_path / "test.csv"
    a.write_text("sub_id,age,sex,site,Left-Caudate\nP1,30,0,X,3500\nP2,40,1,X,3600\n")
    b.write_text("sub_id,age,sex,site,Left-Caudate\nP2,40,1,X,3600\nP3,50,1,X,3700\n")
    cmap = tmp_path / "map.yaml"
    cmap.write_text(MAP)
    summary = ingest([a, b], column_map=cmap, source="pcn", db=tmp_path / "db", key_file=key)
    assert summary.n_scans == 3
    b.write_text("sub_id,age,sex,site,Left-Caudate\nP2,40,1,X,3999\n")
    with pytest.raises(
        IngestError, match=r"adapt\.csv line 3 and test\.csv line 2: id 'P2' appears in both"
    ):
        ingest([a, b], column_map=cmap, source="pcn2", db=tmp_path / "db2", key_file=key)
    code, out = run_cli(
        "ingest", a, b, "--map", cmap, "--source", "pcn2", "--db", tmp_path / "db2",
        "--key-file", key,
    )  # fmt: skip
    assert code == 2 and "id 'P2'" in one_line_error(out)


# --------------------------------------------------------------------------- external validation


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("external")
    synthetic_table(root / "train.csv", 120, ["A", "B", "C"], seed=1)
    synthetic_table(root / "ext.csv", 60, ["D", "E"], seed=2)
    ext = pd.read_csv(root / "ext.csv")
    # the new source has no hippocampus and no lateral ventricle
    ext = ext.drop(columns=["Left-Hippocampus", "Right-Hippocampus", "Left-Lateral-Ventricle"])
    ext.to_csv(root / "ext.csv", index=False)
    (root / "map.yaml").write_text(MAP)
    db = root / "db.duckdb"
    for name in ("train", "ext"):
        ingest([root / f"{name}.csv"], column_map=root / "map.yaml", source=name, db=db,
               key_file=root / "key")  # fmt: skip
    return db


def pretrain(**features: object) -> PretrainConfig:
    return PretrainConfig.model_validate({
        "kind": "pretrain", "cohort": {"sources": ["train"]}, "targets": ["age", "sex"],
        "models": {"age": ["ridge"], "sex": ["logistic"]},
        "features": {"site_covariates": False, **features},
        "tuning": {"trials": 2, "inner_folds": 2},
        "validation": {"schemes": ["kfold"], "folds": 3, "bootstrap": 100},
        "seed": 3, "device": "cpu",
    })  # fmt: skip


def test_available_in_keeps_features_of_those_sources(two_sources: Path) -> None:
    frame = load_frame(two_sources, CohortSpec(sources=["train"]), FeatureSpec())
    narrow = load_frame(
        two_sources, CohortSpec(sources=["train"]), FeatureSpec(available_in=["ext"])
    )
    dropped = set(frame.feature_ids) - set(narrow.feature_ids)
    assert dropped == {
        "aseg.na.Left-Hippocampus.volume",
        "aseg.na.Right-Hippocampus.volume",
        "aseg.na.Left-Lateral-Ventricle.volume",
    }
    with pytest.raises(ConfigError, match=r"features.available_in: \['nope'\] not in the"):
        load_frame(two_sources, CohortSpec(sources=["train"]), FeatureSpec(available_in=["nope"]))


@pytest.mark.slow
def test_predict_lists_every_missing_feature_and_names_the_key(
    two_sources: Path, tmp_path: Path
) -> None:
    fit_pretrain(pretrain(), db=two_sources, out=tmp_path / "run", record=False)
    with pytest.raises(ConfigError) as info:
        predict_run(tmp_path / "run", db=two_sources, source="ext", out=tmp_path / "p.parquet")
    message = str(info.value)
    assert "lacks 3 of the" in message and "features.available_in: [ext]" in message
    for region in ("Left-Hippocampus", "Right-Hippocampus", "Left-Lateral-Ventricle"):
        assert f"aseg.na.{region}.volume" in message


@pytest.mark.slow
def test_evaluate_scores_a_new_source_with_intervals_and_reports_it(
    two_sources: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    fit_pretrain(pretrain(available_in=["ext"]), db=two_sources, out=run, record=False)
    code, out = run_cli("evaluate", run, "--source", "ext", "--db", two_sources)
    assert code == 0, out
    assert "external" in out and "MAE" in out and "[" in out
    folder = run / "external-ext"
    metrics = json.loads((folder / "metrics.json").read_text())
    age = metrics["targets"]["age"]["ridge"]["external"]
    assert age["n"] == 60 and age["mae_ci"][0] <= age["mae"] <= age["mae_ci"][1]
    assert set(age["per_site"]) == {"D", "E"}
    assert set(age["per_sex"]) == {"female", "male"}
    for key in ("mae_corrected", "gap_age_r", "r2", "r"):
        assert key in age
    sex = metrics["targets"]["sex"]["logistic"]["external"]
    for key in ("auc", "balanced_accuracy", "brier", "calibration_slope"):
        assert key in sex
    preds = pd.read_parquet(folder / "predictions.parquet")
    assert set(preds["scheme"]) == {"external"} and len(preds) == 60 * 3
    assert (folder / "config.yaml").read_text() == (run / "config.yaml").read_text()
    summary = summarize(folder)
    assert summary["kind"] == "external_validation"
    items = {i["item"]: i for i in summary["tripod"]}
    assert items["12a"]["status"] == "run" and "ext" in items["12a"]["text"]
    assert "MAE" in items["23a"]["text"] and "95% CI" in items["23a"]["text"]
    html = render_html(summary)
    assert "External validation report" in html
    # the training source, or a folder that is not an evaluation, is refused in one line
    code, out = run_cli("evaluate", run, "--source", "train", "--db", two_sources)
    assert code == 2 and "one the run was trained on" in one_line_error(out)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["features"]["available_in"] == ["ext"]


def test_bad_participants_row_beside_stats_folders(
    cohort: Path, tmp_path: Path, key: Path
) -> None:
    folder = tmp_path / "cohort"
    shutil.copytree(cohort, folder)
    rows = (folder / "participants.tsv").read_text().splitlines()
    cells = rows[3].split("\t")
    cells[3] = "7"  # the sex column: not in the map's coding
    rows[3] = "\t".join(cells)
    (folder / "participants.tsv").write_text("\n".join(rows) + "\n")
    db = tmp_path / "db.duckdb"
    args = ["ingest", folder, "--source", "sim", "--db", db, "--key-file", key]
    code, out = run_cli(*args)
    assert code == 2
    assert "participants.tsv line 4, column 'sex'" in one_line_error(out)
    assert not db.exists() or snapshot(db)["scans"] == []
    code, out = run_cli(*args, "--on-error", "skip")
    assert code == 0, out
    with connect(db) as con:
        n, no_age = con.execute("SELECT count(*), count(*) - count(age) FROM scans").fetchone()
        reasons = str(con.execute("SELECT message FROM ingest_errors").fetchall())
    # every scan is kept (as for any scan without a participants row); the bad row's scan
    # has no demographics, and the reason is recorded
    assert n == len(rows) - 1 and no_age == 1
    assert "line 4, column 'sex'" in reasons


def test_age_sessions_keep_their_pseudonyms_when_a_visit_is_added(
    tmp_path: Path, key: Path
) -> None:
    path = tmp_path / "t.csv"
    head = "sub_id,age,sex,site,Left-Caudate\n"
    path.write_text(head + "P1,30,0,X,3500\nP2,40,1,X,3600\n")
    (tmp_path / "map.yaml").write_text(WIDE_MAP)
    db = tmp_path / "db"
    ingest([path], column_map=tmp_path / "map.yaml", source="s", db=db, key_file=key)
    path.write_text(head + "P1,30,0,X,3500\nP2,40,1,X,3600\nP1,33,0,X,3450\n")
    summary = ingest([path], column_map=tmp_path / "map.yaml", source="s", db=db, key_file=key)
    assert (summary.n_new, summary.n_unchanged) == (1, 2)
    with connect(db) as con:
        sessions = con.execute("SELECT age, session FROM scans ORDER BY age").fetchall()
    assert sessions == [(30.0, 1), (33.0, 2), (40.0, 1)]
