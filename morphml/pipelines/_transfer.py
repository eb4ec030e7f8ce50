"""``morphml fit`` with ``kind: transfer``: does pretraining help a small clinical sample?

Loads the pretrain run (refusing a stale one unless allowed), the small sample's scans with
the pretrain run's feature space and the outcome, fits what comes from the pretraining cohort
alone (the normative model, principal axes), then runs every representation through the same
repeated nested cross-validation and learning curve, compared with ``raw``. The run directory
holds the resolved config, ``manifest.json``, ``metrics.json`` (``transfer``, ``selected``,
``permutation_p``), per-split ``scores.parquet`` and out-of-fold ``predictions.parquet``.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from morphml.config import CohortSpec, TransferConfig, config_hash
from morphml.db import connect, record_run
from morphml.exceptions import TransferError
from morphml.features import FeatureFrame, load_frame, target_vector
from morphml.rundir import (
    PREDICTIONS,
    SCORES,
    RunDir,
    build_manifest,
    load_pretrained,
    write_config,
    write_json,
    write_manifest,
    write_metrics,
    write_table,
)

if TYPE_CHECKING:
    from morphml.transfer import PretrainedRun

__all__ = ["TransferResult", "fit_transfer", "load_transfer_data"]


@dataclass
class TransferResult:
    """Where a transfer run went and what it measured."""

    run_dir: Path
    run_id: str
    metrics: dict[str, Any]
    table: str


def _resolve_pretrained(config: TransferConfig, pretrained: Any) -> Path:
    path = pretrained if pretrained is not None else config.pretrained
    if path is None:
        raise TransferError(
            "no pretrain run: give --pretrained RUN_DIR or 'pretrained:' in the config"
        )
    return Path(path)


def _check_stale(db: Any, run_id: str, allow_stale: bool) -> str | None:
    from morphml.db import run_status

    with connect(db, read_only=True) as con:
        try:
            stale, reason = run_status(con, run_id)
        except Exception as err:  # an unknown run: trained on another database
            raise TransferError(
                f"pretrain run {run_id} is not recorded in this database; transfer from a "
                "run fitted on the same database"
            ) from err
    if stale and not allow_stale:
        raise TransferError(
            f"pretrain run {run_id} is stale ({reason}); refit it, or pass --allow-stale to "
            "use it anyway (the report will say so)"
        )
    return reason if stale else None


def _outcome(config: TransferConfig, meta: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(y, is_control)`` for the target scans."""
    y: np.ndarray
    control: np.ndarray
    target = config.target
    if target.name not in meta.columns:
        raise TransferError(
            f"target.name: phenotype {target.name!r} is not in the database for this cohort "
            f"(phenotypes: {sorted(c for c in meta.columns if c not in _META_BASE)})"
        )
    values = meta[target.name]
    missing = int(values.isna().sum())
    if missing:
        raise TransferError(
            f"target {target.name!r} is missing for {missing} of {len(values)} scans; restrict "
            "the cohort (cohort.filters) to scans that have it"
        )
    if target.type == "binary":
        labels = sorted(values.astype(str).unique())
        if len(labels) < 2:
            raise TransferError(
                f"target {target.name!r} has one class only ({labels[0]!r}, {len(values)} "
                "scans); a binary target needs two"
            )
        if len(labels) > 2:
            raise TransferError(f"target {target.name!r} has {len(labels)} classes {labels}; "
                                "keep two with cohort.filters")  # fmt: skip
        positive = target.positive or labels[1]
        if positive not in labels:
            raise TransferError(
                f"target.positive {positive!r} is not a value of {target.name!r} ({labels})"
            )
        y = np.asarray((values.astype(str) == positive).to_numpy(), dtype=np.float64)
        control = np.asarray(y == 0, dtype=bool)
    else:
        try:
            y = np.asarray(values.astype(np.float64).to_numpy(), dtype=np.float64)
        except (TypeError, ValueError):
            raise TransferError(
                f"target {target.name!r} is not numeric; use type: binary for labels"
            ) from None
        control = np.ones(len(y), dtype=bool)
    control = np.asarray(control, dtype=bool)
    for name, allowed in target.controls.items():
        if name not in meta.columns:
            raise TransferError(f"target.controls: phenotype {name!r} is not in the database")
        control = meta[name].astype(str).isin([str(a) for a in allowed]).to_numpy()
    return y, control


