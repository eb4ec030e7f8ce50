"""Transfer to small samples: representations, the comparison protocol, kind: transfer runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from morphml.cli import cli
from morphml.config import parse_config
from morphml.db import connect, ingest
from morphml.evaluation import compare_representations, make_splits
from morphml.exceptions import TransferError
from morphml.pipelines import fit_pretrain, fit_transfer, load_transfer_data
from morphml.rundir import load_pretrained
from morphml.transfer import (
    HeadFactory,
    NormativeModel,
    PretrainedRun,
)

REGIONS = ["bankssts", "cuneus", "fusiform", "insula", "lingual", "precuneus", "superiorfrontal"]
ASEG = ["Left-Hippocampus", "Right-Hippocampus", "Left-Thalamus", "Right-Thalamus"]
MAP = "id: sub_id\nage: age\nsex: {column: sex, coding: {0: female, 1: male}}\nsite: site\n"
TARGET_MAP = MAP + (
    "phenotypes:\n"
    "  diagnosis: {column: dx, type: binary, levels: [control, patient]}\n"
    "  score: {column: score, type: continuous}\n"
    "  response: {column: response, type: binary, levels: [responder, non-responder]}\n"
)


def table(
    n: int,
    sites: list[str],
    seed: int,
    *,
    pattern: str = "none",
    years: float = 0.0,
    prefix: str = "P",
) -> pd.DataFrame:
    """Synthetic morphometry: thickness and volumes decline with age; patients differ.

    ``pattern="ageing"`` makes patients look ``years`` older in every feature;
    ``pattern="lateral"`` moves left and right regions in opposite directions by the same
    amount (no change in any age-related direction).
    """
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 80, n)
    male = rng.random(n) < 0.5
    patient = np.arange(n) % 2 == 1
    etiv = 1.45e6 + 1.5e5 * male + rng.normal(0, 8e4, n)
    shift = np.where(patient & (pattern == "ageing"), years, 0.0)
    lateral = np.where(patient & (pattern == "lateral"), 0.012 * years, 0.0)
    data: dict[str, object] = {"sub_id": [f"{prefix}{i:04d}" for i in range(n)]}
    data["age"] = age.round(2)
    data["sex"] = male.astype(int)
    for hemi, sign in (("lh", 1.0), ("rh", -1.0)):
        for region in REGIONS:
            value = 3.0 - 0.012 * (age + shift - 50) + sign * lateral + rng.normal(0, 0.08, n)
            data[f"{hemi}_{region}_thickness"] = value.round(4)
        data[f"{hemi}_MeanThickness_thickness"] = (2.6 - 0.012 * (age + shift - 50)).round(4)
    for struct in ASEG:
        base = 4000 * (etiv / 1.5e6) * (1 - 0.004 * (age + shift - 50))
        data[struct] = (base + rng.normal(0, 100, n)).round(1)
    data["EstimatedTotalIntraCranialVol"] = etiv.round(1)
    data["site"] = rng.choice(sites, n)
    data["dx"] = np.where(patient, "patient", "control")
    data["score"] = (10 + 2 * (age + shift - 50) / 10 + rng.normal(0, 1, n)).round(3)
    data["response"] = np.where(rng.random(n) < 0.5, "responder", "non-responder")
    return pd.DataFrame(data)


PRETRAIN = {
    "kind": "pretrain",
    "cohort": {"sources": ["pre"]},
    "targets": ["age", "sex"],
    "models": {"age": ["ridge", "xgboost"], "sex": ["logistic", "xgboost"]},
    "tuning": {"trials": 1, "inner_folds": 2},
    "validation": {"schemes": ["kfold"], "folds": 2, "bootstrap": 100},
    "seed": 3,
    "device": "cpu",
}


def transfer_config(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "kind": "transfer",
        "cohort": {"sources": ["tgt"]},
        "target": {"name": "diagnosis", "type": "binary", "positive": "patient"},
        "representations": ["raw", "brain_age_gap", "normative_z"],
        "protocol": {"folds": 3, "repeats": 2, "train_sizes": [20, "all"], "permutations": 0},
        "components": 3,
        "seed": 5,
    }
    base.update(overrides)
    return base


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A database with a pretraining source, target sources and a fitted pretrain run."""
    root = tmp_path_factory.mktemp("transfer")
    (root / "map.yaml").write_text(MAP)
    (root / "tmap.yaml").write_text(TARGET_MAP)
    pre = table(300, ["A", "B", "C"], seed=1)
    pre.drop(columns=["dx", "score", "response"]).to_csv(root / "pre.csv", index=False)
    table(90, ["T"], seed=2, pattern="ageing", years=4, prefix="T").to_csv(
        root / "tgt.csv", index=False
    )
    db, key = root / "db.duckdb", root / "key"
    # a fixed key: pseudonyms (and so scan order, folds and every figure) are the same in every
    # test process; a fresh random key made the fixture's results differ from run to run
    key.write_text("5e" * 32 + "\n")
    key.chmod(0o600)
    ingest([root / "pre.csv"], column_map=root / "map.yaml", source="pre", db=db, key_file=key)
    ingest([root / "tgt.csv"], column_map=root / "tmap.yaml", source="tgt", db=db, key_file=key)
    run = root / "pretrain"
    fit_pretrain(parse_config(PRETRAIN), db=db, out=run)  # type: ignore[arg-type]
    return root, db, run


