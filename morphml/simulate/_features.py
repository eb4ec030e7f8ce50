"""Feature generation, vectorised over scans: a calibrated latent model, then every atlas.

Stage 1, the latent model (calibrated, see :mod:`morphml.simulate._calibration`)
--------------------------------------------------------------------------------
For each calibrated feature ``f`` on its transformed scale (identity for thickness, ``log1p``
for volumes and counts), scan ``i`` at site ``s``::

    t_if = mu_f(age, sex, log eTIV) + dx_f * patient_i + gamma_sf + delta_sf * sigma_f * e_if

``mu_f`` is the fitted spline in age + sex + eTIV slope; ``gamma_sf`` (additive offset) and
``delta_sf`` (multiplicative residual scale, ComBat's model) are drawn per simulated site from
the calibrated spreads ``tau_f`` and ``omega_f`` with the calibrated correlation between
features; ``e_if`` has unit variance and the calibrated residual correlations (factor model).
A participant's ``e`` is shared by their sessions (95 % of its variance), so longitudinal
scans follow the age curve with a small scan-to-scan noise. ``dx_f = d_f * sigma_f`` with
``d_f`` the ENIGMA schizophrenia Cohen's d. The *site-free* value (``gamma = 0``,
``delta = 1``) is what the ground truth records.

Calibrated: eTIV, Destrieux thickness, hemisphere mean thickness, aseg volumes, hemisphere
CortexVol, CerebralWhiteMatterVol and SurfaceHoles (fcon1000); DK thickness (IXI):
``t = mu_f + dx_f + b_f . (mean-thickness deviation of the scan, site effects included) +
gamma_sf + delta_sf * r_f * e_if`` with the IXI slopes ``b_f`` and residual SD ``r_f``.
eTIV enters the other features' norms without its site effect (the scanner biases the
estimate, not the head). The latent mean thickness and CortexVol are not written as such: the
written globals are recomputed from the regions (stage 2), as FreeSurfer does.

Stage 2, derived measures (not calibrated; documented assumptions)
------------------------------------------------------------------
* DK area: the ENIGMA mean share of each region in the hemisphere's area, times regional noise
  (SD calibrated on the ENIGMA example) and a site bias, scaled so that the summed grey-matter
  volume ``sum(area x thickness x ratio)`` equals the calibrated hemisphere CortexVol of a
  control: area inherits the age, sex, eTIV and site effects of CortexVol and mean thickness.
  Patients then get the ENIGMA surface-area d on top.
* DK grey-matter volume = area x thickness x a fixed regional ratio; vertices, folding and
  curvature indices follow area with the writer's ratios; thickness SD and curvatures are
  template baselines with noise and site bias.
* DKT: DK values of the same regions (DKT lacks bankssts, frontal and temporal pole; the others
  take their area). Pial: DK with the template's pial / white area ratio.
* Destrieux area and Brodmann / entorhinal area: template shares of the hemisphere's white
  area; Brodmann / entorhinal thickness: template baseline scaled by the scan's mean thickness.
  Diagnosis effects reach Destrieux thickness as the hemisphere mean of the DK d (the atlases
  share no regions), and the other atlases through the DK thickness and area they derive from.
* wmparc volumes follow the calibrated hemisphere white-matter volume, CerebNet lobules the
  calibrated cerebellar cortex, FastSurfer ``aseg+DKT`` the aseg rows and DKT grey volume.
* Intensity statistics (``norm*``) are template baselines with noise and a site bias.
* Globals are recomputed from the regions as FreeSurfer defines them (WhiteSurfArea = sum of
  DK areas, MeanThickness = area-weighted DK thickness, CortexVol = DK grey volume / coverage,
  TotalGrayVol, BrainSegVol ... = sums of aseg rows); MaskVol / eTIV is calibrated.
* FreeSurfer 8 (``Generated.fs8``): ``CSF`` includes extracerebral CSF (``FS8_CSF_FRACTION``),
  vessel, choroid plexus and optic chiasm are empty and WM hypointensities much smaller, as in
  the same scan run with 7.4.1 and 8.2.0 (``sub01-derived-cc0``).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from morphml.io import SUBCORTICAL_GRAY, known_regions
from morphml.simulate._calibration import Calibration, design_matrix
from morphml.simulate._template import template
from morphml.simulate._writer import VENTRICLES

__all__ = ["CohortModel", "Generated", "ScanDesign"]

ETIV = "global.na.eTIV.volume"
HEMIS = ("lh", "rh")
#: share of a participant's residual variance that is new at every session (test-retest)
SESSION_VARIANCE = 0.05
#: DK grey-matter volume summed over regions / CortexVol (cortex label vs. parcels)
CORTEX_COVERAGE = 0.96
#: share of the white area covered by each template atlas (Destrieux and DKT cover the cortex)
AREA_COVERAGE = {"a2009s": 1.0, "BA": 0.33, "BA_thresh": 0.2, "entorhinal": 0.006}
#: mean thickness (mm) at which the template's Brodmann thickness baselines apply
REFERENCE_THICKNESS = 2.45
#: FreeSurfer 8 CSF / eTIV: 0.21 in the real scan (sub01-derived-cc0), where BrainSegVol / eTIV is
#: 0.93; this simulator's other volumes are closer to fcon1000's ratio (0.79), so less CSF keeps
#: the FreeSurfer 8 ratio near that scan's
FS8_CSF_FRACTION = 0.15
#: hemisphere cerebral white matter (mm^3) at which the template's wmparc baselines apply
REFERENCE_WHITE_MATTER = 230000.0
#: aseg rows FreeSurfer finds empty in nearly every scan (fcon1000: more than half zeros)
EMPTY_ASEG = (
    "5th-Ventricle",
    "Left-WM-hypointensities",
    "Right-WM-hypointensities",
    "non-WM-hypointensities",
    "Left-non-WM-hypointensities",
    "Right-non-WM-hypointensities",
)
#: globals that FreeSurfer 8's aseg changes
_FS8_GLOBALS = (
    "BrainSegVol.volume",
    "BrainSegVolNotVent.volume",
    "BrainSegVolNotVentSurf.volume",
    "VentricleChoroidVol.volume",
    "SupraTentorialVol.volume",
    "SupraTentorialVolNotVent.volume",
    "SupraTentorialVolNotVentVox.volume",
    "BrainSegVol-to-eTIV.ratio",
)
_SEG = ("nvoxels", "volume", "normmean", "normstd", "normmin", "normmax", "normrange")


def _structure(region: str) -> str:
    for prefix in ("Left-", "Right-"):
        if region.startswith(prefix):
            return region[len(prefix) :]
    return region


@dataclass(frozen=True)
class ScanDesign:
    """Who each scan of a batch is (arrays of one entry per scan).

    ``participant`` indexes the batch's participants (0 .. n_participants - 1); all sessions of
    a participant must be in the same batch.
    """

    participant: np.ndarray
    age: np.ndarray
    male: np.ndarray
    site: np.ndarray
    patient: np.ndarray
    n_participants: int

    @property
    def n(self) -> int:
        return len(self.age)


@dataclass
class Generated:
    """Features of a batch of scans.

    Attributes
    ----------
    keys : tuple of str
        Feature ids, the columns of ``values`` (every atlas any software writes).
    values : numpy.ndarray
        Observed values (site effects included), shape (scans, features).
    fs8 : dict
        Feature id -> column to use instead for scans written by FreeSurfer 8.
    latent_keys : tuple of str
        The calibrated features.
    sitefree : numpy.ndarray
        Their values without site effects (scans, latent features).
    deviation : numpy.ndarray
        ``(t(sitefree) - mu(age, sex, eTIV)) / sigma``: each scan's deviation from the
        calibrated norm in residual SDs, diagnosis effect included.
    """

    keys: tuple[str, ...]
    values: np.ndarray
    fs8: dict[str, np.ndarray]
    latent_keys: tuple[str, ...]
    sitefree: np.ndarray
    deviation: np.ndarray


def _inverse(transform: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.where(transform, np.expm1(t), t)


class CohortModel:
    """The generative model of one simulated cohort: calibration plus its sites' effects.

    Parameters
    ----------
    calibration : Calibration
    n_sites : int
    rng : numpy.random.Generator
        Draws the site effects (once, here) and the seed of the derived site biases.
    """

    def __init__(self, calibration: Calibration, n_sites: int, rng: np.random.Generator) -> None:
        cal = calibration
        self.cal = cal
        self.n_sites = n_sites
        factor_fids = cal.subject_factors.features
        dk = tuple(f for f, m in cal.features.items() if m["source"] == "ixi")
        self.fids: tuple[str, ...] = (ETIV, *factor_fids, *dk)
        self.col = {f: i for i, f in enumerate(self.fids)}
        models = [cal.features[f] for f in self.fids]
        self.sigma = np.array([m["sigma"] for m in models])
        self.log = np.array([m["transform"] == "log1p" for m in models])
        self.n_factor = len(factor_fids)
        self.dk = dk
        self.a_slice = slice(1, 1 + self.n_factor)
        self.dk_slice = slice(1 + self.n_factor, len(self.fids))
        self.coef = {
            source: np.array([m["coef"] for m in models if m["knots"] == source and m["tiv"]]).T
            for source in ("fcon1000", "ixi")
        }
        self.etiv_coef = np.array(cal.features[ETIV]["coef"])
        self.by_source = {
            source: np.array(
                [i for i, m in enumerate(models) if m["knots"] == source and m["tiv"]]
            )
            for source in ("fcon1000", "ixi")
        }
        anchors = {tuple(cal.features[f]["anchors"]) for f in dk}
        if len(anchors) != 1:
            raise ValueError("calibration.json: every DK thickness needs the same anchors")
        self.dk_anchor_idx = np.array([[self.col[a] for a in row] for row in anchors])
        self.dk_anchor_coef = np.array([cal.features[f]["anchor_coef"] for f in dk])
        self.dk_resid = np.array([cal.features[f]["anchor_resid"] for f in dk])
        self.dx = self._diagnosis_shift()
        self._draw_site_effects(rng, models)
        self.bias_seed = int(rng.integers(2**63))
        self._bias_cache: dict[str, np.ndarray] = {}

    # ---------------------------------------------------------------- calibrated pieces

    def _diagnosis_shift(self) -> np.ndarray:
        """Patient shift of each latent feature on its transformed scale (d x sigma)."""
        d = np.zeros(len(self.fids))
        diag = self.cal.diagnosis
        for i, fid in enumerate(self.fids):
            if fid in diag:
                d[i] = diag[fid]
            elif fid.startswith("a2009s.") and fid.endswith(".thickness"):
                hemi = fid.split(".")[1]
                d[i] = self.hemisphere_thickness_d(hemi)
        return d * self.sigma

    def hemisphere_thickness_d(self, hemi: str) -> float:
        values = [
            v
            for k, v in self.cal.diagnosis.items()
            if k.startswith(f"aparc.{hemi}.") and k.endswith(".thickness")
        ]
        return float(np.mean(values))

    def _draw_site_effects(self, rng: np.random.Generator, models: Sequence[dict]) -> None:
        k = self.n_sites
        tau = np.array([m["tau"] for m in models])
        omega = np.array([m["omega"] for m in models])
        site_f, scale_f = self.cal.site_factors, self.cal.scale_factors
        g = np.zeros((k, len(self.fids)))
        s = np.zeros((k, len(self.fids)))
        g[:, 0] = rng.standard_normal(k)
        s[:, 0] = rng.standard_normal(k)
        a = rng.standard_normal((k, site_f.loadings.shape[1]))
        g[:, self.a_slice] = a @ site_f.loadings.T + site_f.uniqueness * rng.standard_normal(
            (k, self.n_factor)
        )
        b = rng.standard_normal((k, scale_f.loadings.shape[1]))
        s[:, self.a_slice] = b @ scale_f.loadings.T + scale_f.uniqueness * rng.standard_normal(
            (k, self.n_factor)
        )
        # DK thickness: the region's own offset (the mean thickness's comes via the anchors)
        n_dk = len(self.dk)
        g[:, self.dk_slice] = rng.standard_normal((k, n_dk))
        s[:, self.dk_slice] = rng.standard_normal((k, n_dk))
        self.gamma = g * tau
        self.delta = np.exp(s * omega)

    def site_bias(self, name: str, n: int, sd: float) -> np.ndarray:
        """Per-site relative bias (log scale) of ``n`` derived columns; one draw per name."""
        if name not in self._bias_cache:
            rng = np.random.default_rng([self.bias_seed, zlib.crc32(name.encode())])
            self._bias_cache[name] = sd * rng.standard_normal((self.n_sites, n))
        return self._bias_cache[name]

    # ---------------------------------------------------------------- generation

    def generate(self, design: ScanDesign, rng: np.random.Generator) -> Generated:
        """Every feature of every scan in ``design``."""
        noise = _Noise(rng, design)
        latent_t, mean_t, free_t = self._latent(design, noise)
        observed = np.clip(_inverse(self.log, latent_t), 0.0, None)
        free = np.clip(_inverse(self.log, free_t), 0.0, None)
        deviation = (free_t - mean_t) / self.sigma
        derived = _Derived(self, design, noise, observed)
        keys, values, fs8 = derived.build()
        return Generated(keys, values, fs8, self.fids, free, deviation)

    def _latent(self, design: ScanDesign, noise: _Noise) -> tuple[np.ndarray, ...]:
        cal = self.cal
        n = design.n
        sf = cal.subject_factors
        w = SESSION_VARIANCE

        def factor_draw(size: int) -> np.ndarray:
            z = noise.rng.standard_normal((size, sf.loadings.shape[1]))
            return z @ sf.loadings.T + sf.uniqueness * noise.rng.standard_normal(
                (size, self.n_factor)
            )

        eps = np.empty((n, len(self.fids)))
        eps[:, 0] = noise.draw(1, session=0.01)[:, 0]
        part = factor_draw(design.n_participants)[design.participant]
        eps[:, self.a_slice] = np.sqrt(1 - w) * part + np.sqrt(w) * factor_draw(n)
        eps[:, self.dk_slice] = noise.draw(len(self.dk))

        site = design.site
        gamma, delta = self.gamma[site], self.delta[site]
        knots = cal.knots
        x0 = design_matrix(design.age, design.male, None, knots["fcon1000"])
        mean = np.empty((n, len(self.fids)))
        mean[:, 0] = x0 @ self.etiv_coef
        etiv_free = mean[:, 0] + self.sigma[0] * eps[:, 0]
        log_tiv = etiv_free - cal.ref_log_tiv
        for source, idx in self.by_source.items():
            x = design_matrix(design.age, design.male, log_tiv, knots[source])
            mean[:, idx] = x @ self.coef[source]
        shift = mean + design.patient[:, None] * self.dx
        free = shift + self.sigma * eps
        observed = shift + gamma + delta * self.sigma * eps
        # DK thickness = its IXI norm + slope x (the scan's fcon1000 mean-thickness deviation,
        # site effects included) + its own residual and site offset
        dk = self.dk_slice
        anchor = self.dk_anchor_idx[0]
        own = self.dk_resid * eps[:, dk]
        free[:, dk] = shift[:, dk] + (free - shift)[:, anchor] @ self.dk_anchor_coef.T + own
        observed[:, dk] = (
            shift[:, dk]
            + (observed - shift)[:, anchor] @ self.dk_anchor_coef.T
            + gamma[:, dk]
            + delta[:, dk] * own
        )
        return observed, mean, free


class _Noise:
    """Standard-normal draws shared by a participant's sessions (``1 - session`` of variance)."""

    def __init__(self, rng: np.random.Generator, design: ScanDesign) -> None:
        self.rng = rng
        self.design = design

    def draw(self, columns: int, session: float = SESSION_VARIANCE) -> np.ndarray:
        d = self.design
        person = self.rng.standard_normal((d.n_participants, columns))[d.participant]
        scan = self.rng.standard_normal((d.n, columns))
        return np.sqrt(1 - session) * person + np.sqrt(session) * scan


