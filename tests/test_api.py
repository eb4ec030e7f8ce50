"""The public API: ``morphml.fit(config)`` and ``morphml.predict(run_dir)``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import morphml
from morphml.config import parse_config
from morphml.exceptions import ConfigError
from morphml.pipelines import fit_pretrain, predict_run
from tests.test_fit import config, small_db  # noqa: F401  (small_db is a fixture)


def _quick() -> dict[str, object]:
    return config(
        targets=["age"],
        models={"age": ["ridge"]},
        validation={"schemes": ["kfold"], "folds": 3, "bootstrap": 100},
    )


@pytest.fixture(scope="module")
def runs(small_db: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # noqa: F811
    root = tmp_path_factory.mktemp("api")
    (root / "pretrain.yaml").write_text(yaml.safe_dump(_quick()), encoding="utf-8")
    runs = {"yaml": root / "from_yaml", "mapping": root / "from_mapping", "direct": root / "d"}
    morphml.fit(root / "pretrain.yaml", db=small_db, out=runs["yaml"], record=False)
    morphml.fit(_quick(), db=small_db, out=runs["mapping"], record=False)
    fit_pretrain(parse_config(_quick()), db=small_db, out=runs["direct"], record=False)
    return runs


def _metrics(run: Path) -> dict[str, object]:
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    metrics.pop("run_id")  # each run has its own id
    return metrics


def test_fit_runs_the_pipeline_from_a_file_a_mapping_or_a_config(runs: dict[str, Path]) -> None:
    direct = _metrics(runs["direct"])
    assert "age" in direct["targets"]
    assert _metrics(runs["yaml"]) == direct
    assert _metrics(runs["mapping"]) == direct


def test_predict_returns_what_predict_run_writes(
    runs: dict[str, Path],
    small_db: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    table = morphml.predict(runs["direct"], db=small_db, source="train")
    assert not list(tmp_path.iterdir())  # without out=, nothing is written
    written = tmp_path / "p.parquet"
    direct = predict_run(runs["direct"], db=small_db, source="train", out=written)
    pd.testing.assert_frame_equal(table, direct)
    again = morphml.predict(runs["direct"], db=small_db, source="train", out=tmp_path / "q.pq")
    pd.testing.assert_frame_equal(again, pd.read_parquet(tmp_path / "q.pq"))
    assert len(table) and table["in_sample"].all()  # the training scans themselves


def test_options_of_the_other_kind_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="apply to kind: transfer"):
        morphml.fit(_quick(), out=tmp_path / "run", pretrained=tmp_path)
    transfer = {
        "kind": "transfer",
        "pretrained": str(tmp_path / "pre"),
        "cohort": {"sources": ["clinic"]},
        "target": {"name": "diagnosis", "type": "binary", "positive": "patient"},
    }
    with pytest.raises(ConfigError, match="apply to kind: pretrain"):
        morphml.fit(transfer, out=tmp_path / "run", storage="sqlite:///x.db")
    assert not (tmp_path / "run").exists()


def test_bad_configs_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        morphml.fit(tmp_path / "absent.yaml", out=tmp_path / "run")
    with pytest.raises(ConfigError, match="expected a PretrainConfig"):
        morphml.fit(42, out=tmp_path / "run")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seeed"):
        morphml.fit({**_quick(), "seeed": 1}, out=tmp_path / "run")


def test_import_morphml_stays_light() -> None:
    code = (
        "import sys, json, morphml\n"
        "assert callable(morphml.fit) and callable(morphml.predict)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    heavy = {"numpy", "pandas", "sklearn", "xgboost", "optuna", "duckdb", "pydantic", "click"}
    assert not loaded & heavy, sorted(loaded & heavy)


def test_ingest_runs_qc_in_the_transaction_like_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import morphml.qc
    from tests.test_fit import MAP, synthetic_table

    seen: list[int] = []
    real = morphml.qc.qc_at_ingest

    def recording(con, keys):  # type: ignore[no-untyped-def]
        # inside the ingest's transaction: the new scans are visible before the commit
        seen.append(con.execute("SELECT count(*) FROM scans").fetchone()[0])
        return real(con, keys)

    monkeypatch.setattr(morphml.qc, "qc_at_ingest", recording)
    synthetic_table(tmp_path / "train.csv", 60, ["A", "B"], seed=3)
    (tmp_path / "map.yaml").write_text(MAP)
    key = tmp_path / "key"
    summary = morphml.ingest(tmp_path / "train.csv", source="train", db=tmp_path / "a.duckdb",
                             column_map=tmp_path / "map.yaml", key_file=key)  # fmt: skip
    assert summary.n_new == 60 and seen == [60]
    bare = morphml.ingest([tmp_path / "train.csv"], source="train", db=tmp_path / "b.duckdb",
                          column_map=tmp_path / "map.yaml", key_file=key,
                          quality_control=False)  # fmt: skip
    assert bare.n_new == 60 and seen == [60]  # not run again
