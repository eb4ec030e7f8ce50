"""The QC rules. Each reads the database through SQL and returns the flags of the target scans.

Every rule sees the scans to check as the registered relation ``morphml_qc_targets`` (one
column, ``scan_key``) and, where it compares a scan with others, uses every scan in the
database as the reference, so checking a new batch at ingest judges it against what is
already there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.utils.extmath import randomized_svd

from morphml.io import SUBCORTICAL_GRAY
from morphml.qc._report import QCFlag
from morphml.qc._thresholds import QCThresholds

__all__ = [
    "MUST_EXIST_ASEG",
    "NON_NEGATIVE_MEASURES",
    "RuleResult",
    "euler_numbers",
    "robust_scale",
    "rule_euler",
    "rule_missing",
    "rule_multivariate",
    "rule_negative",
    "rule_thickness",
    "rule_zero",
]

#: measures that cannot be below zero
NON_NEGATIVE_MEASURES: tuple[str, ...] = (
    "volume",
    "area",
    "nvoxels",
    "numvert",
    "thickness",
    "thicknessstd",
    "count",
    "ratio",
)

#: segmentation structures every brain has, so a volume of exactly 0 means a failed
#: segmentation. Left out on purpose: the inferior lateral ventricles, CSF, vessels, choroid
#: plexus, 5th ventricle, optic chiasm and hypointensities, which are legitimately 0 or absent
#: in some healthy brains or FreeSurfer versions.
_BILATERAL = (
    "Lateral-Ventricle",
    "Cerebellum-White-Matter",
    "Cerebellum-Cortex",
    *SUBCORTICAL_GRAY,
)
MUST_EXIST_ASEG: tuple[str, ...] = (
    *(f"{side}-{name}" for side in ("Left", "Right") for name in _BILATERAL),
    "3rd-Ventricle",
    "4th-Ventricle",
    "Brain-Stem",
    "CC_Posterior",
    "CC_Mid_Posterior",
    "CC_Central",
    "CC_Mid_Anterior",
    "CC_Anterior",
)

#: surface atlases whose every region exists in every hemisphere (gyral, Desikan-style);
#: Destrieux sulci such as the intermediate sulcus of Jensen are absent in some brains
_MUST_EXIST_SURFACE: tuple[str, ...] = ("aparc", "aparc_pial", "DKT")
_SEGMENTATION_ATLASES: tuple[str, ...] = ("aseg", "aseg_dkt")
#: atlases and measures the multivariate rule reads
_MV_ATLASES: tuple[str, ...] = ("aparc", "DKT", "a2009s", "aseg", "aseg_dkt", "global")
_MV_MEASURES: tuple[str, ...] = ("thickness", "area", "volume")
#: a feature enters the multivariate rule when this share of the reference scans has it
_MV_MIN_PRESENCE = 0.95
#: robust z values are clipped here for the components, so one absurd value cannot dominate
_Z_CLIP = 10.0
#: listed feature ids per reason
_SHOW = 3

_VALID = "m.value IS NOT NULL AND NOT isnan(m.value)"


@dataclass
class RuleResult:
    """Flags of one rule, the checked scans it could not judge, and why."""

    flags: list[QCFlag] = field(default_factory=list)
    not_assessed: int = 0
    notes: list[str] = field(default_factory=list)

    def unjudged(self, keys: Iterable[str], wanted: set[str], note: str) -> None:
        """Count the ``wanted`` scans among ``keys`` (too few to compare with) as not assessed;
        ``note``, its ``{}`` filled with their number, says why."""
        n = sum(1 for k in keys if k in wanted)
        if n:
            self.not_assessed += n
            self.notes.append(note.format(f"{n:,}"))


# ------------------------------------------------------------------------------ helpers


def robust_scale(values: np.ndarray) -> tuple[float, float]:
    """Median and robust standard deviation (1.4826 x MAD; 1.2533 x mean absolute deviation
    when the MAD is 0, as Iglewicz and Hoaglin's modified z-score does)."""
    med = float(np.median(values))
    dev = np.abs(values - med)
    scale = 1.4826 * float(np.median(dev))
    if scale == 0.0:
        scale = 1.2533 * float(np.mean(dev))
    return med, scale


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else "")


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _value_rows(con: duckdb.DuckDBPyConnection, where: str) -> pd.DataFrame:
    """Values of the target scans matching ``where`` (on ``f`` features and ``m`` measures)."""
    return con.execute(
        "SELECT m.scan_key, f.feature_id, f.atlas, f.measure, m.value FROM measures m "
        "JOIN features f USING (feature_idx) JOIN morphml_qc_targets t USING (scan_key) "
        f"WHERE {_VALID} AND ({where}) ORDER BY m.scan_key, f.feature_id"
    ).df()


