"""The thread policy: workers x BLAS/OpenMP threads <= cores, in force inside the workers."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from joblib import Parallel, delayed
from threadpoolctl import threadpool_info

from morphml._utils._threads import (
    available_cores,
    in_worker,
    threads_section,
    worker_threads,
)
from morphml.evaluation import compare_representations


def _pools() -> dict[str, int]:
    """Smallest thread count per user API (blas, openmp) among the loaded libraries."""
    out: dict[str, int] = {}
    for info in threadpool_info():
        api, n = str(info["user_api"]), int(info["num_threads"])
        out[api] = min(out.get(api, n), n)
    return out


def _blas_loaded() -> bool:
    return any(i["user_api"] == "blas" for i in threadpool_info())


def test_budget_divides_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MORPHML_CORES", "8")
    assert available_cores() == 8
    assert [worker_threads(w) for w in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    assert worker_threads(2, cores=2) == 1
    assert worker_threads(-1) == 1 and worker_threads(-3) == 1 and worker_threads(-7) == 4
    monkeypatch.setenv("MORPHML_CORES", "not a number")
    assert available_cores() >= 1


def _seen_in_worker(_: int) -> dict[str, int]:
    return _pools()


@pytest.mark.skipif(not _blas_loaded(), reason="numpy without a threadpoolctl-visible BLAS")
def test_limits_in_force_inside_thread_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MORPHML_CORES", "4")
    with threads_section(2) as threads:
        assert threads == 2
        seen = Parallel(n_jobs=2, prefer="threads")(
            delayed(in_worker(_seen_in_worker, threads, "threads"))(i) for i in range(4)
        )
    for pools in seen:
        assert pools["blas"] == 2
        if "openmp" in pools:
            assert pools["openmp"] == 2


@pytest.mark.skipif(not _blas_loaded(), reason="numpy without a threadpoolctl-visible BLAS")
def test_limits_in_force_inside_process_workers() -> None:
    seen = Parallel(n_jobs=2)(
        delayed(in_worker(_seen_in_worker, 1, "processes"))(i) for i in range(2)
    )
    for pools in seen:
        assert all(n == 1 for n in pools.values()), pools


class _Recorder:
    """A model that records the thread pools it sees while fitting (inside the worker)."""

    seen: ClassVar[list[dict[str, int]]] = []

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def fit(self, X: pd.DataFrame, y: Any) -> _Recorder:
        _Recorder.seen.append(_pools())
        self.mean_ = float(np.mean(y))
        return self

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(X.iloc[:, 0], dtype=np.float64)


@pytest.mark.skipif(not _blas_loaded(), reason="numpy without a threadpoolctl-visible BLAS")
def test_transfer_comparison_workers_run_under_the_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MORPHML_CORES", "2")
    _Recorder.seen = []
    before = _pools()["blas"]
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    y = np.tile([0, 1], 20)
    compare_representations(
        X, y, {"raw": _Recorder, "other": _Recorder}, kind="classification", folds=2,
        repeats=1, sizes=["all"], seed=0, permutations=2, n_jobs=2,
    )  # fmt: skip
    assert _Recorder.seen
    assert all(p["blas"] == 1 for p in _Recorder.seen), _Recorder.seen
    # the limit is lifted again after the section
    assert _pools()["blas"] == before


def _wait_policy_after_import(env: dict[str, str]) -> str:
    import os
    import subprocess
    import sys

    code = "import os, morphml, xgboost; print(os.environ.get('OMP_WAIT_POLICY'))"
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def test_openmp_threads_wait_passively_unless_the_user_chose() -> None:
    # set by ``import morphml`` (before XGBoost loads its OpenMP runtime); inherited by workers
    assert _wait_policy_after_import({}) == "PASSIVE"
    assert _wait_policy_after_import({"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
    assert _wait_policy_after_import({"GOMP_SPINCOUNT": "10000"}) == "None"


def test_passive_openmp_leaves_a_chosen_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from morphml._utils._threads import passive_openmp

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("KMP_BLOCKTIME", raising=False)
    assert passive_openmp() is True
    assert passive_openmp() is False  # now set: left as it is
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert passive_openmp() is False
    import os

    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


@pytest.mark.skipif(not _blas_loaded(), reason="numpy without a threadpoolctl-visible BLAS")
def test_small_solves_run_on_one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    from morphml._utils import small_blas
    from morphml._utils._threads import limit_threads

    with limit_threads(2, user_api="blas"):
        with small_blas(250, 190) as limited:
            assert limited and _pools()["blas"] == 1
        assert _pools()["blas"] == 2  # lifted after the block
        with small_blas(10_000, 1_000) as limited:
            assert not limited and _pools()["blas"] == 2


@pytest.mark.skipif(not _blas_loaded(), reason="numpy without a threadpoolctl-visible BLAS")
def test_tuning_trials_on_small_data_use_one_blas_thread() -> None:
    from morphml.evaluation import tune
    from morphml.models import make_age_model, search_space

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(90, 5)), columns=[f"f{i}" for i in range(5)])
    age = 40 + 5 * X["f0"].to_numpy() + rng.normal(size=90)
    idx = np.arange(90)
    splits = [(idx[idx % 3 != k], idx[idx % 3 == k]) for k in range(3)]
    seen: list[int] = []

    def build(params: dict[str, Any]) -> Any:
        seen.append(_pools()["blas"])
        return make_age_model("ridge", params, etiv_adjust=False, random_state=0)

    from morphml._utils._threads import limit_threads

    with limit_threads(2, user_api="blas"):
        tune(build, search_space("ridge", "age"), X, age, splits, kind="regression", trials=2,
             timeout=None, seed=0, study_name="ridge")  # fmt: skip
        assert _pools()["blas"] == 2
    assert seen and set(seen) == {1}
