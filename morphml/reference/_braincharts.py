"""Import a braincharts model archive as published, without PCNtoolkit and without pickle.load.

An archive (``lifespan_57K_82sites.zip``, ``lifespan_DK_46K_59sites.zip``) holds one folder per
measure, each with ``Models/NM_0_0_estimate.pkl`` (a PCNtoolkit ``NormBLR`` holding a ``BLR``
with a sinh-arcsinh warp) and ``Models/meta_data.md`` (a pickle too: response scaling, which
must be none). Both are read with :func:`~morphml.reference._unpickle.read_pickle`, which
admits only the expected classes.

Facts of the models (PCNtoolkit 0.x, ``warp_reparam=True``): ``hyp = [log beta0, epsilon,
log delta, log alpha]``; ``delta = exp(hyp[2])``; noise precision ``beta = exp(hyp[0]) /
delta**2``; posterior mean ``m`` and precision ``A`` of the 92 (or 69) weights. Design row:
``1, age, sex``, one indicator per site of the published site list, 7 cubic B-spline columns
of age on knots ``linspace(-5, 110, 5)`` with the end knots repeated.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from morphml._version import __version__
from morphml.exceptions import ReferenceModelError
from morphml.reference._basis import N_LEADING, braincharts_knots
from morphml.reference._model import ReferenceModel, file_sha256
from morphml.reference._unpickle import PickleRecord, read_pickle

__all__ = ["BRAINCHARTS_CITATION", "BRAINCHARTS_LICENCE", "import_braincharts"]

BRAINCHARTS_CITATION = (
    "Rutherford S, Fraza C, Dinga R, et al. Charting brain growth and aging at high spatial "
    "precision. eLife 2022;11:e72904. Rutherford S, Barkema P, Tso IF, et al. Evidence for "
    "embracing normative modeling. eLife 2023;12:e85082."
)
BRAINCHARTS_LICENCE = (
    "braincharts (github.com/predictive-clinical-neuroscience/braincharts) is GPL-3.0; its "
    "NOTICE says it redistributes pretrained normative models and code for applying them "
    "as public-domain source code. Cite both Rutherford et al. papers when you use it."
)

_MODEL = "Models/NM_0_0_estimate.pkl"
_META = "Models/meta_data.md"
_N_SPLINE = 7


def _measure_folders(zf: zipfile.ZipFile, where: str) -> dict[str, str]:
    """Measure name -> its folder prefix inside the archive (``root/name/``)."""
    out: dict[str, str] = {}
    for name in zf.namelist():
        if name.endswith("/" + _MODEL):
            prefix = name[: -len(_MODEL)]
            measure = prefix.rstrip("/").rsplit("/", 1)[-1]
            if measure in out:
                raise ReferenceModelError(f"{where}: the measure {measure!r} appears twice")
            out[measure] = prefix
    if not out:
        raise ReferenceModelError(
            f"{where}: no '<measure>/{_MODEL}' inside; not a braincharts model archive"
        )
    return out


def _field(record: Any, kind: str, key: str, where: str) -> Any:
    if not isinstance(record, PickleRecord) or record.kind != kind:
        raise ReferenceModelError(f"{where}: expected a pickled {kind}, found {record!r}")
    if key not in record.state:
        raise ReferenceModelError(f"{where}: the pickled {kind} has no {key!r}")
    return record.state[key]


def _array(value: Any, shape: tuple[int, ...], what: str, where: str) -> np.ndarray:
    arr = np.asarray(value) if isinstance(value, np.ndarray) else None
    if arr is None or arr.shape != shape or arr.dtype.kind != "f":
        got = getattr(value, "shape", type(value).__name__)
        raise ReferenceModelError(f"{where}: {what} has shape {got}; expected {shape} floats")
    if not np.all(np.isfinite(arr)):
        raise ReferenceModelError(f"{where}: {what} holds NaN or infinite values")
    return arr.astype(np.float64)


def _read_measure(zf: zipfile.ZipFile, names: set[str], prefix: str, where: str) -> dict[str, Any]:
    model_where = f"{where}:{prefix}{_MODEL}"
    meta_where = f"{where}:{prefix}{_META}"
    try:
        model = read_pickle(zf.read(prefix + _MODEL), model_where)
        meta = (
            read_pickle(zf.read(prefix + _META), meta_where) if prefix + _META in names else None
        )
    except (zipfile.BadZipFile, OSError) as err:
        raise ReferenceModelError(f"{where}: damaged archive ({err})") from None
    if meta is not None:
        if not isinstance(meta, dict):
            raise ReferenceModelError(f"{meta_where}: expected a dict of settings")
        for key in ("inscaler", "outscaler"):
            if str(meta.get(key, "None")) not in ("None", "none"):
                raise ReferenceModelError(
                    f"{meta_where}: {key} is {meta.get(key)!r}; morphml reads models fitted "
                    "on unscaled covariates and responses only"
                )
    blr = _field(model, "NormBLR", "blr", model_where)
    if not isinstance(_field(model, "NormBLR", "warp", model_where), PickleRecord):
        raise ReferenceModelError(f"{model_where}: the model has no sinh-arcsinh warp")
    d = _field(blr, "BLR", "D", model_where)
    if not isinstance(d, int) or d <= N_LEADING + _N_SPLINE:
        raise ReferenceModelError(f"{model_where}: BLR.D is {d!r}; expected the design width")
    warp_record = _field(blr, "BLR", "warp", model_where)
    if not isinstance(warp_record, PickleRecord) or warp_record.kind != "WarpSinArcsinh":
        raise ReferenceModelError(f"{model_where}: expected a WarpSinArcsinh warp")
    if _field(blr, "BLR", "warp_reparam", model_where) is not True:
        raise ReferenceModelError(
            f"{model_where}: warp_reparam is not True; only the reparametrised warp of the "
            "published models is supported"
        )
    if _field(blr, "BLR", "hetero_var", model_where):
        raise ReferenceModelError(f"{model_where}: heteroskedastic BLR models are not supported")
    n_warp = _field(blr, "BLR", "n_warp_param", model_where)
    if n_warp != 2:
        raise ReferenceModelError(f"{model_where}: {n_warp!r} warp parameters; expected 2")
    hyp = _array(_field(blr, "BLR", "hyp", model_where), (4,), "BLR.hyp", model_where)
    m = _array(_field(blr, "BLR", "m", model_where), (d,), "BLR.m", model_where)
    a = _array(_field(blr, "BLR", "A", model_where), (d, d), "BLR.A", model_where)
    n = _field(blr, "BLR", "N", model_where)
    delta = float(np.exp(hyp[2]))
    beta = float(np.exp(hyp[0])) / delta**2
    try:
        chol = np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        raise ReferenceModelError(
            f"{model_where}: the posterior precision A is not positive definite"
        ) from None
    eye = np.eye(d)
    inv_chol = np.linalg.solve(chol, eye)
    cov = inv_chol.T @ inv_chol
    return {
        "coef": m,
        "cov": (cov + cov.T) / 2.0,
        "noise_var": 1.0 / beta,
        "warp": (float(hyp[1]), delta),
        "n": int(n) if isinstance(n, int) else 0,
        "d": d,
    }


def _default_sites(archive: Path, n_sites: int) -> Path:
    """The published site list beside the archive: ``site_ids_*{n}sites.txt``."""
    tag = re.search(r"(\d+)sites", archive.name)
    candidates = sorted(archive.parent.glob("site_ids_*.txt"))
    for cand in candidates:
        if tag is not None and not cand.stem.endswith(f"{tag.group(1)}sites"):
            continue
        lines = [s for s in cand.read_text(encoding="utf-8").splitlines() if s.strip()]
        if len(lines) == n_sites:
            return cand
    raise ReferenceModelError(
        f"{archive}: its models have {n_sites} site columns, and no site_ids_*.txt beside it "
        f"lists {n_sites} sites; give the published site list with --sites FILE"
    )


def _read_sites(path: Path, n_sites: int) -> list[str]:
    try:
        lines = [s.strip() for s in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as err:
        raise ReferenceModelError(f"{path}: cannot read the site list ({err})") from None
    sites = [s for s in lines if s]
    if len(sites) != n_sites:
        raise ReferenceModelError(
            f"{path}: lists {len(sites)} sites; the models have {n_sites} site columns"
        )
    if len(set(sites)) != len(sites):
        raise ReferenceModelError(f"{path}: a site is listed twice")
    return sites


def _canonical_name(measure: str) -> str | None:
    """The archive's measure name -> canonical feature id through the reader's alias table.

    The Desikan archive names thickness ``L_<region>`` / ``R_<region>`` (ENIGMA's
    ``L_<region>_thickavg`` without the suffix); every other name is a table-export column.
    """
    from morphml.io import recognise_column

    if re.fullmatch(r"[LR]_[a-z]+", measure):
        return recognise_column(f"{measure}_thickavg", surface_atlas="aparc")
    return recognise_column(measure, surface_atlas="aparc")


def _read_measures(
    path: Path, where: str, progress: Callable[[int, int], None] | None
) -> dict[str, dict[str, Any]]:
    """Every measure's model of the archive, by measure name (sorted)."""
    with zipfile.ZipFile(path) as zf:
        folders = _measure_folders(zf, where)
        measures = sorted(folders)
        names = set(zf.namelist())
        read: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(measures):
            read[name] = _read_measure(zf, names, folders[name], where)
            if progress is not None:
                progress(i + 1, len(measures))
    return read


