"""Fit the cohort simulator's coefficients on real tables and write them into the package.

Usage (from the repository root)::

    python tools/calibrate_simulator.py [--data ../shared/data] [--out PATH] [--check]

``--data`` defaults to ``$MORPHML_SHARED_DATA``, else ``../shared/data`` beside the repository.
``--out`` defaults to ``morphml/simulate/data/calibration.json``. ``--check`` writes nothing and
exits 1 when the file in the package differs from what the data give beyond numerical noise
(for CI).

Only fitted coefficients are written (means, slopes, spreads, factor loadings, published effect
sizes), never a row of the input tables. What each part is: see the docstring of
``morphml/simulate/_calibration.py``. The inputs are read with morphml's own importers and the
column maps in ``configs/maps/``, so every feature has its canonical id.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from morphml.io import read_wide_table, recognise_column
from morphml.simulate._calibration import CALIBRATION_FORMAT, design_matrix

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "morphml" / "simulate" / "data" / "calibration.json"

#: spline knots (years): fcon1000 spans 8-85 (most people 18-30), IXI 20-86
KNOTS = {"fcon1000": (12.0, 20.0, 30.0, 50.0, 75.0), "ixi": (25.0, 40.0, 55.0, 70.0, 82.0)}
#: sites with fewer scans than this fit the model but do not enter the site spreads
MIN_SITE_SIZE = 10
#: factors kept in each factor model
N_SUBJECT_FACTORS = 10
N_SITE_FACTORS = 3
N_SCALE_FACTORS = 1
#: at most this share of a feature's variance goes to common factors
MAX_COMMUNALITY = 0.97
#: globals fitted on fcon1000 (the others are sums the simulator recomputes)
FCON_GLOBALS = (
    "global.lh.MeanThickness.thickness",
    "global.rh.MeanThickness.thickness",
    "global.lh.CortexVol.volume",
    "global.rh.CortexVol.volume",
    "global.lh.CerebralWhiteMatterVol.volume",
    "global.rh.CerebralWhiteMatterVol.volume",
    "global.lh.SurfaceHoles.count",
    "global.rh.SurfaceHoles.count",
)
ETIV = "global.na.eTIV.volume"
ENIGMA_SCZ = {
    "scz_case-controls_CortThick.csv": "_thickavg",
    "scz_case-controls_CortSurf.csv": "_surfavg",
    "scz_case-controls_SubVol.csv": "",
}


def _round(value: Any) -> Any:
    """6 significant digits: the coefficients are estimates, more digits are noise."""
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(f"{float(value):.6g}")
    if isinstance(value, np.integer):
        return int(value)
    return value


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _transform(fid: str) -> str:
    return "identity" if fid.endswith(".thickness") else "log1p"


def _apply(transform: str, values: np.ndarray) -> np.ndarray:
    return values if transform == "identity" else np.log1p(values)


def _factor_loadings(z: np.ndarray, k: int) -> np.ndarray:
    """Loadings of the ``k`` leading eigenvectors of the correlation matrix of ``z``'s columns."""
    corr = np.corrcoef(z, rowvar=False)
    corr = np.nan_to_num(corr, nan=0.0)
    values, vectors = np.linalg.eigh(corr)
    order = np.argsort(values)[::-1][:k]
    loadings = vectors[:, order] * np.sqrt(np.clip(values[order], 0.0, None))
    # eigenvector signs are arbitrary; fix them so the output is reproducible
    signs = np.sign(loadings.sum(axis=0))
    signs[signs == 0] = 1.0
    loadings = loadings * signs
    communality = (loadings**2).sum(axis=1)
    shrink = np.where(communality > MAX_COMMUNALITY, np.sqrt(MAX_COMMUNALITY / communality), 1.0)
    return loadings * shrink[:, None]


