"""morphml qc: each rule on hand-made values, recall on a simulated cohort, storage, the CLI,
exclusion by rule in load_frame, QC covariates, and the real fcon1000 table."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from morphml.cli import cli
from morphml.config import CohortSpec, FeatureSpec, QCSpec
from morphml.db import connect, ingest
from morphml.exceptions import QCError
from morphml.features import load_frame
from morphml.io import known_regions
from morphml.qc import (
    FLAGS,
    MUST_EXIST_ASEG,
    check_flag_names,
    euler_numbers,
    qc_covariates,
    qc_database,
    resolve_thresholds,
    run_qc,
)
from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ hand-made databases


def _feature_table() -> list[tuple[int, str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    for hemi in ("lh", "rh"):
        rows.append(("global", hemi, "SurfaceHoles", "count"))
        rows.append(("global", hemi, "MeanThickness", "thickness"))
        for region in known_regions("aparc"):
            rows.append(("aparc", hemi, region, "thickness"))
            rows.append(("aparc", hemi, region, "area"))
    rows += [("aseg", "na", region, "volume") for region in MUST_EXIST_ASEG]
    rows += [("aseg", "na", "Left-vessel", "volume"), ("global", "na", "eTIV", "volume")]
    return [(i, f"{a}.{h}.{r}.{m}", a, h, r, m) for i, (a, h, r, m) in enumerate(rows)]


FEATURES = _feature_table()
FID = {row[1]: row[0] for row in FEATURES}


@dataclass
class Built:
    path: Path
    keys: list[str]
    sites: dict[str, str]
    values: pd.DataFrame  # scans x feature ids, as stored (NaN: no row)


def _normal_values(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Independent, plausible values (some left vessels are 0, legitimately, as in fcon1000)."""
    cols: dict[str, np.ndarray] = {}
    for _, fid, _, _, region, measure in FEATURES:
        if measure == "count":
            cols[fid] = rng.integers(10, 40, n).astype(float)
        elif measure == "thickness":
            cols[fid] = np.round(rng.normal(2.5, 0.12, n), 3)
        elif measure == "area":
            cols[fid] = np.round(rng.normal(2000, 150, n))
        elif region == "Left-vessel":
            cols[fid] = np.where(rng.random(n) < 0.3, 0.0, np.round(rng.normal(20, 4, n), 1))
        elif region == "eTIV":
            cols[fid] = rng.normal(1.5e6, 1e5, n)
        else:
            cols[fid] = np.round(rng.normal(4000, 250, n), 1)
    return pd.DataFrame(cols)


def build_db(
    path: Path,
    rng: np.random.Generator,
    sites: dict[str, int],
    edit: Callable[[pd.DataFrame], None] | None = None,
) -> Built:
    """A database with ``sites[name]`` scans per site; ``edit`` changes values before insert."""
    labels = [site for site, n in sites.items() for _ in range(n)]
    n = len(labels)
    keys = [f"scan-{i:024x}" for i in range(n)]
    values = _normal_values(rng, n)
    values.index = pd.Index(keys, name="scan_key")
    if edit is not None:
        edit(values)
    with connect(path, create=True) as con:
        con.execute("INSERT INTO sources VALUES ('hand', 'table')")
        feats = pd.DataFrame(
            FEATURES, columns=["feature_idx", "feature_id", "atlas", "hemi", "region", "measure"]
        )
        con.register("new_features", feats)
        con.execute("INSERT INTO features SELECT * FROM new_features")
        scans = pd.DataFrame(
            {
                "scan_key": keys,
                "subject_key": [f"sub-{i:024x}" for i in range(n)],
                "source": "hand",
                "session": 1,
                "site": labels,
                "software": "FreeSurfer",
                "version": "7.4.1",
                "age": rng.uniform(20, 70, n),
                "sex": np.where(rng.random(n) < 0.5, "F", "M"),
            }
        )
        con.register("new_scans", scans)
        con.execute(
            "INSERT INTO scans (scan_key, subject_key, source, session, site, software, version, "
            "age) SELECT scan_key, subject_key, source, session, site, software, version, age "
            "FROM new_scans"
        )
        con.execute("INSERT INTO subjects SELECT subject_key, source, sex FROM new_scans")
        long = values.reset_index().melt(id_vars="scan_key", var_name="fid", value_name="value")
        long = long[long["value"].notna()]
        long["feature_idx"] = long["fid"].map(FID).astype(np.int32)
        con.register("new_values", long[["scan_key", "feature_idx", "value"]])
        con.execute("INSERT INTO measures SELECT scan_key, feature_idx, value FROM new_values")
    return Built(path, keys, dict(zip(keys, labels, strict=True)), values)


