"""morphml report: summaries of pretrain and transfer runs, self-contained private HTML."""

from __future__ import annotations

import base64
import json
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from morphml.cli import cli
from morphml.config import parse_config
from morphml.db import ingest
from morphml.exceptions import ReportError
from morphml.pipelines import fit_pretrain, fit_transfer
from morphml.qc import qc_at_ingest
from morphml.reports import TRIPOD_ITEMS, readable_feature, render_html, summarize, write_report
from morphml.simulate import simulate_cohort
from tests._browser import browser_problems, check_in_browser, chromium_or_skip

CANARY = "zzcanaryrep0rt"

PRETRAIN = {
    "kind": "pretrain",
    "name": "report-pretrain",
    "cohort": {
        "sources": ["pub"],
        "filters": {"diagnosis": ["control"]},
        "qc": {"exclude": ["euler_site_z", "multivariate_outlier"]},
    },
    "features": {"atlases": ["aseg", "global"], "measures": ["volume"]},
    "models": {"age": ["ridge", "xgboost"], "sex": ["logistic"]},
    "tuning": {"trials": 1, "inner_folds": 2},
    "validation": {"schemes": ["kfold"], "folds": 3, "bootstrap": 100},
    "seed": 3,
    "device": "cpu",
}

TRANSFER = {
    "kind": "transfer",
    "name": "report-transfer",
    "cohort": {"sources": ["hosp"], "filters": {"diagnosis": ["control", "patient"]}},
    "target": {"name": "diagnosis", "type": "binary", "positive": "patient"},
    "representations": ["raw", "brain_age_gap"],
    "protocol": {"folds": 3, "repeats": 1, "train_sizes": [20, "all"], "permutations": 3},
    "components": 2,
    "seed": 5,
}


def _tiny_xgboost(trial: Any) -> dict[str, Any]:
    # a few shallow trees: feature importance needs a real booster, not a good one
    return {
        "n_estimators": trial.suggest_int("n_estimators", 20, 20),
        "max_depth": trial.suggest_int("max_depth", 2, 2),
        "learning_rate": trial.suggest_float("learning_rate", 0.3, 0.3),
    }


@dataclass(frozen=True)
class Runs:
    root: Path
    db: Path
    pretrain: Path
    transfer: Path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """A database of two simulated cohorts (canaries planted), a pretrain and a transfer run."""
    from morphml import registry

    root = tmp_path_factory.mktemp("reports")
    db, key = root / "db.duckdb", root / "key"
    key.write_text("5eed" * 16 + "\n")
    key.chmod(0o600)
    for name, n, sites, seed in (("pub", 120, 3, 3), ("hosp", 70, 2, 4)):
        sim = simulate_cohort(root / name, n_subjects=n, n_sites=sites, seed=seed, canary=CANARY)
        ingest([root / name], source=name, db=db, key_file=key, on_error="skip",
               participants=sim.participants, column_map=sim.column_map,
               quality_control=qc_at_ingest)  # fmt: skip
    xgboost = registry.model_type("xgboost")
    registry.register_model_type(replace(xgboost, search_space=_tiny_xgboost), replace=True)
    try:
        fit_pretrain(parse_config(PRETRAIN), db=db, out=root / "runs" / "pretrain")  # type: ignore[arg-type]
    finally:
        registry.register_model_type(xgboost, replace=True)
    fit_transfer(
        parse_config(TRANSFER),  # type: ignore[arg-type]
        db=db, out=root / "runs" / "transfer", pretrained=root / "runs" / "pretrain",
    )  # fmt: skip
    return Runs(root, db, root / "runs" / "pretrain", root / "runs" / "transfer")


@pytest.fixture(scope="module")
def summaries(runs: Runs) -> dict[str, dict[str, Any]]:
    return {
        "pretrain": summarize(runs.pretrain, db=runs.db),
        "transfer": summarize(runs.transfer, db=runs.db),
    }


@pytest.fixture(scope="module")
def pages(runs: Runs, summaries: dict[str, dict[str, Any]]) -> dict[str, Path]:
    out = runs.root / "html"
    out.mkdir()
    paths = {}
    for kind, summary in summaries.items():
        paths[kind] = out / f"{kind}.html"
        paths[kind].write_text(render_html(summary), encoding="utf-8")
    return paths


def _metrics(run: Path) -> dict[str, Any]:
    return json.loads((run / "metrics.json").read_text())