def _fit_fcon1000(data: Path, maps: Path) -> dict[str, Any]:
    table = read_wide_table(data / "pcntoolkit-demo" / "fcon1000.csv", maps / "fcon1000.yaml")
    feats = table.features.reset_index(drop=True)
    part = table.participants
    age = part["age"].to_numpy(float)
    male = (part["sex"] == "M").to_numpy(float)
    sites = part["site"].astype(str).to_numpy()
    site_names, site_idx = np.unique(sites, return_inverse=True)
    counts = np.bincount(site_idx)
    big = np.flatnonzero(counts >= MIN_SITE_SIZE)

    aseg = [
        c
        for c in feats.columns
        if c.startswith("aseg.") and (feats[c] > 0).mean() > 0.5  # leaves out empty structures
    ]
    a2009s = [c for c in feats.columns if c.startswith("a2009s.") and c.endswith(".thickness")]
    fids = [ETIV, *a2009s, *FCON_GLOBALS, *aseg]
    y = np.column_stack([_apply(_transform(f), feats[f].to_numpy(float)) for f in fids])
    log_tiv = np.log(feats[ETIV].to_numpy(float))
    ref = float(log_tiv.mean())
    onehot = (site_idx[:, None] == np.arange(len(site_names))[None, :]).astype(float)

    out: dict[str, dict[str, Any]] = {}
    residuals = np.empty_like(y)
    site_sd = np.empty((len(site_names), len(fids)))
    gammas = np.empty((len(big), len(fids)))
    for with_tiv in (False, True):
        cols = [0] if not with_tiv else list(range(1, len(fids)))
        base = design_matrix(age, male, log_tiv - ref if with_tiv else None, KNOTS["fcon1000"])
        x = np.hstack([base[:, 1:], onehot])  # the site columns carry the intercept
        coef, *_ = np.linalg.lstsq(x, y[:, cols], rcond=None)
        res = y[:, cols] - x @ coef
        residuals[:, cols] = res
        dof = len(y) - x.shape[1]
        sigma2 = (res**2).sum(axis=0) / dof
        n_base = base.shape[1] - 1
        site_coef = coef[n_base:, :]
        intercept = site_coef[big].mean(axis=0)
        gamma = site_coef[big] - intercept
        # sampling variance of the offsets (contrasts to their mean: the site coefficients
        # themselves share the large uncertainty of the curve's value at age 0)
        xtx_inv = np.linalg.inv(x.T @ x)[n_base:, n_base:][np.ix_(big, big)]
        contrast = np.eye(len(big)) - 1.0 / len(big)
        spread = np.diag(contrast @ xtx_inv @ contrast.T).mean()
        tau2 = gamma.var(axis=0, ddof=1) - spread * sigma2
        tau = np.sqrt(np.maximum(tau2, (0.1 * gamma.std(axis=0, ddof=1)) ** 2))
        for j in range(len(site_names)):
            in_site = site_idx == j
            site_sd[j, cols] = np.sqrt((res[in_site] ** 2).mean(axis=0))
        log_sd = np.log(site_sd[big][:, cols])
        omega2 = log_sd.var(axis=0, ddof=1) - (1.0 / (2.0 * (counts[big] - 1))).mean()
        omega = np.sqrt(np.maximum(omega2, 0.0))
        gammas[:, cols] = gamma
        for i, c in enumerate(cols):
            fid = fids[c]
            out[fid] = {
                "source": "fcon1000",
                "transform": _transform(fid),
                "knots": "fcon1000",
                "tiv": with_tiv,
                "coef": [float(intercept[i]), *coef[:n_base, i].tolist()],
                "sigma": float(np.sqrt(sigma2[i])),
                "tau": float(tau[i]),
                "omega": float(omega[i]),
            }

    # factor models over every feature but eTIV (the others are conditional on it)
    keep = list(range(1, len(fids)))
    in_big = np.isin(site_idx, big)
    z = residuals[in_big][:, keep] / site_sd[site_idx[in_big]][:, keep]
    subject = _factor_loadings(z, N_SUBJECT_FACTORS)
    site = _factor_loadings(gammas[:, keep], N_SITE_FACTORS)
    scale = _factor_loadings(np.log(site_sd[big][:, keep]), N_SCALE_FACTORS)
    explained = float((subject**2).sum() / len(keep))

    # spreads for features no table calibrates
    thick = [i for i, f in enumerate(fids) if f.startswith("a2009s.")]
    rel_tau = np.array([out[fids[i]]["tau"] / out[fids[i]]["sigma"] for i in thick])
    omegas = np.array([out[fids[i]]["omega"] for i in thick])
    rho = []
    for i in thick:
        hemi = fids[i].split(".")[1]
        anchor = fids.index(f"global.{hemi}.MeanThickness.thickness")
        rho.append(np.corrcoef(gammas[:, i], gammas[:, anchor])[0, 1])
    level = np.array([out[fids[i]]["coef"][0] for i in thick])
    tau_thick = np.array([out[fids[i]]["tau"] for i in thick])
    vols = [i for i, f in enumerate(fids) if f.startswith("aseg.")]
    mask_ratio = np.log(feats["global.na.MaskVol.volume"].to_numpy(float)) - log_tiv
    med = float(np.median(mask_ratio))
    mad = float(np.median(np.abs(mask_ratio - med)) * 1.4826)
    rho_med = float(np.median(rho))
    derived = {
        "thickness_rel_tau": float(np.median(rel_tau)),
        "thickness_omega": float(np.median(omegas)),
        "thickness_site_rho": rho_med,
        "thickness_region_bias": float(np.median(tau_thick / level) * np.sqrt(1 - rho_med**2)),
        "volume_site_tau": float(np.median([out[fids[i]]["tau"] for i in vols])),
        "volume_site_omega": float(np.median([out[fids[i]]["omega"] for i in vols])),
        "log_mask_to_etiv_median": med,
        "log_mask_to_etiv_sd": mad,
    }
    return {
        "ref_log_tiv": ref,
        "features": out,
        "factor_features": [fids[i] for i in keep],
        "subject": subject,
        "site": site,
        "scale": scale,
        "derived": derived,
        "summary": {
            "n": len(y),
            "n_sites": len(site_names),
            "n_sites_for_spreads": len(big),
            "subject_factor_variance_explained": explained,
        },
    }


