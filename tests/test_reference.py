"""Reference models: braincharts import, prediction against PCNtoolkit's own z, site adaptation."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from morphml.exceptions import ReferenceModelError, UntrustedPickleError
from morphml.io import recognise_column
from morphml.reference import ReferenceDeviations, ReferenceModel, import_braincharts
from morphml.reference._basis import (
    braincharts_knots,
    common_design,
    inverse_warp,
    spline_basis,
    warp,
)
from morphml.reference._blr import _neg_log_evidence, fit_blr
from morphml.reference._unpickle import read_pickle

from .conftest import SHARED_DATA

BRAINCHARTS = SHARED_DATA / "braincharts"
ARCHIVE_57K = BRAINCHARTS / "lifespan_57K_82sites.zip"
ARCHIVE_DK = BRAINCHARTS / "lifespan_DK_46K_59sites.zip"
ORACLE = SHARED_DATA / "pcntoolkit-demo" / "fcon1000_te_Z.csv"
PALLIDUM = "aseg.na.Right-Pallidum.volume"


@pytest.fixture(scope="module")
def ref_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 57K archive imported once and saved in morphml's own format."""
    out = tmp_path_factory.mktemp("ref") / "lifespan57k"
    import_braincharts(ARCHIVE_57K).save(out)
    return out


@pytest.fixture(scope="module")
def ref(ref_dir: Path) -> ReferenceModel:
    return ReferenceModel.load(ref_dir)


@pytest.fixture(scope="module")
def oracle() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The fcon1000/COBRE rows: features + meta columns, and PCNtoolkit's z per canonical id."""
    df = pd.read_csv(ORACLE)
    zcols = [c for c in df.columns if c.endswith("_Z_predict")]
    ids = {c: recognise_column(c.removesuffix("_Z_predict")) for c in zcols}
    X = pd.DataFrame({ids[c]: df[c.removesuffix("_Z_predict")] for c in zcols})
    X["meta:age"] = df["age"]
    X["meta:sex"] = df["sex"]
    X["meta:site"] = df["site"]
    X["meta:control"] = (df["group"].fillna("Control") == "Control").astype(int)
    Z = pd.DataFrame({ids[c]: df[c] for c in zcols})
    return X, Z


# ---------------------------------------------------------------------------- import


def test_57k_archive_imports_with_canonical_ids_and_provenance(ref: ReferenceModel) -> None:
    assert len(ref.features) == 187
    assert len(ref.sites) == 82
    assert ref.sites[:2] == ["ABCD_01", "ABCD_02"] and "ixi" in ref.sites
    assert ref.unmapped == ["avg_thickness"]  # listed, not guessed
    # aliases of the reader's table: FS6 thalamus, Destrieux '&', eTIV
    assert "aseg.na.Left-Thalamus.volume" in ref.features
    assert "a2009s.lh.G_and_S_frontomargin.thickness" in ref.features
    assert "global.na.eTIV.volume" in ref.features
    i = ref.features.index("aseg.na.Left-Thalamus.volume")
    assert ref.source_names[i] == "Left-Thalamus-Proper"
    prov = ref.provenance
    assert len(prov["archive_sha256"]) == 64
    assert prov["n_sites"] == 82 and prov["n_people"] > 50_000
    assert "e72904" in prov["citation"] and "e85082" in prov["citation"]
    assert "GPL-3.0" in prov["licence"]
    assert prov["atlas"] == "a2009s+aseg+global"
    assert ref.cov.shape == (187, 92, 92)


def test_dk_archive_imports_with_its_own_site_order() -> None:
    dk = import_braincharts(ARCHIVE_DK)
    assert len(dk.features) == 68
    assert all(f.startswith("aparc.") and f.endswith(".thickness") for f in dk.features)
    assert "aparc.rh.insula.thickness" in dk.features
    assert sorted(dk.unmapped) == ["Mean_Thickness", "Median_Thickness"]
    published = (BRAINCHARTS / "site_ids_ct_dk_59sites.txt").read_text().split()
    assert dk.sites == published  # design order of the published list, not sorted
    assert dk.provenance["n_sites"] == 59


