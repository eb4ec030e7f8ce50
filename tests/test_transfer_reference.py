"""Transfer with a reference model: ``reference: PATH`` and the representation ``reference_z``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from morphml.cli import cli
from morphml.config import CohortSpec, FeatureSpec, parse_config
from morphml.db import ingest
from morphml.exceptions import ConfigError, TransferError
from morphml.features import load_frame
from morphml.pipelines import fit_pretrain, fit_transfer
from morphml.reference import ReferenceModel
from morphml.reference._basis import braincharts_knots, common_design
from morphml.reports import render_html, summarize
from morphml.rundir import load_pretrained
from morphml.transfer import HeadFactory
from morphml.transfer._reference import REFERENCE_PREFIX, ReferenceZ
from tests.test_transfer import MAP, TARGET_MAP, table, transfer_config

PRETRAIN_LIGHT = {
    "kind": "pretrain",
    "cohort": {"sources": ["pre"]},
    "targets": ["age", "sex"],
    "models": {"age": ["ridge"], "sex": ["logistic"]},
    "tuning": {"trials": 1, "inner_folds": 2},
    "validation": {"schemes": ["kfold"], "folds": 2, "bootstrap": 100},
    "seed": 3,
    "device": "cpu",
}
RAW = FeatureSpec(
    exclude=[], log_volumes=False, relative_thickness=False, site_covariates=False
)  # fmt: skip


def fit_reference(values: pd.DataFrame, age: np.ndarray, sex: np.ndarray, site: np.ndarray,
                  sites: list[str]) -> ReferenceModel:  # fmt: skip
    """A reference of braincharts' form (no warp) fitted by least squares: small and exact."""
    knots = braincharts_knots()
    common = common_design(age, sex, knots)
    indicators = np.column_stack([(site == s).astype(float) for s in sites])
    design = np.column_stack([common[:, :3], indicators, common[:, 3:]])
    y = values.to_numpy(np.float64)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    d = design.shape[1]
    return ReferenceModel(
        features=list(values.columns), sites=sites, knots=knots, coef=coef.T,
        cov=np.zeros((y.shape[1], d, d)), noise_var=resid.var(axis=0, ddof=d),
        warp_kind="none", warp_params=np.tile([0.0, 1.0], (y.shape[1], 1)),
        provenance={"source": "test reference", "n_people": len(y), "n_sites": len(sites),
                    "licence": "CC0", "citation": "none", "archive_sha256": "0" * 64,
                    "atlas": "aparc+aseg+global", "morphml_version": "test"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    """Database (pretraining source 'pre', target 'tgt' at a new site), pretrain run, reference."""
    root = tmp_path_factory.mktemp("transfer_reference")
    (root / "map.yaml").write_text(MAP)
    (root / "tmap.yaml").write_text(TARGET_MAP)
    pre = table(300, ["A", "B", "C"], seed=1)
    pre.drop(columns=["dx", "score", "response"]).to_csv(root / "pre.csv", index=False)
    table(90, ["T"], seed=2, pattern="ageing", years=6, prefix="T").to_csv(
        root / "tgt.csv", index=False
    )
    db, key = root / "db.duckdb", root / "key"
    key.write_text("5e" * 32 + "\n")
    key.chmod(0o600)
    ingest([root / "pre.csv"], column_map=root / "map.yaml", source="pre", db=db, key_file=key)
    ingest([root / "tgt.csv"], column_map=root / "tmap.yaml", source="tgt", db=db, key_file=key)
    run = root / "pretrain"
    fit_pretrain(parse_config(PRETRAIN_LIGHT), db=db, out=run)  # type: ignore[arg-type]
    frame = load_frame(db, CohortSpec(sources=["pre"]), RAW)
    meta = frame.meta
    ref = fit_reference(
        frame.X, meta["age"].to_numpy(float), (meta["sex"] == "M").to_numpy(float),
        meta["site"].astype(str).to_numpy(), ["A", "B", "C"],
    )  # fmt: skip
    ref_dir = ref.save(root / "reference")
    return root, db, run, ref_dir


def _reference_config(ref_dir: Path, **overrides: object) -> dict[str, object]:
    config = transfer_config(
        representations=["raw", "normative_z", "reference_z"],
        reference=str(ref_dir),
        protocol={"folds": 3, "repeats": 1, "train_sizes": [20, "all"], "permutations": 0},
        components=0,
    )
    config.update(overrides)
    return config


def test_a_transfer_run_compares_reference_z_with_raw_and_normative_z(
    setup: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    _, db, run, ref_dir = setup
    config = parse_config(_reference_config(ref_dir))
    result = fit_transfer(config, db=db, out=tmp_path / "run", pretrained=run)  # type: ignore[arg-type]
    transfer = result.metrics["transfer"]
    assert set(transfer) == {"raw", "normative_z", "reference_z"}
    cell = transfer["reference_z"]["all"]
    assert cell["n_splits"] == 3 and "delta_ci" in cell
    # patients look 6 years older in every feature: the deviations find them
    assert cell["auc"] > 0.75
    facts = result.metrics["reference"]
    assert facts["provenance"]["source"] == "test reference"
    assert facts["folder"] == "reference" and facts["n_features_used"] == facts["n_features"]
    curves = json.loads((tmp_path / "run" / "reference.json").read_text())["curves"]
    first = curves["features"][0]
    assert len(first["quantiles"]["female"]) == 5
    assert len(first["quantiles"]["female"][0]) == len(curves["ages"])
    assert len(first["points"]["age"]) == 90
    # the lower centile curve lies below the higher one at every age
    hippocampus = {c["feature"]: c for c in curves["features"]}["aseg.na.Left-Hippocampus.volume"]
    q = np.asarray(hippocampus["quantiles"]["male"])
    assert np.all(np.diff(q, axis=0) > 0)
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "reference_z" in saved
    # the report shows the provenance and one centile figure per drawn feature
    summary = summarize(tmp_path / "run")
    assert summary["transfer"]["reference"]["provenance"]["licence"] == "CC0"
    assert summary["config"]["reference"] == "reference"  # the folder's name, not its path
    html = render_html(summary)
    assert "Reference model" in html and "test reference" in html
    assert html.count("Reference centile curves") == len(curves["features"])


def test_reference_needs_reference_z_and_back() -> None:
    with pytest.raises(ConfigError, match="'reference_z' needs 'reference: PATH'"):
        parse_config(transfer_config(representations=["raw", "reference_z"]))
    with pytest.raises(ConfigError, match="'reference_z' is not among the representations"):
        parse_config(transfer_config(reference="somewhere"))
    with pytest.raises(ConfigError, match="reference_adaptation"):
        parse_config(transfer_config(representations=["raw", "reference_z"], reference="r",
                                     reference_adaptation="mean"))  # fmt: skip


def test_a_bad_reference_path_is_refused_in_one_line(
    setup: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    root, db, run, _ = setup
    missing = root / "no-such-reference"
    config = parse_config(_reference_config(missing))
    with pytest.raises(TransferError, match=r"reference: .*not a reference-model folder"):
        fit_transfer(config, db=db, out=tmp_path / "a", pretrained=run)  # type: ignore[arg-type]
    assert not (tmp_path / "a").exists()
    cfg = tmp_path / "t.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(_reference_config(root / "tgt.csv")))
    out = CliRunner().invoke(
        cli, ["fit", str(cfg), "--db", str(db), "--out", str(tmp_path / "b"),
              "--pretrained", str(run)],
    )  # fmt: skip
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "reference:" in lines[0] and "morphml reference import" in lines[0]


def _frame(ref: ReferenceModel, n: int, site: str, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Healthy scans drawn from the reference at ``site`` moved by an offset of 1.5 sd."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 70, n)
    sex = (rng.random(n) < 0.5).astype(float)
    meta = pd.DataFrame({"age": age, "sex": sex, "site": ["A"] * n})
    mu, sd = ref.predict(meta)
    values = mu.to_numpy() + sd.to_numpy() * (rng.normal(size=mu.shape) + 1.5 + shift)
    X = pd.DataFrame(values, columns=[f"{REFERENCE_PREFIX}{f}" for f in ref.features])
    X["meta:age"], X["meta:sex"], X["meta:site"] = age, sex, site
    X["meta:control"] = True
    return X


def test_site_adaptation_uses_training_controls_only(setup: tuple[Path, Path, Path, Path]) -> None:
    ref = ReferenceModel.load(setup[3])
    train, test = _frame(ref, 60, "NEW", seed=1), _frame(ref, 30, "NEW", seed=2)
    train.loc[train.index[40:], "meta:control"] = False
    rep = ReferenceZ(reference=ref).fit(train)
    before = rep.transform(test)
    # test rows and training patients may change at will: nothing fitted moves
    edited = train.copy()
    ref_cols = [c for c in train.columns if c.startswith(REFERENCE_PREFIX)]
    edited.loc[edited.index[40:], ref_cols] *= 3.0
    again = ReferenceZ(reference=ref).fit(edited)
    np.testing.assert_array_equal(again.transform(test), before)
    shifted = test.copy()
    shifted[ref_cols] *= 2.0
    np.testing.assert_array_equal(rep.transform(shifted)[:3], rep.transform(shifted[:3]))
    # ... while the training controls do move it
    moved = train.copy()
    moved.loc[moved.index[:40], ref_cols] *= 1.1
    assert not np.allclose(ReferenceZ(reference=ref).fit(moved).transform(test), before)


def test_z_and_loads_stay_on_the_reference_scale(setup: tuple[Path, Path, Path, Path]) -> None:
    ref = ReferenceModel.load(setup[3])
    rep = ReferenceZ(reference=ref).fit(_frame(ref, 200, "NEW", seed=3))
    n_z = len(rep.features_)
    healthy = rep.transform(_frame(ref, 400, "NEW", seed=4))
    z, loads = healthy[:, :n_z], healthy[:, n_z : n_z + 4]
    # the site's 1.5 sd offset is adapted away; the healthy spread stays 1 (not rescaled)
    assert abs(z.mean()) < 0.1 and 0.85 < z.std() < 1.15
    assert np.all(np.abs(loads[:, :2].mean(axis=0)) < 0.25)
    assert np.all((loads[:, :2].std(axis=0) > 0.7) & (loads[:, :2].std(axis=0) < 1.3))
    # scans one more healthy sd away: every z moves by about 1, the loads by about sqrt(n)
    far = rep.transform(_frame(ref, 400, "NEW", seed=4, shift=1.0))
    assert 0.9 < (far[:, :n_z] - z).mean() < 1.1
    thick = np.asarray([f.endswith(".thickness") for f in rep.features_])
    gain = (far[:, n_z] - loads[:, 0]).mean()
    assert gain == pytest.approx(np.sqrt(thick.sum()), rel=0.1)
    names = rep.get_feature_names_out()
    assert len(names) == healthy.shape[1] and names[-2:].tolist() == ["age", "sex"]


def test_reference_z_head_does_not_rescale_the_deviations(
    setup: tuple[Path, Path, Path, Path],
) -> None:
    _, _, run, ref_dir = setup
    factory = HeadFactory(
        pretrained=load_pretrained(run), kind="classification", covariates=("age", "sex"),
        reference=ReferenceModel.load(ref_dir),
    )  # fmt: skip
    search = factory.build("reference_z", seed=0)
    steps = [name for name, _ in search.pipeline.steps]
    assert steps == ["rep", "model"]
    assert isinstance(search.pipeline.named_steps["rep"], ReferenceZ)
    with pytest.raises(TransferError, match="needs a reference model"):
        ReferenceZ().fit(_frame(ReferenceModel.load(ref_dir), 10, "NEW", seed=0))