def _fit_ixi(data: Path, maps: Path, ref: float, fcon: dict[str, Any]) -> dict[str, Any]:
    folder = data / "pcntoolkit-demo"
    table = read_wide_table(folder / "IXI_aparc_thickness.csv", maps / "ixi.yaml")
    part = table.participants
    ok = part["age"].notna().to_numpy() & part["sex"].notna().to_numpy()
    feats = table.features.reset_index(drop=True)[ok]
    age = part["age"].to_numpy(float)[ok]
    male = (part["sex"] == "M").to_numpy(float)[ok]
    log_tiv = np.log(feats[ETIV].to_numpy(float)) - ref
    x = design_matrix(age, male, log_tiv, KNOTS["ixi"])
    dk = [c for c in feats.columns if c.startswith("aparc.") and c.endswith(".thickness")]
    anchors = ["global.lh.MeanThickness.thickness", "global.rh.MeanThickness.thickness"]
    y = feats[dk + anchors].to_numpy(float)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    res = y - x @ coef
    sigma = np.sqrt((res**2).sum(axis=0) / (len(y) - x.shape[1]))
    res_anchor = res[:, len(dk) :]
    derived = fcon["derived"]
    rho = derived["thickness_site_rho"]
    out: dict[str, dict[str, Any]] = {}
    for i, fid in enumerate(dk):
        # slope (mm per mm) of the region on the two mean thicknesses, and what is left
        b, *_ = np.linalg.lstsq(res_anchor, res[:, i], rcond=None)
        left = res[:, i] - res_anchor @ b
        out[fid] = {
            "source": "ixi",
            "transform": "identity",
            "knots": "ixi",
            "tiv": True,
            "coef": coef[:, i].tolist(),
            "sigma": float(sigma[i]),
            # the region's own site offset: the part of a Destrieux region's offset that its
            # hemisphere's mean thickness does not carry (the rest comes through the anchors)
            "tau": float(sigma[i] * derived["thickness_rel_tau"] * np.sqrt(1 - rho**2)),
            "omega": derived["thickness_omega"],
            "anchors": anchors,
            "anchor_coef": b.tolist(),
            "anchor_resid": float(np.sqrt((left**2).sum() / (len(y) - x.shape[1] - 2))),
        }
    return {"features": out, "summary": {"n": int(ok.sum())}}


def _area_share(data: Path, maps: Path) -> dict[str, float]:
    folder = data / "enigma-toolbox" / "xdata"
    table = read_wide_table(folder / "metr3_CortSurf.csv", maps / "enigma-example.yaml")
    feats = table.features
    out: dict[str, float] = {}
    for hemi in ("lh", "rh"):
        cols = [c for c in feats.columns if c.startswith(f"aparc.{hemi}.") and c.endswith(".area")]
        area = feats[cols].to_numpy(float)
        share = (area / area.sum(axis=1, keepdims=True)).mean(axis=0)
        for c, s in zip(cols, share, strict=True):
            out[c] = float(s)
    return out


def _area_noise(data: Path, maps: Path) -> float:
    """Median SD across people of log(region area / hemisphere area) (ENIGMA example)."""
    folder = data / "enigma-toolbox" / "xdata"
    table = read_wide_table(folder / "metr3_CortSurf.csv", maps / "enigma-example.yaml")
    feats = table.features
    sds = []
    for hemi in ("lh", "rh"):
        cols = [c for c in feats.columns if c.startswith(f"aparc.{hemi}.") and c.endswith(".area")]
        area = feats[cols].to_numpy(float)
        sds.extend(np.log(area / area.sum(axis=1, keepdims=True)).std(axis=0, ddof=1))
    return float(np.median(sds))