def _copy_db(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / "db.duckdb"
    shutil.copy(src, dst)
    return dst


@pytest.mark.slow
def test_transfer_run_writes_the_comparison(
    pretrained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    root, db, run = pretrained
    config = parse_config(
        transfer_config(
            representations=[
                "raw",
                "brain_age_gap",
                "sex_score",
                "leaf_embedding",
                "warm_start",
                "warm_start_base_margin",
                "normative_z",
                "linear_projection",
                "stacked",
            ],
            protocol={"folds": 3, "repeats": 1, "train_sizes": [30, "all"], "permutations": 5},
        )
    )
    result = fit_transfer(
        config,
        db=_copy_db(db, tmp_path),
        out=tmp_path / "run",  # type: ignore[arg-type]
        pretrained=run,
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["transfer"]) == {
        "raw",
        "brain_age_gap",
        "sex_score",
        "leaf_embedding",
        "warm_start",
        "warm_start_base_margin",
        "normative_z",
        "linear_projection",
        "stacked",
    }
    for sizes in metrics["transfer"].values():
        assert set(sizes) == {"30", "all"}
        for cell in sizes.values():
            assert 0.0 <= cell["auc"] <= 1.0
            assert cell["auc_ci"][0] <= cell["auc"] <= cell["auc_ci"][1]
            assert cell["delta_ci"][0] <= cell["delta_vs_raw"] <= cell["delta_ci"][1]
    assert metrics["transfer"]["raw"]["all"]["delta_vs_raw"] == 0.0
    assert metrics["selected"]["representation"] in metrics["transfer"]
    assert 0.0 < metrics["permutation_p"] <= 1.0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["kind"] == "transfer"
    assert manifest["pretrained"]["run_id"] == load_pretrained(run).run_id
    assert str(root) not in json.dumps(manifest)  # no absolute paths
    preds = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    assert set(preds["representation"]) == set(metrics["transfer"])
    assert "brain_age_gap" in result.table


def _factory(
    pretrained: tuple[Path, Path, Path], kind: str = "classification", target: str = "diagnosis"
) -> tuple[HeadFactory, pd.DataFrame, np.ndarray]:
    _, db, run_dir = pretrained
    run = load_pretrained(run_dir)
    ttype = "binary" if kind == "classification" else "continuous"
    config = parse_config(transfer_config(target={"name": target, "type": ttype}))
    _, X, y = load_transfer_data(config, run, db)  # type: ignore[arg-type]
    pre = run.training_frame(db)
    normative = NormativeModel().fit(
        pre.X.to_numpy(), pre.meta["age"], pre.meta["sex"], pre.meta["site"]
    )
    factory = HeadFactory(
        pretrained=run, kind=kind, covariates=("age", "sex"), normative=normative
    )
    return factory, X, y


def test_brain_age_gap_helps_when_disease_looks_like_ageing(
    pretrained: tuple[Path, Path, Path],
) -> None:
    factory, X, y = _factory(pretrained)
    builders = {n: (lambda s, n=n: factory.build(n, s)) for n in ("raw", "brain_age_gap")}
    result = compare_representations(
        X, y, builders, kind="classification", folds=3, repeats=3, sizes=[20], seed=1
    )
    gap = result.metrics["transfer"]["brain_age_gap"]["20"]
    raw = result.metrics["transfer"]["raw"]["20"]
    assert gap["auc"] > 0.7, gap
    assert gap["delta_vs_raw"] > 0.03, (gap, raw)


def test_brain_age_gap_does_not_help_when_disease_is_not_ageing(
    tmp_path: Path, pretrained: tuple[Path, Path, Path]
) -> None:
    root, db, run_dir = pretrained
    db2 = _copy_db(db, tmp_path)
    table(90, ["T"], seed=6, pattern="lateral", years=6, prefix="L").to_csv(
        tmp_path / "lat.csv", index=False
    )
    ingest(
        [tmp_path / "lat.csv"],
        column_map=root / "tmap.yaml",
        source="lat",
        db=db2,
        key_file=root / "key",
    )
    run = load_pretrained(run_dir)
    config = parse_config(transfer_config(cohort={"sources": ["lat"]}))
    _, X, y = load_transfer_data(config, run, db2)  # type: ignore[arg-type]
    factory = HeadFactory(pretrained=run, kind="classification", covariates=("age", "sex"))
    builders = {n: (lambda s, n=n: factory.build(n, s)) for n in ("raw", "brain_age_gap")}
    result = compare_representations(
        X, y, builders, kind="classification", folds=3, repeats=3, sizes=["all"], seed=1
    )
    gap = result.metrics["transfer"]["brain_age_gap"]["all"]
    raw = result.metrics["transfer"]["raw"]["all"]
    # the gap carries at most a trace of a pattern that moves no age-related direction;
    # the direct model finds it
    assert gap["auc"] < 0.72, gap
    assert raw["auc"] > 0.8, raw
    assert gap["delta_ci"][1] < 0, gap


@pytest.mark.slow
def test_permuted_labels_sit_at_chance(pretrained: tuple[Path, Path, Path]) -> None:
    """Averaged over label permutations every representation scores chance. One permutation
    of 90 labels is not enough: its AUC ranges from 0.40 to 0.68 by the draw alone."""
    factory, X, y = _factory(pretrained)
    names = ("raw", "brain_age_gap", "normative_z", "sex_score")
    builders = {n: (lambda s, n=n: factory.build(n, s)) for n in names}
    aucs: dict[str, list[float]] = {name: [] for name in names}
    for draw in range(5):
        yp = y[np.random.default_rng(draw).permutation(len(y))]
        result = compare_representations(
            X, yp, builders, kind="classification", folds=3, repeats=2, sizes=["all"], seed=2
        )
        for name in names:
            aucs[name].append(result.metrics["transfer"][name]["all"]["auc"])
    for name, values in aucs.items():
        # the mean of 5 null AUCs has a standard deviation of about 0.035
        assert abs(np.mean(values) - 0.5) < 0.09, (name, values)


@pytest.mark.slow
def test_permutation_p_values_are_roughly_uniform_under_the_null(
    pretrained: tuple[Path, Path, Path],
) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from morphml.transfer import RawFeatures

    factory, X, y = _factory(pretrained)
    run = factory.pretrained

    def build(seed: int) -> object:
        return make_pipeline(
            RawFeatures(pretrained=run), StandardScaler(), LogisticRegression(C=0.1)
        )

    pvalues = []
    for k in range(12):
        yp = y[np.random.default_rng(100 + k).permutation(len(y))]
        result = compare_representations(
            X,
            yp,
            {"raw": build},
            kind="classification",
            folds=3,
            repeats=1,
            sizes=["all"],
            seed=k,
            permutations=19,
        )
        pvalues.append(result.metrics["permutation_p"])
    p = np.asarray(pvalues)
    # under the null p is uniform on {0.05, 0.10, ..., 1}: not piled up near 0
    assert (p <= 0.1).sum() <= 4, p
    assert 0.25 < p.mean() < 0.75, p


def test_same_seed_same_comparison(pretrained: tuple[Path, Path, Path]) -> None:
    factory, X, y = _factory(pretrained)
    builders = {n: (lambda s, n=n: factory.build(n, s)) for n in ("raw", "normative_z")}
    a = compare_representations(
        X, y, builders, kind="classification", folds=3, repeats=1, sizes=["all"], seed=9
    )
    b = compare_representations(
        X, y, builders, kind="classification", folds=3, repeats=1, sizes=["all"], seed=9
    )
    pd.testing.assert_frame_equal(a.predictions, b.predictions)


def test_every_representation_sees_identical_splits() -> None:
    y = np.r_[np.zeros(30), np.ones(30)]
    splits = make_splits(y, "classification", folds=5, repeats=2, sizes=[20, "all"], seed=0)
    assert len(splits) == 2 * 5 * 2
    again = make_splits(y, "classification", folds=5, repeats=2, sizes=[20, "all"], seed=0)
    for a, b in zip(splits, again, strict=True):
        np.testing.assert_array_equal(a.train, b.train)
        assert not set(a.train) & set(a.test)
    sub = [s for s in splits if s.size == "20"]
    assert all(len(s.train) == 20 and y[s.train].sum() == 10 for s in sub)


def test_test_fold_values_never_reach_the_fit(pretrained: tuple[Path, Path, Path]) -> None:
    factory, X, y = _factory(pretrained)
    train, test = np.arange(0, 60), np.arange(60, len(y))
    for name in ("raw", "brain_age_gap", "normative_z", "leaf_embedding", "warm_start"):
        model = factory.build(name, 0).fit(X.iloc[train], y[train])
        wrecked = X.copy()
        feature_cols = [c for c in X.columns if not c.startswith("meta:")]
        wrecked.iloc[test, [X.columns.get_loc(c) for c in feature_cols]] *= 1.5
        again = factory.build(name, 0).fit(wrecked.iloc[train], y[train])
        np.testing.assert_allclose(
            model.decision_function(X.iloc[train[:10]]),
            again.decision_function(wrecked.iloc[train[:10]]),
            err_msg=name,
        )


def test_continuous_target_runs_end_to_end(
    pretrained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, db, run = pretrained
    config = parse_config(
        transfer_config(
            target={"name": "score", "type": "continuous"},
            representations=["raw", "brain_age_gap", "warm_start", "stacked"],
        )
    )
    result = fit_transfer(
        config,
        db=_copy_db(db, tmp_path),
        out=tmp_path / "run",  # type: ignore[arg-type]
        pretrained=run,
    )
    cell = result.metrics["transfer"]["brain_age_gap"]["all"]
    assert {"r2", "r2_ci", "mae", "mae_ci", "delta_vs_raw", "delta_ci"} <= set(cell)
    # the score follows age, a covariate of every representation
    assert result.metrics["transfer"]["raw"]["all"]["r2"] > 0.5


def test_treatment_response_target_runs_end_to_end(
    pretrained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, db, run = pretrained
    config = parse_config(
        transfer_config(
            target={"name": "response", "type": "binary", "positive": "responder"},
            representations=["raw", "sex_score", "linear_projection"],
        )
    )
    result = fit_transfer(
        config,
        db=_copy_db(db, tmp_path),
        out=tmp_path / "run",  # type: ignore[arg-type]
        pretrained=run,
    )
    # the response is random here: no representation is far from chance
    for sizes in result.metrics["transfer"].values():
        assert 0.25 < sizes["all"]["auc"] < 0.75


def test_missing_pretrain_features_are_listed(
    pretrained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    root, db, run = pretrained
    db2 = _copy_db(db, tmp_path)
    small = table(30, ["T"], seed=4, prefix="S").drop(
        columns=["lh_cuneus_thickness", "Left-Thalamus"]
    )
    small.to_csv(tmp_path / "small.csv", index=False)
    ingest(
        [tmp_path / "small.csv"],
        column_map=root / "tmap.yaml",
        source="small",
        db=db2,
        key_file=root / "key",
    )
    config = parse_config(transfer_config(cohort={"sources": ["small"]}))
    with pytest.raises(TransferError, match=r"lack 2 of the pretrain run's .*cuneus"):
        fit_transfer(config, db=db2, out=tmp_path / "run", pretrained=run)  # type: ignore[arg-type]


def test_one_class_and_too_few_samples_are_refused(
    pretrained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, db, run = pretrained
    one_class = parse_config(
        transfer_config(cohort={"sources": ["tgt"], "filters": {"diagnosis": ["patient"]}})
    )
    with pytest.raises(TransferError, match="one class only"):
        fit_transfer(one_class, db=db, out=tmp_path / "a", pretrained=run)  # type: ignore[arg-type]
    folds = parse_config(transfer_config(protocol={"folds": 50, "repeats": 1}))
    with pytest.raises(TransferError, match=r"fewer than protocol\.folds"):
        fit_transfer(folds, db=db, out=tmp_path / "b", pretrained=run)  # type: ignore[arg-type]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_stale_pretrain_run_is_refused_unless_allowed(
    pretrained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from morphml.db import withdraw

    root, db, run = pretrained
    db2 = _copy_db(db, tmp_path)
    # the copy's runs table points at a run folder beside it that is not there
    withdraw(db2, source="pre", original_id="P0003", key_file=root / "key",
             allow_unreachable=True)  # fmt: skip
    config = parse_config(
        transfer_config(
            representations=["raw"],
            protocol={"folds": 3, "repeats": 1, "train_sizes": ["all"], "permutations": 0},
        )
    )
    with pytest.raises(TransferError, match="stale"):
        fit_transfer(config, db=db2, out=tmp_path / "a", pretrained=run)  # type: ignore[arg-type]
    result = fit_transfer(
        config,
        db=db2,
        out=tmp_path / "b",
        pretrained=run,  # type: ignore[arg-type]
        allow_stale=True,
    )
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["pretrained"]["stale"]


def test_new_site_refused_when_config_says_refuse(
    pretrained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, db, run = pretrained
    config = parse_config(transfer_config(harmonize={"new_sites": "refuse"}))
    with pytest.raises(TransferError, match=r"sites \['T'\] were never seen"):
        fit_transfer(config, db=db, out=tmp_path / "a", pretrained=run)  # type: ignore[arg-type]


def test_cli_transfer_and_bad_pretrained(
    pretrained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    import yaml

    _, db, run = pretrained
    cfg = tmp_path / "t.yaml"
    cfg.write_text(
        yaml.safe_dump(
            transfer_config(
                representations=["raw", "brain_age_gap"],
                protocol={"folds": 3, "repeats": 1, "train_sizes": ["all"], "permutations": 20},
            )
        )
    )
    db2 = _copy_db(db, tmp_path)
    runner = CliRunner()
    res = runner.invoke(
        cli,
        [
            "fit",
            str(cfg),
            "--db",
            str(db2),
            "--out",
            str(tmp_path / "r"),
            "--pretrained",
            str(run),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "brain_age_gap" in res.output and "selected:" in res.output
    # the resolved config names the pretrain run given on the command line
    written = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert written["pretrained"] == str(run)
    res = runner.invoke(
        cli,
        [
            "fit",
            str(cfg),
            "--db",
            str(db2),
            "--out",
            str(tmp_path / "s"),
            "--pretrained",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 2
    assert "not a morphml run directory" in res.output
    with connect(db2, read_only=True) as con:
        kinds = {k for (k,) in con.execute("SELECT kind FROM runs").fetchall()}
    assert "transfer" in kinds


def test_normative_model_adapts_a_new_site_with_shrinkage() -> None:
    rng = np.random.default_rng(0)
    n = 600
    age = rng.uniform(20, 80, n)
    sex = rng.integers(0, 2, n).astype(float)
    site = rng.choice(["a", "b", "c", "d"], n)
    offsets = {"a": 0.0, "b": 0.1, "c": -0.1, "d": 0.05}
    X = (3 - 0.01 * age + 0.05 * sex + np.vectorize(offsets.get)(site))[:, None]
    X = X + rng.normal(0, 0.1, (n, 1))
    model = NormativeModel().fit(X, age, sex, site)
    z = model.zscores(X, age, sex, site)
    assert abs(z.mean()) < 0.05 and 0.9 < z.std() < 1.1
    # a new site 0.3 higher: unadapted it is refused; adapted from 40 controls it is centred
    age_new = rng.uniform(20, 80, 80)
    sex_new = rng.integers(0, 2, 80).astype(float)
    X_new = (3.3 - 0.01 * age_new + 0.05 * sex_new)[:, None] + rng.normal(0, 0.1, (80, 1))
    new = np.full(80, "new")
    with pytest.raises(TransferError, match="not adapted"):
        model.zscores(X_new, age_new, sex_new, new)
    model.adapt(X_new[:40], age_new[:40], sex_new[:40], new[:40])
    z_new = model.zscores(X_new[40:], age_new[40:], sex_new[40:], new[40:])
    assert abs(z_new.mean()) < 0.4
    # two controls: the offset shrinks toward the prior (0)
    few = (
        NormativeModel().fit(X, age, sex, site).adapt(X_new[:2], age_new[:2], sex_new[:2], new[:2])
    )
    raw_mean = float((X_new[:2, 0] - few.predict_mean(age_new[:2], sex_new[:2])[:, 0]).mean())
    assert abs(few.adapted_["new"][0][0]) < abs(raw_mean)
    # no controls: adapting from nothing changes nothing, and the prior scores the site as
    # the pretraining cohort's average site (offset 0, scale 1)
    empty = NormativeModel().fit(X, age, sex, site)
    empty.adapt(X_new[:0], age_new[:0], sex_new[:0], new[:0])
    assert empty.adapted_ == {}
    prior = empty.zscores(X_new, age_new, sex_new, new, unknown="prior")
    mean = empty.predict_mean(age_new, sex_new)
    sd = np.sqrt(empty._variance(age_new))
    np.testing.assert_allclose(prior, (X_new - mean) / sd)


def test_normative_z_keeps_the_prior_for_a_new_site_without_training_controls() -> None:
    from morphml.transfer._representations import NormativeZ

    rng = np.random.default_rng(1)
    n = 300
    age = rng.uniform(20, 80, n)
    sex = rng.integers(0, 2, n).astype(float)
    site = rng.choice(["a", "b"], n)
    X = (3 - 0.01 * age)[:, None] + rng.normal(0, 0.1, (n, 2))
    norm = NormativeModel().fit(X, age, sex, site)

    class _Run:  # the slice of PretrainedRun that NormativeZ reads
        def __init__(self) -> None:
            self.feature_ids = ["f0", "f1"]

    def frame(m: int, sites: list[str], control: list[bool]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "f0": rng.normal(2.5, 0.1, m),
                "f1": rng.normal(2.5, 0.1, m),
                "meta:age": rng.uniform(20, 80, m),
                "meta:sex": rng.integers(0, 2, m).astype(float),
                "meta:site": sites,
                "meta:control": control,
            }
        )

    # training fold: controls only at new site "x"; patients only at new site "y"
    train = frame(20, ["x"] * 10 + ["y"] * 10, [True] * 10 + [False] * 10)
    rep = NormativeZ(pretrained=_Run(), normative=norm).fit(
        train, np.r_[np.zeros(10), np.ones(10)]
    )  # type: ignore[arg-type]
    assert set(rep.normative_.adapted_) == {"x"}
    test = frame(6, ["x", "y", "z"] * 2, [True] * 6)
    z = rep.transform(test)
    assert np.isfinite(np.asarray(z, dtype=float)).all()
    assert norm.adapted_ == {}  # the shared pretrained norm is never adapted in place


@pytest.mark.slow
def test_transfer_from_a_combat_pretrain_run(
    pretrained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    root, db0, _ = pretrained
    db = _copy_db(db0, tmp_path)
    table(80, ["A", "B"], seed=4, pattern="ageing", years=4, prefix="K").to_csv(
        tmp_path / "known.csv", index=False
    )
    ingest([tmp_path / "known.csv"], column_map=root / "tmap.yaml", source="known", db=db,
           key_file=root / "key")  # fmt: skip
    config = dict(PRETRAIN, models={"age": ["ridge"], "sex": ["logistic"]},
                  harmonize={"method": "combat", "covariates": ["age", "sex"]})  # fmt: skip
    run = tmp_path / "combat-pretrain"
    fit_pretrain(parse_config(config), db=db, out=run)  # type: ignore[arg-type]
    sidecar = json.loads((run / "models" / "age-ridge.json").read_text())
    assert sidecar["feature_ids"][-3:] == ["meta:site", "meta:age", "meta:sex"]
    # target scans at the pretraining's own sites: every representation runs
    ok = transfer_config(
        cohort={"sources": ["known"]},
        representations=["raw", "brain_age_gap", "sex_score", "linear_projection"],
        protocol={"folds": 2, "repeats": 1, "train_sizes": ["all"], "permutations": 0},
    )
    result = fit_transfer(parse_config(ok), db=db, out=tmp_path / "t1", pretrained=run,  # type: ignore[arg-type]
                          record=False)  # fmt: skip
    assert set(result.metrics["transfer"]) >= {"raw", "brain_age_gap", "sex_score"}
    # a new site cannot pass through the pretrained ComBat: one clear refusal before any work
    with pytest.raises(TransferError, match=r"harmonises its features with combat.*\['T'\]"):
        fit_transfer(parse_config(transfer_config()), db=db, out=tmp_path / "t2",  # type: ignore[arg-type]
                     pretrained=run, record=False)  # fmt: skip
    assert not (tmp_path / "t2").exists()


def test_leaf_embedding_equals_a_one_hot_code_of_the_training_leaves(
    pretrained: tuple[Path, Path, Path],
) -> None:
    from sklearn.preprocessing import OneHotEncoder

    from morphml.transfer._representations import LeafEmbedding

    _, db, run_dir = pretrained
    run = load_pretrained(run_dir)
    config = parse_config(transfer_config())
    _, X, _ = load_transfer_data(config, run, db)  # type: ignore[arg-type]
    train, test = X.iloc[:50], X.iloc[50:]
    rep = LeafEmbedding(pretrained=run, covariates=("age", "sex")).fit(train)
    expected = OneHotEncoder(handle_unknown="ignore").fit(rep._leaves(train))
    n = len(rep.codes_)
    for part in (train, test):
        got = rep.transform(part)
        want = expected.transform(rep._leaves(part)).toarray()
        np.testing.assert_array_equal(got[:, :n].toarray(), want)
    # test scans reach leaves no training scan reached: those are all zeros, not errors
    assert rep.transform(test)[:, :n].sum() < len(test) * rep._leaves(test).shape[1]


def test_warm_start_never_modifies_the_shared_pretrained_booster(
    pretrained: tuple[Path, Path, Path],
) -> None:
    from morphml.transfer._representations import WarmStartBooster

    _, db, run_dir = pretrained
    run = load_pretrained(run_dir)
    _, X, y = load_transfer_data(parse_config(transfer_config()), run, db)  # type: ignore[arg-type]
    booster = run.get("age", "xgboost").booster_parts()[1].get_booster()  # type: ignore[union-attr]
    before = booster.num_boosted_rounds()
    first = WarmStartBooster(pretrained=run, n_rounds=5).fit(X, y)
    assert first.booster_.num_boosted_rounds() == 5  # the new trees
    assert booster.num_boosted_rounds() == before
    again = WarmStartBooster(pretrained=run, n_rounds=5).fit(X, y)
    np.testing.assert_array_equal(first.decision_function(X), again.decision_function(X))


def test_warm_start_equals_boosting_on_from_the_pretrained_booster(
    pretrained: tuple[Path, Path, Path],
) -> None:
    """The pretrained trees as base margin = continuing the pretrained booster itself."""
    import xgboost as xgb

    from morphml.transfer._representations import WarmStartBooster, _logistic_grad

    _, db, run_dir = pretrained
    run = load_pretrained(run_dir)
    _, X, y = load_transfer_data(parse_config(transfer_config()), run, db)  # type: ignore[arg-type]
    rep = WarmStartBooster(pretrained=run, n_rounds=8, random_state=0).fit(X, y)
    inputs, _ = rep._trees(X)
    model = run.get("age", "xgboost")
    assert model is not None
    base = model.booster_parts()[1].get_booster()
    params = {"eta": 0.05, "max_depth": 2, "seed": 0, "nthread": 1, "subsample": 1.0}
    dtrain = rep._dmatrix(inputs, label=y.astype(float), base_margin=np.full(len(y), rep.offset_))
    continued = xgb.train(params, dtrain, 8, xgb_model=base, obj=_logistic_grad)
    expected = continued.predict(
        rep._dmatrix(inputs, base_margin=np.full(len(y), rep.offset_)), output_margin=True
    )
    np.testing.assert_allclose(rep.decision_function(X), expected, rtol=1e-4, atol=1e-4)


def test_inner_searches_give_grid_search_cv_answers(pretrained: tuple[Path, Path, Path]) -> None:
    from sklearn.model_selection import GridSearchCV

    from morphml.transfer._heads import C_GRID, ROUNDS_GRID, PenaltySearch, RoundsSearch

    _, db, run_dir = pretrained
    run = load_pretrained(run_dir)
    config = parse_config(transfer_config())
    _, X, y = load_transfer_data(config, run, db)  # type: ignore[arg-type]
    norm = NormativeModel().fit(*_pretraining_norm_inputs(run, db))
    factory = HeadFactory(pretrained=run, kind="classification", covariates=("age", "sex"),
                          inner_folds=3, normative=norm)  # fmt: skip
    train, test = X.iloc[:60], X.iloc[60:]
    for name in ("raw", "normative_z", "leaf_embedding"):
        ours = PenaltySearch(factory._pipeline(name, 1), param="C", values=C_GRID,
                             cv=factory._cv(1)).fit(train, y[:60])  # fmt: skip
        grid = GridSearchCV(factory._pipeline(name, 1), {"model__C": list(C_GRID)},
                            cv=factory._cv(1), scoring="roc_auc").fit(train, y[:60])  # fmt: skip
        assert ours.best_value_ == grid.best_params_["model__C"], name
        np.testing.assert_allclose(ours.cv_scores_.mean(0), grid.cv_results_["mean_test_score"])
        np.testing.assert_allclose(ours.decision_function(test), grid.decision_function(test))
    ours_r = RoundsSearch(factory._warm("warm_start", 1), values=ROUNDS_GRID,
                          cv=factory._cv(1)).fit(train, y[:60])  # fmt: skip
    grid_r = GridSearchCV(factory._warm("warm_start", 1), {"n_rounds": list(ROUNDS_GRID)},
                          cv=factory._cv(1), scoring="roc_auc").fit(train, y[:60])  # fmt: skip
    assert ours_r.best_value_ == grid_r.best_params_["n_rounds"]
    np.testing.assert_allclose(ours_r.cv_scores_.mean(0), grid_r.cv_results_["mean_test_score"],
                               rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(ours_r.decision_function(test), grid_r.decision_function(test))


def _pretraining_norm_inputs(run: PretrainedRun, db: Path) -> tuple[np.ndarray, ...]:
    pre = run.training_frame(db)
    pre = pre.subset(pre.meta["age"].notna() & pre.meta["sex"].notna())
    return (
        pre.X.to_numpy(np.float64),
        pre.meta["age"].to_numpy(np.float64),
        pre.meta["sex"].to_numpy(np.float64),
        pre.meta["site"].fillna("unknown").astype(str).to_numpy(),
    )


@pytest.mark.slow
def test_a_transfer_run_passes_its_audit_and_fails_after_an_edit(
    pretrained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from morphml.audit import audit_run

    root, db0, _ = pretrained
    db = _copy_db(db0, tmp_path)
    config = transfer_config(
        representations=["raw", "normative_z"],
        protocol={"folds": 3, "repeats": 1, "train_sizes": ["all"], "permutations": 5},
    )
    run = root / "transfer-for-audit"  # beside the pretrain run, where the audit looks for it
    fit_transfer(parse_config(config), db=db, out=run, pretrained=root / "pretrain")  # type: ignore[arg-type]
    result = audit_run(run, db=db)
    assert result.reproduced, result.verdict
    scores = pd.read_parquet(run / "predictions.parquet")
    scores.loc[0, "score"] += 0.5
    scores.to_parquet(run / "predictions.parquet", index=False)
    changed = audit_run(run, db=db)
    assert not changed.reproduced
    assert "prediction" in changed.verdict.lower()