_META_BASE = {"subject_key", "source", "site", "session", "age", "sex", "software", "version"}


def load_transfer_data(
    config: TransferConfig, run: Any, db: str | os.PathLike[str] | None
) -> tuple[FeatureFrame, pd.DataFrame, np.ndarray]:
    """The target scans: ``(frame, X with meta: columns, y)``."""
    from morphml.transfer import META_PREFIX

    features = run.config.features.model_copy(
        update={"site_covariates": False, "max_missing": 1.0}
    )
    cohort: CohortSpec = config.cohort
    frame = load_frame(db, cohort, features)
    trained = run.feature_ids
    missing = [f for f in trained if f not in frame.X.columns]
    if missing:
        raise TransferError(
            f"the target scans lack {len(missing)} of the pretrain run's {len(trained)} "
            f"features: {missing[:10]}{' ...' if len(missing) > 10 else ''}; ingest the same "
            "atlases and measures the pretraining used"
        )
    values = frame.X[trained]
    holes = values.isna().any(axis=1)
    if holes.any():
        raise TransferError(
            f"{int(holes.sum())} target scans miss some of the pretrain run's features "
            f"(e.g. scan {values.index[holes.to_numpy()][0]}); restrict the cohort"
        )
    for col in ("age", "sex"):
        gaps = frame.meta[col].isna()
        if gaps.any():
            raise TransferError(
                f"{int(gaps.sum())} target scans have no {col}; covariates need it for every scan"
            )
    y, control = _outcome(config, frame.meta)
    X = values.copy()
    X[f"{META_PREFIX}age"] = frame.meta["age"].to_numpy(np.float64)
    sex, known = target_vector(frame.meta, "sex")  # 1 = male
    if not known.all():
        raise TransferError(
            f"{int((~known).sum())} target scans have no sex; covariates need it for every scan"
        )
    X[f"{META_PREFIX}sex"] = sex
    X[f"{META_PREFIX}site"] = frame.meta["site"].fillna("unknown").astype(str).to_numpy()
    X[f"{META_PREFIX}control"] = control
    return FeatureFrame(values, frame.meta), X, y


@dataclass
class _Inputs:
    """What a transfer run reads: the pretrain run, the target scans and the pretraining
    cohort, checked against each other."""

    config: TransferConfig
    run: PretrainedRun
    stale: str | None
    frame: FeatureFrame
    X: pd.DataFrame
    y: np.ndarray
    kind: str
    reference: Any
    pre: FeatureFrame
    target_sites: list[str]
    new_sites: list[str]


def fit_transfer(
    config: TransferConfig,
    *,
    db: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str],
    pretrained: str | os.PathLike[str] | None = None,
    allow_stale: bool = False,
    progress: bool = False,
    record: bool = True,
) -> TransferResult:
    """Run a transfer config and write its run directory.

    Parameters
    ----------
    config : TransferConfig
    db : path-like, optional
        The database holding both the pretraining cohort and the small sample.
    out : path-like
        The run directory (must be new or empty).
    pretrained : path-like, optional
        The pretrain run directory; overrides ``config.pretrained``.
    allow_stale : bool
        Use a pretrain run marked stale (a subject it was trained on withdrew).
    """
    from morphml.evaluation import compare_representations
    from morphml.registry import representation_names
    from morphml.transfer import HeadFactory

    run_dir = Path(out)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise TransferError(f"{run_dir} exists and is not empty; choose another --out")
    inputs = _read_inputs(config, db, pretrained, allow_stale)
    config = inputs.config
    started = time.perf_counter()
    normative, components = _pretraining_parts(config, inputs.pre)
    factory = HeadFactory(
        pretrained=inputs.run, kind=inputs.kind, covariates=tuple(config.covariates),
        inner_folds=config.protocol.inner_folds, normative=normative, components=components,
        reference=inputs.reference, reference_adaptation=config.reference_adaptation,
        reference_new_sites="prior" if config.harmonize.new_sites == "adapt" else "refuse",
    )  # fmt: skip
    names: list[str] = [r for r in representation_names() if r in config.representations]
    builders: dict[str, Any] = {
        name: (lambda seed, name=name: factory.build(name, seed, bases=names)) for name in names
    }
    comparison = compare_representations(
        inputs.X, inputs.y, builders, kind=inputs.kind, folds=config.protocol.folds,
        repeats=config.protocol.repeats, sizes=list(config.protocol.train_sizes),
        seed=config.seed, permutations=config.protocol.permutations,
        permutation_repeats=config.protocol.permutation_repeats,
        n_jobs=config.protocol.n_jobs, progress=_progress_reporter(progress),
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:16]
    metrics = _write_transfer_run(run_dir, run_id, inputs, comparison, elapsed)
    if record:
        with connect(db) as con:
            record_run(
                con, run_id, "transfer", config_hash(config), list(inputs.frame.X.index), run_dir
            )  # fmt: skip
    return TransferResult(run_dir, run_id, metrics, format_table(metrics))