class _Derived:
    """Stage 2: every atlas's columns from the latent values of a batch."""

    def __init__(
        self, model: CohortModel, design: ScanDesign, noise: _Noise, latent: np.ndarray
    ) -> None:
        self.m = model
        self.d = design
        self.noise = noise
        self.latent = latent
        self.site = design.site
        self.patient = design.patient.astype(float)
        self.blocks: list[tuple[list[str], np.ndarray]] = []
        derived = model.cal.derived
        self.region_bias = derived["thickness_region_bias"]
        self.volume_bias = derived["volume_site_tau"]
        self.area_sd = derived["area_region_sd"]
        self.mask_ratio = np.ones(design.n)
        self.stiv_ratio = np.ones(design.n)
        self.fs8_mode = False

    def lat(self, fid: str) -> np.ndarray:
        return self.latent[:, self.m.col[fid]]

    def jitter(self, name: str, n: int, sd: float, bias: float) -> np.ndarray:
        """exp(noise + site bias): a multiplicative perturbation of ``n`` columns."""
        return np.exp(sd * self.noise.draw(n) + self.m.site_bias(name, n, bias)[self.site])

    def add(self, atlas: str, hemi: str, regions: Sequence[str], measures: dict) -> None:
        for measure, values in measures.items():
            keys = [f"{atlas}.{hemi}.{r}.{measure}" for r in regions]
            self.blocks.append((keys, np.asarray(values, dtype=np.float64)))

    # ------------------------------------------------------------------ surfaces

    def surface(
        self,
        atlas: str,
        hemi: str,
        area: np.ndarray,
        thickness: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """The nine surface measures from area and thickness, template ratios for the rest."""
        tpl = template(atlas, hemi)
        n = area.shape[1]
        ratio = tpl["volume"] / (tpl["area"] * tpl["thickness"])
        per_vertex = tpl["numvert"] / tpl["area"]
        fold = tpl["foldind"] / (tpl["area"] * tpl["meancurv"])
        curv = tpl["curvind"] / (tpl["area"] * tpl["gauscurv"])
        tag = f"{atlas}.{hemi}"
        meancurv = tpl["meancurv"] * self.jitter(f"{tag}.meancurv", n, 0.05, self.region_bias)
        gauscurv = tpl["gauscurv"] * self.jitter(f"{tag}.gauscurv", n, 0.07, self.region_bias)
        thickstd = tpl["thicknessstd"] * self.jitter(f"{tag}.thstd", n, 0.06, self.region_bias)
        return {
            "numvert": np.rint(area * per_vertex * np.exp(0.01 * self.noise.draw(n))),
            "area": area,
            "volume": area * thickness * ratio * np.exp(0.02 * self.noise.draw(n)),
            "thickness": thickness,
            "thicknessstd": thickstd,
            "meancurv": meancurv,
            "gauscurv": gauscurv,
            "foldind": np.rint(area * meancurv * fold),
            "curvind": area * gauscurv * curv,
        }

    def aparc(self, hemi: str) -> dict[str, np.ndarray]:
        """DK: calibrated thickness; area scaled to the calibrated CortexVol (module doc)."""
        m = self.m
        tpl = template("aparc", hemi)
        regions = tpl.regions
        idx = [m.col[f"aparc.{hemi}.{r}.thickness"] for r in regions]
        thickness = self.latent[:, idx]
        control = thickness - self.patient[:, None] * m.dx[idx]
        share = np.array([m.cal.area_share[f"aparc.{hemi}.{r}.area"] for r in regions])
        n = len(regions)
        share = share * self.jitter(f"aparc.{hemi}.area", n, self.area_sd, self.region_bias)
        ratio = tpl["volume"] / (tpl["area"] * tpl["thickness"])
        cortex = self.lat(f"global.{hemi}.CortexVol.volume") * CORTEX_COVERAGE
        scale = cortex / (share * control * ratio).sum(axis=1)
        d_area = np.array([m.cal.diagnosis.get(f"aparc.{hemi}.{r}.area", 0.0) for r in regions])
        sd_log_area = np.hypot(self.area_sd, m.sigma[m.col[f"global.{hemi}.CortexVol.volume"]])
        area = scale[:, None] * share * np.exp(self.patient[:, None] * d_area * sd_log_area)
        return self.surface("aparc", hemi, area, thickness)

    def build_surfaces(self) -> dict[str, dict[str, dict[str, np.ndarray]]]:
        out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        dk_regions = template("aparc", "lh").regions
        dkt_regions = template("DKT", "lh").regions
        dkt_idx = [dk_regions.index(r) for r in dkt_regions]
        for hemi in HEMIS:
            dk = self.aparc(hemi)
            out.setdefault("aparc", {})[hemi] = dk
            white = dk["area"].sum(axis=1, keepdims=True)
            mean_thickness = (dk["thickness"] * dk["area"]).sum(axis=1) / white[:, 0]

            pial_tpl = template("aparc_pial", hemi)
            white_tpl = template("aparc", hemi)
            pial_ratio = pial_tpl["area"] / white_tpl["area"]
            n_dk = len(dk_regions)
            pial_area = dk["area"] * pial_ratio * np.exp(0.02 * self.noise.draw(n_dk))
            pial = self.surface("aparc_pial", hemi, pial_area, dk["thickness"])
            for measure in ("numvert", "volume", "thicknessstd"):
                pial[measure] = dk[measure]
            out.setdefault("aparc_pial", {})[hemi] = pial

            n_dkt = len(dkt_regions)
            dkt_area = dk["area"][:, dkt_idx]
            dkt_area = dkt_area * (white / dkt_area.sum(axis=1, keepdims=True))
            dkt_area = dkt_area * np.exp(0.03 * self.noise.draw(n_dkt))
            dkt_thick = dk["thickness"][:, dkt_idx] + 0.02 * self.noise.draw(n_dkt)
            out.setdefault("DKT", {})[hemi] = self.surface("DKT", hemi, dkt_area, dkt_thick)

            a2009s = template("a2009s", hemi).regions
            idx = [self.m.col[f"a2009s.{hemi}.{r}.thickness"] for r in a2009s]
            out.setdefault("a2009s", {})[hemi] = self.surface(
                "a2009s", hemi, self.template_area("a2009s", hemi, white), self.latent[:, idx]
            )
            for atlas in ("BA", "BA_thresh", "entorhinal"):
                tpl = template(atlas, hemi)
                n = len(tpl.regions)
                thickness = (
                    tpl["thickness"]
                    * (mean_thickness / REFERENCE_THICKNESS)[:, None]
                    * self.jitter(f"{atlas}.{hemi}.thickness", n, 0.04, self.region_bias)
                )
                out.setdefault(atlas, {})[hemi] = self.surface(
                    atlas, hemi, self.template_area(atlas, hemi, white), thickness
                )
        return out

    def template_area(self, atlas: str, hemi: str, white: np.ndarray) -> np.ndarray:
        tpl = template(atlas, hemi)
        share = tpl["area"] / tpl["area"].sum() * AREA_COVERAGE[atlas]
        n = len(share)
        return (
            white * share * self.jitter(f"{atlas}.{hemi}.area", n, self.area_sd, self.region_bias)
        )

    # ------------------------------------------------------------------ segmentations

    def segmentation(self, atlas: str, volume: np.ndarray) -> dict[str, np.ndarray]:
        """The seven segmentation measures; empty rows are all zero, as FreeSurfer writes."""
        tpl = template(atlas, "na")
        n = volume.shape[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            per_voxel = np.where(tpl["volume"] > 0, tpl["nvoxels"] / tpl["volume"], 1.0)
            low = np.where(
                tpl["normstd"] > 0, (tpl["normmean"] - tpl["normmin"]) / tpl["normstd"], 3.0
            )
            high = np.where(
                tpl["normstd"] > 0, (tpl["normmax"] - tpl["normmean"]) / tpl["normstd"], 3.0
            )
        mean_base = np.where(tpl["normmean"] > 0, tpl["normmean"], 70.0)
        std_base = np.where(tpl["normstd"] > 0, tpl["normstd"], 8.0)
        mean = mean_base * self.jitter(f"{atlas}.normmean", n, 0.03, 0.03)
        std = std_base * self.jitter(f"{atlas}.normstd", n, 0.06, 0.03)
        minimum = np.floor(np.maximum(0.0, mean - low * std))
        maximum = np.ceil(mean + high * std)
        out = {
            "nvoxels": np.rint(volume * per_voxel),
            "volume": volume,
            "normmean": mean,
            "normstd": std,
            "normmin": minimum,
            "normmax": maximum,
            "normrange": maximum - minimum,
        }
        empty = volume <= 0
        for values in out.values():
            values[empty] = 0.0
        return out

    def aseg_volumes(self) -> np.ndarray:
        regions = known_regions("aseg")
        out = np.zeros((self.d.n, len(regions)))
        for j, region in enumerate(regions):
            if region not in EMPTY_ASEG:
                out[:, j] = self.lat(f"aseg.na.{region}.volume")
        return out

    def build_segmentations(
        self, surfaces: dict[str, dict[str, dict[str, np.ndarray]]]
    ) -> dict[str, np.ndarray]:
        """Adds the segmentation blocks; returns aseg volumes by region (for the globals)."""
        aseg_regions = known_regions("aseg")
        aseg = self.aseg_volumes()
        self.add("aseg", "na", aseg_regions, self.segmentation("aseg", aseg))
        by_region = dict(zip(aseg_regions, aseg.T, strict=True))
        white = {h: self.lat(f"global.{h}.CerebralWhiteMatterVol.volume") for h in HEMIS}

        tpl = template("wmparc", "na")
        hemi_of = ["lh" if ("-lh-" in r or r.startswith("Left")) else "rh" for r in tpl.regions]
        scale = np.column_stack([white[h] / REFERENCE_WHITE_MATTER for h in hemi_of])
        n = len(tpl.regions)
        wm = tpl["volume"] * scale * self.jitter("wmparc.volume", n, 0.08, self.volume_bias)
        self.add("wmparc", "na", tpl.regions, self.segmentation("wmparc", wm))
        wm_by_region = dict(zip(tpl.regions, wm.T, strict=True))

        tpl = template("wmparc_dkt", "na")
        n = len(tpl.regions)
        wm_dkt = np.column_stack([wm_by_region[r] for r in tpl.regions]) * np.exp(
            0.03 * self.noise.draw(n)
        )
        self.add("wmparc_dkt", "na", tpl.regions, self.segmentation("wmparc_dkt", wm_dkt))

        tpl = template("aseg_dkt", "na")
        dkt = {
            f"ctx-{h}-{r}": col
            for h in HEMIS
            for r, col in zip(
                template("DKT", h).regions, surfaces["DKT"][h]["volume"].T, strict=True
            )
        }
        columns = []
        for region in tpl.regions:
            if region in by_region:
                columns.append(by_region[region])
            elif region in dkt:
                columns.append(dkt[region])
            else:  # Left/Right-Cerebral-White-Matter: the hemisphere's white matter
                columns.append(white["lh" if region.startswith("Left") else "rh"] * 0.985)
        n = len(tpl.regions)
        aseg_dkt = np.column_stack(columns) * np.exp(0.02 * self.noise.draw(n))
        self.add("aseg_dkt", "na", tpl.regions, self.segmentation("aseg_dkt", aseg_dkt))

        tpl = template("cerebnet", "na")
        self.add(
            "cerebnet",
            "na",
            tpl.regions,
            self.segmentation("cerebnet", self.cerebnet(tpl.regions, tpl["volume"], by_region)),
        )
        return by_region

    def cerebnet(
        self, regions: Sequence[str], base: np.ndarray, aseg: dict[str, np.ndarray]
    ) -> np.ndarray:
        """Lobules scaled to the calibrated cerebellar cortex; merged rows are their sums."""
        n = len(regions)
        vol = base * self.jitter("cerebnet.volume", n, 0.06, self.volume_bias)
        names = list(regions)
        lobules = [i for i, r in enumerate(names) if r.startswith("Cbm_") and r != "Cbm_Vermis"]
        for side in ("Left", "Right"):
            members = [i for i in lobules if f"_{side}_" in names[i]]
            target = aseg[f"{side}-Cerebellum-Cortex"]
            vol[:, members] *= (target / vol[:, members].sum(axis=1))[:, None] * 0.93
            vol[:, names.index(f"{side}-Cerebellum-Cortex")] = vol[:, members].sum(axis=1)
            vol[:, names.index(f"{side}-Cerebellum-White-Matter")] = aseg[
                f"{side}-Cerebellum-White-Matter"
            ] * np.exp(0.03 * self.noise.draw(1)[:, 0])
        vermis = [i for i in lobules if "_Vermis_" in names[i]]
        both = (aseg["Left-Cerebellum-Cortex"] + aseg["Right-Cerebellum-Cortex"]) / 2
        vol[:, vermis] *= (both / 52000.0)[:, None]
        vol[:, names.index("Cbm_Vermis")] = vol[:, vermis].sum(axis=1)
        return vol

    # ------------------------------------------------------------------ globals

    def globals_(
        self,
        surfaces: dict[str, dict[str, dict[str, np.ndarray]]],
        aseg: dict[str, np.ndarray],
        hemi_noise: dict[str, np.ndarray],
    ) -> dict[str, np.ndarray]:
        """Global '# Measure' values, consistent with the regions (FreeSurfer's definitions)."""
        g: dict[str, np.ndarray] = {}
        cortex = {}
        for hemi in HEMIS:
            dk = surfaces["aparc"][hemi]
            area = dk["area"].sum(axis=1)
            g[f"global.{hemi}.NumVert.count"] = np.rint(dk["numvert"].sum(axis=1) * 1.01)
            g[f"global.{hemi}.WhiteSurfArea.area"] = area
            g[f"global.{hemi}.MeanThickness.thickness"] = (dk["thickness"] * dk["area"]).sum(
                axis=1
            ) / area
            g[f"global.{hemi}.PialSurfArea.area"] = surfaces["aparc_pial"][hemi]["area"].sum(
                axis=1
            )
            cortex[hemi] = dk["volume"].sum(axis=1) / CORTEX_COVERAGE * hemi_noise[hemi]
            g[f"global.{hemi}.CortexVol.volume"] = cortex[hemi]
            g[f"global.{hemi}.CerebralWhiteMatterVol.volume"] = self.lat(
                f"global.{hemi}.CerebralWhiteMatterVol.volume"
            )
            g[f"global.{hemi}.SurfaceHoles.count"] = np.maximum(
                np.rint(self.lat(f"global.{hemi}.SurfaceHoles.count")), 1.0
            )
        g["global.na.CortexVol.volume"] = cortex["lh"] + cortex["rh"]
        wm = (
            g["global.lh.CerebralWhiteMatterVol.volume"]
            + g["global.rh.CerebralWhiteMatterVol.volume"]
        )
        g["global.na.CerebralWhiteMatterVol.volume"] = wm
        g["global.na.SurfaceHoles.count"] = (
            g["global.lh.SurfaceHoles.count"] + g["global.rh.SurfaceHoles.count"]
        )
        self._volume_globals(g, aseg, wm)
        return g

    def _volume_globals(
        self, g: dict[str, np.ndarray], aseg: dict[str, np.ndarray], wm: np.ndarray
    ) -> None:
        def total(structures: Sequence[str]) -> np.ndarray:
            out = np.zeros(self.d.n)
            for region, values in aseg.items():
                if _structure(region) in structures:
                    out = out + values
            return out

        ventricles = total(VENTRICLES)
        subcortical = total(SUBCORTICAL_GRAY)
        cerebellum = total(("Cerebellum-Cortex", "Cerebellum-White-Matter"))
        brainstem = total(("Brain-Stem",))
        gray = g["global.na.CortexVol.volume"] + subcortical + total(("Cerebellum-Cortex",))
        extra = total(("CSF",)) if self.fs8_mode else 0.0
        brainseg = gray + wm + total(("Cerebellum-White-Matter",)) + brainstem + ventricles
        brainseg = brainseg + extra
        etiv = self.lat(ETIV)
        supra = brainseg - cerebellum - brainstem
        g["global.na.eTIV.volume"] = etiv
        g["global.na.sTIV.volume"] = etiv * self.stiv_ratio
        g["global.na.VentricleChoroidVol.volume"] = ventricles
        g["global.na.SubCortGrayVol.volume"] = subcortical
        g["global.na.TotalGrayVol.volume"] = gray
        g["global.na.BrainSegVol.volume"] = brainseg
        g["global.na.BrainSegVolNotVent.volume"] = brainseg - ventricles - extra
        g["global.na.BrainSegVolNotVentSurf.volume"] = brainseg - ventricles - extra
        g["global.na.SupraTentorialVol.volume"] = supra
        g["global.na.SupraTentorialVolNotVent.volume"] = supra - ventricles - extra
        g["global.na.SupraTentorialVolNotVentVox.volume"] = np.rint(supra - ventricles - extra)
        mask = etiv * self.mask_ratio
        g["global.na.MaskVol.volume"] = mask
        g["global.na.BrainSegVol-to-eTIV.ratio"] = brainseg / etiv
        g["global.na.MaskVol-to-eTIV.ratio"] = mask / etiv

    # ------------------------------------------------------------------ all together

    def build(self) -> tuple[tuple[str, ...], np.ndarray, dict[str, np.ndarray]]:
        surfaces = self.build_surfaces()
        for atlas, hemis in surfaces.items():
            for hemi, measures in hemis.items():
                self.add(atlas, hemi, template(atlas, hemi).regions, measures)
        aseg = self.build_segmentations(surfaces)
        derived = self.m.cal.derived
        n = self.d.n
        self.mask_ratio = np.exp(
            derived["log_mask_to_etiv_median"]
            + derived["log_mask_to_etiv_sd"] * self.noise.draw(1)[:, 0]
        )
        self.stiv_ratio = np.exp(0.03 * self.noise.draw(1)[:, 0])
        hemi_noise = {h: np.exp(0.005 * self.noise.draw(1)[:, 0]) for h in HEMIS}
        self.fs8_mode = False
        g = self.globals_(surfaces, aseg, hemi_noise)
        for key, values in g.items():
            self.blocks.append(([key], values[:, None]))
        keys = tuple(k for block, _ in self.blocks for k in block)
        values = np.hstack([v for _, v in self.blocks])

        # FreeSurfer 8's aseg: extracerebral CSF, empty vessel / choroid / chiasm rows
        fs8_aseg = dict(aseg)
        etiv = self.lat(ETIV)
        fs8_aseg["CSF"] = etiv * FS8_CSF_FRACTION * np.exp(0.08 * self.noise.draw(1)[:, 0])
        for region in (
            "Left-vessel",
            "Right-vessel",
            "Left-choroid-plexus",
            "Right-choroid-plexus",
            "Optic-Chiasm",
        ):
            fs8_aseg[region] = np.zeros(n)
        fs8_aseg["WM-hypointensities"] = aseg["WM-hypointensities"] * 0.05
        regions = known_regions("aseg")
        seg = self.segmentation("aseg", np.column_stack([fs8_aseg[r] for r in regions]))
        fs8 = {
            f"aseg.na.{r}.{m}": seg[m][:, j]
            for m in _SEG
            for j, r in enumerate(regions)
            if r in ("CSF", "WM-hypointensities", "Optic-Chiasm")
            or "vessel" in r
            or "choroid" in r
        }
        self.fs8_mode = True
        g8 = self.globals_(surfaces, fs8_aseg, hemi_noise)
        for key in _FS8_GLOBALS:
            fs8[f"global.na.{key}"] = g8[f"global.na.{key}"]
        return keys, values, fs8