def flags_in(path: Path) -> list[tuple[str, str, str, float | None]]:
    with connect(path, read_only=True) as con:
        return con.execute("SELECT * FROM qc_flags ORDER BY ALL").fetchall()


def scans_with(path: Path | list[tuple[str, str, str, float | None]], flag: str) -> set[str]:
    rows = flags_in(path) if isinstance(path, Path) else path
    return {row[0] for row in rows if row[1] == flag}


# ---------------------------------------------------------------------- the rules


def test_each_rule_on_hand_made_values(tmp_path: Path, rng: np.random.Generator) -> None:
    def edit(v: pd.DataFrame) -> None:
        k = v.index
        v.loc[k[0], "aparc.lh.insula.area"] = -12.0  # negative area
        v.loc[k[1], "aseg.na.Left-Hippocampus.volume"] = 0.0  # zero hippocampus
        v.loc[k[2], "aparc.rh.precuneus.thickness"] = 6.0  # 6 mm
        v.loc[k[3], ["global.lh.SurfaceHoles.count", "global.rh.SurfaceHoles.count"]] = [
            150.0,
            152.0,
        ]  # Euler number 2 - 302 = -300
        v.loc[k[4], "aparc.lh.cuneus.thickness"] = np.nan  # a missing region
        v.loc[k[5], "global.lh.MeanThickness.thickness"] = 0.3  # implausible mean thickness
        for region in ("lingual", "fusiform", "precentral", "postcentral"):  # a local failure
            v.loc[k[6], f"aparc.lh.{region}.thickness"] = 1.1

    built = build_db(tmp_path / "db.duckdb", rng, {"A": 40, "B": 30}, edit)
    k = built.keys
    with connect(built.path) as con:
        report = run_qc(con)
    assert report.n_scans == 70
    assert report.rules == FLAGS
    stored = flags_in(built.path)
    assert scans_with(stored, "negative_value") == {k[0]}
    assert scans_with(stored, "zero_structure") == {k[1]}  # not the vessels at 0
    assert scans_with(stored, "thickness_range") == {k[2], k[5]}
    assert scans_with(stored, "euler_absolute") == {k[3]}
    assert scans_with(stored, "euler_site_z") == {k[3]}
    assert scans_with(stored, "missing_structure") == {k[4]}
    multivariate = scans_with(stored, "multivariate_outlier")
    assert k[6] in multivariate
    assert len(multivariate - {k[0], k[1], k[2], k[3], k[5], k[6]}) <= 1
    assert len(stored) == len(report.flags)
    rows = {(r[0], r[1]): (r[2], r[3]) for r in stored}
    assert rows[(k[0], "negative_value")] == (
        "1 negative values: aparc.lh.insula.area=-12",
        -12.0,
    )
    reason, value = rows[(k[3], "euler_absolute")]
    assert value == -300.0 and "-300 < -217" in reason
    assert "aseg.na.Left-Hippocampus.volume=0" in rows[(k[1], "zero_structure")][0]
    assert rows[(k[2], "thickness_range")][1] == 6.0
    assert "mean cortical thickness" in rows[(k[5], "thickness_range")][0]
    assert rows[(k[4], "missing_structure")] == (
        "1 values its peers have are missing: aparc.lh.cuneus.thickness",
        1.0,
    )
    assert "aparc.lh." in rows[(k[6], "multivariate_outlier")][0]
    counts = report.counts()
    assert counts["thickness_range"] == {"scans": 2, "sites": 1, "not_assessed": 0}
    assert set(report.summary()["flags"]) == set(FLAGS)