def _map_measures(measures: list[str], where: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(canonical feature id, measure) for the measures that have one, and those that do not."""
    mapped: list[tuple[str, str]] = []
    unmapped: list[str] = []
    for name in measures:
        fid = _canonical_name(name)
        if fid is None:
            unmapped.append(name)
        else:
            mapped.append((fid, name))
    seen: dict[str, str] = {}
    for fid, name in mapped:
        if fid in seen:
            raise ReferenceModelError(
                f"{where}: measures {seen[fid]!r} and {name!r} both map to {fid!r}"
            )
        seen[fid] = name
    if not mapped:
        raise ReferenceModelError(f"{where}: no measure maps to a canonical feature id")
    return mapped, unmapped


def import_braincharts(
    archive: str | Path,
    *,
    sites: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReferenceModel:
    """Read a braincharts model archive into a :class:`ReferenceModel`.

    Parameters
    ----------
    archive : str or Path
        The published zip (e.g. ``lifespan_57K_82sites.zip``), unchanged.
    sites : str or Path, optional
        The published site list in design order (``site_ids_ct_82sites.txt``); by default the
        ``site_ids_*<N>sites.txt`` beside the archive whose length fits the models.
    progress : callable, optional
        Called with (done, total) after each measure.

    Returns
    -------
    ReferenceModel
        Measures with a canonical feature id; the others are listed in ``unmapped``.

    Raises
    ------
    ReferenceModelError
        Not a zip, not a braincharts archive, a model of another form, a site list that
        does not fit. :class:`~morphml.exceptions.UntrustedPickleError` for a pickle naming
        a global outside the expected classes.

    Examples
    --------
    >>> ref = import_braincharts("lifespan_57K_82sites.zip")  # doctest: +SKIP
    >>> len(ref.features), len(ref.sites)  # doctest: +SKIP
    (187, 82)
    """
    path = Path(archive)
    where = str(path)
    if not path.is_file():
        raise ReferenceModelError(f"{where}: no such file (expected a braincharts model zip)")
    if not zipfile.is_zipfile(path):
        raise ReferenceModelError(f"{where}: not a zip archive (expected a braincharts model zip)")
    digest = file_sha256(path)
    read = _read_measures(path, where, progress)
    measures = sorted(read)
    widths = {r["d"] for r in read.values()}
    if len(widths) != 1:
        raise ReferenceModelError(f"{where}: the models have different design widths {widths}")
    n_sites = widths.pop() - N_LEADING - _N_SPLINE
    site_path = Path(sites) if sites is not None else _default_sites(path, n_sites)
    site_names = _read_sites(site_path, n_sites)
    mapped, unmapped = _map_measures(measures, where)
    atlases = sorted({fid.split(".", 1)[0] for fid, _ in mapped})
    n_people = max(read[name]["n"] for _, name in mapped)
    provenance = {
        "source": f"braincharts {path.stem}",
        "format": "braincharts",
        "archive": path.name,
        "archive_sha256": digest,
        "n_people": n_people,
        "n_sites": n_sites,
        "atlas": "+".join(atlases),
        "licence": BRAINCHARTS_LICENCE,
        "citation": BRAINCHARTS_CITATION,
        "morphml_version": __version__,
        "site_list": site_path.name,
        "sex_coding": "0 female, 1 male",
        "age_units": "years",
    }
    return ReferenceModel(
        features=[fid for fid, _ in mapped],
        sites=site_names,
        knots=braincharts_knots(),
        coef=np.stack([read[n]["coef"] for _, n in mapped]),
        cov=np.stack([read[n]["cov"] for _, n in mapped]),
        noise_var=np.array([read[n]["noise_var"] for _, n in mapped]),
        warp_kind="sinarcsinh",
        warp_params=np.array([read[n]["warp"] for _, n in mapped]),
        provenance=provenance,
        unmapped=unmapped,
        source_names=[n for _, n in mapped],
        n_train=np.array([read[n]["n"] for _, n in mapped]),
    )