def _manifest(run: Path) -> dict[str, Any]:
    return json.loads((run / "manifest.json").read_text())


def self_contained_problems(html: str) -> list[str]:
    """What would make a page fetch something or show a broken figure."""
    problems = []
    for attr, value in re.findall(r"""\b(src|href)\s*=\s*["']([^"']*)["']""", html, re.I):
        if re.match(r"\s*(https?:)?//", value, re.I):
            problems.append(f"external {attr}: {value[:60]}")
    if re.search(r"<script[^>]*\bsrc\b", html, re.I):
        problems.append("a <script src>")
    if re.search(r"<link\b", html, re.I):
        problems.append("a <link> element")
    if re.search(r"@import|url\(\s*['\"]?(https?:)?//", html, re.I):
        problems.append("a CSS import or external url()")
    for tag in re.findall(r"<img\b[^>]*>", html, re.I):
        src = re.search(r"""\bsrc\s*=\s*["']([^"']*)["']""", tag)
        alt = re.search(r"""\balt\s*=\s*["']([^"']+)["']""", tag)
        if src is None or not src.group(1).startswith("data:image/png;base64,"):
            problems.append(f"an <img> that is not a PNG data URI: {tag[:80]}")
        elif not base64.b64decode(src.group(1).split(",", 1)[1]).startswith(b"\x89PNG"):
            problems.append("an <img> data URI that is not a PNG")
        if alt is None:
            problems.append(f"an <img> without alt text: {tag[:80]}")
    return problems


# --- summarize ------------------------------------------------------------------------------


def test_pretrain_summary_matches_the_run(runs: Runs, summaries: dict[str, Any]) -> None:
    s = summaries["pretrain"]
    text = json.dumps(s, allow_nan=False)  # strict JSON: no NaN, numpy types or paths
    assert {"format", "kind", "run", "config", "cohort", "qc", "database", "features",
            "harmonization", "warnings", "pretrain", "transfer", "importance",
            "tripod"} <= set(s)  # fmt: skip
    assert s["kind"] == "pretrain" and s["transfer"] is None
    manifest, metrics = _manifest(runs.pretrain), _metrics(runs.pretrain)
    assert s["run"]["name"] == "pretrain"
    assert s["run"]["config_hash"] == manifest["config_hash"]
    assert s["run"]["feature_matrix_hash"] == manifest["feature_matrix_hash"]
    # every model x scheme with its metrics and intervals, exactly as metrics.json has them
    age_rows = s["pretrain"]["performance"]["age"]["rows"]
    assert {r["model_key"] for r in age_rows} == {"ridge", "xgboost"}
    for row in age_rows:
        m = metrics["targets"]["age"][row["model_key"]][row["scheme_key"]]
        for key in ("mae", "rmse", "r2", "r", "mae_corrected", "gap_age_r"):
            assert row[key]["value"] == pytest.approx(m[key])
            assert row[key]["ci"] == pytest.approx(m[f"{key}_ci"])
    sex_rows = s["pretrain"]["performance"]["sex"]["rows"]
    assert {r["model_key"] for r in sex_rows} == {"logistic", "logistic_etiv_adjusted"}
    for row in sex_rows:
        m = metrics["targets"]["sex"][row["model_key"]]["kfold"]
        for key in ("auc", "balanced_accuracy", "brier", "calibration_slope"):
            assert row[key]["value"] == pytest.approx(m[key])
    sites = {r["site"] for r in s["pretrain"]["per_site"]["age"]["rows"]}
    assert sites == set(metrics["targets"]["age"]["ridge"]["kfold"]["per_site"])
    per_sex = s["pretrain"]["per_sex"]["rows"]
    assert {r["sex"] for r in per_sex} == {"female", "male"}
    assert sum(r["n"] for r in per_sex if r["model"] == "ridge") == manifest["cohort"]["n_scans"]
    # figures' data: out-of-fold points and curves, no keys
    assert len(s["pretrain"]["age_points"]) == 2 and len(s["pretrain"]["sex_curves"]) == 2
    # cohort and QC from the database
    assert s["cohort"]["origin"] == "database"
    assert s["cohort"]["n_scans"] == len(manifest["scan_keys"])
    assert sum(s["cohort"]["sources"].values()) == len(manifest["scan_keys"])
    hist = s["cohort"]["age_histogram"]
    assert sum(map(sum, hist["counts"].values())) == len(manifest["scan_keys"])
    assert s["qc"]["exclude_rules"] == ["euler_site_z", "multivariate_outlier"]
    assert s["qc"]["n_candidates"] == len(manifest["scan_keys"]) + s["qc"]["n_excluded"]
    assert s["database"] == {"recorded": True, "stale": False, "reason": None,
                             "n_scans_missing": 0, "feature_matrix_matches": True}  # fmt: skip
    # XGBoost importance: gain from the booster, mean |SHAP| on the training matrix
    (imp,) = s["importance"]
    assert imp["target"] == "age" and imp["model"] == "xgboost"
    assert imp["ranked_by"] == "mean_abs_shap" and 0 < len(imp["rows"]) <= 20
    shap = [r["mean_abs_shap"] for r in imp["rows"]]
    assert shap == sorted(shap, reverse=True) and shap[0] > 0
    assert all(r["feature"] in manifest["feature_ids"] + manifest["site_covariates"]
               for r in imp["rows"])  # fmt: skip
    # no pseudonym, path or canary anywhere in the summary
    assert not re.search(r"(scan|sub)-[0-9a-f]{12}", text)
    assert str(runs.root) not in text and CANARY not in text