def _read_inputs(
    config: TransferConfig,
    db: str | os.PathLike[str] | None,
    pretrained: str | os.PathLike[str] | None,
    allow_stale: bool,
) -> _Inputs:
    """Open the pretrain run and the target scans; refuse what cannot be transferred."""
    pretrained_dir = _resolve_pretrained(config, pretrained)
    # the resolved config names the pretrain run it used (as given: --pretrained or the config)
    config = config.model_copy(update={"pretrained": str(pretrained_dir)})
    run = load_pretrained(pretrained_dir)
    stale = _check_stale(db, run.run_id, allow_stale)
    frame, X, y = load_transfer_data(config, run, db)
    kind = "classification" if config.target.type == "binary" else "regression"
    reference = None
    if config.reference:
        from morphml.transfer import load_reference, reference_columns

        reference = load_reference(config.reference)
        X = pd.concat([X, reference_columns(db, config.cohort, reference, X.index)], axis=1)
    pre = run.training_frame(db)
    overlap = set(frame.meta["subject_key"]) & set(pre.meta["subject_key"])
    if overlap:
        raise TransferError(
            f"{len(overlap)} people of the small sample were in the pretraining cohort; "
            "their scans would be seen twice. Exclude them (cohort.sources/filters)"
        )
    target_sites = sorted(set(X["meta:site"]))
    pre = pre.subset(pre.meta["age"].notna() & pre.meta["sex"].notna())
    new_sites = sorted(set(target_sites) - set(pre.meta["site"].fillna("unknown").astype(str)))
    _check_new_sites(config, run, new_sites)
    return _Inputs(config, run, stale, frame, X, y, kind, reference, pre, target_sites, new_sites)


def _check_new_sites(config: TransferConfig, run: PretrainedRun, new_sites: list[str]) -> None:
    if new_sites and config.harmonize.new_sites == "refuse":
        raise TransferError(
            f"target sites {new_sites} were never seen in pretraining; set harmonize.new_sites: "
            "adapt to adapt them from their controls inside the training folds"
        )
    if new_sites and run.config.harmonize.method != "none":
        raise TransferError(
            f"the pretrain run harmonises its features with {run.config.harmonize.method} and "
            f"the target sites {new_sites} are new to it; adapting a pretrained ComBat to new "
            "sites inside transfer folds is not supported yet: transfer from a pretrain run "
            "with harmonize.method: none (normative_z still adapts new sites from controls)"
        )