def _reference_groups(
    labels: pd.Series, min_n: int
) -> tuple[list[tuple[str, pd.Index, pd.Index]], pd.Index]:
    """Split scans (index) by site label into (name, reference scans, member scans) groups.

    A site with at least ``min_n`` scans is its own reference; scans of smaller sites are
    compared with all scans. Returns the groups and the scans no group can judge.
    """
    counts = labels.value_counts()
    big = sorted(str(s) for s in counts.index[counts >= min_n])
    groups = [(site, labels.index[labels == site], labels.index[labels == site]) for site in big]
    small = labels.index[~labels.isin(big)]
    if len(small) == 0:
        return groups, pd.Index([])
    if len(labels) >= min_n:
        groups.append(("all scans", labels.index, small))
        return groups, pd.Index([])
    return groups, small


# -------------------------------------------------------------------------------- Euler


def euler_numbers(con: duckdb.DuckDBPyConnection, scan_keys: Sequence[str] | None) -> pd.Series:
    """Mean Euler number of the two hemispheres per scan, from ``SurfaceHoles``.

    A hemisphere's surface with ``h`` holes has Euler number ``2 - 2h``, so the mean of the two
    hemispheres is ``2 - (lh + rh)``; with only the whole-brain count it is ``2 - total``, and
    with one hemisphere alone ``2 - 2h`` of that hemisphere. Scans without any count are
    left out.
    """
    holes = con.execute(
        "SELECT m.scan_key, f.hemi, m.value FROM measures m JOIN features f USING (feature_idx) "
        "WHERE f.atlas = 'global' AND f.region = 'SurfaceHoles' AND f.measure = 'count' AND "
        + _VALID
    ).df()
    if scan_keys is not None:
        holes = holes[holes["scan_key"].isin(list(scan_keys))]
    if holes.empty:
        return pd.Series(dtype=np.float64, name="euler")
    wide = holes.pivot_table(index="scan_key", columns="hemi", values="value", aggfunc="first")
    wide = wide.reindex(columns=["lh", "rh", "na"])
    both = 2.0 - wide["lh"] - wide["rh"]
    total = 2.0 - wide["na"]
    single = 2.0 - 2.0 * wide["lh"].fillna(wide["rh"])
    euler = both.fillna(total).fillna(single)
    return euler.dropna().astype(np.float64).rename("euler").sort_index()