def test_tripod_lists_every_item(summaries: dict[str, Any]) -> None:
    mains = {re.match(r"\d+", item).group(0) for item, *_ in TRIPOD_ITEMS}  # type: ignore[union-attr]
    assert mains == {str(i) for i in range(1, 28)}
    for summary in summaries.values():
        items = summary["tripod"]
        assert [i["item"] for i in items] == [item for item, *_ in TRIPOD_ITEMS]
        status = {i["item"]: i["status"] for i in items}
        assert status["17"] == status["18a"] == status["18d"] == status["25"] == "authors"
        assert status["12a"] == status["11"] == "run"
        assert {i["status"] for i in items} == {"run", "partial", "authors"}
    text = {i["item"]: i["text"] for i in summaries["pretrain"]["tripod"]}
    assert "3-fold" in text["12a"] and "Optuna" in text["12c"]
    assert summaries["pretrain"]["run"]["morphml_version"] in text["18f"]


def test_transfer_summary_matches_the_run(runs: Runs, summaries: dict[str, Any]) -> None:
    s = summaries["transfer"]
    json.dumps(s, allow_nan=False)
    metrics = _metrics(runs.transfer)
    t = s["transfer"]
    assert s["pretrain"] is None and t["metric"] == "auc"
    assert t["target"]["n_scans"] == metrics["target"]["n_scans"]
    assert t["target"]["n_positive"] == metrics["target"]["n_positive"]
    assert t["target"]["n_positive"] + t["target"]["n_negative"] == t["target"]["n_scans"]
    rows = t["table"]["rows"]
    assert [r["representation"] for r in rows] == ["raw", "raw", "brain_age_gap", "brain_age_gap"]
    assert [r["n_train"] for r in rows] == ["20", "all"] * 2
    for row in rows:
        cell = metrics["transfer"][row["representation"]][row["n_train"]]
        assert row["auc"]["value"] == pytest.approx(cell["auc"])
        assert row["auc"]["ci"] == pytest.approx(cell["auc_ci"])
        if row["representation"] != "raw":
            assert row["delta"]["value"] == pytest.approx(cell["delta_vs_raw"])
            assert row["delta"]["ci"] == pytest.approx(cell["delta_ci"])
    chosen = [r for r in rows if r["selected"]]
    assert [r["representation"] for r in chosen] == [metrics["selected"]["representation"]]
    assert t["permutation_p"] == pytest.approx(metrics["permutation_p"])
    assert set(t["learning_curve"]) == {"raw", "brain_age_gap"}
    assert s["run"]["pretrained"]["directory"] == "pretrain"
    assert s["cohort"]["n_scans"] == metrics["target"]["n_scans"]
    assert s["importance"] == []
    assert any("not adjusted for that selection" in w for w in s["warnings"])


def test_summary_without_database(runs: Runs) -> None:
    s = summarize(runs.pretrain)
    assert s["cohort"]["origin"] == "manifest" and s["qc"] is None and s["database"] is None
    assert s["cohort"]["age_histogram"] is not None  # from the out-of-fold ages
    (imp,) = s["importance"]
    assert imp["ranked_by"] == "gain" and all(r["mean_abs_shap"] is None for r in imp["rows"])
    assert imp["rows"][0]["gain"] > 0 and "--db" in s["importance_note"]


