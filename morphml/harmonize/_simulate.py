"""Multi-site data with known ComBat site effects, for tests, benchmarks and evaluation.

Every feature follows ComBat's own model: a site-free value ``mu_f(age, sex) + sd_f * e`` (the
truth), and the observed value ``mu_f(age, sex) + gamma_sf + delta_sf * sd_f * e`` with an
additive ``gamma_sf ~ N(sd_f * g_s, (sd_f * t_s)^2)`` and a multiplicative
``delta_sf^2 ~ Inverse-Gamma`` drawn per site. The age curve is quadratic (not a straight
line), so a spline age term matters; sites can differ in age range (``age_confounding``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from morphml.harmonize._combat import META_PREFIX

__all__ = ["SimulatedSites", "simulate_site_effects"]


@dataclass(frozen=True)
class SimulatedSites:
    """Simulated scans and the truth behind them."""

    #: meta columns (``meta:site``, ``meta:age``, ``meta:sex``) and features ``f000`` ...
    frame: pd.DataFrame
    #: the same features without site effects (same index and columns)
    truth: pd.DataFrame
    #: site names, in the row order of ``gamma`` and ``delta2``
    sites: list[str]
    #: additive site effects in feature units, shape (n_sites, n_features)
    gamma: NDArray[np.float64]
    #: multiplicative site effects on the residual variance, shape (n_sites, n_features)
    delta2: NDArray[np.float64]
    #: residual SD of each feature without site effects
    sd: NDArray[np.float64]

    @property
    def features(self) -> list[str]:
        """Feature column names."""
        return list(self.truth.columns)


def simulate_site_effects(
    n_scans: int,
    n_features: int,
    n_sites: int,
    *,
    random_state: int | np.random.Generator | None = None,
    age_confounding: float = 0.5,
    location_scale: float = 0.6,
    delta_shape: float = 12.0,
    min_site_size: int = 5,
) -> SimulatedSites:
    """Simulate scans of ``n_sites`` sites with known additive and multiplicative effects.

    Parameters
    ----------
    n_scans, n_features, n_sites : int
        Size of the data; site sizes are unequal (Dirichlet shares, at least
        ``min_site_size`` each).
    random_state : int, Generator or None
        Seed of every draw.
    age_confounding : float, default=0.5
        0: every site samples the same age range; 1: site mean ages spread over 20-70 years.
    location_scale : float, default=0.6
        Spread of the site offsets, in units of the feature's residual SD.
    delta_shape : float, default=12.0
        Inverse-gamma shape of the scale effects (larger: scales closer to each site's mean).
    min_site_size : int, default=5

    Returns
    -------
    SimulatedSites

    Examples
    --------
    >>> from morphml.harmonize._simulate import simulate_site_effects
    >>> sim = simulate_site_effects(100, 4, 3, random_state=0)
    >>> sim.frame.shape, sim.gamma.shape
    ((100, 7), (3, 4))
    """
    rng = np.random.default_rng(random_state)
    shares = rng.dirichlet(np.full(n_sites, 3.0))
    sizes = np.full(n_sites, min_site_size) + rng.multinomial(
        n_scans - min_site_size * n_sites, shares
    )
    sites = [f"site{s:02d}" for s in range(n_sites)]
    site = np.repeat(np.arange(n_sites), sizes)
    centre = 45.0 + age_confounding * (rng.uniform(20.0, 70.0, n_sites) - 45.0)
    age = np.clip(rng.normal(centre[site], 14.0), 8.0, 85.0)
    sex = rng.integers(0, 2, n_scans).astype(float)

    mu = rng.uniform(1.0, 10.0, n_features)
    sd = rng.uniform(0.1, 1.0, n_features)
    a = (age - 45.0) / 20.0
    slope = rng.normal(-0.6, 0.3, n_features)
    curve = rng.normal(-0.2, 0.2, n_features)
    sex_effect = rng.normal(0.0, 0.4, n_features)
    mean = mu + sd * (np.outer(a, slope) + np.outer(a * a, curve) + np.outer(sex, sex_effect))
    noise = sd * rng.standard_normal((n_scans, n_features))
    truth = mean + noise

    g_site = rng.normal(0.0, location_scale, n_sites)
    t_site = rng.uniform(0.2, 0.5, n_sites) * location_scale
    gamma = sd * (g_site[:, None] + t_site[:, None] * rng.standard_normal((n_sites, n_features)))
    scale_mean = rng.uniform(0.6, 1.6, n_sites)
    b = scale_mean * (delta_shape - 1.0)
    delta2 = b[:, None] / rng.gamma(delta_shape, 1.0, (n_sites, n_features))
    observed = mean + gamma[site] + np.sqrt(delta2[site]) * noise

    names = [f"f{j:03d}" for j in range(n_features)]
    index = pd.RangeIndex(n_scans, name="scan")
    meta = pd.DataFrame(
        {
            f"{META_PREFIX}site": np.asarray(sites, dtype=object)[site],
            f"{META_PREFIX}age": age,
            f"{META_PREFIX}sex": sex,
        },
        index=index,
    )
    frame = pd.concat([meta, pd.DataFrame(observed, index=index, columns=names)], axis=1)
    return SimulatedSites(
        frame=frame,
        truth=pd.DataFrame(truth, index=index, columns=names),
        sites=sites,
        gamma=gamma,
        delta2=delta2,
        sd=sd,
    )