def rule_euler(
    con: duckdb.DuckDBPyConnection,
    targets: pd.Index,
    labels: pd.Series,
    th: QCThresholds,
) -> dict[str, RuleResult]:
    """``euler_absolute`` and ``euler_site_z``."""
    absolute, site_z = RuleResult(), RuleResult()
    euler = euler_numbers(con, None)
    if euler.empty:
        note = (
            "euler_absolute, euler_site_z: no SurfaceHoles values in the database "
            "(global.?h.SurfaceHoles.count), so the Euler rules were not applied"
        )
        absolute.notes.append(note)
        site_z.notes.append(note)
        absolute.not_assessed = site_z.not_assessed = len(targets)
        return {"euler_absolute": absolute, "euler_site_z": site_z}
    have = targets[targets.isin(euler.index)]
    lacking = len(targets) - len(have)
    if lacking:
        note = (
            f"euler_absolute, euler_site_z: {lacking:,} checked scans have no SurfaceHoles "
            "value (not assessed)"
        )
        absolute.notes.append(note)
        site_z.notes.append(note)
    absolute.not_assessed = site_z.not_assessed = lacking
    for key in have:
        value = float(euler[key])
        if value < th.euler_absolute:
            absolute.flags.append(
                QCFlag(
                    key,
                    "euler_absolute",
                    f"mean Euler number {value:g} < {th.euler_absolute:g}",
                    value,
                )
            )
    groups, unjudged = _reference_groups(labels.reindex(euler.index), th.site_min_scans)
    wanted = set(have)
    for name, ref, members in groups:
        med, scale = robust_scale(euler[ref].to_numpy())
        if scale <= 0.0:
            site_z.not_assessed += sum(1 for k in members if k in wanted)
            continue
        for key in members:
            if key not in wanted:
                continue
            z = (float(euler[key]) - med) / scale
            if z < th.euler_site_z:
                site_z.flags.append(
                    QCFlag(
                        key,
                        "euler_site_z",
                        f"mean Euler number {euler[key]:g} is {z:.2f} robust SD from the "
                        f"median {med:g} of {name} ({len(ref)} scans); cut-off "
                        f"{th.euler_site_z:g}",
                        round(z, 4),
                    )
                )
    site_z.unjudged(
        unjudged, wanted, f"euler_site_z: {{}} scans not assessed: fewer than "
        f"{th.site_min_scans} scans with an Euler number to compare with",
    )  # fmt: skip
    return {"euler_absolute": absolute, "euler_site_z": site_z}


# ----------------------------------------------------------------- values of one scan


def _grouped_flags(rows: pd.DataFrame, flag: str, describe: str, pick: str) -> list[QCFlag]:
    """One flag per scan over its offending rows; ``pick``: min, max or count as the value."""
    out = []
    for key, frame in rows.groupby("scan_key", sort=True):
        items = [
            f"{fid}={_fmt(v)}" for fid, v in zip(frame["feature_id"], frame["value"], strict=True)
        ]
        if pick == "count":
            value = float(len(frame))
        else:
            value = float(frame["value"].min() if pick == "min" else frame["value"].max())
        out.append(QCFlag(str(key), flag, f"{len(frame)} {describe}: {_listing(items)}", value))
    return out


def rule_negative(con: duckdb.DuckDBPyConnection) -> RuleResult:
    """``negative_value``: a volume, area, count, thickness or ratio below zero."""
    measures = ", ".join(f"'{m}'" for m in NON_NEGATIVE_MEASURES)
    rows = _value_rows(con, f"f.measure IN ({measures}) AND m.value < 0")
    return RuleResult(_grouped_flags(rows, "negative_value", "negative values", "min"))


def rule_zero(con: duckdb.DuckDBPyConnection) -> RuleResult:
    """``zero_structure``: a structure every brain has, measured as exactly 0."""
    aseg = ", ".join(f"'{r}'" for r in MUST_EXIST_ASEG)
    seg = ", ".join(f"'{a}'" for a in _SEGMENTATION_ATLASES)
    surf = ", ".join(f"'{a}'" for a in _MUST_EXIST_SURFACE)
    rows = _value_rows(
        con,
        "m.value = 0 AND ("
        f"(f.atlas IN ({seg}) AND f.region IN ({aseg}) AND f.measure IN ('volume', 'nvoxels'))"
        f" OR (f.atlas IN ({surf}) AND f.measure IN ('area', 'volume', 'numvert', 'thickness'))"
        " OR (f.atlas = 'global' AND f.measure IN ('volume', 'area')))",
    )
    return RuleResult(
        _grouped_flags(rows, "zero_structure", "structures every brain has are 0", "count")
    )


