"""The cohort's design: sites, participants, sessions, folder names and header fields.

Folder names (one per scan, all directly under the output folder)
-----------------------------------------------------------------
* ``sub-0001`` - a cross-sectional scan (one session, no session id).
* ``sub-0002_ses-1``, ``sub-0002_ses-2`` - sessions processed one by one (BIDS-like, as
  FastSurfer or a cross-sectional FreeSurfer run names them); FastSurfer sites and every other
  FreeSurfer site use this form.
* ``sub-0003_ses-1.long.sub-0003``, ``sub-0003_ses-2.long.sub-0003`` - FreeSurfer's
  longitudinal stream (``<timepoint>.long.<base>``); with them the *base template*
  ``sub-0003``, which FreeSurfer also gives a ``stats/`` folder. A base template is an average
  over sessions, not a scan: it has no row in ``participants.tsv`` and an ingester must skip a
  folder ``X`` when some folder ``*.long.X`` exists.

The participant number has at least four digits (``sub-00001`` from 10,000 participants on).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

__all__ = ["LAYOUTS", "CohortDesign", "Scan", "Site", "draw_design"]

#: software and FreeSurfer version per layout (FastSurfer 2.x runs FreeSurfer 7.4.1 surfaces)
LAYOUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "mixed": (
        ("freesurfer", "5.3"),
        ("freesurfer", "6.0"),
        ("freesurfer", "7.4.1"),
        ("freesurfer", "8.2.0"),
        ("fastsurfer", "7.4.1"),
    ),
    "freesurfer": (
        ("freesurfer", "5.3"),
        ("freesurfer", "6.0"),
        ("freesurfer", "7.4.1"),
        ("freesurfer", "8.2.0"),
    ),
    "fastsurfer": (("fastsurfer", "7.4.1"),),
}
_FASTSURFER_VERSIONS = ("2.2.2", "2.3.3", "2.4.2")
#: the year a site processing with this software starts (scan dates follow)
_ERA = {"5.3": 2013, "6.0": 2017, "7.4.1": 2022, "8.2.0": 2025}
_SCANNERS = (
    "Siemens Prisma 3T",
    "Siemens Skyra 3T",
    "Siemens Trio 3T",
    "Siemens Avanto 1.5T",
    "GE Discovery MR750 3T",
    "GE Signa HDxt 1.5T",
    "Philips Achieva 3T",
    "Philips Ingenia 1.5T",
)
_USERS = ("jdoe", "asmith", "mkowalski", "lnguyen", "pgarcia", "rmuller", "kokafor", "tsato")
_DOMAINS = ("hospital-a.example", "uni-b.example", "clinic-c.example", "institute-d.example")
#: age limits of the simulated people (years)
MIN_AGE, MAX_AGE = 16.0, 86.0
#: patients are adults
MIN_PATIENT_AGE = 18.0


@dataclass(frozen=True)
class Site:
    """One acquisition site: its scanner, its processing and its population."""

    name: str
    software: str
    version: str
    fastsurfer_version: str
    scanner: str
    long_stream: bool
    patient_fraction: float
    age_mean: float
    age_sd: float
    male_fraction: float
    hostname: str
    user: str
    subjects_dir: str
    install_dir: str
    start: dt.date

    @property
    def label(self) -> str:
        if self.software == "fastsurfer":
            return f"FastSurfer {self.fastsurfer_version}"
        return f"FreeSurfer {self.version}"


@dataclass(frozen=True)
class Scan:
    """One scan: who, when, where, and the folder it is written to."""

    index: int
    participant: int
    participant_id: str
    session: int
    session_id: str
    folder: str
    site: int
    age: float
    male: bool
    patient: bool
    date: dt.datetime
    base: str | None  # the base-template folder of a longitudinal-stream scan


@dataclass(frozen=True)
class CohortDesign:
    sites: tuple[Site, ...]
    scans: tuple[Scan, ...]
    n_participants: int
    #: base template folder -> the scans (indices) it averages
    bases: dict[str, tuple[int, ...]]

    def scans_of(self, participants: range) -> list[Scan]:
        return [s for s in self.scans if s.participant in participants]


def _sites(rng: np.random.Generator, n_sites: int, layout: str) -> tuple[Site, ...]:
    choices = LAYOUTS[layout]
    order = rng.permutation(len(choices))
    scanners = rng.permutation(len(_SCANNERS))
    sites = []
    for i in range(n_sites):
        software, version = choices[order[i % len(choices)]]
        fastsurfer_version = str(rng.choice(_FASTSURFER_VERSIONS))
        user = _USERS[int(rng.integers(len(_USERS)))]
        domain = _DOMAINS[i % len(_DOMAINS)]
        name = f"site{i + 1:02d}"
        if software == "fastsurfer":
            install = "/fastsurfer"
            subjects_dir = f"/data/{name}/derivatives/fastsurfer"
            era = 2022
        else:
            install = f"/usr/local/freesurfer-{version}"
            subjects_dir = f"/home/{user}/projects/{name}/subjects"
            era = _ERA[version]
        start = dt.date(era, 1, 1) + dt.timedelta(days=int(rng.integers(0, 300)))
        sites.append(
            Site(
                name=name,
                software=software,
                version=version,
                fastsurfer_version=fastsurfer_version,
                scanner=_SCANNERS[scanners[i % len(_SCANNERS)]],
                # FreeSurfer's longitudinal stream at every other FreeSurfer site, so that both
                # session folder forms appear
                long_stream=software == "freesurfer" and i % 2 == 0,
                patient_fraction=float(rng.beta(3.0, 7.0)),
                age_mean=float(rng.uniform(24.0, 62.0)),
                age_sd=float(rng.uniform(6.0, 16.0)),
                male_fraction=float(rng.uniform(0.42, 0.58)),
                hostname=f"node{int(rng.integers(1, 64)):02d}.{domain}",
                user=user,
                subjects_dir=subjects_dir,
                install_dir=install,
                start=start,
            )
        )
    return tuple(sites)


def _longitudinal(
    rng: np.random.Generator, site_of: np.ndarray, sites: tuple[Site, ...], n_long: int
) -> np.ndarray:
    """Participants with more than one session; both folder forms first when both can occur."""
    n = len(site_of)
    chosen: list[int] = []
    for stream in (True, False):
        pool = [i for i in range(n) if sites[site_of[i]].long_stream is stream]
        if pool and len(chosen) < n_long:
            chosen.append(int(rng.choice(pool)))
    rest = np.setdiff1d(np.arange(n), chosen)
    more = rng.choice(rest, size=max(n_long - len(chosen), 0), replace=False)
    return np.sort(np.concatenate([np.array(chosen, dtype=int), more.astype(int)]))


def draw_design(
    rng: np.random.Generator,
    n_subjects: int,
    n_sites: int,
    layout: str,
    longitudinal_fraction: float,
) -> CohortDesign:
    """Draw sites, participants (site, sex, age, diagnosis) and their sessions."""
    sites = _sites(rng, n_sites, layout)
    weights = rng.dirichlet(np.full(n_sites, 3.0))
    counts = 1 + rng.multinomial(n_subjects - n_sites, weights)
    site_of = rng.permutation(np.repeat(np.arange(n_sites), counts))
    patient_p = np.array([s.patient_fraction for s in sites])[site_of]
    patient = rng.random(n_subjects) < patient_p
    male_p = np.where(patient, 0.65, np.array([s.male_fraction for s in sites])[site_of])
    male = rng.random(n_subjects) < male_p
    mean = np.array([s.age_mean for s in sites])[site_of]
    sd = np.array([s.age_sd for s in sites])[site_of]
    age = np.clip(rng.normal(mean, sd), MIN_AGE, MAX_AGE - 8.0)
    age = np.where(patient, np.maximum(age, MIN_PATIENT_AGE + rng.uniform(0, 4, n_subjects)), age)
    n_long = round(longitudinal_fraction * n_subjects)
    longitudinal = set(_longitudinal(rng, site_of, sites, n_long).tolist())
    width = max(4, len(str(n_subjects)))
    scans: list[Scan] = []
    bases: dict[str, tuple[int, ...]] = {}
    for p in range(n_subjects):
        site = sites[site_of[p]]
        pid = f"sub-{p + 1:0{width}d}"
        first = dt.datetime.combine(site.start, dt.time(8)) + dt.timedelta(
            days=int(rng.integers(0, 3 * 365)), minutes=int(rng.integers(0, 9 * 60))
        )
        if p not in longitudinal:
            scans.append(
                Scan(
                    len(scans),
                    p,
                    pid,
                    0,
                    "",
                    pid,
                    int(site_of[p]),
                    float(age[p]),
                    bool(male[p]),
                    bool(patient[p]),
                    first,
                    None,
                )
            )
            continue
        n_sessions = 2 if rng.random() < 0.7 else 3
        years = np.concatenate([[0.0], np.cumsum(rng.uniform(0.8, 3.0, n_sessions - 1))])
        members = []
        for s in range(n_sessions):
            ses = f"ses-{s + 1}"
            folder = f"{pid}_{ses}.long.{pid}" if site.long_stream else f"{pid}_{ses}"
            when = first + dt.timedelta(days=round(float(years[s]) * 365.25))
            members.append(len(scans))
            scans.append(
                Scan(
                    len(scans),
                    p,
                    pid,
                    s,
                    ses,
                    folder,
                    int(site_of[p]),
                    float(age[p] + years[s]),
                    bool(male[p]),
                    bool(patient[p]),
                    when,
                    pid if site.long_stream else None,
                )
            )
        if site.long_stream:
            bases[pid] = tuple(members)
    return CohortDesign(sites, tuple(scans), n_subjects, bases)


def identifying(site: Site, folder: str, when: dt.datetime, canary: str | None) -> dict[str, str]:
    """Realistic, fake values of the identifying header fields (a canary in each, if given)."""
    processed = when + dt.timedelta(days=3, hours=5, minutes=17, seconds=41)
    fields = {
        "subjectname": folder,
        "hostname": site.hostname,
        "user": site.user,
        "SUBJECTS_DIR": site.subjects_dir,
        "cmdline_path": site.install_dir,
        "CreationTime": processed.strftime("%Y/%m/%d-%H:%M:%S-GMT"),
        "timestamp": processed.strftime("%Y/%m/%d %H:%M:%S"),
    }
    if canary is None:
        return fields
    return {
        "subjectname": f"{folder}-{canary}",
        "hostname": f"{canary}.{site.hostname}",
        "user": f"{site.user}{canary}",
        "SUBJECTS_DIR": f"/home/{canary}/subjects",
        "cmdline_path": f"/opt/{canary}/{site.install_dir.strip('/')}",
        "CreationTime": f"{fields['CreationTime']}-{canary}",
        "timestamp": f"{fields['timestamp']} {canary}",
    }
