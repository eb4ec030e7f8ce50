"""Model reports: ``summarize(run_dir) -> dict`` and ``render_html(summary) -> str``.

``write_report(run_dir, out=None, db=None)`` does both and writes one self-contained HTML file
(``morphml report RUN_DIR``): header and hashes, cohort, QC exclusions, harmonisation
diagnostics, performance with intervals overall, per site and per sex, figures, feature
importance, transfer comparisons, and a TRIPOD+AI checklist filled from the run.
"""

from morphml.reports._names import readable_feature
from morphml.reports._render import render_html, write_report
from morphml.reports._summary import summarize
from morphml.reports._tripod import TRIPOD_ITEMS

__all__ = ["TRIPOD_ITEMS", "readable_feature", "render_html", "summarize", "write_report"]