def _diagnosis(data: Path) -> dict[str, float]:
    folder = data / "enigma-toolbox" / "summary_statistics"
    out: dict[str, float] = {}
    for name, suffix in ENIGMA_SCZ.items():
        table = pd.read_csv(folder / name)
        for structure, d in zip(table["Structure"], table["d_icv"], strict=True):
            fid = recognise_column(f"{structure}{suffix}", surface_atlas="aparc")
            if fid is None:
                raise ValueError(f"{name}: structure {structure!r} has no canonical feature")
            out[fid] = float(d)
    return out


def calibrate(data: Path, maps: Path) -> dict[str, Any]:
    """Fit everything; returns the JSON document."""
    fcon = _fit_fcon1000(data, maps)
    ixi = _fit_ixi(data, maps, fcon["ref_log_tiv"], fcon)
    derived = dict(fcon["derived"])
    derived["area_region_sd"] = _area_noise(data, maps)
    inputs = [
        "pcntoolkit-demo/fcon1000.csv",
        "pcntoolkit-demo/IXI_aparc_thickness.csv",
        "pcntoolkit-demo/IXI_age_gender.csv",
        "enigma-toolbox/xdata/metr3_CortSurf.csv",
        "enigma-toolbox/xdata/cov.csv",
        *(f"enigma-toolbox/summary_statistics/{n}" for n in ENIGMA_SCZ),
    ]
    doc = {
        "format": CALIBRATION_FORMAT,
        "generated_by": "tools/calibrate_simulator.py",
        "inputs": {name: _sha256(data / name) for name in inputs},
        "knots": {k: list(v) for k, v in KNOTS.items()},
        "ref_log_tiv": fcon["ref_log_tiv"],
        "features": {**fcon["features"], **ixi["features"]},
        "subject_factors": {"features": fcon["factor_features"], "loadings": fcon["subject"]},
        "site_factors": {"features": fcon["factor_features"], "loadings": fcon["site"]},
        "scale_factors": {"features": fcon["factor_features"], "loadings": fcon["scale"]},
        "derived": derived,
        "diagnosis": _diagnosis(data),
        "area_share": _area_share(data, maps),
        "summary": {"fcon1000": fcon["summary"], "ixi": ixi["summary"]},
    }
    return _round(_listify(doc))


def _listify(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _listify(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_listify(v) for v in value]
    return value


def _difference(old: Any, new: Any, where: str) -> str | None:
    """Where two documents differ beyond numerical noise (BLAS builds differ in the last
    digits; factor loadings are compared as ``L @ L.T``, free of sign and rotation)."""
    if isinstance(old, dict) and isinstance(new, dict):
        if old.keys() != new.keys():
            return f"{where or 'top level'}: keys differ ({sorted(set(old) ^ set(new))[:5]})"
        for key in old:
            found = _difference(old[key], new[key], f"{where}.{key}" if where else key)
            if found:
                return found
        return None
    if where.endswith("loadings"):
        a, b = np.asarray(old, dtype=float), np.asarray(new, dtype=float)
        if a.shape != b.shape or not np.allclose(a @ a.T, b @ b.T, rtol=1e-3, atol=1e-4):
            return f"{where}: the factor structure differs"
        return None
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return f"{where}: length {len(old)} != {len(new)}"
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            found = _difference(a, b, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(old, float) or isinstance(new, float):
        if not np.isclose(float(old), float(new), rtol=1e-4, atol=1e-9):
            return f"{where}: {old!r} != {new!r}"
        return None
    return None if old == new else f"{where}: {old!r} != {new!r}"


_NUMBER_LIST = re.compile(r"\[\s*(-?[0-9][-+0-9.e]*(?:,\s*-?[0-9][-+0-9.e]*)*)\s*\]")


def _one_line(match: re.Match[str]) -> str:
    return "[" + ", ".join(x.strip() for x in match.group(1).split(",")) + "]"


def _render(doc: dict[str, Any]) -> str:
    """Indented JSON with each list of numbers on one line (short, and diffs stay readable)."""
    return _NUMBER_LIST.sub(_one_line, json.dumps(doc, indent=1)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = os.environ.get("MORPHML_SHARED_DATA") or str(REPO.parent / "shared" / "data")
    parser.add_argument("--data", type=Path, default=Path(default_data))
    parser.add_argument("--maps", type=Path, default=REPO / "configs" / "maps")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"--data {args.data} is not a folder (expected ../shared/data)")
    doc = calibrate(args.data, args.maps)
    text = _render(doc)
    if args.check:
        if not args.out.is_file():
            print(f"{args.out}: missing")
            return 1
        problem = _difference(json.loads(args.out.read_text(encoding="utf-8")), doc, "")
        print(f"{args.out}: {problem or 'up to date'}")
        return 1 if problem else 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