def test_outcome_covariate_warning_and_harmonisation(runs: Runs, tmp_path: Path) -> None:
    run = Path(shutil.copytree(runs.pretrain, tmp_path / "harmonised"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["harmonize"].update(method="combat", allow_outcome_covariate=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = _metrics(run)
    metrics["harmonization"] = {
        "method": "combat", "covariates": ["age", "sex"], "site_accuracy_before": 0.9,
        "site_accuracy_after": 0.4, "chance": 0.45, "sites_scored": 3, "warning": None,
    }  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(metrics))
    s = summarize(run)
    assert s["harmonization"]["diagnostics"]["site_accuracy_after"] == 0.4
    assert any("allow_outcome_covariate" in w for w in s["warnings"])
    html = render_html(s)
    assert 'id="harmonisation"' in html and "allow_outcome_covariate" in html
    assert html.count('class="warning"') >= 2 and not self_contained_problems(html)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: p, "no manifest.json"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "is not a directory"),
    ],
)
def test_summarize_refuses_what_is_not_a_run(tmp_path: Path, make: Any, message: str) -> None:
    with pytest.raises(ReportError, match=message):
        summarize(make(tmp_path))


def test_summarize_refuses_an_unknown_kind(runs: Runs, tmp_path: Path) -> None:
    run = Path(shutil.copytree(runs.transfer, tmp_path / "odd"))
    manifest = _manifest(run)
    manifest["kind"] = "finetune"
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ReportError, match=r"run kind 'finetune' has no report"):
        summarize(run)


# --- render ---------------------------------------------------------------------------------


def test_render_a_minimal_hand_made_summary() -> None:
    html = render_html({"kind": "pretrain", "run": {"name": "tiny<run>"}})
    assert html.startswith("<!DOCTYPE html>") and "tiny&lt;run&gt;" in html  # escaped
    assert "<img" not in html and "@media print" in html
    assert not self_contained_problems(html)
    with pytest.raises(ReportError, match="needs 'kind'"):
        render_html({"run": {"name": "x"}})
    with pytest.raises(ReportError, match="'name'"):
        render_html({"kind": "transfer", "run": {}})


def test_render_a_hand_made_transfer_summary() -> None:
    cell = {"value": 0.71, "ci": [0.6, 0.82]}
    rows = [
        {"representation": "raw", "n_train": "all", "n_train_scans": 40, "auc": cell,
         "delta": None, "selected": False},
        {"representation": "normative_z", "n_train": "all", "n_train_scans": 40,
         "auc": {"value": 0.8, "ci": [0.7, 0.9]}, "delta": {"value": 0.09, "ci": [0.01, 0.17]},
         "selected": True},
    ]  # fmt: skip
    curve = {"labels": ["all"], "n_train_scans": [40], "mean": [0.71], "lo": [0.6], "hi": [0.82]}
    summary = {
        "kind": "transfer",
        "run": {"name": "hand-made", "morphml_version": "0.0.1"},
        "warnings": ["a warning <b>escaped</b>"],
        "transfer": {
            "target": {"name": "diagnosis", "type": "binary", "positive": "patient",
                       "n_scans": 60, "n_positive": 30, "n_negative": 30},
            "metric": "auc", "metric_label": "AUC",
            "table": {"columns": [{"key": "representation", "label": "representation"},
                                  {"key": "auc", "label": "AUC"},
                                  {"key": "delta", "label": "ΔAUC"}], "rows": rows},
            "learning_curve": {"raw": curve, "normative_z": {**curve, "mean": [0.8]}},
            "selected": {"representation": "normative_z", "n_train": "all", "rule": "best"},
            "permutation_p": 0.02,
        },
    }  # fmt: skip
    html = render_html(summary)
    assert 'class="selected"' in html and "0.710" in html and "[0.600, 0.820]" in html
    assert "a warning &lt;b&gt;escaped&lt;/b&gt;" in html
    assert html.count("<img") == 2  # learning curve and the difference from raw
    assert not self_contained_problems(html)


