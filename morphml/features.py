"""Cohort selection and the feature matrix a run trains on.

``load_frame`` turns a cohort spec and a feature spec into a :class:`FeatureFrame`: ``X`` (one
row per scan, canonical feature ids as columns, plus optional site indicators) and ``meta`` (the
scan's pseudonyms, site, age, sex, software, phenotypes). Only row-wise transforms happen here
(log of volumes, thickness relative to the scan's mean thickness): nothing is learned from other
scans, so nothing can leak across folds. Everything learned (scaling, eTIV adjustment,
imputation) lives inside the model pipelines.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from morphml.config import CohortSpec, FeatureSpec
from morphml.db import connect
from morphml.exceptions import ConfigError

__all__ = [
    "SITE_PREFIX",
    "FeatureFrame",
    "apply_row_transforms",
    "cohort_scans",
    "load_frame",
    "load_raw_frame",
    "with_meta",
]

#: prefix of the one-hot site indicator columns
SITE_PREFIX = "site="


@dataclass
class FeatureFrame:
    """Features and metadata of the scans a run uses.

    Attributes
    ----------
    X : pandas.DataFrame
        Index ``scan_key``; float64 columns: canonical feature ids (after row-wise transforms),
        then site indicators ``site=<name>`` when requested.
    meta : pandas.DataFrame
        Index ``scan_key``; ``subject_key``, ``source``, ``site``, ``session``, ``age``, ``sex``,
        ``software``, ``version``, then one column per phenotype.
    """

    X: pd.DataFrame
    meta: pd.DataFrame

    @property
    def feature_ids(self) -> list[str]:
        return [c for c in self.X.columns if not c.startswith(SITE_PREFIX)]

    def data_hash(self) -> str:
        """SHA-256 of the exact matrix: scan keys, column names and float64 values."""
        digest = hashlib.sha256()
        digest.update("\x1f".join(self.X.index).encode())
        digest.update("\x1f".join(self.X.columns).encode())
        digest.update(np.ascontiguousarray(self.X.to_numpy(dtype="<f8")).tobytes())
        return digest.hexdigest()

    def scan_hashes(self) -> dict[str, str]:
        """Per-scan SHA-256 (16 hex digits) of its row: audits name the scans that changed."""
        cols = "\x1f".join(self.X.columns).encode()
        values = np.ascontiguousarray(self.X.to_numpy(dtype="<f8"))
        out = {}
        for key, row in zip(self.X.index, values, strict=True):
            digest = hashlib.sha256(cols)
            digest.update(row.tobytes())
            out[str(key)] = digest.hexdigest()[:16]
        return out

    def subset(self, mask: np.ndarray | pd.Series) -> FeatureFrame:
        keep = np.asarray(mask, dtype=bool)
        return FeatureFrame(self.X.loc[keep], self.meta.loc[keep])


def cohort_scans(con: duckdb.DuckDBPyConnection, cohort: CohortSpec) -> pd.DataFrame:
    """The scans a cohort selects: one row per scan key, with its phenotypes.

    Applies the cohort's sources, age range, phenotype filters, QC exclusions and
    first-session rule, in that order; no features are read.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        An open morphml database.
    cohort : CohortSpec
        A config's ``cohort`` section.

    Returns
    -------
    DataFrame
        Indexed by ``scan_key``: subject key, source, site, session, age, sex, software,
        version and one column per phenotype.
    """
    meta = con.execute(
        "SELECT s.scan_key, s.subject_key, s.source, s.site, s.session, s.age, j.sex, "
        "s.software, s.version FROM scans s JOIN subjects j USING (subject_key) "
        "ORDER BY s.scan_key"
    ).df()
    meta = meta.set_index("scan_key")
    known_sources = sorted(set(meta["source"]))
    if cohort.sources is not None:
        unknown = [s for s in cohort.sources if s not in known_sources]
        if unknown:
            raise ConfigError(
                f"cohort.sources: {unknown} not in the database (sources: {known_sources})"
            )
        meta = meta[meta["source"].isin(cohort.sources)]
    if cohort.min_age is not None:
        meta = meta[meta["age"] >= cohort.min_age]
    if cohort.max_age is not None:
        meta = meta[meta["age"] <= cohort.max_age]
    phen = con.execute("SELECT scan_key, name, type, value_num, value_text FROM phenotypes").df()
    for name, frame in phen.groupby("name"):
        values = frame.set_index("scan_key")
        column = values["value_num"].where(values["type"] == "continuous", values["value_text"])
        meta[str(name)] = column.reindex(meta.index)
    for name, allowed in cohort.filters.items():
        if name not in meta.columns:
            raise ConfigError(
                f"cohort.filters: phenotype {name!r} is not in the database "
                f"(phenotypes: {sorted(set(phen['name']))})"
            )
        meta = meta[meta[name].astype(str).isin([str(a) for a in allowed])]
    if cohort.qc.exclude:
        flags = con.execute("SELECT scan_key, flag FROM qc_flags").df()
        bad = set(flags.loc[flags["flag"].isin(cohort.qc.exclude), "scan_key"])
        meta = meta[~meta.index.isin(bad)]
    if cohort.first_session_only and len(meta):
        first = meta.groupby("subject_key")["session"].transform("min")
        meta = meta[meta["session"].fillna(1) == first.fillna(1)]
    return meta


def _feature_columns(con: duckdb.DuckDBPyConnection, spec: FeatureSpec) -> pd.DataFrame:
    feats = con.execute(
        "SELECT feature_idx, feature_id, atlas, hemi, region, measure FROM features "
        "ORDER BY feature_idx"
    ).df()
    atlases = sorted(set(feats["atlas"]))
    if spec.atlases is not None:
        unknown = [a for a in spec.atlases if a not in atlases]
        if unknown:
            raise ConfigError(
                f"features.atlases: {unknown} have no values in the database (atlases: {atlases})"
            )
        feats = feats[feats["atlas"].isin(spec.atlases)]
    if spec.measures is not None:
        feats = feats[feats["measure"].isin(spec.measures)]
    if spec.exclude:
        drop = [
            any(fnmatch.fnmatchcase(f, pat) for pat in spec.exclude) for f in feats["feature_id"]
        ]
        feats = feats[~np.asarray(drop, dtype=bool)]
    return feats


def _available_in(
    con: duckdb.DuckDBPyConnection, feats: pd.DataFrame, spec: FeatureSpec
) -> pd.DataFrame:
    """Keep the features present in every source of ``features.available_in``."""
    sources = list(spec.available_in or [])
    known = {str(r[0]) for r in con.execute("SELECT DISTINCT source FROM scans").fetchall()}
    unknown = [s for s in sources if s not in known]
    if unknown:
        raise ConfigError(
            f"features.available_in: {unknown} not in the database (sources: {sorted(known)}); "
            "ingest the source the model will be used on first"
        )
    keep = set(feats["feature_idx"].astype(int))
    for source in sources:
        n_scans = con.execute("SELECT count(*) FROM scans WHERE source = ?", [source]).fetchone()
        total = int(n_scans[0]) if n_scans else 0
        rows = con.execute(
            "SELECT m.feature_idx, count(m.value), count(*) FILTER (WHERE m.value <> 0) "
            "FROM measures m JOIN scans s USING (scan_key) WHERE s.source = ? "
            "AND NOT isnan(m.value) GROUP BY m.feature_idx",
            [source],
        ).fetchall()
        present = {
            int(idx)
            for idx, n, nonzero in rows
            if total and n / total >= 1.0 - spec.max_missing - 1e-12 and nonzero > 0
        }
        keep &= present
    out = feats[feats["feature_idx"].astype(int).isin(keep)]
    if out.empty:
        raise ConfigError(
            f"features.available_in: no selected feature is present in every scan of "
            f"{sources}; check features.atlases (the sources may hold other atlases)"
        )
    return out


def load_frame(
    db: str | os.PathLike[str] | None,
    cohort: CohortSpec,
    spec: FeatureSpec,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
) -> FeatureFrame:
    """Select the cohort's scans and build their feature matrix.

    Raises
    ------
    ConfigError
        When the cohort is empty, or names sources, phenotypes or atlases the database lacks.
    """
    if con is None:
        with connect(db, read_only=True) as own:
            return load_frame(db, cohort, spec, con=own)
    meta = cohort_scans(con, cohort)
    if meta.empty:
        raise ConfigError(
            "the cohort is empty: no scan matches cohort.sources/filters/ages/qc "
            "(check 'morphml db info')"
        )
    feats = _feature_columns(con, spec)
    if spec.available_in:
        feats = _available_in(con, feats, spec)
    if feats.empty:
        raise ConfigError("no feature matches features.atlases/measures/exclude")
    keys = pd.DataFrame({"scan_key": meta.index, "row": np.arange(len(meta), dtype=np.int64)})
    cols = pd.DataFrame(
        {
            "feature_idx": feats["feature_idx"].to_numpy(np.int64),
            "col": np.arange(len(feats), dtype=np.int64),
        }
    )
    con.register("morphml_keys", keys)
    con.register("morphml_cols", cols)
    try:
        table = con.execute(
            "SELECT k.row, c.col, m.value FROM measures m "
            "JOIN morphml_keys k USING (scan_key) JOIN morphml_cols c USING (feature_idx)"
        ).fetchnumpy()
    finally:
        con.unregister("morphml_keys")
        con.unregister("morphml_cols")
    matrix = np.full((len(meta), len(feats)), np.nan)
    matrix[np.asarray(table["row"], dtype=np.int64), np.asarray(table["col"], dtype=np.int64)] = (
        np.asarray(table["value"], dtype=np.float64)
    )
    X = pd.DataFrame(matrix, index=meta.index, columns=list(feats["feature_id"]))
    missing = X.isna().mean()
    X = X.loc[:, missing <= spec.max_missing + 1e-12]
    X = X.loc[:, X.notna().any()]
    if X.shape[1] == 0:
        raise ConfigError(
            "no feature is present in enough scans (features.max_missing); the cohort mixes "
            "atlases no scan shares"
        )
    X = apply_row_transforms(X, spec)
    if spec.qc_covariates:
        from morphml.qc import qc_covariates

        X = pd.concat([X, qc_covariates(con, X.index, spec.qc_covariates)], axis=1)
    if spec.site_covariates:
        sites = meta["site"].fillna("unknown").astype(str)
        indicators = pd.DataFrame(
            {f"{SITE_PREFIX}{site}": (sites == site).astype(np.float64)
             for site in sorted(sites.unique())},
            index=X.index,
        )  # fmt: skip
        X = pd.concat([X, indicators], axis=1)
    return FeatureFrame(X, meta)


def load_raw_frame(db: str | os.PathLike[str] | None, cohort: CohortSpec) -> FeatureFrame:
    """The cohort's scans with every stored feature as it is: no atlas, measure or missingness
    selection, no log volumes, relative thickness or site columns (what a reference model's
    deviations are computed from)."""
    spec = FeatureSpec(
        exclude=[], max_missing=1.0, log_volumes=False, relative_thickness=False,
        site_covariates=False,
    )  # fmt: skip
    return load_frame(db, cohort, spec)


def apply_row_transforms(X: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Row-wise transforms: each scan's values depend only on that scan's own values."""
    X = X.copy()
    if spec.relative_thickness:
        regional = [
            c for c in X.columns if c.endswith(".thickness") and not c.startswith("global.")
        ]
        if regional:
            wanted = ("global.lh.MeanThickness.thickness", "global.rh.MeanThickness.thickness")
            means = [c for c in wanted if c in X.columns]
            mean = X[means].mean(axis=1) if means else X[regional].mean(axis=1)
            X[regional] = X[regional].div(mean.where(mean > 0), axis=0)
    if spec.log_volumes:
        volumes = [c for c in X.columns if c.endswith(".volume") or c.endswith(".area")]
        X[volumes] = np.log1p(X[volumes].clip(lower=0))
    return X