def test_saved_reference_holds_no_pickle_and_round_trips(
    ref: ReferenceModel, ref_dir: Path
) -> None:
    assert sorted(p.name for p in ref_dir.iterdir()) == ["arrays.npz", "reference.json"]
    with np.load(ref_dir / "arrays.npz", allow_pickle=False) as npz:
        assert all(npz[k].dtype.kind in "fi" for k in npz.files)
    fresh = import_braincharts(ARCHIVE_57K)
    meta = pd.DataFrame({"age": [12.0, 45.0, 80.0], "sex": [0, 1, 1], "site": ["ixi", "x", ""]})
    for a, b in zip(ref.predict(meta), fresh.predict(meta), strict=True):
        np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())


# ---------------------------------------------------------------------------- prediction


def test_adapted_z_is_an_exact_affine_map_of_pcntoolkits_z(
    ref: ReferenceModel, oracle: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    # The published z were adapted per site from another set of the same sites: per site and
    # measure, morphml's z must be an affine map of them (PCNtoolkit's own code reproduces
    # its numbers to 1e-14; the residual here is float noise amplified by the slope).
    X, Z = oracle
    z = ReferenceDeviations(ref, adaptation="braincharts").fit(X).transform(X)
    assert sorted(z.columns) == sorted(Z.columns)
    Z = Z[z.columns]
    worst = 0.0
    for _, rows in X.groupby("meta:site").groups.items():
        o = Z.loc[rows].to_numpy()
        v = z.loc[rows].to_numpy()
        for j in range(o.shape[1]):
            design = np.column_stack([np.ones(len(rows)), o[:, j]])
            coef, *_ = np.linalg.lstsq(design, v[:, j], rcond=None)
            worst = max(worst, float(np.abs(design @ coef - v[:, j]).max()))
    assert worst < 1e-6


def test_zscores_are_warped_residuals_over_the_predicted_sd(
    ref: ReferenceModel, oracle: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    X, _ = oracle
    meta = X[["meta:age", "meta:sex", "meta:site"]]
    mu, sd = ref.predict(meta)
    z = ref.zscores(X, meta)
    fy = ref.warp(X)
    np.testing.assert_allclose(z * sd + mu, fy, rtol=1e-12, atol=1e-12)
    assert (sd.to_numpy() > 0).all()
    # the full design row, written out, gives the same mean and variance for a known site
    i = ref.features.index(PALLIDUM)
    age, sex, site = 40.0, 1.0, "ixi"
    row = np.zeros(92)
    row[:3] = 1.0, age, sex
    row[3 + ref.sites.index(site)] = 1.0
    row[85:] = spline_basis(np.array([age]), braincharts_knots())[0]
    mean_full = row @ ref.coef[i]
    var_full = ref.noise_var[i] + row @ ref.cov[i] @ row
    m, s = ref.predict(pd.DataFrame({"age": [age], "sex": [sex], "site": [site]}), [PALLIDUM])
    assert m.iloc[0, 0] == pytest.approx(mean_full, rel=1e-12)
    assert s.iloc[0, 0] == pytest.approx(np.sqrt(var_full), rel=1e-12)


def test_centiles_are_monotone_in_the_value(ref: ReferenceModel) -> None:
    y = np.linspace(800, 3000, 200)
    X = pd.DataFrame({PALLIDUM: y})
    meta = pd.DataFrame({"age": np.full(200, 40.0), "sex": np.ones(200), "site": "ixi"})
    c = ref.centiles(X, meta)[PALLIDUM].to_numpy()
    assert np.all(np.diff(c) > 0) and 0 < c[0] < 0.01 and 0.99 < c[-1] < 1


def test_median_curves_are_plausible_and_invert_the_centiles(ref: ReferenceModel) -> None:
    ages = np.array([10.0, 40.0, 80.0])
    median = ref.quantile_curve(PALLIDUM, ages, sex=1)
    assert median.shape == (3,)
    assert 1500 < median[1] < 2200  # adult right pallidum about 1,800 mm^3
    assert median[2] < median[1]  # shrinks with age
    curves = ref.quantile_curve(PALLIDUM, ages, sex=0, site="ixi", q=[0.05, 0.5, 0.95])
    assert curves.shape == (3, 3) and np.all(np.diff(curves, axis=0) > 0)
    X = pd.DataFrame({PALLIDUM: curves[0]})
    meta = pd.DataFrame({"age": ages, "sex": 0, "site": "ixi"})
    np.testing.assert_allclose(ref.centiles(X, meta)[PALLIDUM], 0.05, atol=1e-10)
    thick = ref.quantile_curve("a2009s.lh.G_and_S_frontomargin.thickness", [40.0], sex=1)
    assert 1.5 < thick[0] < 3.5


def test_warp_and_its_inverse_round_trip() -> None:
    y = np.array([0.5, 2.5, 1800.0, 1.5e6])
    x = warp(y, -0.07, 0.25)
    np.testing.assert_allclose(inverse_warp(x, -0.07, 0.25), y, rtol=1e-12)


def test_bad_covariates_are_refused_with_the_reason(ref: ReferenceModel) -> None:
    X = pd.DataFrame({PALLIDUM: [1800.0]})
    with pytest.raises(ReferenceModelError, match=r"sex.*0 \(female\) / 1 \(male\)"):
        ref.zscores(X, pd.DataFrame({"age": [40.0], "sex": [2]}))
    with pytest.raises(ReferenceModelError, match=r"'sex' must be numeric coded 0 .* 'M' in 1"):
        ref.zscores(X, pd.DataFrame({"age": [40.0], "sex": ["M"]}))  # the database's coding
    with pytest.raises(ReferenceModelError, match="outside the reference's range"):
        ref.zscores(X, pd.DataFrame({"age": [480.0], "sex": [1]}))  # months, not years
    with pytest.raises(ReferenceModelError, match="no 'age' column"):
        ref.zscores(X, pd.DataFrame({"sex": [1]}))
    with pytest.raises(ReferenceModelError, match=re.escape(f"closest: '{PALLIDUM}'")):
        ref.predict(pd.DataFrame({"age": [40.0], "sex": [1]}), ["aseg.na.Right-Palidum.volume"])
    z = ref.zscores(X.assign(x=1), pd.DataFrame({"age": [np.nan], "sex": [1]}))
    assert list(z.columns) == [PALLIDUM] and np.isnan(z.iloc[0, 0])  # no age: no score


# ---------------------------------------------------------------------------- refusals


def _evil_pickle(marker: Path) -> bytes:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    return pickle.dumps({"blr": Evil()}, protocol=4)


def test_a_tampered_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    tampered = tmp_path / "lifespan_57K_82sites.zip"
    with zipfile.ZipFile(ARCHIVE_57K) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("Right-Pallidum/Models/NM_0_0_estimate.pkl"):
                data = _evil_pickle(marker)
            dst.writestr(info, data)
    shutil.copy(BRAINCHARTS / "site_ids_ct_82sites.txt", tmp_path)
    with pytest.raises(UntrustedPickleError) as info:
        import_braincharts(tampered)
    message = str(info.value)
    assert "Right-Pallidum/Models/NM_0_0_estimate.pkl" in message
    assert "posix.system" in message or "nt.system" in message or "os.system" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [("builtins", "eval"), ("numpy", "load"), ("pcntoolkit.model.bayesreg", "GPR")],
)
def test_the_unpickler_admits_only_its_table(module: str, name: str) -> None:
    data = b"\x80\x04\x8c" + bytes([len(module)]) + module.encode()
    data += b"\x8c" + bytes([len(name)]) + name.encode() + b"\x93."
    with pytest.raises(UntrustedPickleError, match=f"{module}.{name}"):
        read_pickle(data, "x.pkl")


def test_object_arrays_are_refused() -> None:
    data = pickle.dumps(np.array([1, "a"], dtype=object), protocol=4)
    with pytest.raises(UntrustedPickleError, match=r"number type|admitted"):
        read_pickle(data, "x.pkl")


def test_bad_archives_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ReferenceModelError, match="no such file"):
        import_braincharts(tmp_path / "missing.zip")
    not_zip = tmp_path / "model.zip"
    not_zip.write_text("hello")
    with pytest.raises(ReferenceModelError, match="not a zip archive"):
        import_braincharts(not_zip)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "x")
    with pytest.raises(ReferenceModelError, match="not a braincharts model archive"):
        import_braincharts(empty)
    short_sites = tmp_path / "sites.txt"
    short_sites.write_text("a\nb\n")
    with pytest.raises(ReferenceModelError, match="lists 2 sites; the models have 59"):
        import_braincharts(ARCHIVE_DK, sites=short_sites)
    lonely = tmp_path / "lifespan_DK_46K_59sites.zip"
    shutil.copy(ARCHIVE_DK, lonely)  # no site list beside it
    with pytest.raises(ReferenceModelError, match="--sites FILE"):
        import_braincharts(lonely)