def rule_thickness(con: duckdb.DuckDBPyConnection, th: QCThresholds) -> RuleResult:
    """``thickness_range``: mean or regional cortical thickness outside the plausible range.

    A regional thickness of exactly 0 marks a region without vertices: ``zero_structure``
    judges it for the Desikan-style atlases; for the others it is not a thickness.
    """
    lo, hi = th.thickness_min, th.thickness_max
    rows = _value_rows(
        con,
        f"f.measure = 'thickness' AND (m.value < {lo!r} OR m.value > {hi!r}) "
        "AND (f.atlas = 'global' OR m.value <> 0)",
    )
    out = []
    for key, frame in rows.groupby("scan_key", sort=True):
        found = frame["value"].to_numpy(dtype=np.float64)
        worst = float(found[int(np.argmax(np.maximum(lo - found, found - hi)))])
        mean_rows = frame[frame["atlas"] == "global"]
        items = [
            f"{fid}={_fmt(v)}" for fid, v in zip(frame["feature_id"], frame["value"], strict=True)
        ]
        what = "mean cortical thickness" if len(mean_rows) else "regional thickness values"
        out.append(
            QCFlag(
                str(key),
                "thickness_range",
                f"{len(frame)} {what} outside {lo:g}-{hi:g} mm: {_listing(items)}",
                worst,
            )
        )
    return RuleResult(out)


#: rows of ``measures`` per streamed batch in :func:`rule_missing` (bounds its memory)
_STREAM_ROWS = 1_000_000