def test_real_pages_are_self_contained_and_private(
    runs: Runs, pages: dict[str, Path], summaries: dict[str, Any]
) -> None:
    # the checks below can fail: the canary is in the stats files, keys match the pattern
    planted = (p.read_text(errors="replace") for p in (runs.root / "pub").rglob("*.stats"))
    assert any(CANARY in text for text in planted)
    assert re.fullmatch(r"scan-[0-9a-f]{12,}", _manifest(runs.pretrain)["scan_keys"][0])
    for kind, path in pages.items():
        html = path.read_text(encoding="utf-8")
        assert not self_contained_problems(html), kind
        assert "<script" not in html.lower()
        # nothing identifying: no canary, no pseudonym, no absolute path of the run or db
        assert CANARY not in html and "canary" not in html.lower()
        assert not re.search(r"(scan|sub)-[0-9a-f]{12}", html)
        for path_text in (str(runs.root), str(runs.db), str(runs.pretrain), "/tmp/"):
            assert path_text not in html, path_text
        assert "TRIPOD+AI" in html and 'id="privacy"' in html
    pretrain = pages["pretrain"].read_text(encoding="utf-8")
    # predicted vs true, ROC etc., age histogram, importance, performance by site
    assert pretrain.count("<img") == 2 + 2 + 1 + 1 + 1
    assert 'id="appendix-sites"' in pretrain
    assert "Left" in pretrain and "mean |SHAP|" in pretrain
    assert summaries["pretrain"]["run"]["config_hash"] in pretrain
    transfer = pages["transfer"].read_text(encoding="utf-8")
    assert transfer.count("<img") == 1 + 2 and 'class="selected"' in transfer


def test_figures_leave_no_pyplot_state(summaries: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    before = list(plt.get_fignums())
    render_html(summaries["transfer"])
    assert plt.get_fignums() == before


def test_readable_feature_names() -> None:
    assert readable_feature("aparc.rh.parsopercularis.area") == (
        "right pars opercularis surface area (aparc)"
    )
    assert readable_feature("global.na.eTIV.volume") == "estimated total intracranial volume"
    assert readable_feature("a2009s.lh.G_and_S_frontomargin.thickness").startswith(
        "left gyrus and sulcus frontomargin"
    )
    assert readable_feature("not-an-id") == "not-an-id"


def test_templates_are_package_data() -> None:
    from importlib import resources

    templates = resources.files("morphml.reports").joinpath("templates")
    names = {p.name for p in templates.iterdir()}
    assert {"report.html", "style.css", "pretrain.html", "transfer.html"} <= names
    project = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"morphml.reports" = ["templates/*.html", "templates/*.css"]' in project


# --- write_report and the command line --------------------------------------------------------


def test_write_report_default_and_nested_out(runs: Runs, tmp_path: Path) -> None:
    run = Path(shutil.copytree(runs.transfer, tmp_path / "transfer"))
    assert write_report(run) == run / "report.html"
    nested = write_report(run, out=tmp_path / "a" / "b" / "t.html")
    assert nested.is_file() and nested.read_text().startswith("<!DOCTYPE html>")


def test_cli_writes_the_report(runs: Runs, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "pretrain.html"
    res = CliRunner().invoke(cli, ["report", str(runs.pretrain), "--out", str(out),
                                   "--db", str(runs.db)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"report written to {out}"
    assert "Quality control" in out.read_text()
    # the database also comes from MORPHML_DB, like every other command
    env_out = tmp_path / "env.html"
    res = CliRunner(env={"MORPHML_DB": str(runs.db)}).invoke(
        cli, ["report", str(runs.transfer), "--out", str(env_out)]
    )
    assert res.exit_code == 0, res.output
    assert 'id="qc"' in env_out.read_text()


def test_cli_bad_run_dir_is_one_line_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    for target in (tmp_path / "nope", tmp_path):
        res = runner.invoke(cli, ["report", str(target)])
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("morphml: error: "), res.output
        assert "Traceback" not in res.output


# --- in a browser ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pretrain", "transfer"])
def test_report_renders_in_chromium(pages: dict[str, Path], kind: str, tmp_path: Path) -> None:
    chromium_or_skip()
    shot = tmp_path / f"{kind}.png"
    check_in_browser(pages[kind], shot)
    assert shot.stat().st_size > 50_000


@pytest.mark.slow
def test_browser_check_catches_a_broken_image(pages: dict[str, Path], tmp_path: Path) -> None:
    chromium_or_skip()
    html = pages["transfer"].read_text(encoding="utf-8")
    broken = tmp_path / "broken.html"
    broken.write_text(
        html.replace("</footer>", '<img src="data:image/png;base64,AAAA" alt="broken"></footer>')
    )
    problems = browser_problems(broken, tmp_path / "broken.png")
    assert any("did not load" in p for p in problems), problems
    with pytest.raises(AssertionError, match="broken"):
        check_in_browser(broken, tmp_path / "broken.png")
