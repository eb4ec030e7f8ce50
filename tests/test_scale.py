"""Scale-out through Dask: SLURM job scripts, ingest parsed on workers, Optuna studies shared
through PostgreSQL / journal files by several worker processes."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.linear_model import Ridge

from morphml.cli import cli
from morphml.db import connect, ingest
from morphml.evaluation import tune
from morphml.evaluation._tuning import storage_from
from morphml.exceptions import ConfigError
from morphml.scale import dask_client, load_slurm_settings, slurm_cluster
from tests.conftest import needs_dask

pytestmark = needs_dask  # every test here runs Dask or its cluster settings

# ------------------------------------------------------------------------------- SLURM


def test_slurm_cluster_requests_gpus_and_announces_resources(tmp_path: Path) -> None:
    config = tmp_path / "slurm.yaml"
    config.write_text(
        "slurm:\n  queue: gpu\n  account: brainlab\n  cores: 8\n  memory: 32GB\n"
        "  walltime: '04:00:00'\n  gpus_per_job: 1\n  cpu_slots: 2\n  jobs: 3\n"
        "  job_script_prologue: ['module load apptainer']\n"
    )
    settings = load_slurm_settings(config)
    assert settings.jobs == 3
    cluster = slurm_cluster(settings)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:1" in script
    assert "#SBATCH -p gpu" in script and "#SBATCH -A brainlab" in script
    assert "#SBATCH --cpus-per-task=8" in script and "#SBATCH -t 04:00:00" in script
    assert "--resources CPU=2,GPU=1" in script
    assert "module load apptainer" in script


def test_slurm_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match="unknown key 'gpus_per_jobs'; did you mean 'gpus_per_job'"
    ):
        load_slurm_settings({"gpus_per_jobs": 1})
    with pytest.raises(ConfigError, match="cores"):
        load_slurm_settings({"cores": 0})
    with pytest.raises(ConfigError, match="no such cluster config"):
        load_slurm_settings(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="needs a cluster config"), dask_client(cluster="slurm"):
        pass


# ------------------------------------------------------------------------------- ingest


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from morphml.simulate import simulate_cohort

    root = tmp_path_factory.mktemp("cohort") / "sim"
    simulate_cohort(root, n_subjects=60, n_sites=3, seed=3, layout="mixed")
    return root


def _content(db: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    with connect(db) as con:
        features = con.execute("SELECT * FROM features ORDER BY feature_idx").fetchall()
        measures = con.execute(
            "SELECT scan_key, feature_idx, value FROM measures ORDER BY scan_key, feature_idx"
        ).fetchall()
    return features, measures


def test_ingest_parsed_on_dask_workers_matches_local_parsing(cohort: Path, tmp_path: Path) -> None:
    key = tmp_path / "key"
    local = ingest([cohort], source="sim", db=tmp_path / "a.duckdb", key_file=key,
                   on_error="skip")  # fmt: skip
    assert local.n_scans > 48  # more than one parsing chunk, so the workers share the work
    with dask_client(n_workers=2, processes=False) as client:
        on_dask = ingest([cohort], source="sim", db=tmp_path / "b.duckdb", key_file=key,
                         on_error="skip", scheduler=client)  # fmt: skip
    assert (on_dask.n_scans, on_dask.n_values, on_dask.n_skipped) == (
        local.n_scans, local.n_values, local.n_skipped)  # fmt: skip
    assert _content(tmp_path / "a.duckdb") == _content(tmp_path / "b.duckdb")


def test_ingest_command_takes_a_scheduler_address(cohort: Path, tmp_path: Path) -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster:  # fmt: skip
        res = CliRunner().invoke(cli, [
            "ingest", str(cohort), "--db", str(tmp_path / "c.duckdb"), "--source", "sim",
            "--key-file", str(tmp_path / "key"), "--on-error", "skip",
            "--scheduler", cluster.scheduler_address,
        ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "source sim:" in res.output
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):  # noqa: SIM117
        with dask_client(f"tcp://127.0.0.1:{_free_port()}", connect_timeout=1):
            pass


# ------------------------------------------------------------------------------- tuning


def _problem(
    seed: int = 0,
) -> tuple[pd.DataFrame, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(90, 6)), columns=[f"f{i}" for i in range(6)])
    y = X.to_numpy() @ rng.normal(size=6) + rng.normal(0, 0.5, 90)
    idx = np.arange(90)
    splits = [(idx[idx % 3 != k], idx[idx % 3 == k]) for k in range(3)]
    return X, y, splits


def _space(trial: optuna.Trial) -> dict[str, float]:
    return {"alpha": trial.suggest_float("alpha", 1e-3, 1e3, log=True)}


def _builder(pid_file: Path) -> object:
    def build(params: dict[str, float]) -> Ridge:
        with open(pid_file, "a") as handle:  # which process evaluated a trial
            handle.write(f"{os.getpid()}\n")
        return Ridge(alpha=params["alpha"])

    return build


def _check_study(storage: object, name: str, n: int) -> optuna.Study:
    study = optuna.load_study(study_name=name, storage=storage)
    numbers = sorted(t.number for t in study.trials)
    ids = {t._trial_id for t in study.trials}
    assert numbers == list(range(n)), numbers  # none lost, none duplicated
    assert len(ids) == n
    assert all(t.state.is_finished() for t in study.trials)
    return study


def test_tune_on_two_dask_workers_with_a_journal_file(tmp_path: Path) -> None:
    X, y, splits = _problem()
    journal = tmp_path / "studies" / "age.journal"
    pids = tmp_path / "pids.txt"
    with dask_client(n_workers=2, processes=False) as client:
        result = tune(_builder(pids), _space, X, y, splits, kind="regression", trials=8,
                      timeout=None, seed=1, study_name="age", storage=journal, client=client,
                      pruning=False)  # fmt: skip
    _check_study(storage_from(journal), "age", 8)
    assert result.n_trials == 8
    # the best trial's out-of-fold predictions came back from the worker that ran it
    expected = np.full(len(y), np.nan)
    for tr, va in splits:
        expected[va] = (
            Ridge(alpha=result.params["alpha"]).fit(X.iloc[tr], y[tr]).predict(X.iloc[va])
        )
    np.testing.assert_allclose(result.oof, expected)


def test_tune_keeps_its_single_process_behaviour(tmp_path: Path) -> None:
    X, y, splits = _problem()
    build = _builder(tmp_path / "pids.txt")
    a = tune(build, _space, X, y, splits, kind="regression", trials=5, timeout=None, seed=4,
             storage_path=tmp_path / "a.journal", study_name="s")  # fmt: skip
    b = tune(build, _space, X, y, splits, kind="regression", trials=5, timeout=None, seed=4,
             storage_path=None, study_name="s")  # fmt: skip
    assert a.params == b.params and a.n_trials == b.n_trials == 5
    with pytest.raises(ConfigError, match="needs a shared study storage"):
        tune(build, _space, X, y, splits, kind="regression", trials=2, timeout=None, seed=4,
             study_name="t", client=object())  # fmt: skip
    with pytest.raises(ConfigError, match="not both"):
        tune(build, _space, X, y, splits, kind="regression", trials=2, timeout=None, seed=4,
             study_name="t", storage_path=tmp_path / "x", storage=str(tmp_path / "y"))  # fmt: skip


# ---------------------------------------------------------------------------- PostgreSQL


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server in a temporary folder, on a free port (Debian's
    binaries; run as the postgres or nobody user when the tests run as root)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL server binaries not installed (/usr/lib/postgresql/*/bin)")
    bindir = Path(found[-1]).parent
    prefix: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                owner = pwd.getpwnam(name)
                break
        if owner is None:
            pytest.skip("running as root and neither a postgres nor a nobody user exists")
        prefix = ["runuser", "-u", owner.pw_name, "--"]
    root = Path(tempfile.mkdtemp(prefix="morphml-pg-"))
    root.chmod(0o755)
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if owner is not None:
        for path in (root, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = _free_port()

    def run(*argv: str) -> None:
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"{argv[0]} failed: {done.stdout}{done.stderr}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "morphml", "--auth=trust",
        "-E", "UTF8", "--no-sync")  # fmt: skip
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
        "-w", "-t", "60", "start")  # fmt: skip
    try:
        yield f"postgresql://morphml@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(RuntimeError):
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_postgresql_study_shared_by_two_worker_processes(
    postgres_url: str, tmp_path: Path
) -> None:
    X, y, splits = _problem(1)
    pids = tmp_path / "pids.txt"
    start = time.monotonic()
    with dask_client(n_workers=2, processes=True) as client:
        result = tune(_builder(pids), _space, X, y, splits, kind="regression", trials=12,
                      timeout=None, seed=2, study_name="pg-age", storage=postgres_url,
                      client=client)  # fmt: skip
        storage = storage_from(postgres_url)
        study = _check_study(storage, "pg-age", 12)
        assert result.n_trials == len(
            [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        )
        assert len(set(pids.read_text().split())) == 2  # both worker processes ran trials
        # resuming the same study adds exactly the missing trials, from both workers again
        more = tune(_builder(pids), _space, X, y, splits, kind="regression", trials=16,
                    timeout=None, seed=2, study_name="pg-age", storage=postgres_url,
                    client=client)  # fmt: skip
    _check_study(storage, "pg-age", 16)
    assert more.score <= result.score
    assert time.monotonic() - start < 120
    with pytest.raises(ConfigError, match="cannot open the Optuna storage"):
        storage_from(f"postgresql://morphml@127.0.0.1:{_free_port()}/postgres")


# ------------------------------------------------------------------------ morphml fit


@pytest.fixture(scope="module")
def fit_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_fit import MAP, synthetic_table

    root = tmp_path_factory.mktemp("fitdb")
    synthetic_table(root / "train.csv", 120, ["A", "B", "C"], seed=1)
    (root / "map.yaml").write_text(MAP)
    db = root / "db.duckdb"
    ingest([root / "train.csv"], column_map=root / "map.yaml", source="train", db=db,
           key_file=root / "key")  # fmt: skip
    return db


@pytest.mark.slow
def test_fit_runs_its_trials_on_dask_with_a_shared_storage(fit_db: Path, tmp_path: Path) -> None:
    import yaml
    from distributed import LocalCluster

    cfg = {
        "kind": "pretrain", "cohort": {"sources": ["train"]}, "targets": ["age"],
        "models": {"age": ["ridge"]}, "tuning": {"trials": 4, "inner_folds": 3},
        "validation": {"schemes": ["kfold"], "folds": 3, "bootstrap": 100},
        "seed": 3, "device": "cpu",
    }  # fmt: skip
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:  # fmt: skip
        res = CliRunner().invoke(cli, [
            "fit", str(path), "--db", str(fit_db), "--out", str(tmp_path / "run"),
            "--storage", url, "--scheduler", cluster.scheduler_address,
        ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "age  ridge" in res.output
    summaries = optuna.get_all_study_summaries(storage_from(url))
    names = sorted(s.study_name for s in summaries)
    # 3 outer folds + the final model, named for this run so runs sharing a server never mix
    assert len(names) == 4 and len({n.split("-age-")[0] for n in names}) == 1
    assert names[-1].endswith("-age-ridge-kfold-fold2") and any(
        n.endswith("-final") for n in names
    )
    assert all(s.n_trials == 4 for s in summaries)
    assert not (tmp_path / "run" / "studies").exists()  # nothing in journal files
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["targets"]["age"]["ridge"]["kfold"]["mae"] < 6