def _peer_groups(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Scans of the (source, software, version) groups that hold a target scan: ``scan_key``,
    ``grp`` (group number) and ``target`` (whether the scan is checked), in scan-key order."""
    return con.execute(
        """
        WITH sc AS (
            SELECT scan_key, source, coalesce(software, '') AS sw, coalesce(version, '') AS ver
            FROM scans
        ),
        g AS (
            SELECT DISTINCT source, sw, ver FROM sc JOIN morphml_qc_targets USING (scan_key)
        ),
        numbered AS (SELECT *, row_number() OVER (ORDER BY source, sw, ver) - 1 AS grp FROM g)
        SELECT sc.scan_key, numbered.grp,
               sc.scan_key IN (SELECT scan_key FROM morphml_qc_targets) AS target
        FROM sc JOIN numbered USING (source, sw, ver) ORDER BY sc.scan_key
        """
    ).df()


def _arrow_batches(result: duckdb.DuckDBPyConnection) -> Iterator[pa.RecordBatch]:
    """A query's result as Arrow record batches of at most :data:`_STREAM_ROWS` rows."""
    # to_arrow_reader replaces fetch_record_batch (deprecated) in newer DuckDB releases
    stream = getattr(result, "to_arrow_reader", None) or result.fetch_record_batch
    yield from stream(_STREAM_ROWS)


def _stream_present(
    con: duckdb.DuckDBPyConnection, table: str
) -> Iterator[tuple[np.ndarray, ...]]:
    """``(row, feature_idx)`` arrays of every valid value of the scans in registered ``table``
    (``scan_key``, ``row``), in batches of at most :data:`_STREAM_ROWS` rows."""
    result = con.execute(
        f"SELECT k.row, m.feature_idx FROM measures m JOIN {table} k USING (scan_key) "
        f"WHERE {_VALID}"
    )
    for batch in _arrow_batches(result):
        yield (
            batch.column(0).to_numpy(zero_copy_only=False).astype(np.int64),
            batch.column(1).to_numpy(zero_copy_only=False).astype(np.int64),
        )


def rule_missing(con: duckdb.DuckDBPyConnection, th: QCThresholds) -> RuleResult:
    """``missing_structure``: a feature the scan's peers have, for an atlas and measure the
    scan has, but that the scan lacks (or holds as NaN).

    Peers are the scans of the same source, software and version that have the atlas and
    measure; a feature is expected when at least ``missing_min_share`` of them have it. So a
    table export that never held a region does not flag every scan, and a FreeSurfer version
    that lacks a region does not flag the scans of another.

    Linear time and memory bounded by a batch: only the groups of the checked scans are read,
    in two streamed passes over their values (counts per group and feature, then the expected
    features each checked scan has), and the missing features are listed for the flagged
    scans alone.
    """
    peers = _peer_groups(con)
    if peers.empty:
        return RuleResult()
    feats = con.execute("SELECT feature_idx, feature_id, atlas, measure FROM features").df()
    n_feat = int(feats["feature_idx"].max()) + 1 if len(feats) else 0
    pair = feats["atlas"].astype(str) + "\x00" + feats["measure"].astype(str)
    pair_codes, pair_names = pd.factorize(pair, sort=True)
    am_of = np.zeros(n_feat, dtype=np.int64)
    am_of[feats["feature_idx"].to_numpy(dtype=np.int64)] = pair_codes
    n_am = max(len(pair_names), 1)
    group = peers["grp"].to_numpy(dtype=np.int64)
    n_groups = int(group.max()) + 1
    n_rows = len(peers)
    con.register(
        "morphml_qc_peers",
        pd.DataFrame({"scan_key": peers["scan_key"], "row": np.arange(n_rows, dtype=np.int64)}),
    )
    try:
        # pass 1: which (atlas, measure) each scan has, and per group how many scans have
        # each feature
        has_am = np.zeros((n_rows, n_am), dtype=bool)
        counts = np.zeros(n_groups * n_feat, dtype=np.int64)
        for row, fidx in _stream_present(con, "morphml_qc_peers"):
            has_am[row, am_of[fidx]] = True
            counts += np.bincount(group[row] * n_feat + fidx, minlength=n_groups * n_feat)
        n_feature = counts.reshape(n_groups, n_feat)
        n_group = np.zeros((n_groups, n_am), dtype=np.int64)
        np.add.at(n_group, group, has_am.astype(np.int64))
        expected = (n_feature > 0) & (
            n_feature >= th.missing_min_share * n_group[:, am_of].astype(np.float64)
        )
        n_expected = np.zeros((n_groups, n_am), dtype=np.int64)
        for g in range(n_groups):
            n_expected[g] = np.bincount(am_of[expected[g]], minlength=n_am)
        # pass 2: the expected features each checked scan has, per (atlas, measure)
        is_target = peers["target"].to_numpy(dtype=bool)
        present = np.zeros(n_rows * n_am, dtype=np.int64)
        for row, fidx in _stream_present(con, "morphml_qc_peers"):
            keep = is_target[row] & expected[group[row], fidx]
            present += np.bincount(row[keep] * n_am + am_of[fidx[keep]], minlength=n_rows * n_am)
        lacking = np.where(
            has_am & is_target[:, None], n_expected[group] - present.reshape(n_rows, n_am), 0
        )
        flagged = np.flatnonzero(lacking.sum(axis=1) > 0)
        if not len(flagged):
            return RuleResult()
        # the missing features of the flagged scans only
        con.register(
            "morphml_qc_flagged",
            pd.DataFrame({"scan_key": peers["scan_key"].to_numpy()[flagged], "row": flagged}),
        )
        try:
            have = np.zeros((len(flagged), n_feat), dtype=bool)
            slot = np.full(n_rows, -1, dtype=np.int64)
            slot[flagged] = np.arange(len(flagged))
            for row, fidx in _stream_present(con, "morphml_qc_flagged"):
                have[slot[row], fidx] = True
        finally:
            con.unregister("morphml_qc_flagged")
    finally:
        con.unregister("morphml_qc_peers")
    feature_id = np.empty(n_feat, dtype=object)
    feature_id[feats["feature_idx"].to_numpy(dtype=np.int64)] = feats["feature_id"].astype(str)
    out = []
    for i, r in enumerate(flagged):
        missing = expected[group[r]] & has_am[r, am_of] & ~have[i]
        ids = sorted(str(f) for f in feature_id[np.flatnonzero(missing)])
        out.append(
            QCFlag(
                str(peers["scan_key"].iloc[r]),
                "missing_structure",
                f"{len(ids)} values its peers have are missing: {_listing(ids)}",
                float(len(ids)),
            )
        )
    return RuleResult(out)


# -------------------------------------------------------------------------- multivariate


def _design(age: np.ndarray, male: np.ndarray) -> np.ndarray:
    """Intercept, standardised age and its square, and male indicator (constant columns and
    unknown values dropped or set to the mean, so the fit never fails)."""
    columns = [np.ones(len(age))]
    known = ~np.isnan(age)
    if known.sum() >= 3 and np.nanstd(age) > 0:
        a = np.where(known, age, np.nanmean(age))
        a = (a - a.mean()) / a.std()
        columns += [a, a**2]
    sex_known = ~np.isnan(male)
    if sex_known.any() and np.nanstd(male) > 0:
        columns.append(np.where(sex_known, male, np.nanmean(male)))
    return np.column_stack(columns)


def _adjusted(values: np.ndarray, design: np.ndarray) -> np.ndarray:
    """Residuals of each column on ``design``, refitted once without the points whose robust
    z of the first residuals is beyond 3.5 (so outliers do not bend the age curve)."""
    filled = np.where(np.isnan(values), np.nanmedian(values, axis=0), values)
    beta = np.linalg.lstsq(design, filled, rcond=None)[0]
    resid = filled - design @ beta
    centre = np.median(resid, axis=0)
    scale = 1.4826 * np.median(np.abs(resid - centre), axis=0)
    weights = (np.abs(resid - centre) <= 3.5 * np.where(scale > 0, scale, np.inf)).astype(float)
    gram = np.einsum("ni,nj,np->pij", design, design, weights)
    rhs = np.einsum("ni,np,np->pi", design, filled, weights)
    ridge = 1e-9 * np.trace(gram, axis1=1, axis2=2)[:, None, None] * np.eye(design.shape[1])
    enough = weights.sum(axis=0) > 2 * design.shape[1]
    refit = np.linalg.solve(gram + ridge, rhs[..., None])[..., 0].T
    beta = np.where(enough[None, :], refit, beta)
    resid = filled - design @ beta
    return np.where(np.isnan(values), np.nan, resid)


def _wilson_hilferty_z(distance: np.ndarray) -> np.ndarray:
    """Robust z of distances after the 2/3 power that makes chi-like distances near normal."""
    power = distance ** (2.0 / 3.0)
    med, scale = robust_scale(power)
    if scale <= 0:
        return np.zeros_like(distance)
    return (power - med) / scale


@dataclass
class _Outlyingness:
    score_z: np.ndarray
    orth_z: np.ndarray
    feature_z: np.ndarray
    names: list[str]
    k: int


def _outlyingness(
    values: np.ndarray, design: np.ndarray, names: list[str], th: QCThresholds
) -> _Outlyingness | None:
    """Robust distances of each scan (row) from the others; None when no feature varies.

    ``values`` is (scans, features) with NaN where a value is missing.
    """
    n = values.shape[0]
    present = np.mean(~np.isnan(values), axis=0) >= _MV_MIN_PRESENCE
    values = values[:, present]
    names = [nm for nm, keep in zip(names, present, strict=True) if keep]
    if values.shape[1] == 0:
        return None
    resid = _adjusted(values, design)
    centre = np.nanmedian(resid, axis=0)
    dev = np.abs(resid - centre)
    scale = 1.4826 * np.nanmedian(dev, axis=0)
    scale = np.where(scale > 0, scale, 1.2533 * np.nanmean(dev, axis=0))
    keep = scale > 0
    if not keep.any():
        return None
    names = [nm for nm, k in zip(names, keep, strict=True) if k]
    raw = np.nan_to_num((resid[:, keep] - centre[keep]) / scale[keep], nan=0.0)
    z = np.clip(raw, -_Z_CLIP, _Z_CLIP)
    # principal axes from the 75 % of scans least outlying feature by feature, so that the
    # outliers cannot pull the axes towards themselves (ROBPCA's idea, Hubert et al. 2005)
    h = max(2, math.ceil(0.75 * n))
    core = np.argsort(np.sum(z**2, axis=1), kind="stable")[:h]
    mean = z[core].mean(axis=0)
    core_centred = z[core] - mean
    total = float(np.sum(core_centred**2))
    if total <= 0:
        return None
    # only the leading components are needed: a seeded randomized SVD is exact enough and
    # far cheaper than a full one on thousands of scans
    n_comp = max(1, min(th.multivariate_max_components, (n - 1) // 5, *core_centred.shape))
    _, sing, vt = randomized_svd(core_centred, n_comp, random_state=0)
    explained = np.cumsum(sing**2) / total
    k = min(n_comp, int(np.searchsorted(explained, 0.8) + 1))
    loadings = vt[:k].T
    centred = z - mean
    scores = centred @ loadings
    orth = np.linalg.norm(centred - scores @ loadings.T, axis=1)
    core_scores = scores[core]
    spread = 1.4826 * np.median(np.abs(core_scores - np.median(core_scores, axis=0)), axis=0)
    spread = np.where(spread > 0, spread, 1.0)
    score = np.linalg.norm((scores - np.median(core_scores, axis=0)) / spread, axis=1)
    return _Outlyingness(_wilson_hilferty_z(score), _wilson_hilferty_z(orth), raw, names, k)


def rule_multivariate(
    con: duckdb.DuckDBPyConnection,
    targets: pd.Index,
    labels: pd.Series,
    th: QCThresholds,
) -> RuleResult:
    """``multivariate_outlier``: robust distances within the scan's site after age and sex
    adjustment (see the package docstring for the rule and its cut-offs)."""
    result = RuleResult()
    groups, unjudged = _reference_groups(labels, th.multivariate_min_scans)
    wanted = set(targets)
    groups = [g for g in groups if any(k in wanted for k in g[2])]
    result.unjudged(
        unjudged, wanted, f"multivariate_outlier: {{}} scans not assessed: fewer than "
        f"{th.multivariate_min_scans} scans in the database to compare with",
    )  # fmt: skip
    if not groups:
        return result
    feats = _mv_features(con)
    if feats.empty:
        result.not_assessed += sum(len([k for k in g[2] if k in wanted]) for g in groups)
        result.notes.append("multivariate_outlier: no thickness, area or volume features")
        return result
    needed = pd.Index(sorted(set().union(*(set(g[1]) for g in groups))))
    matrix, age, male = _mv_matrix(con, needed, feats)
    names = [str(f) for f in feats["feature_id"]]
    row_of = pd.Series(np.arange(len(needed)), index=needed)
    for name, ref, members in groups:
        judged = [k for k in members if k in wanted]
        rows = row_of[ref].to_numpy()
        found = _outlyingness(matrix[rows], _design(age[rows], male[rows]), names, th)
        if found is None:
            result.not_assessed += len(judged)
            result.notes.append(f"multivariate_outlier: no varying feature in {name}")
            continue
        position = pd.Series(np.arange(len(ref)), index=ref)
        for key in judged:
            flag = _mv_flag(str(key), found, int(position[key]), f"{name}, {len(ref)} scans", th)
            if flag is not None:
                result.flags.append(flag)
    return result


def _mv_features(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The thickness, area and volume features the multivariate rule reads."""
    atlases = ", ".join(f"'{a}'" for a in _MV_ATLASES)
    measures = ", ".join(f"'{m}'" for m in _MV_MEASURES)
    seg = ", ".join(f"'{a}'" for a in _SEGMENTATION_ATLASES)
    aseg = ", ".join(f"'{r}'" for r in MUST_EXIST_ASEG)
    return con.execute(
        "SELECT feature_idx, feature_id, measure FROM features "
        f"WHERE atlas IN ({atlases}) AND measure IN ({measures}) "
        f"AND (atlas NOT IN ({seg}) OR region IN ({aseg})) ORDER BY feature_idx"
    ).df()


def _mv_matrix(
    con: duckdb.DuckDBPyConnection, needed: pd.Index, feats: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scans, features) values of ``needed`` (areas and volumes as log1p, NaN where
    missing), with each scan's age and male indicator (NaN when unknown)."""
    keys = pd.DataFrame({"scan_key": needed, "row": np.arange(len(needed), dtype=np.int64)})
    cols = pd.DataFrame(
        {"feature_idx": feats["feature_idx"], "col": np.arange(len(feats), dtype=np.int64)}
    )
    con.register("morphml_qc_rows", keys)
    con.register("morphml_qc_cols", cols)
    matrix = np.full((len(needed), len(feats)), np.nan)
    try:
        result = con.execute(
            "SELECT k.row, c.col, m.value FROM measures m "
            "JOIN morphml_qc_rows k USING (scan_key) JOIN morphml_qc_cols c USING (feature_idx) "
            f"WHERE {_VALID}"
        )
        # streamed into the matrix batch by batch: the whole (row, col, value) result would
        # be three times the matrix (measured: the peak of a 10k ingest)
        for batch in _arrow_batches(result):
            rows = batch.column(0).to_numpy(zero_copy_only=False)
            cols_ = batch.column(1).to_numpy(zero_copy_only=False)
            matrix[rows, cols_] = batch.column(2).to_numpy(zero_copy_only=False)
        people = (
            con.execute(
                "SELECT k.row, s.age, CASE j.sex WHEN 'M' THEN 1.0 WHEN 'F' THEN 0.0 END AS male "
                "FROM morphml_qc_rows k JOIN scans s USING (scan_key) "
                "JOIN subjects j USING (subject_key) ORDER BY k.row"
            )
            .df()
            .set_index("row")
            .reindex(range(len(needed)))
        )
    finally:
        con.unregister("morphml_qc_rows")
        con.unregister("morphml_qc_cols")
    logged = feats["measure"].isin(["area", "volume"]).to_numpy()
    matrix[:, logged] = np.log1p(np.clip(matrix[:, logged], 0.0, None))
    age = people["age"].to_numpy(dtype=np.float64)
    male = people["male"].to_numpy(dtype=np.float64)
    return matrix, age, male


def _mv_flag(
    key: str, found: _Outlyingness, i: int, within: str, th: QCThresholds
) -> QCFlag | None:
    """The flag of scan ``i`` of a site's outlyingness, or None when it is not an outlier."""
    zd, zf = th.multivariate_distance_z, th.multivariate_feature_z
    why, strongest = [], 0.0
    if found.score_z[i] > zd:
        why.append(f"score distance robust z {found.score_z[i]:.1f} > {zd:g}")
        strongest = max(strongest, float(found.score_z[i]))
    if found.orth_z[i] > zd:
        why.append(f"orthogonal distance robust z {found.orth_z[i]:.1f} > {zd:g}")
        strongest = max(strongest, float(found.orth_z[i]))
    extreme = np.flatnonzero(np.abs(found.feature_z[i]) > zf)
    if len(extreme) >= th.multivariate_feature_count:
        order = extreme[np.argsort(-np.abs(found.feature_z[i, extreme]), kind="stable")]
        items = [f"{found.names[j]} z={found.feature_z[i, j]:.1f}" for j in order]
        why.append(f"{len(extreme)} values beyond robust z {zf:g}: {_listing(items)}")
        strongest = max(strongest, float(np.abs(found.feature_z[i, order[0]])))
    if not why:
        return None
    return QCFlag(
        key,
        "multivariate_outlier",
        f"{'; '.join(why)} (within {within}, age and sex adjusted; {found.k} robust "
        f"components of {len(found.names)} features)",
        round(strongest, 4),
    )