def test_a_changed_or_foreign_reference_folder_is_refused(ref_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ref"
    shutil.copytree(ref_dir, copy)
    with (copy / "arrays.npz").open("r+b") as fh:
        fh.seek(2000)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(ReferenceModelError, match="changed since the reference was written"):
        ReferenceModel.load(copy)
    with pytest.raises(ReferenceModelError, match="import it first"):
        ReferenceModel.load(ARCHIVE_57K)
    shutil.copy(ref_dir / "arrays.npz", copy / "arrays.npz")
    doc = json.loads((copy / "reference.json").read_text())
    (copy / "reference.json").write_text(json.dumps({**doc, "format_version": 99}))
    with pytest.raises(ReferenceModelError, match=r"format version 99.*upgrade morphml"):
        ReferenceModel.load(copy)
    (copy / "reference.json").write_text(json.dumps({**doc, "features": doc["features"][1:]}))
    with pytest.raises(ReferenceModelError, match=r"coef has shape \(187, 92\)"):
        ReferenceModel.load(copy)
    (copy / "reference.json").write_text(json.dumps({**doc, "sites": "ixi"}))
    with pytest.raises(ReferenceModelError, match="'sites' must be a list"):
        ReferenceModel.load(copy)
    (copy / "reference.json").write_text("{not json")
    with pytest.raises(ReferenceModelError, match="not valid JSON"):
        ReferenceModel.load(copy)
    with pytest.raises(ReferenceModelError, match="not a reference-model folder"):
        ReferenceModel.load(tmp_path / "nothing")


def test_inconsistent_arrays_are_refused(ref: ReferenceModel) -> None:
    with pytest.raises(ReferenceModelError, match="cov has shape"):
        ReferenceModel(
            features=ref.features[:2], sites=ref.sites, knots=ref.knots, coef=ref.coef[:2],
            cov=ref.cov[:3], noise_var=ref.noise_var[:2], warp_kind="sinarcsinh",
            warp_params=ref.warp_params[:2], provenance={},
        )  # fmt: skip


# ---------------------------------------------------------------------------- adaptation


def _cobre(oracle: tuple[pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    X, _ = oracle
    return X[X["meta:site"] == "COBRE"].reset_index(drop=True)


def test_adaptation_learns_from_training_controls_only(
    ref: ReferenceModel, oracle: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    cobre = _cobre(oracle)
    train, test = cobre.iloc[:80], cobre.iloc[80:]
    for adaptation in ("braincharts", "shrunk"):
        dev = ReferenceDeviations(ref, adaptation=adaptation).fit(train)
        assert dev.adapted_["COBRE"].n_controls == int(train["meta:control"].sum())
        z1 = dev.transform(test)
        # changing patients of the training rows changes nothing: only controls adapt
        shifted = train.copy()
        patients = shifted["meta:control"] == 0
        shifted.loc[patients, PALLIDUM] *= 1.5
        z2 = ReferenceDeviations(ref, adaptation=adaptation).fit(shifted).transform(test)
        pd.testing.assert_frame_equal(z1, z2)
        # the test rows never enter: a transform of other rows leaves the fit unchanged
        assert np.isfinite(z1.to_numpy()).all()
    # braincharts: the training controls end with mean 0 and population sd 1 per feature
    dev = ReferenceDeviations(ref).fit(train)
    zc = dev.transform(train[train["meta:control"] == 1])
    np.testing.assert_allclose(zc.mean(), 0, atol=1e-10)
    np.testing.assert_allclose(zc.std(ddof=0), 1, atol=1e-10)


def test_shrunk_adaptation_stays_near_the_prior_with_few_controls(
    ref: ReferenceModel, oracle: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    cobre = _cobre(oracle)
    controls = cobre[cobre["meta:control"] == 1]
    few = ReferenceDeviations(ref, adaptation="shrunk").fit(controls.iloc[:2])
    many = ReferenceDeviations(ref, adaptation="shrunk").fit(controls)
    bc = ReferenceDeviations(ref, adaptation="braincharts").fit(controls)
    scale_few = few.adapted_["COBRE"].scale
    scale_many = many.adapted_["COBRE"].scale
    # 2 controls + 10 prior pseudo-scans: the scale is pulled toward 1
    assert np.abs(np.log(scale_few)).mean() < np.abs(np.log(scale_many)).mean()
    z_many = many.transform(cobre)
    z_bc = bc.transform(cobre)
    assert np.corrcoef(z_many.to_numpy().ravel(), z_bc.to_numpy().ravel())[0, 1] > 0.98


def test_new_sites_policy(ref: ReferenceModel, oracle: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    cobre = _cobre(oracle)
    patients_only = cobre[cobre["meta:control"] == 0]
    with pytest.raises(ReferenceModelError, match=r"'COBRE'.*not adapted.*new_sites: prior"):
        ReferenceDeviations(ref).fit(patients_only).transform(cobre)
    with pytest.raises(ReferenceModelError, match=r"'COBRE'.*refused"):
        ReferenceDeviations(ref, new_sites="refuse").fit(cobre)
    prior = ReferenceDeviations(ref, new_sites="prior").fit(patients_only).transform(cobre)
    meta = cobre[["meta:age", "meta:sex", "meta:site"]]
    pd.testing.assert_frame_equal(prior, ref.zscores(cobre, meta)[prior.columns])
    with pytest.raises(ReferenceModelError, match="'new_sites' parameter"):
        ReferenceDeviations(ref, new_sites="guess").fit(cobre)
    with pytest.raises(ReferenceModelError, match="must be a ReferenceModel"):
        ReferenceDeviations().fit(cobre)


def test_clone_shares_the_reference_and_meta_can_come_apart(
    ref: ReferenceModel, oracle: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    cobre = _cobre(oracle)
    dev = ReferenceDeviations(ref, features=[PALLIDUM])
    assert clone(dev).reference is ref
    meta = cobre[["meta:age", "meta:sex", "meta:site", "meta:control"]].rename(
        columns=lambda c: c.removeprefix("meta:")
    )
    features = cobre[[PALLIDUM]]
    z_apart = dev.fit_transform(features, meta=meta)
    z_together = clone(dev).fit(cobre).transform(cobre)
    pd.testing.assert_frame_equal(z_apart, z_together)
    assert list(dev.get_feature_names_out()) == [PALLIDUM]
    fresh = clone(dev)
    with pytest.raises(NotFittedError):
        fresh.transform(cobre)
    assert fresh.fit(cobre) is fresh
    assert fresh.get_params()["features"] == [PALLIDUM]


# ---------------------------------------------------------------------------- fitting


def test_blr_fits_a_simulated_warped_model_as_well_as_the_truth(
    rng: np.random.Generator,
) -> None:
    def simulate(n: int) -> tuple[np.ndarray, np.ndarray]:
        age = rng.uniform(10, 80, n)
        sex = rng.integers(0, 2, n).astype(float)
        site = rng.integers(0, 3, n)
        common = common_design(age, sex, braincharts_knots())
        phi = np.column_stack([common[:, :3], np.eye(3)[site], common[:, 3:]])
        truth = np.zeros(phi.shape[1])
        truth[:3] = 2.0, -0.01, 0.3
        truth[3:6] = 0.2, -0.1, 0.0
        return phi, inverse_warp(phi @ truth + rng.normal(0, 0.25, n), 0.3, 0.6)

    phi, y = simulate(3000)
    fit = fit_blr(phi, y, warped=True)
    assert fit.converged
    # the sinh-arcsinh family is only weakly identified on a narrow range of values, so the
    # parameters need not come back; the evidence must be at least the truth's ...
    gram = phi.T @ phi
    at_fit = fit.nll
    at_truth = min(
        _neg_log_evidence(np.array([b, a, 0.3, np.log(0.6)]), phi, gram, y, True)
        for b in np.log(16) + np.linspace(-1, 1, 21)
        for a in np.linspace(-2, 4, 25)
    )
    assert at_fit <= at_truth + 1.0
    # ... and the centiles of new scans must be calibrated
    phi_new, y_new = simulate(4000)
    t = warp(y_new, fit.epsilon, fit.delta)
    var = fit.noise_var + np.einsum("nd,de,ne->n", phi_new, fit.cov, phi_new)
    z = (t - phi_new @ fit.coef) / np.sqrt(var)
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
    assert abs(np.mean(z < -1.6449) - 0.05) < 0.015 and abs(np.mean(z > 1.6449) - 0.05) < 0.015


def test_plain_blr_agrees_with_scikit_learns_evidence_maximisation(
    rng: np.random.Generator,
) -> None:
    from sklearn.linear_model import BayesianRidge

    n = 500
    phi = np.column_stack([np.ones(n), rng.normal(size=(n, 5))])
    y = phi @ np.array([3.0, 1.0, -0.5, 0.0, 0.2, 2.0]) + rng.normal(0, 0.7, n)
    fit = fit_blr(phi, y, warped=False)
    br = BayesianRidge(fit_intercept=False, tol=1e-10, max_iter=1000,
                       alpha_1=0, alpha_2=0, lambda_1=0, lambda_2=0).fit(phi, y)  # fmt: skip
    np.testing.assert_allclose(fit.coef, br.coef_, rtol=1e-4)
    assert fit.noise_var == pytest.approx(1 / br.alpha_, rel=1e-4)
    np.testing.assert_allclose(fit.cov, br.sigma_, rtol=1e-3)


# ---------------------------------------------------------------------------- database + CLI

FCON = SHARED_DATA / "pcntoolkit-demo" / "fcon1000.csv"
MAPS = Path(__file__).resolve().parents[1] / "configs" / "maps"
REF_CONFIG = """
kind: reference
name: test reference
cohort:
  sources: [fc]
features:
  atlases: [aseg]
  measures: [volume]
min_site_scans: 10
licence: CC0 for the test
"""


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """fcon1000 (four sites) and COBRE ingested; returns (root, db, linkage of cobre)."""
    from morphml.db import ingest

    root = tmp_path_factory.mktemp("refdb")
    fc = pd.read_csv(FCON)
    fc = fc[fc["site"].isin(["Beijing_Zang", "Cambridge_Buckner", "ICBM", "Baltimore"])]
    fc.to_csv(root / "fc.csv", index=False)
    db, key = root / "db.duckdb", root / "key"
    key.write_text("3a" * 32 + "\n")
    key.chmod(0o600)
    ingest([root / "fc.csv"], column_map=MAPS / "fcon1000.yaml", source="fc", db=db, key_file=key)
    linkage = root / "cobre-linkage.tsv"
    ingest([ORACLE], column_map=MAPS / "cobre.yaml", source="cobre", db=db, key_file=key,
           linkage_out=linkage)  # fmt: skip
    return root, db, linkage


def _invoke(args: list[str]) -> tuple[int, str]:
    from click.testing import CliRunner

    from morphml.cli import cli

    res = CliRunner().invoke(cli, args)
    return res.exit_code, res.output


def test_built_reference_is_plausible_and_holds_no_personal_data(
    database: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from morphml.db import connect

    root, db, _ = database
    cfg = tmp_path / "ref.yaml"
    cfg.write_text(REF_CONFIG)
    out = tmp_path / "built"
    code, output = _invoke(["reference", "build", str(cfg), "--db", str(db), "--out", str(out)])
    assert code == 0, output
    ref = ReferenceModel.load(out)
    assert ref.sites == ["Baltimore", "Beijing_Zang", "Cambridge_Buckner", "ICBM"]
    assert PALLIDUM in ref.features and all(f.startswith("aseg.") for f in ref.features)
    assert "aseg.na.Left-WM-hypointensities.volume" in ref.provenance["left_out"]  # all 0
    assert ref.provenance["sources"] == ["fc"] and ref.provenance["licence"] == "CC0 for the test"
    median = ref.quantile_curve(PALLIDUM, [30.0], sex=1, site="ICBM")
    assert 1300 < median[0] < 2300
    # canary: no original id, pseudonym, path or date in any byte of the reference
    blob = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    fc = pd.read_csv(root / "fc.csv")
    with connect(db, read_only=True) as con:
        keys = con.execute("SELECT scan_key, subject_key FROM scans").fetchall()
    canaries = [str(s) for s in fc["sub_id"]] + [k for pair in keys for k in pair]
    canaries += [str(tmp_path), str(root), str(db), "duckdb", pd.Timestamp.now().strftime("%Y-%m")]
    found = [c for c in canaries if c.encode() in blob]
    assert found == []
    # in-sample, the training controls' z are standard normal per feature
    meta = pd.DataFrame({"age": fc["age"], "sex": fc["sex"], "site": fc["site"]})
    X = pd.DataFrame({PALLIDUM: fc["Right-Pallidum"]})
    z = ref.zscores(X, meta)[PALLIDUM]
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.1


def test_build_config_mistakes_are_one_line_errors(
    database: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, db, _ = database
    cfg = tmp_path / "ref.yaml"
    cfg.write_text(REF_CONFIG.replace("min_site_scans", "min_site_scan"))
    code, output = _invoke(["reference", "build", str(cfg), "--db", str(db), "--out", "x"])
    assert code == 2 and "did you mean 'min_site_scans'" in output
    assert "Traceback" not in output
    cfg.write_text(REF_CONFIG.replace("sources: [fc]", "sources: [nope]"))
    code, output = _invoke(["reference", "build", str(cfg), "--db", str(db), "--out", "x"])
    assert code == 2 and "nope" in output
    cfg.write_text(REF_CONFIG.replace("kind: reference", "kind: pretrain"))
    code, output = _invoke(["reference", "build", str(cfg), "--db", str(db), "--out", "x"])
    assert code == 2 and "'kind' must be 'reference'" in output


def test_deviations_of_a_source_match_pcntoolkit_up_to_an_affine_map(
    database: tuple[Path, Path, Path], ref_dir: Path, tmp_path: Path
) -> None:
    _, db, linkage = database
    out = tmp_path / "dev.parquet"
    args = ["deviations", str(ref_dir), "--source", "cobre", "--db", str(db), "--out", str(out)]
    code, output = _invoke([*args, "--controls", "diagnosis=control"])
    assert code == 0, output
    assert "124 scans x 187 features" in output and "adapted 124" in output
    table = pd.read_parquet(out)
    assert table.index.name == "scan_key" and table.index.str.startswith("scan-").all()
    assert (table["site_status"] == "adapted").all()
    z = table.filter(like="z:").rename(columns=lambda c: c.removeprefix("z:"))
    c = table.filter(like="centile:").to_numpy()
    assert np.nanmin(c) > 0 and np.nanmax(c) < 1
    # the same scans in PCNtoolkit's output, through the linkage file
    link = pd.read_csv(linkage, sep="\t").set_index("scan_key")["original_id"]
    df = pd.read_csv(ORACLE).set_index("sub_id")
    for fid, col in [(PALLIDUM, "Right-Pallidum"), ("global.na.eTIV.volume",
                     "EstimatedTotalIntraCranialVol")]:  # fmt: skip
        o = df.loc[link[z.index], f"{col}_Z_predict"].to_numpy()
        design = np.column_stack([np.ones(len(o)), o])
        coef, *_ = np.linalg.lstsq(design, z[fid].to_numpy(), rcond=None)
        assert np.abs(design @ coef - z[fid].to_numpy()).max() < 1e-6
    # no controls named: the new site is refused with the fix, or scored with the prior
    code, output = _invoke(args)
    assert code == 2 and "--controls PHENOTYPE=VALUE" in output and "Traceback" not in output
    code, output = _invoke([*args, "--new-sites", "prior"])
    assert code == 0 and "prior 124" in output
    code, output = _invoke([*args[:-1], str(tmp_path / "dev.csv")])
    assert code == 2 and "FILE.parquet" in output
    code, output = _invoke([*args, "--controls", "diagnosis"])
    assert code == 2 and "PHENOTYPE=VALUE" in output
    code, output = _invoke([*args, "--controls", "group=Control"])
    assert code == 2 and "phenotype 'group' is not in the database" in output


def test_reference_import_and_info_commands(ref_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dk"
    code, output = _invoke(
        ["reference", "import", str(ARCHIVE_DK), "--format", "braincharts", "--out", str(out)]
    )
    assert code == 0, output
    assert "imported 68 features, 59 sites" in output and "Mean_Thickness" in output
    code, output = _invoke(["reference", "info", str(ref_dir)])
    assert code == 0 and "e72904" in output and "187 (a2009s 148, aseg 32, global 7)" in output
    code, output = _invoke(["reference", "info", str(ref_dir), "--json"])
    assert code == 0 and '"n_features": 187' in output
    for bad in (
        ["reference", "import", str(tmp_path / "none.zip"), "--format", "braincharts",
         "--out", str(tmp_path / "a")],
        ["reference", "import", str(ARCHIVE_DK), "--format", "braincharts", "--out", str(out)],
        ["reference", "info", str(ARCHIVE_57K)],
        ["deviations", str(ARCHIVE_57K), "--source", "x", "--out", str(tmp_path / "d.parquet")],
    ):  # fmt: skip
        code, output = _invoke(bad)
        assert code == 2, output
        assert output.startswith("morphml: error: ") and output.count("\n") == 1
    code, output = _invoke(
        ["reference", "import", str(ARCHIVE_DK), "--format", "pcn", "--out", str(out)]
    )
    assert code == 2 and "'pcn' is not" in output


def test_a_plain_reference_without_site_terms(database: tuple[Path, Path, Path]) -> None:
    import yaml

    from morphml.reference import ReferenceBuildConfig, build_reference

    root, db, _ = database
    data = yaml.safe_load(REF_CONFIG)
    data.update(warp="none", min_site_scans=1000)
    data["features"]["exclude"] = ["aseg.na.*-WM-hypointensities.volume", "aseg.na.*vessel*"]
    ref = build_reference(ReferenceBuildConfig.model_validate(data), db=db)
    assert ref.sites == [] and ref.warp_kind == "none" and ref.n_columns == 10
    assert ref.provenance["site_scans"] == {} and ref.provenance["n_sites"] == 0
    fc = pd.read_csv(root / "fc.csv")
    meta = pd.DataFrame({"age": fc["age"], "sex": fc["sex"], "site": fc["site"]})
    z = ref.zscores(pd.DataFrame({PALLIDUM: fc["Right-Pallidum"]}), meta)[PALLIDUM]
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.1
    with pytest.raises(ReferenceModelError, match="needs at least"):
        data["cohort"]["min_age"] = float(fc["age"].max())  # the oldest few, 10 columns
        build_reference(ReferenceBuildConfig.model_validate(data), db=db)
