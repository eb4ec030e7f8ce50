"""The comparison protocol: every representation on identical repeated nested-CV splits.

For each repeat, a stratified k-fold split of the small sample; inside each training fold,
a learning curve of stratified subsamples (the same subsample for every representation); each
representation's small model is tuned in inner folds of that subsample only and scored on the
untouched test fold. Scores per split are summarised with Nadeau & Bengio's corrected
resampled t interval, and every representation's paired difference from ``raw`` with the same
test. The chosen representation's score is compared with label permutations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from morphml._utils._threads import in_worker, threads_section
from morphml.evaluation._compare import corrected_resampled_ttest, permutation_p_value
from morphml.evaluation._tuning import stable_seed
from morphml.exceptions import TransferError

__all__ = [
    "Comparison",
    "Split",
    "compare_representations",
    "comparison_headline",
    "make_splits",
]

Builder = Callable[[int], Any]


@dataclass(frozen=True)
class Split:
    """One outer split of the protocol: which rows train (after subsampling) and test."""

    repeat: int
    fold: int
    size: str
    train: np.ndarray
    test: np.ndarray


@dataclass
class Comparison:
    """What the protocol measured."""

    metrics: dict[str, Any]
    scores: pd.DataFrame
    predictions: pd.DataFrame
    seconds: dict[str, float]


def _outer(y: np.ndarray, kind: str, folds: int, seed: int) -> Iterator[tuple[np.ndarray, ...]]:
    if kind == "classification":
        return StratifiedKFold(folds, shuffle=True, random_state=seed).split(y, y)
    return KFold(folds, shuffle=True, random_state=seed).split(y)


def make_splits(
    y: np.ndarray,
    kind: str,
    *,
    folds: int,
    repeats: int,
    sizes: list[int | str],
    seed: int,
) -> list[Split]:
    """Outer splits of every repeat, and the learning-curve subsamples of each training fold.

    A size larger than a training fold is skipped (the fold's ``all`` covers it).
    """
    out = []
    for r in range(repeats):
        for k, (train, test) in enumerate(_outer(y, kind, folds, stable_seed(seed, "outer", r))):
            for size in sizes:
                if size == "all":
                    out.append(Split(r, k, "all", np.sort(train), np.sort(test)))
                    continue
                n = int(size)
                if n >= len(train):
                    continue
                strat = y[train] if kind == "classification" else None
                sub, _ = train_test_split(
                    train, train_size=n, stratify=strat,
                    random_state=stable_seed(seed, "subsample", r, k, n),
                )  # fmt: skip
                out.append(Split(r, k, str(n), np.sort(sub), np.sort(test)))
    return out


def _split_scores(kind: str, y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    if kind == "classification":
        return {"auc": float(roc_auc_score(y, score))}
    return {"r2": float(r2_score(y, score)), "mae": float(mean_absolute_error(y, score))}


def _run_one(
    name: str, build: Builder, X: pd.DataFrame, y: np.ndarray, split: Split, kind: str, seed: int
) -> tuple[str, Split, np.ndarray, float]:
    import time

    start = time.perf_counter()
    model = build(stable_seed(seed, "model", name, split.repeat, split.fold, split.size))
    model.fit(X.iloc[split.train], y[split.train])
    Xte = X.iloc[split.test]
    if kind == "classification":
        score = np.asarray(model.decision_function(Xte), dtype=np.float64)
    else:
        score = np.asarray(model.predict(Xte), dtype=np.float64)
    return name, split, score, time.perf_counter() - start


def _summary(values: np.ndarray, n_train: int, n_test: int) -> tuple[float, list[float]]:
    if len(values) < 2:
        return float(values.mean()), [float(values.mean())] * 2
    res = corrected_resampled_ttest(values, n_train=max(n_train, 1), n_test=max(n_test, 1))
    mean, ci = res["mean"], res["ci"]
    if not isinstance(mean, float) or not isinstance(ci, list):  # pragma: no cover
        raise TypeError("unexpected corrected_resampled_ttest result")
    return mean, [float(v) for v in ci]


def compare_representations(
    X: pd.DataFrame,
    y: np.ndarray,
    builders: dict[str, Builder],
    *,
    kind: str,
    folds: int,
    repeats: int,
    sizes: list[int | str],
    seed: int,
    permutations: int = 0,
    permutation_repeats: int = 1,
    n_jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> Comparison:
    """Run every representation on the same splits and summarise the comparison.

    Parameters
    ----------
    X : DataFrame
        Features and ``meta:`` covariates of the small sample, one row per scan.
    y : ndarray
        The outcome (0/1 for classification).
    builders : dict
        Representation name -> ``build(seed)`` returning an unfitted model with ``fit`` and
        ``decision_function`` (classification) or ``predict`` (regression). ``raw`` must be
        among them.
    kind : {"classification", "regression"}
    folds, repeats : int
        Outer k-fold and its repeats.
    sizes : list of int or "all"
        Learning-curve training sizes.
    seed : int
    permutations : int
        Label permutations for the selected representation (0: none).
    n_jobs : int
        Worker threads.

    Returns
    -------
    Comparison
    """
    _check_sample(y, builders, kind, folds)
    splits = make_splits(y, kind, folds=folds, repeats=repeats, sizes=sizes, seed=seed)
    results = _run_all(X, y, builders, splits, kind, seed, n_jobs, progress)
    table, preds, seconds = _collect(results, X, y, kind, builders)
    metrics = _summarise(table, kind)
    if permutations > 0:
        selected = metrics["selected"]["representation"]
        size = metrics["selected"]["n_train"]
        metrics["permutation"] = _permutation(
            X, y, builders[selected], selected, size, metrics["transfer"][selected][size],
            kind, folds, repeats, min(permutation_repeats, repeats), permutations, seed, n_jobs,
        )  # fmt: skip
        metrics["permutation_p"] = metrics["permutation"]["p"]
    else:
        metrics["permutation_p"] = None
    metrics["headline"] = comparison_headline(metrics)
    return Comparison(metrics, table, preds, seconds)


def _check_sample(y: np.ndarray, builders: dict[str, Builder], kind: str, folds: int) -> None:
    """Refuse a comparison the sample cannot support (no raw, one class, too few scans)."""
    if "raw" not in builders:
        raise TransferError("the comparison needs the 'raw' representation")
    if kind == "classification":
        counts = np.bincount(y.astype(int), minlength=2)
        if (counts > 0).sum() < 2:
            raise TransferError(
                f"the target has one class only ({int(counts.max())} scans); "
                "a classifier needs two"
            )
        if counts.min() < folds:
            raise TransferError(
                f"the rarer class has {int(counts.min())} scans, fewer than protocol.folds = "
                f"{folds}; lower the folds or add scans"
            )
    elif len(y) < 2 * folds:
        raise TransferError(f"{len(y)} scans are too few for {folds}-fold cross-validation")


def _run_all(
    X: pd.DataFrame,
    y: np.ndarray,
    builders: dict[str, Builder],
    splits: list[Split],
    kind: str,
    seed: int,
    n_jobs: int,
    progress: Callable[[int, int], None] | None,
) -> list[tuple[str, Split, np.ndarray, float]]:
    """Fit and score every representation on every split, in ``n_jobs`` threads."""
    tasks = [(name, build, split) for split in splits for name, build in builders.items()]
    done = 0

    def tick(result: Any) -> Any:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(tasks))
        return result

    # thread policy: workers x BLAS/OpenMP threads <= cores (morphml._utils._threads)
    with threads_section(n_jobs) as threads:
        run_one = in_worker(_run_one, threads, "threads")
        runner = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")
        return [
            tick(r)
            for r in runner(
                delayed(run_one)(name, build, X, y, split, kind, seed)
                for name, build, split in tasks
            )
        ]


def _collect(
    results: list[tuple[str, Split, np.ndarray, float]],
    X: pd.DataFrame,
    y: np.ndarray,
    kind: str,
    builders: dict[str, Builder],
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """The per-split score table, the out-of-fold predictions and seconds per representation."""
    rows, preds = [], []
    seconds: dict[str, float] = dict.fromkeys(builders, 0.0)
    keys = np.asarray(X.index)
    for name, split, score, took in results:
        seconds[name] += took
        scores = _split_scores(kind, y[split.test], score)
        rows.append({
            "representation": name, "repeat": split.repeat, "fold": split.fold,
            "n_train": split.size, "n_train_scans": len(split.train),
            "n_test": len(split.test), **scores,
        })  # fmt: skip
        preds.append(pd.DataFrame({
            "scan_key": keys[split.test], "representation": name, "repeat": split.repeat,
            "fold": split.fold, "n_train": split.size, "y_true": y[split.test],
            "score": score,
        }))  # fmt: skip
    return pd.DataFrame(rows), pd.concat(preds, ignore_index=True), seconds


def comparison_headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The comparison's headline: the selected representation's difference from ``raw``.

    Whether pretraining helps is the question, so the headline is the selected
    representation's paired difference from ``raw`` (the same splits) with its interval and
    its corrected resampled t-test, not the permutation p-value, which tests the selected
    representation against chance. Works on the metrics of runs written before this key
    existed (the report rebuilds it from ``transfer`` and ``selected``).
    """
    sel = metrics["selected"]
    name, size, main = sel["representation"], str(sel["n_train"]), sel["metric"]
    cell = metrics["transfer"][name][size]
    out: dict[str, Any] = {
        "representation": name, "n_train": size, "metric": main,
        "score": cell.get(main), "score_ci": cell.get(f"{main}_ci"),
    }  # fmt: skip
    if name == "raw":
        out.update(delta_vs_raw=None, delta_ci=None, delta_p=None, includes_zero=None)
        out["statement"] = (
            f"raw (no pretraining) has the highest mean {main} at n_train={size}: no "
            "representation from the pretrained models did better on these splits"
        )
        return out
    delta, ci, p = cell.get("delta_vs_raw"), cell.get("delta_ci"), cell.get("delta_p")
    better = "lower" if main == "mae" else "higher"
    includes_zero = bool(ci is not None and ci[0] <= 0.0 <= ci[1])
    out.update(delta_vs_raw=delta, delta_ci=ci, delta_p=p, includes_zero=includes_zero)
    out["test"] = (
        f"{name} minus raw on the same {cell.get('n_splits')} splits, Nadeau & Bengio's "
        "corrected resampled t (two-sided; H0: no difference from raw)"
    )
    ci_text = "n/a" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"
    out["statement"] = (
        f"{name} vs raw at n_train={size}: Δ{main} {delta:+.3f}, 95% CI {ci_text}"
        + (
            "; the interval includes 0, so these data do not show that pretraining helps "
            "(it was selected as the best, which flatters it)"
            if includes_zero
            else f" ({better} {main} is better; selected as the best, which flatters it)"
        )
    )
    return out


def _summarise(table: pd.DataFrame, kind: str) -> dict[str, Any]:
    names = list(dict.fromkeys(table["representation"]))
    score_names = ["auc"] if kind == "classification" else ["r2", "mae"]
    main = score_names[0]
    out: dict[str, Any] = {}
    raw = table[table["representation"] == "raw"].set_index(["repeat", "fold", "n_train"])
    best: tuple[float, str, str] | None = None
    sizes = set(table["n_train"])
    largest = "all" if "all" in sizes else str(max(int(v) for v in sizes))
    for name in names:
        rep = table[table["representation"] == name]
        out[name] = {}
        for size, group in rep.groupby("n_train", sort=False):
            group = group.set_index(["repeat", "fold", "n_train"])
            n_train = round(float(group["n_train_scans"].mean()))
            n_test = round(float(group["n_test"].mean()))
            cell: dict[str, Any] = {"n_splits": len(group), "n_train_scans": n_train}
            for metric in score_names:
                mean, ci = _summary(group[metric].to_numpy(), n_train, n_test)
                cell[metric], cell[f"{metric}_ci"] = mean, ci
            paired = group[main] - raw.loc[group.index, main]
            delta, delta_ci = _summary(paired.to_numpy(), n_train, n_test)
            cell["delta_vs_raw"], cell["delta_ci"] = delta, delta_ci
            if len(paired) >= 2 and name != "raw" and np.ptp(paired.to_numpy()) > 0:
                test = corrected_resampled_ttest(paired.to_numpy(), n_train=n_train, n_test=n_test)
                cell["delta_p"] = float(test["p"])  # type: ignore[arg-type]
            else:
                cell["delta_p"] = None
            out[name][str(size)] = cell
            if str(size) == largest:
                value = cell[main] if main != "mae" else -cell[main]
                if best is None or value > best[0]:
                    best = (value, name, largest)
    if best is None:  # pragma: no cover - the largest size is always run
        raise TransferError("no training result to select from")
    return {
        "transfer": out,
        "selected": {
            "representation": best[1],
            "n_train": best[2],
            "metric": main,
            "rule": f"highest mean {main} at the largest n_train (not adjusted for selection)",
        },
    }


def _permutation(
    X: pd.DataFrame,
    y: np.ndarray,
    build: Builder,
    name: str,
    size: str,
    cell: dict[str, Any],
    kind: str,
    folds: int,
    repeats: int,
    null_repeats: int,
    permutations: int,
    seed: int,
    n_jobs: int,
) -> dict[str, Any]:
    """The selected representation against chance: its table score vs permuted labels.

    The observed score is the table's (the mean over all ``repeats`` x ``folds`` splits of
    the selected cell), so table and test report one number. Each permutation reruns the
    same procedure on permuted labels over ``null_repeats`` repeats. With
    ``null_repeats < repeats`` the null mean averages fewer splits, so its spread is wider
    than that of the observed mean under the null: the p-value is then conservative (never
    too small), which the result says.
    """
    metric = "auc" if kind == "classification" else "r2"
    observed = float(cell[metric])
    rng = np.random.default_rng(stable_seed(seed, "permutation", name))
    orders = [rng.permutation(len(y)) for _ in range(permutations)]

    def one(p: int) -> float:
        yp = y[orders[p]]
        splits = make_splits(yp, kind, folds=folds, repeats=null_repeats, sizes=[size], seed=seed)
        vals = []
        for split in splits:
            _, _, score, _ = _run_one(name, build, X, yp, split, kind, seed)
            vals.append(_split_scores(kind, yp[split.test], score)[metric])
        return float(np.mean(vals))

    with threads_section(n_jobs) as threads:
        null = Parallel(n_jobs=n_jobs, prefer="threads")(
            delayed(in_worker(one, threads, "threads"))(p) for p in range(permutations)
        )
    p_value = permutation_p_value(observed, null)
    floor = 1.0 / (permutations + 1)
    at_floor = bool(p_value <= floor * (1.0 + 1e-9))
    chance = "0.5" if metric == "auc" else "0 (or below)"
    note = (
        f"H0: the outcome is unrelated to the features (labels permuted); this tests {name} "
        f"against chance ({metric} {chance}), not against raw; see the headline's Δ vs raw"
    )
    if at_floor:
        note += (
            f". p = 1/({permutations} + 1) is the smallest value {permutations} permutations "
            f"can give (no permuted score reached the observed one): p ≤ {floor:.3g}, not a "
            "measured p; more permutations would resolve it"
        )
    if null_repeats < repeats:
        note += (
            f". The observed {metric} averages {repeats} repeats, each null value "
            f"{null_repeats}: the null is wider, so p is conservative"
        )
    return {
        "representation": name,
        "n_train": size,
        "metric": metric,
        "observed": observed,
        "observed_repeats": repeats,
        "null_mean": float(np.mean(null)),
        "null_sd": float(np.std(null)),
        "permutations": permutations,
        "repeats": null_repeats,
        "p": p_value,
        "p_floor": floor,
        "at_floor": at_floor,
        "tests": "against chance",
        "note": note,
    }
