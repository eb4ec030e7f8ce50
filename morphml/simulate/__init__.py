"""Simulated multi-site cohorts written as FreeSurfer / FastSurfer stats folders.

``simulate_cohort(out, n_subjects=..., n_sites=..., seed=...)`` writes::

    out/
      sub-0001/stats/*.stats                      cross-sectional scan
      sub-0002_ses-1/stats/*.stats                sessions processed one by one
      sub-0002_ses-2/stats/*.stats
      sub-0003_ses-1.long.sub-0003/stats/*.stats  FreeSurfer longitudinal stream ...
      sub-0003_ses-2.long.sub-0003/stats/*.stats
      sub-0003/stats/*.stats                      ... and its base template (not a scan)
      participants.tsv                            one row per scan
      participants.yaml                           the column map that reads it
      truth/ground_truth.csv                      per scan: site-free values, outcomes' signal,
      truth/effects.csv, sites.csv,               QC and corruption flags; per feature and site:
      truth/site_effects.csv, outcomes.json       effects, weights, planted problems

What is calibrated on which real table, and what is derived, is documented in
:mod:`morphml.simulate._calibration` and :mod:`morphml.simulate._features`.
"""

from morphml.simulate._cohort import SimulationSummary, simulate_cohort
from morphml.simulate._tables import write_table_exports, write_wide_csv
from morphml.simulate._writer import example_features, write_subject_stats

__all__ = [
    "SimulationSummary",
    "example_features",
    "simulate_cohort",
    "write_subject_stats",
    "write_table_exports",
    "write_wide_csv",
]