def test_thresholds_change_what_is_flagged(tmp_path: Path, rng: np.random.Generator) -> None:
    def edit(v: pd.DataFrame) -> None:
        v.loc[v.index[0], "aparc.rh.precuneus.thickness"] = 4.6

    built = build_db(tmp_path / "db.duckdb", rng, {"A": 25}, edit)
    with connect(built.path) as con:
        assert not run_qc(con, rules=["thickness_range"]).flags
        report = run_qc(con, thresholds={"thickness_max": 4.5}, rules=["thickness_range"])
    assert [f.scan_key for f in report.flags] == [built.keys[0]]
    assert report.thresholds["thickness_max"] == 4.5
    assert report.rules == ("thickness_range",)


def test_a_site_with_one_scan_is_judged_against_all_scans(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    def edit(v: pd.DataFrame) -> None:
        lone = v.index[-1]
        v.loc[lone, ["global.lh.SurfaceHoles.count", "global.rh.SurfaceHoles.count"]] = [90, 91]

    built = build_db(tmp_path / "db.duckdb", rng, {"A": 30, "lonely": 1}, edit)
    lone = built.keys[-1]
    with connect(built.path) as con:
        report = run_qc(con)
        euler = euler_numbers(con, [lone])
    assert euler[lone] == -179.0  # above -217, but far below everyone else
    assert report.scans_with("euler_absolute") == set()
    assert report.scans_with("euler_site_z") == {lone}
    flag = next(f for f in report.flags if f.flag == "euler_site_z")
    assert "all scans (31 scans)" in flag.reason
    assert report.sites[lone] == "hand/lonely"
    assert report.not_assessed["multivariate_outlier"] == 0
    # with too few scans anywhere, site-relative rules say so instead of guessing
    with connect(built.path) as con:
        small = run_qc(con, thresholds={"site_min_scans": 40, "multivariate_min_scans": 40})
    assert small.not_assessed["euler_site_z"] == 31
    assert small.not_assessed["multivariate_outlier"] == 31
    assert small.scans_with("euler_site_z") == set()
    assert any("not assessed" in note for note in small.notes)


def test_a_database_without_surface_holes_skips_the_euler_rules(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    def edit(v: pd.DataFrame) -> None:
        v.loc[:, ["global.lh.SurfaceHoles.count", "global.rh.SurfaceHoles.count"]] = np.nan

    built = build_db(tmp_path / "db.duckdb", rng, {"A": 25}, edit)
    with connect(built.path) as con:
        report = run_qc(con)
    assert report.scans_with("euler_absolute") == set()
    assert report.not_assessed["euler_absolute"] == 25
    assert any("no SurfaceHoles values" in note for note in report.notes)
    assert "note: euler_absolute, euler_site_z: no SurfaceHoles" in "\n".join(report.lines())


# ---------------------------------------------------------------- storage and errors


def test_rerun_is_idempotent_and_keeps_other_flags(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    def edit(v: pd.DataFrame) -> None:
        v.loc[v.index[0], "aparc.lh.insula.area"] = -1.0
        v.loc[v.index[1], "aparc.lh.insula.area"] = -2.0

    built = build_db(tmp_path / "db.duckdb", rng, {"A": 30}, edit)
    with connect(built.path) as con:
        con.execute(
            "INSERT INTO qc_flags VALUES (?, 'manual', 'rater: motion', NULL)", [built.keys[5]]
        )
        run_qc(con)
    first = flags_in(built.path)
    with connect(built.path) as con:
        run_qc(con)
        run_qc(con, [built.keys[0]])
    assert flags_in(built.path) == first
    assert (built.keys[5], "manual", "rater: motion", None) in first
    # fixing a value and re-checking only that scan removes only its flag
    with connect(built.path) as con:
        idx = FID["aparc.lh.insula.area"]
        con.execute(
            "UPDATE measures SET value = 1900 WHERE scan_key = ? AND feature_idx = ?",
            [built.keys[0], idx],
        )
        report = run_qc(con, [built.keys[0]], rules=["negative_value"])
    assert report.n_scans == 1 and not report.flags
    assert scans_with(built.path, "negative_value") == {built.keys[1]}
    assert len(flags_in(built.path)) == len(first) - 1


def test_a_failed_run_leaves_the_flags_as_they_were(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def edit(v: pd.DataFrame) -> None:
        v.loc[v.index[0], "aparc.lh.insula.area"] = -1.0

    built = build_db(tmp_path / "db.duckdb", rng, {"A": 25}, edit)
    with connect(built.path) as con:
        run_qc(con)
    before = flags_in(built.path)
    assert before

    import morphml.qc._run as run_module

    real_store = run_module._store

    def store_then_fail(con: object, rules: object, flags: object) -> None:
        real_store(con, rules, flags)  # type: ignore[arg-type]
        raise RuntimeError("disk full")

    monkeypatch.setattr(run_module, "_store", store_then_fail)
    with connect(built.path) as con, pytest.raises(RuntimeError, match="disk full"):
        run_qc(con, thresholds={"thickness_max": 2.0})
    assert flags_in(built.path) == before
    monkeypatch.undo()
    # inside a caller's transaction, the caller decides: a rollback discards the flags
    with connect(built.path) as con:
        con.execute("BEGIN")
        con.execute("DELETE FROM qc_flags")
        report = run_qc(con)
        assert report.flags
        con.execute("ROLLBACK")
    assert flags_in(built.path) == before
    # ... and a commit keeps them, as at the end of an ingest
    with connect(built.path) as con:
        con.execute("BEGIN")
        con.execute("DELETE FROM qc_flags")
        run_qc(con, [built.keys[0]])
        con.execute("COMMIT")
    assert flags_in(built.path) == before


def test_bad_names_values_and_scans_are_clear_errors(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    with pytest.raises(
        QCError, match=r"unknown QC threshold 'euler_absolut'; did you mean 'euler_absolute'"
    ):
        resolve_thresholds({"euler_absolut": -300})
    with pytest.raises(QCError, match=r"'multivariate_min_scans' must be a whole number >= 3"):
        resolve_thresholds({"multivariate_min_scans": 2.5})
    with pytest.raises(QCError, match="finite number"):
        resolve_thresholds({"euler_site_z": "low"})
    with pytest.raises(QCError, match="thickness_min < thickness_max"):
        resolve_thresholds({"thickness_min": 5, "thickness_max": 1})
    with pytest.raises(QCError, match="did you mean 'zero_structure'"):
        check_flag_names(["zero_structures"])
    built = build_db(tmp_path / "db.duckdb", rng, {"A": 5})
    with connect(built.path) as con:
        with pytest.raises(QCError, match="did you mean 'negative_value'"):
            run_qc(con, rules=["negative_values"])
        with pytest.raises(QCError, match=r"1 scan keys are not in the database"):
            run_qc(con, ["scan-nope"])
        assert run_qc(con, []).n_scans == 0
    with pytest.raises(QCError, match="source 'other' is not in the database"):
        qc_database(built.path, sources=["other"])
    assert qc_database(built.path, sources=["hand"], rules=["negative_value"]).n_scans == 5
    with (
        connect(tmp_path / "empty.duckdb", create=True) as con,
        pytest.raises(QCError, match="no scans"),
    ):
        run_qc(con)
    assert flags_in(built.path) == []


# ---------------------------------------------------------------------------- the CLI


def test_cli_text_json_thresholds_and_errors(tmp_path: Path, rng: np.random.Generator) -> None:
    def edit(v: pd.DataFrame) -> None:
        v.loc[v.index[0], "aparc.lh.insula.area"] = -1.0
        v.loc[v.index[1], "aparc.rh.precuneus.thickness"] = 4.6

    built = build_db(tmp_path / "db.duckdb", rng, {"A": 20, "B": 20}, edit)
    runner = CliRunner()
    result = runner.invoke(cli, ["qc", "--db", str(built.path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("QC of 40 scans:")
    row = next(line for line in lines if "negative_value" in line)
    assert row.split()[1:] == ["1", "scans", "1", "sites"]
    assert all(any(flag in line for line in lines) for flag in FLAGS)

    (tmp_path / "th.yaml").write_text("thickness_max: 4.5\n")
    result = runner.invoke(
        cli,
        ["qc", "--db", str(built.path), "--thresholds", str(tmp_path / "th.yaml"), "--json"],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["n_scans"] == 40
    assert out["thresholds"]["thickness_max"] == 4.5
    assert out["flags"]["thickness_range"]["scans"] == 1
    assert {s["scan_key"] for s in out["scans"]} <= set(built.keys)

    result = runner.invoke(
        cli, ["qc", "--db", str(built.path), "--set", "thickness_max=4.7", "--list"]
    )
    assert result.exit_code == 0
    assert f"{built.keys[0]}  negative_value  1 negative values" in result.output
    assert scans_with(built.path, "thickness_range") == set()

    for args, message in [
        (["--set", "thickness_max"], "expected NAME=VALUE"),
        (["--set", "thickness_maxx=3"], "did you mean 'thickness_max'"),
        (["--rule", "euler"], "unknown QC rule 'euler'"),
        (["--thresholds", str(tmp_path / "none.yaml")], "not found"),
    ]:
        result = runner.invoke(cli, ["qc", "--db", str(built.path), *args])
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert "Traceback" not in result.output


# ------------------------------------------------------- use in cohorts and features


def test_load_frame_excludes_flagged_scans_by_rule(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    def edit(v: pd.DataFrame) -> None:
        v.loc[v.index[0], "aseg.na.Left-Hippocampus.volume"] = 0.0
        v.loc[v.index[1], "aparc.lh.insula.area"] = -5.0

    built = build_db(tmp_path / "db.duckdb", rng, {"A": 30}, edit)
    with connect(built.path) as con:
        run_qc(con)
    spec = FeatureSpec(atlases=["aparc", "aseg"], site_covariates=False)
    everyone = load_frame(built.path, CohortSpec(), spec)
    assert len(everyone.X) == 30
    kept = load_frame(built.path, CohortSpec(qc=QCSpec(exclude=["zero_structure"])), spec)
    assert set(everyone.X.index) - set(kept.X.index) == {built.keys[0]}
    both = CohortSpec(qc=QCSpec(exclude=["zero_structure", "negative_value"]))
    assert len(load_frame(built.path, both, spec).X) == 28


def test_qc_covariates_add_the_euler_number(tmp_path: Path, rng: np.random.Generator) -> None:
    built = build_db(tmp_path / "db.duckdb", rng, {"A": 10, "B": 10})
    spec = FeatureSpec(atlases=["aparc"], qc_covariates=["euler"])
    frame = load_frame(built.path, CohortSpec(), spec)
    columns = list(frame.X.columns)
    assert "qc:euler" in columns
    assert columns.index("qc:euler") == columns.index("site=A") - 1
    v = built.values.loc[frame.X.index]
    expected = 2 - v["global.lh.SurfaceHoles.count"] - v["global.rh.SurfaceHoles.count"]
    np.testing.assert_array_equal(frame.X["qc:euler"].to_numpy(), expected.to_numpy())
    assert "qc:euler" not in load_frame(built.path, CohortSpec(), FeatureSpec()).X.columns
    with (
        connect(built.path, read_only=True) as con,
        pytest.raises(QCError, match="unknown QC covariate 'eulr'; did you mean 'euler'"),
    ):
        qc_covariates(con, built.keys, ["eulr"])


# ------------------------------------------------------------------ simulated and real


def _truth_scan_keys(sim: Path, linkage: Path) -> dict[str, bool]:
    """Scan key -> planted QC failure, joining the truth file to the linkage file."""
    with linkage.open() as handle:
        link = {
            (row["original_id"], row["session"]): row["scan_key"]
            for row in csv.DictReader(handle, delimiter="\t")
        }
    out = {}
    with (sim / "truth" / "ground_truth.csv").open() as handle:
        for row in csv.DictReader(handle):
            key = link.get((row["participant_id"], row["session_id"]))
            if key is not None:
                out[key] = row["qc_failure"] == "1"
    return out


@pytest.mark.slow
def test_planted_failures_of_a_simulated_cohort_are_flagged(tmp_path: Path) -> None:
    from morphml.simulate import simulate_cohort

    simulate_cohort(tmp_path / "sim", n_subjects=60, n_sites=2, seed=7, qc_fail_fraction=0.08)
    db, linkage = tmp_path / "db.duckdb", tmp_path / "secret" / "link.tsv"
    linkage.parent.mkdir()
    ingest(
        [tmp_path / "sim"],
        source="sim",
        db=db,
        key_file=tmp_path / "secret" / "key",
        on_error="skip",
        linkage_out=linkage,
    )
    truth = _truth_scan_keys(tmp_path / "sim", linkage)
    planted = {k for k, bad in truth.items() if bad}
    clean = set(truth) - planted
    assert len(planted) >= 4
    report = qc_database(db)
    recall = len(report.flagged_scans & planted) / len(planted)
    print(f"\nplanted {len(planted)}, clean {len(clean)}, recall {recall:.2f}")
    for rule in FLAGS:
        hit = report.scans_with(rule)
        print(f"  {rule:<22} planted {len(hit & planted)}  clean {len(hit & clean)}")
    assert recall == 1.0
    assert planted <= report.scans_with("euler_absolute")
    assert planted <= report.scans_with("euler_site_z")
    assert len(report.scans_with("multivariate_outlier") & planted) >= 0.75 * len(planted)
    others = set().union(*(report.scans_with(r) for r in FLAGS if r != "euler_absolute"))
    assert len(others & clean) <= 0.1 * len(clean)
    # messages name scans by pseudonym only: no participant id or folder of the cohort
    text = json.dumps(report.summary()) + "\n".join(report.lines(list_scans=True))
    assert "sub-0" not in text and "ses-" not in text and str(tmp_path) not in text


@pytest.mark.slow
def test_fcon1000_euler_numbers_and_flag_counts(tmp_path: Path) -> None:
    db = tmp_path / "fcon.duckdb"
    ingest(
        [SHARED_DATA / "pcntoolkit-demo/fcon1000.csv"],
        column_map=REPO / "configs/maps/fcon1000.yaml",
        source="fcon1000",
        db=db,
        key_file=tmp_path / "key",
    )
    with connect(db) as con:
        # the table's own avg_en (mean Euler number of both hemispheres) checks the formula
        published = con.execute(
            "SELECT scan_key, value_num FROM phenotypes WHERE name = 'euler_mean'"
        ).df()
        ours = euler_numbers(con, None)
        report = run_qc(con)
    published = published.set_index("scan_key")["value_num"].sort_index()
    assert len(published) == 1078
    pd.testing.assert_series_equal(ours, published, check_names=False)
    assert report.scans_with("euler_absolute") == set(published.index[published < -217])
    assert len(report.scans_with("euler_absolute")) == 233
    assert not report.scans_with("negative_value") and not report.scans_with("missing_structure")
    assert len(report.scans_with("multivariate_outlier")) < 0.05 * 1078