def _pretraining_parts(config: TransferConfig, pre: FeatureFrame) -> tuple[Any, Any]:
    """What comes from the pretraining cohort alone: the normative model and, when
    ``components`` asks for them, its principal axes."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from morphml.transfer import Components, NormativeModel

    normative = NormativeModel().fit(
        pre.X.to_numpy(np.float64), pre.meta["age"].to_numpy(np.float64),
        pre.meta["sex"].to_numpy(np.float64), pre.meta["site"].fillna("unknown").astype(str),
    )  # fmt: skip
    components = None
    if config.components > 0:
        values = pre.X.to_numpy(np.float64)
        scaler = StandardScaler().fit(np.where(np.isnan(values), np.nanmean(values, 0), values))
        filled = np.where(np.isnan(values), scaler.mean_, values)
        n_comp = min(config.components, values.shape[1], values.shape[0] - 1)
        pca = PCA(n_components=n_comp, random_state=config.seed).fit(scaler.transform(filled))
        components = Components(scaler, pca)
    return normative, components


def _progress_reporter(progress: bool) -> Callable[[int, int], None] | None:
    """The comparison's progress callback: a plain line every 30 s in a log, a bar on a
    terminal, nothing unless ``progress``."""
    if not progress:
        return None
    if not sys.stderr.isatty():
        from morphml.pipelines._progress import format_duration

        clock = {"start": time.monotonic(), "last": time.monotonic()}

        def log(done: int, total: int) -> None:
            now = time.monotonic()
            if now - clock["last"] < 30 and done < total:
                return
            clock["last"] = now
            spent = now - clock["start"]
            left = f", about {format_duration(spent / done * (total - done))} left" if done else ""
            print(f"  transfer: {done}/{total} fits, {format_duration(spent)} elapsed{left}",
                  file=sys.stderr, flush=True)  # fmt: skip

        return log
    from tqdm import tqdm

    bar = tqdm(total=0, unit="fit", desc="transfer", leave=False)

    def draw(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return draw


def _write_transfer_run(
    run_dir: Path, run_id: str, inputs: _Inputs, comparison: Any, elapsed: float
) -> dict[str, Any]:
    """Config, metrics, reference facts, score and prediction tables and manifest; returns
    the metrics."""
    config, kind, y = inputs.config, inputs.kind, inputs.y
    write_config(run_dir, config)
    metrics = dict(comparison.metrics)
    metrics["run_id"] = run_id
    metrics["target"] = {
        "name": config.target.name, "type": config.target.type,
        "n_scans": len(y), "n_positive": int(y.sum()) if kind == "classification" else None,
        "new_sites": inputs.new_sites, "sites": inputs.target_sites,
    }  # fmt: skip
    metrics["seconds"] = {k: round(v, 2) for k, v in comparison.seconds.items()}
    if inputs.reference is not None:
        from morphml.transfer import reference_summary

        ref_facts = reference_summary(
            inputs.reference, inputs.X, y, kind=kind, folder=Path(str(config.reference)).name
        )
        write_json(RunDir(run_dir).reference, ref_facts)
        metrics["reference"] = {k: v for k, v in ref_facts.items() if k != "curves"}
    write_metrics(run_dir, metrics)
    write_table(run_dir, SCORES, comparison.scores)
    write_table(run_dir, PREDICTIONS, comparison.predictions)
    run = inputs.run
    pretrained = {
        "run_id": run.run_id,
        "directory": run.run_dir.name,
        "config_hash": run.manifest.get("config_hash"),
        "stale": inputs.stale,
    }
    manifest = build_manifest(
        "transfer", run_id, config=config, frame=inputs.frame, feature_ids=run.feature_ids,
        sources={"pretrained": pretrained}, results={"seconds": round(elapsed, 1)},
    )  # fmt: skip
    write_manifest(run_dir, manifest)
    return metrics


def format_table(metrics: dict[str, Any]) -> str:
    """The comparison as a text table: representation x training size."""
    transfer = metrics["transfer"]
    main = metrics["selected"]["metric"]
    lines = [f"{'representation':<24} {'n_train':>7} {main:>7}  95% CI           delta vs raw"]
    for name, sizes in transfer.items():
        for size, cell in sizes.items():
            ci = cell[f"{main}_ci"]
            delta = "" if name == "raw" else (
                f"{cell['delta_vs_raw']:+.3f} [{cell['delta_ci'][0]:+.3f}, "
                f"{cell['delta_ci'][1]:+.3f}]"
            )  # fmt: skip
            lines.append(
                f"{name:<24} {size:>7} {cell[main]:7.3f}  [{ci[0]:.3f}, {ci[1]:.3f}]  {delta}"
            )
    sel = metrics["selected"]
    lines.append(f"selected: {sel['representation']} (n_train={sel['n_train']})")
    headline = metrics.get("headline")
    if headline is None:  # runs written before the key
        from morphml.evaluation import comparison_headline as make_headline

        headline = make_headline(metrics)
    lines.append(f"headline: {headline['statement']}")
    if metrics.get("permutation_p") is not None:
        perm = metrics.get("permutation") or {}
        n = perm.get("permutations")
        p = float(metrics["permutation_p"])
        floor = 1.0 / (n + 1) if isinstance(n, int) and n > 0 else None
        shown = (
            f"p <= {floor:.4f} (the floor of {n} permutations)"
            if floor is not None and p <= floor * (1 + 1e-9)
            else f"p = {p:.4f}"
        )
        lines.append(
            f"permutation test against chance (not against raw): {shown}"
            + (f", {n} permutations" if n and floor is not None and p > floor * (1 + 1e-9) else "")
        )
    return "\n".join(lines)