def target_vector(meta: pd.DataFrame, target: str) -> tuple[np.ndarray, np.ndarray]:
    """The target values and the mask of scans that have one (age in years; sex 1 = male)."""
    if target == "age":
        y = meta["age"].to_numpy(dtype=np.float64)
        return y, ~np.isnan(y)
    if target == "sex":
        sex = meta["sex"]
        y = (sex == "M").to_numpy(dtype=np.float64)
        mask = sex.isin(["M", "F"]).to_numpy()
        return y, mask
    raise ConfigError(f"unknown target {target!r}; expected age or sex")


def with_meta(X: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """``X`` plus the ``meta:site``, ``meta:age`` and ``meta:sex`` columns ComBat reads."""
    sex, known = target_vector(meta, "sex")
    out = X.copy()
    out["meta:site"] = meta["site"].fillna("unknown").astype(str).to_numpy()
    out["meta:age"] = meta["age"].to_numpy(np.float64)
    out["meta:sex"] = np.where(known, sex, np.nan)
    return out


def describe(frame: FeatureFrame) -> dict[str, Any]:
    """JSON-safe counts of a frame (for manifests and reports)."""
    meta = frame.meta
    return {
        "n_scans": len(meta),
        "n_subjects": int(meta["subject_key"].nunique()),
        "n_features": len(frame.feature_ids),
        "n_site_covariates": int(frame.X.shape[1] - len(frame.feature_ids)),
        "sources": {str(k): int(v) for k, v in meta["source"].value_counts().items()},
        "sites": {
            str(k): int(v) for k, v in meta["site"].fillna("unknown").value_counts().items()
        },
        "software": {
            f"{key[0]} {key[1]}": int(n)  # type: ignore[index]
            for key, n in meta.groupby(["software", "version"], dropna=False).size().items()
        },
        "sex": {str(k): int(v) for k, v in meta["sex"].fillna("unknown").value_counts().items()},
        "age": {
            "min": float(meta["age"].min()) if meta["age"].notna().any() else None,
            "max": float(meta["age"].max()) if meta["age"].notna().any() else None,
            "mean": float(meta["age"].mean()) if meta["age"].notna().any() else None,
        },
    }
