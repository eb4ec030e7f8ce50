"""Transfer statistics: one observed score per cell, what the p-value tests, the headline."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from morphml.evaluation import compare_representations
from morphml.pipelines._transfer import format_table
from morphml.reports._summary import _headline, _permutation_view


class _Columns:
    """A logistic model of some columns of X (a stand-in representation)."""

    def __init__(self, columns: list[str], seed: int) -> None:
        self.columns = columns
        self.model = make_pipeline(StandardScaler(), LogisticRegression(random_state=seed))

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> _Columns:
        self.model.fit(X[self.columns], y)
        return self

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model.decision_function(X[self.columns]))


def _data(signal: float, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(40), np.ones(40)]
    X = pd.DataFrame(
        {"a": rng.normal(0, 1, 80) + signal * y, "b": rng.normal(0, 1, 80) + signal * y}
    )
    return X, y


def _builders() -> dict[str, Any]:
    return {
        "raw": lambda seed: _Columns(["a"], seed),
        "stacked": lambda seed: _Columns(["a", "b"], seed),
    }


def test_the_permutation_test_uses_the_tables_observed_score() -> None:
    X, y = _data(signal=1.5)
    result = compare_representations(
        X, y, _builders(), kind="classification", folds=4, repeats=3, sizes=["all"], seed=1,
        permutations=9, permutation_repeats=1,
    )  # fmt: skip
    m = result.metrics
    perm = m["permutation"]
    sel = m["selected"]
    cell = m["transfer"][sel["representation"]][sel["n_train"]]
    # one observed score: the table's mean over every repeat, not the first repeat's
    assert perm["observed"] == cell["auc"]
    first = result.scores[
        (result.scores["representation"] == sel["representation"]) & (result.scores["repeat"] == 0)
    ]
    assert perm["observed"] != pytest.approx(first["auc"].mean(), abs=1e-12)
    assert perm["observed_repeats"] == 3 and perm["repeats"] == 1
    # a strong signal: no permuted score reaches it, p is the floor 1/(9+1) and says so
    assert m["permutation_p"] == pytest.approx(0.1)
    assert perm["p_floor"] == pytest.approx(0.1) and perm["at_floor"] is True
    assert perm["tests"] == "against chance"
    assert "not against raw" in perm["note"] and "smallest value" in perm["note"]
    assert "conservative" in perm["note"]  # 1 null repeat against 3 observed
    table = format_table(m)
    assert "against chance (not against raw): p <= 0.1000 (the floor of 9 permutations)" in table


def test_the_headline_is_the_selected_delta_vs_raw() -> None:
    X, y = _data(signal=0.8, seed=3)
    m = compare_representations(
        X, y, _builders(), kind="classification", folds=4, repeats=3, sizes=["all"], seed=2,
        permutations=0,
    ).metrics  # fmt: skip
    head = m["headline"]
    sel = m["selected"]
    assert head["representation"] == sel["representation"]
    cell = m["transfer"][sel["representation"]]["all"]
    if sel["representation"] == "raw":
        assert head["delta_vs_raw"] is None and "raw (no pretraining)" in head["statement"]
    else:
        assert head["delta_vs_raw"] == cell["delta_vs_raw"]
        assert head["delta_ci"] == cell["delta_ci"]
        assert head["includes_zero"] == (cell["delta_ci"][0] <= 0 <= cell["delta_ci"][1])
        assert "vs raw" in head["statement"]
    assert m["permutation_p"] is None
    assert "headline:" in format_table(m)


def test_old_transfer_metrics_still_report() -> None:
    """metrics.json written before the headline and the floor: table and report rebuild them."""
    X, y = _data(signal=1.5, seed=4)
    m = compare_representations(
        X, y, _builders(), kind="classification", folds=4, repeats=2, sizes=["all"], seed=1,
        permutations=19,
    ).metrics  # fmt: skip
    old = copy.deepcopy(m)
    del old["headline"]
    for key in ("p_floor", "at_floor", "tests", "note", "observed_repeats"):
        del old["permutation"][key]
    assert format_table(old) == format_table(m)
    assert _headline(old) == m["headline"]
    view = _permutation_view(old["permutation"])
    assert view is not None
    assert (
        view["p_floor"] == pytest.approx(1 / 20)
        and view["at_floor"] == m["permutation"]["at_floor"]
    )
    assert view["tests"] == "against chance"
