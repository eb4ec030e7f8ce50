"""The report's layout and wording: no raw Python values, counts that match, one scheme
vocabulary, readable figures. (tests/test_reports.py covers the whole report of real runs.)"""

from __future__ import annotations

import html
import re
from typing import Any

import numpy as np
import pytest

from morphml.evaluation import scheme_key, scheme_keys_current
from morphml.reports import render_html
from morphml.reports._cohort import _software_counts, software_label
from morphml.reports._figures import (
    _limits,
    learning_curve_figure,
    per_site_figure,
    series_styles,
)
from morphml.reports._summary import _folds_by_scheme, _timing


def _pretrain_summary(**pretrain: Any) -> dict[str, Any]:
    return {
        "kind": "pretrain",
        "run": {
            "name": "run",
            "platform": {"system": "Linux", "python": "3.11"},
            **_timing(
                {"age/ridge/cv": 29.0, "age/ridge/leave_site_out": 300.0, "age/ridge/final": 12.5}
            ),
        },
        "pretrain": {
            "validation": {"schemes": ["kfold", "leave_site_out"], "folds": 5},
            **pretrain,
        },
    }


def _text(page: str) -> str:
    text = html.unescape(re.sub(r"<[^>]+>", " ", page)).replace("\xa0", " ")
    return re.sub(r"\s+", " ", text)


def test_timing_in_words_not_a_dict() -> None:
    page = render_html(_pretrain_summary())
    text = _text(page)
    assert "{" not in text.split("Platform:")[1][:400]
    assert "fitted in 5.7 min" in text  # 29 + 300 + 12.5 s
    assert "age/ridge/kfold 29 s" in text  # old runs' cv key in today's word
    assert "age/ridge/leave_site_out 5.0 min" in text


def test_software_of_table_sources_is_said_in_words() -> None:
    assert software_label(None, None) == "tables (software not recorded)"
    assert software_label("unknown", "?") == "tables (software not recorded)"
    assert software_label("FreeSurfer", None) == "FreeSurfer (version not recorded)"
    assert software_label("FreeSurfer", "7.4.1") == "FreeSurfer 7.4.1"
    counts = _software_counts({"nan nan": 5, "None None": 2, "FreeSurfer 7.4.1": 9})
    assert counts == {"FreeSurfer 7.4.1": 9, "tables (software not recorded)": 7}


def test_folds_counted_per_scheme() -> None:
    tuning = {f"age/ridge/leave_site_out/fold{k}": {} for k in range(23)}
    tuning.update({f"age/ridge/kfold/fold{k}": {} for k in range(5)})
    tuning.update({f"sex/logistic/kfold/fold{k}": {} for k in range(5)})
    folds = _folds_by_scheme({"tuning": tuning}, None)
    assert folds == {"leave_site_out": 23, "kfold": 5}
    page = render_html(
        _pretrain_summary(
            validation={
                "schemes": ["kfold", "leave_site_out"],
                "folds": 5,
                "folds_by_scheme": folds,
            }
        )
    )
    text = _text(page)
    assert "kfold (5 folds" in text
    assert "leave_site_out (23 folds, one per site" in text
    assert ", 5 folds)" not in text  # the old sentence gave one count for every scheme


def test_one_scheme_vocabulary() -> None:
    assert scheme_key("cv") == "kfold"
    assert scheme_key("leave_site_out") == "leave_site_out"
    old = {
        "targets": {"age": {"ridge": {"cv": {"mae": 1.0}, "external": {"mae": 2.0}}}},
        "run_id": "x",
    }
    new = scheme_keys_current(old)
    assert new["targets"]["age"]["ridge"] == {"kfold": {"mae": 1.0}, "external": {"mae": 2.0}}
    assert new["run_id"] == "x" and "cv" in old["targets"]["age"]["ridge"]  # a new dict


def test_transfer_without_harmonisation_does_not_read_as_a_contradiction() -> None:
    page = render_html(
        {
            "kind": "transfer",
            "run": {"name": "t"},
            "harmonization": {
                "method": "none",
                "new_sites": "adapt",
                "new_target_sites": ["clinic_a"],
                "diagnostics": None,
            },
        }
    )
    text = _text(page)
    assert "Method: none" not in text
    assert "not harmonised" in text and "clinic_a" in text and "adapts each new site" in text


def _curves(names: list[str]) -> dict[str, Any]:
    return {
        name: {
            "labels": ["20", "40"],
            "n_train_scans": [20, 40],
            "mean": [0.6 + i / 100] * 2,
            "lo": [0.5, 0.5],
            "hi": [0.8, 0.8],
        }
        for i, name in enumerate(names)
    }


def test_nine_learning_curves_stay_apart() -> None:
    names = [
        "raw",
        "brain_age_gap",
        "sex_score",
        "leaf_embedding",
        "warm_start",
        "warm_start_base_margin",
        "normative_z",
        "linear_projection",
        "stacked",
    ]
    styles = series_styles(names, "stacked")
    pairs = {(s["color"], s["marker"], s["linestyle"]) for s in styles.values()}
    assert len(pairs) == len(names)
    assert len({s["color"] for s in styles.values()}) == len(names)  # colours alone differ
    assert [n for n, s in styles.items() if s["band"]] == ["raw", "stacked"]
    assert styles["raw"]["color"] != styles["stacked"]["color"]
    figure = learning_curve_figure(
        {
            "learning_curve": _curves(names),
            "selected": {"representation": "stacked"},
            "metric": "auc",
            "metric_label": "AUC",
        }
    )
    assert figure is not None and figure["uri"].startswith("data:image/png;base64,")
    assert "(shaded) for raw and the selected representation only" in figure["alt"]


def test_scatter_axes_fit_the_data_not_the_outliers() -> None:
    rng = np.random.default_rng(0)
    age = rng.uniform(20, 80, 1000)
    pred = age + rng.normal(0, 5, 1000)
    pred[:3] = 250.0  # a few exploded bias corrections
    lo, hi = _limits(pred)
    assert hi < 110 and lo > 0


def test_per_site_figure_from_the_tables() -> None:
    def row(model: str, scheme: str, site: str, key: str, value: float | None) -> dict[str, Any]:
        return {
            "model": model,
            "scheme": scheme,
            "site": site,
            "n": 30,
            key: None if value is None else {"value": value, "ci": [value - 1, value + 1]},
        }

    per_site = {
        "age": {
            "rows": [
                row(m, s, f"site{k}", "mae", 4.0 + k)
                for m in ("ridge", "xgboost")
                for s in ("kfold", "leave_site_out")
                for k in range(23)
            ]
        },
        "sex": {"rows": [row("logistic", "kfold", "site0", "auc", None)]},  # not scored
    }
    figure = per_site_figure(per_site)
    assert figure is not None
    assert "23 sites" in figure["alt"] and "appendix" in figure["caption"]
    assert per_site_figure({"age": {"rows": []}}) is None


@pytest.mark.parametrize("pretrained", [None, "runs/pretrain"])
def test_transfer_config_view_names_the_pretrain_run(pretrained: str | None) -> None:
    from morphml.config import parse_config
    from morphml.reports._summary import _config_view

    raw = {
        "kind": "transfer",
        "name": "t",
        "target": {"name": "diagnosis", "type": "binary", "positive": "patient"},
    }
    if pretrained:
        raw["pretrained"] = pretrained
    view = _config_view(parse_config(raw))
    assert view["pretrained"] == (None if pretrained is None else "pretrain")
