"""A reference model: per canonical feature, the expected value and spread given age, sex, site.

One warped (or plain) Bayesian linear regression per feature, the form of the braincharts
models (Rutherford et al. 2022): design row ``1, age, sex, site indicators, B-spline(age)``,
posterior mean ``coef`` and covariance ``cov`` of the weights, noise variance, and a
sinh-arcsinh warp of the response. In warped space a scan's prediction is normal with mean
``phi @ coef`` and variance ``noise_var + phi @ cov @ phi``; its z-score is
``(warp(y) - mean) / sd``.

On disk a reference is a folder of two files, neither a pickle: ``reference.json`` (feature
ids, sites, knots, warp kind, provenance, the SHA-256 of the arrays) and ``arrays.npz`` (numbers
only, read with ``allow_pickle=False``). It holds no per-person data.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.special import ndtr, ndtri

from morphml.exceptions import ReferenceModelError
from morphml.reference._basis import N_LEADING, common_design, inverse_warp, warp

__all__ = ["FORMAT_VERSION", "ReferenceModel", "covariates"]

Array = NDArray[np.float64]

#: version of the on-disk format this code writes (and the newest it reads)
FORMAT_VERSION = 1
_JSON = "reference.json"
_NPZ = "arrays.npz"
_WARPS = ("sinarcsinh", "none")
_PROVENANCE_KEYS = (
    "source",
    "archive_sha256",
    "n_people",
    "n_sites",
    "atlas",
    "licence",
    "citation",
    "morphml_version",
)


def covariates(meta: pd.DataFrame) -> tuple[Array, Array, NDArray[np.str_]]:
    """Age, sex and site of each row of ``meta`` (columns ``age``/``sex``/``site`` or ``meta:*``).

    A missing ``site`` column means every scan is from a site the reference does not know.
    Sex must be coded 0 (female) / 1 (male); a missing age or sex stays NaN.
    """
    if not isinstance(meta, pd.DataFrame):
        raise ReferenceModelError(
            f"meta must be a DataFrame with columns age, sex and site; got {type(meta).__name__}"
        )

    def column(name: str) -> pd.Series | None:
        for key in (name, f"meta:{name}"):
            if key in meta.columns:
                return meta[key]
        return None

    def required(name: str) -> pd.Series:
        col = column(name)
        if col is None:
            raise ReferenceModelError(
                f"meta has no {name!r} column (nor 'meta:{name}'); the reference predicts from "
                "age, sex (0 female, 1 male) and site"
            )
        return col

    age_col, sex_col, site_col = required("age"), required("sex"), column("site")

    def numeric(name: str, col: pd.Series) -> NDArray[np.float64]:
        values = pd.to_numeric(col, errors="coerce")
        text = col[values.isna() & col.notna()]
        if len(text):
            fix = " coded 0 (female) / 1 (male)" if name == "sex" else " in years"
            raise ReferenceModelError(
                f"meta {name!r} must be numeric{fix}; found {text.iloc[0]!r} in {len(text)} rows"
            )
        return values.to_numpy(np.float64)

    age, sex = numeric("age", age_col), numeric("sex", sex_col)
    bad_sex = ~np.isnan(sex) & ~np.isin(sex, (0.0, 1.0))
    if bad_sex.any():
        shown = sorted(set(sex[bad_sex].tolist()))[:5]
        raise ReferenceModelError(
            f"meta 'sex' must be coded 0 (female) / 1 (male), as in the reference; found "
            f"{shown} in {int(bad_sex.sum())} rows (recode it in the phenotype map)"
        )
    if site_col is None:
        site = np.full(len(meta), "", dtype=object).astype(str)
    else:
        site = site_col.astype(str).to_numpy().astype(str)
    return age, sex, site


class ReferenceModel:
    """Per-feature warped Bayesian linear regressions of age, sex and site.

    Build one with :func:`~morphml.reference.import_braincharts`,
    :func:`~morphml.reference.build_reference` or :meth:`load`; it is read-only knowledge
    (``copy.deepcopy`` returns the same object, as for the transfer code's fixed inputs).

    Parameters
    ----------
    features : sequence of str
        Canonical feature ids, one per model.
    sites : sequence of str
        The sites whose indicator columns the design holds, in design order.
    knots : ndarray
        Full B-spline knot vector of age (degree ``degree``).
    coef : ndarray of shape (n_features, n_columns)
        Posterior mean of the weights; columns ``1, age, sex, sites..., spline...``.
    cov : ndarray of shape (n_features, n_columns, n_columns)
        Posterior covariance of the weights.
    noise_var : ndarray of shape (n_features,)
        Noise variance in warped space (``1 / beta``).
    warp_kind : {"sinarcsinh", "none"}
    warp_params : ndarray of shape (n_features, 2)
        ``epsilon, delta`` of the sinh-arcsinh warp (ignored for ``"none"``).
    provenance : dict
        Source, archive SHA-256, number of people and sites, atlas, licence, citation,
        morphml version (and anything else JSON-safe).
    unmapped : sequence of str
        Source measures that map to no canonical feature id (listed, not used).
    source_names : sequence of str, optional
        Each feature's name in the source (the archive's folder name).
    degree : int, default=3
    n_train : ndarray of shape (n_features,), optional
        Training people per feature.
    """

    def __init__(
        self,
        *,
        features: Sequence[str],
        sites: Sequence[str],
        knots: Array,
        coef: Array,
        cov: Array,
        noise_var: Array,
        warp_kind: str,
        warp_params: Array,
        provenance: dict[str, Any],
        unmapped: Sequence[str] = (),
        source_names: Sequence[str] | None = None,
        degree: int = 3,
        n_train: Array | None = None,
    ) -> None:
        self.features = [str(f) for f in features]
        self.sites = [str(s) for s in sites]
        self.knots = np.asarray(knots, dtype=np.float64)
        self.degree = int(degree)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.cov = np.asarray(cov, dtype=np.float64)
        self.noise_var = np.asarray(noise_var, dtype=np.float64)
        self.warp_kind = str(warp_kind)
        self.warp_params = np.asarray(warp_params, dtype=np.float64)
        self.provenance = dict(provenance)
        self.unmapped = [str(u) for u in unmapped]
        self.source_names = (
            list(self.features) if source_names is None else [str(s) for s in source_names]
        )
        self.n_train = (
            np.zeros(len(self.features), dtype=np.int64)
            if n_train is None
            else np.asarray(n_train, dtype=np.int64)
        )
        self._check()
        self._index = {f: i for i, f in enumerate(self.features)}
        self._site_index = {s: i for i, s in enumerate(self.sites)}

    # ------------------------------------------------------------------ checks and layout

    @property
    def n_spline(self) -> int:
        """Number of B-spline columns of age."""
        return len(self.knots) - self.degree - 1

    @property
    def n_columns(self) -> int:
        """Design columns: intercept, age, sex, one per site, the spline."""
        return N_LEADING + len(self.sites) + self.n_spline

    @property
    def age_range(self) -> tuple[float, float]:
        """Ages the basis covers (the outer knots)."""
        return float(self.knots[0]), float(self.knots[-1])

    def _check(self) -> None:
        n_f, d = len(self.features), self.n_columns
        problems = []
        if n_f == 0:
            problems.append("it has no feature")
        if len(set(self.features)) != n_f:
            dup = sorted({f for f in self.features if self.features.count(f) > 1})
            problems.append(f"duplicate feature ids {dup[:5]}")
        if len(set(self.sites)) != len(self.sites):
            problems.append("duplicate site names")
        if self.degree < 1 or self.knots.ndim != 1 or self.n_spline < 1:
            problems.append(
                f"knots {self.knots.tolist()} do not define a degree-{self.degree} basis"
            )
        elif np.any(np.diff(self.knots) < 0) or not np.all(np.isfinite(self.knots)):
            problems.append("knots are not finite and non-decreasing")
        shapes = {
            "coef": (self.coef, (n_f, d)),
            "cov": (self.cov, (n_f, d, d)),
            "noise_var": (self.noise_var, (n_f,)),
            "warp_params": (self.warp_params, (n_f, 2)),
            "n_train": (self.n_train, (n_f,)),
        }
        for name, (arr, shape) in shapes.items():
            if arr.shape != shape:
                problems.append(f"{name} has shape {arr.shape}, expected {shape}")
            elif arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                problems.append(f"{name} holds NaN or infinite values")
        if self.warp_kind not in _WARPS:
            problems.append(f"warp {self.warp_kind!r} is not one of {list(_WARPS)}")
        if not problems:
            if np.any(self.noise_var <= 0):
                problems.append("noise_var must be > 0")
            if self.warp_kind == "sinarcsinh" and np.any(self.warp_params[:, 1] <= 0):
                problems.append("the warp's delta must be > 0")
        absent = [k for k in _PROVENANCE_KEYS if k not in self.provenance]
        if absent:
            problems.append(f"provenance lacks {absent}")
        if len(self.source_names) != n_f:
            problems.append(f"{len(self.source_names)} source names for {n_f} features")
        if problems:
            raise ReferenceModelError("invalid reference model: " + "; ".join(problems))

    def __deepcopy__(self, memo: dict[int, Any]) -> ReferenceModel:
        return self

    def __repr__(self) -> str:
        src = self.provenance.get("source", "?")
        return (
            f"ReferenceModel({src!r}, {len(self.features)} features, {len(self.sites)} sites, "
            f"warp={self.warp_kind})"
        )

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Write the reference to the folder ``path`` (``reference.json`` + ``arrays.npz``).

        The folder is created; existing files of a reference there are replaced.
        """
        out = Path(path)
        if out.exists() and not out.is_dir():
            raise ReferenceModelError(f"{out}: exists and is not a folder; give a new folder")
        out.mkdir(parents=True, exist_ok=True)
        arrays = {
            "knots": self.knots,
            "coef": self.coef,
            "cov": self.cov,
            "noise_var": self.noise_var,
            "warp_params": self.warp_params,
            "n_train": self.n_train,
        }
        npz = out / _NPZ
        with npz.open("wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        doc = {
            "format": "morphml-reference",
            "format_version": FORMAT_VERSION,
            "design": ["intercept", "age", "sex", "sites", "spline"],
            "degree": self.degree,
            "warp": self.warp_kind,
            "features": self.features,
            "source_names": self.source_names,
            "sites": self.sites,
            "unmapped": self.unmapped,
            "provenance": self.provenance,
            "arrays_sha256": file_sha256(npz),
        }
        (out / _JSON).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: str | Path) -> ReferenceModel:
        """Read a reference written by :meth:`save`; anything else is refused with a reason."""
        folder = Path(path)
        where = str(folder)
        if not folder.is_dir():
            hint = (
                " (a braincharts archive? import it first: morphml reference import ARCHIVE "
                "--format braincharts --out REF)"
                if folder.suffix == ".zip"
                else ""
            )
            raise ReferenceModelError(f"{where}: not a reference-model folder{hint}")
        jpath, npath = folder / _JSON, folder / _NPZ
        for p in (jpath, npath):
            if not p.is_file():
                raise ReferenceModelError(f"{where}: missing {p.name}; not a morphml reference")
        try:
            doc = json.loads(jpath.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ReferenceModelError(f"{jpath}: not valid JSON ({err})") from None
        if not isinstance(doc, dict) or doc.get("format") != "morphml-reference":
            raise ReferenceModelError(f"{jpath}: not a morphml reference description")
        version = doc.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise ReferenceModelError(
                f"{jpath}: format version {version!r}; this morphml reads 1..{FORMAT_VERSION} "
                "(upgrade morphml)"
            )
        if doc.get("design") != ["intercept", "age", "sex", "sites", "spline"]:
            raise ReferenceModelError(f"{jpath}: unknown design {doc.get('design')!r}")
        if doc.get("arrays_sha256") != file_sha256(npath):
            raise ReferenceModelError(
                f"{npath}: changed since the reference was written (SHA-256 differs)"
            )
        expected: dict[str, tuple[type, ...]] = {
            "features": (list,),
            "source_names": (list,),
            "sites": (list,),
            "unmapped": (list,),
            "provenance": (dict,),
            "degree": (int,),
            "warp": (str,),
        }
        for key, types in expected.items():
            if not isinstance(doc.get(key), types):
                raise ReferenceModelError(
                    f"{jpath}: {key!r} must be a {types[0].__name__}; got "
                    f"{type(doc.get(key)).__name__}"
                )
        for key in ("features", "source_names", "sites", "unmapped"):
            if not all(isinstance(v, str) for v in doc[key]):
                raise ReferenceModelError(f"{jpath}: {key!r} must be a list of strings")
        try:
            with np.load(npath, allow_pickle=False) as npz:
                arrays = {k: np.asarray(npz[k]) for k in npz.files}
        except (ValueError, OSError) as err:
            raise ReferenceModelError(f"{npath}: not a numeric array file ({err})") from None
        need = ("knots", "coef", "cov", "noise_var", "warp_params", "n_train")
        missing = [k for k in need if k not in arrays]
        if missing:
            raise ReferenceModelError(f"{npath}: missing arrays {missing}")
        for k in need:
            if arrays[k].dtype.kind not in "fiu":
                raise ReferenceModelError(f"{npath}: array {k!r} is not numeric")
        return cls(
            features=doc["features"],
            sites=doc["sites"],
            knots=arrays["knots"],
            coef=arrays["coef"],
            cov=arrays["cov"],
            noise_var=arrays["noise_var"],
            warp_kind=doc["warp"],
            warp_params=arrays["warp_params"],
            provenance=doc["provenance"],
            unmapped=doc["unmapped"],
            source_names=doc["source_names"],
            degree=doc["degree"],
            n_train=arrays["n_train"],
        )

    # ------------------------------------------------------------------ prediction

    def _columns(self, features: Sequence[str] | None) -> NDArray[np.intp]:
        if features is None:
            return np.arange(len(self.features))
        unknown = [f for f in features if f not in self._index]
        if unknown:
            close = difflib.get_close_matches(unknown[0], self.features, n=1)
            hint = f" (closest: {close[0]!r})" if close else ""
            raise ReferenceModelError(
                f"{len(unknown)} features are not in the reference: {unknown[:5]}{hint}"
            )
        return np.asarray([self._index[f] for f in features], dtype=np.intp)

    def site_codes(self, site: Sequence[str] | NDArray[Any]) -> NDArray[np.intp]:
        """Index of each site in :attr:`sites`, -1 for a site the reference does not know."""
        return np.asarray([self._site_index.get(str(s), -1) for s in site], dtype=np.intp)

    def _check_ages(self, age: Array) -> None:
        low, high = self.age_range
        finite = age[np.isfinite(age)]
        out = finite[(finite < low) | (finite > high)]
        if out.size:
            raise ReferenceModelError(
                f"{out.size} ages lie outside the reference's range [{low:g}, {high:g}] years "
                f"(e.g. {out[0]:g}); ages must be in years"
            )

    def moments(
        self,
        age: Array,
        sex: Array,
        site_codes: NDArray[np.intp],
        cols: NDArray[np.intp] | None = None,
    ) -> tuple[Array, Array]:
        """Mean and variance in warped space, shape ``(n_scans, n_features)``.

        ``site_codes`` from :meth:`site_codes` (-1: a site the reference does not know, all
        indicators 0). Rows with a missing age or sex are NaN. All features at once: the
        design shares every column but the site indicator, so the quadratic form is the
        common block plus one cross term and one diagonal entry per scan.
        """
        cols = np.arange(len(self.features)) if cols is None else cols
        age = np.asarray(age, dtype=np.float64)
        sex = np.asarray(sex, dtype=np.float64)
        self._check_ages(age)
        ok = np.isfinite(age) & np.isfinite(sex)
        n, k = len(age), len(self.sites)
        common_idx = np.r_[0:N_LEADING, N_LEADING + k : self.n_columns]
        phi = common_design(np.where(ok, age, self.knots[0]), np.where(ok, sex, 0.0), self.knots,
                            self.degree)  # fmt: skip
        coef = self.coef[cols]
        cov = self.cov[cols]
        c_coef = coef[:, common_idx]  # (F, C)
        c_cov = cov[:, common_idx][:, :, common_idx]  # (F, C, C)
        mean = phi @ c_coef.T
        # phi' S phi for every scan and feature: (phi outer phi) . vec(S)
        n_c = len(common_idx)
        var = np.empty((n, len(cols)))
        step = 4096
        for start in range(0, n, step):
            p = phi[start : start + step]
            outer = (p[:, :, None] * p[:, None, :]).reshape(len(p), n_c * n_c)
            var[start : start + step] = outer @ c_cov.reshape(len(cols), n_c * n_c).T
        var += self.noise_var[cols][None, :]
        codes = np.asarray(site_codes, dtype=np.intp)
        for j in np.unique(codes[codes >= 0]):
            rows = codes == j
            s = N_LEADING + int(j)
            mean[rows] += coef[:, s][None, :]
            cross = cov[:, common_idx, s]  # (F, C)
            var[rows] += 2.0 * phi[rows] @ cross.T + cov[:, s, s][None, :]
        mean[~ok] = np.nan
        var[~ok] = np.nan
        return mean, var

    def predict(
        self, meta: pd.DataFrame, features: Sequence[str] | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Mean and standard deviation in warped space for each scan of ``meta``.

        Parameters
        ----------
        meta : DataFrame
            ``age`` (years), ``sex`` (0 female, 1 male) and ``site`` (optional; a site the
            reference does not know gets all site indicators 0) per scan.
        features : sequence of str, optional
            Only these features (default: all).

        Returns
        -------
        mu, sd : DataFrame
            Index of ``meta``, one column per feature.
        """
        age, sex, site = covariates(meta)
        cols = self._columns(features)
        mean, var = self.moments(age, sex, self.site_codes(site), cols)
        names = [self.features[i] for i in cols]
        return (
            pd.DataFrame(mean, index=meta.index, columns=names),
            pd.DataFrame(np.sqrt(var), index=meta.index, columns=names),
        )

    def _warp_params(self, cols: NDArray[np.intp]) -> tuple[Array, Array]:
        return self.warp_params[cols, 0], self.warp_params[cols, 1]

    def warp_values(self, y: Array, cols: NDArray[np.intp]) -> Array:
        """The warp of raw values ``y`` (columns = features ``cols``)."""
        if self.warp_kind == "none":
            return np.asarray(y, dtype=np.float64)
        eps, delta = self._warp_params(cols)
        return warp(np.asarray(y, dtype=np.float64), eps, delta)

    def unwarp_values(self, x: Array, cols: NDArray[np.intp]) -> Array:
        """Raw values from warped ones (inverse of :meth:`warp_values`)."""
        if self.warp_kind == "none":
            return np.asarray(x, dtype=np.float64)
        eps, delta = self._warp_params(cols)
        return inverse_warp(np.asarray(x, dtype=np.float64), eps, delta)

    def _present(self, X: pd.DataFrame) -> tuple[list[str], NDArray[np.intp]]:
        if not isinstance(X, pd.DataFrame):
            raise ReferenceModelError(
                f"X must be a DataFrame with canonical feature ids as columns; got "
                f"{type(X).__name__}"
            )
        names = [f for f in self.features if f in X.columns]
        if not names:
            raise ReferenceModelError(
                "X has none of the reference's features (canonical ids such as "
                f"{self.features[0]!r})"
            )
        return names, self._columns(names)

    def warp(self, X: pd.DataFrame) -> pd.DataFrame:
        """``f(y)`` for every reference feature among the columns of ``X``."""
        names, cols = self._present(X)
        values = X[names].to_numpy(np.float64)
        return pd.DataFrame(self.warp_values(values, cols), index=X.index, columns=names)

    def zscores(self, X: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
        """``(f(y) - mu) / sd`` for the features in both ``X`` and the reference.

        ``meta`` is aligned with ``X`` row by row (same length); its index is not used.
        """
        names, cols = self._present(X)
        if len(meta) != len(X):
            raise ReferenceModelError(f"meta has {len(meta)} rows and X {len(X)}; give one each")
        age, sex, site = covariates(meta)
        mean, var = self.moments(age, sex, self.site_codes(site), cols)
        fy = self.warp_values(X[names].to_numpy(np.float64), cols)
        z = (fy - mean) / np.sqrt(var)
        return pd.DataFrame(z, index=X.index, columns=names)

    def centiles(self, X: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
        """The normal centile ``Phi(z)`` of every value (0..1)."""
        z = self.zscores(X, meta)
        return pd.DataFrame(ndtr(z.to_numpy()), index=z.index, columns=z.columns)

    def quantile_curve(
        self,
        feature: str,
        ages: Sequence[float] | Array,
        sex: int,
        site: str | None = None,
        q: float | Sequence[float] | Array = 0.5,
    ) -> Array:
        """Centile curves in raw units: the ``q`` quantile of ``feature`` at each age.

        Returns shape ``(len(ages),)`` for a scalar ``q``, ``(len(q), len(ages))`` otherwise.
        """
        col = self._columns([feature])
        age = np.asarray(ages, dtype=np.float64).ravel()
        if sex not in (0, 1):
            raise ReferenceModelError(f"sex must be 0 (female) or 1 (male); got {sex!r}")
        qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
        if np.any((qs <= 0) | (qs >= 1)):
            raise ReferenceModelError(f"quantiles must lie strictly between 0 and 1; got {qs}")
        codes = self.site_codes([site or ""] * len(age))
        mean, var = self.moments(age, np.full(len(age), float(sex)), codes, col)
        warped = mean[:, 0][None, :] + np.sqrt(var[:, 0])[None, :] * ndtri(qs)[:, None]
        raw = self.unwarp_values(warped.reshape(-1, 1), col).reshape(warped.shape)
        return raw[0] if np.ndim(q) == 0 else raw

    def info(self) -> dict[str, Any]:
        """A JSON-safe summary (for ``morphml reference info`` and reports)."""
        atlases: dict[str, int] = {}
        for f in self.features:
            atlas = f.split(".", 1)[0]
            atlases[atlas] = atlases.get(atlas, 0) + 1
        return {
            "provenance": self.provenance,
            "n_features": len(self.features),
            "features_by_atlas": atlases,
            "n_sites": len(self.sites),
            "age_range": list(self.age_range),
            "warp": self.warp_kind,
            "unmapped": self.unmapped,
        }


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
