"""``render_html(summary)``: the summary as one self-contained HTML page; ``write_report``.

The page needs nothing outside itself: CSS is inline, figures are PNG data URIs, there is no
script, font or stylesheet to fetch, and it prints cleanly to PDF (``@media print``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml

from morphml._version import __version__
from morphml.exceptions import ReportError

__all__ = ["render_html", "write_report"]

#: top-level summary keys the templates read (missing ones are treated as absent sections)
_SECTIONS = (
    "format", "kind", "run", "config", "cohort", "qc", "database", "features", "harmonization",
    "warnings", "pretrain", "transfer", "importance", "importance_note", "tripod",
)  # fmt: skip


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        size = abs(value)
        if size >= 100:
            return f"{value:.0f}"
        if size >= 10:
            return f"{value:.1f}"
        if size >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def _cell(value: Any) -> str:
    """A table cell: numbers formatted, ``{value, ci}`` as ``v [lo, hi]``."""
    if isinstance(value, dict) and "value" in value:
        text = _num(value.get("value"))
        ci = value.get("ci")
        if value.get("value") is not None and ci and ci[0] is not None and ci[1] is not None:
            text += f" [{_num(ci[0])}, {_num(ci[1])}]"
        return text
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_num(v)}" for k, v in value.items())
    return _num(value)


def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("morphml.reports", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = _num
    env.filters["cell"] = _cell
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * float(v):.1f}%"
    return env


def _figures(summary: dict[str, Any]) -> dict[str, Any]:
    from morphml.reports import _figures as fig

    out: dict[str, Any] = {
        "age_hist": None, "age": [], "sex": [], "importance": [], "learning_curve": None,
        "delta": None, "harmonization": None, "per_site": None,
    }  # fmt: skip
    hist = (summary.get("cohort") or {}).get("age_histogram")
    if hist:
        out["age_hist"] = fig.age_histogram_figure(hist)
    pre = summary.get("pretrain") or {}
    out["age"] = [fig.age_figure(p) for p in pre.get("age_points") or [] if p.get("y_true")]
    out["sex"] = [fig.sex_figure(c) for c in pre.get("sex_curves") or []]
    if pre.get("per_site"):
        out["per_site"] = fig.per_site_figure(pre["per_site"])
    for entry in summary.get("importance") or []:
        out["importance"].append(fig.importance_figure(entry))
    transfer = summary.get("transfer")
    if transfer:
        out["learning_curve"] = fig.learning_curve_figure(transfer)
        out["delta"] = fig.delta_figure(transfer)
        from morphml.reports._reference import reference_figures

        out["reference_curves"] = reference_figures(transfer.get("reference"))
    diag = (summary.get("harmonization") or {}).get("diagnostics")
    if diag:
        out["harmonization"] = fig.harmonization_figure(diag)
    return out


def render_html(summary: dict[str, Any]) -> str:
    """Render a run summary (from :func:`summarize`) as one self-contained HTML page.

    Parameters
    ----------
    summary : dict
        The summary. Only ``kind`` and ``run`` (with ``name``) are required; every other
        section is shown when present and skipped when absent or None.

    Returns
    -------
    str
        The HTML document.

    Raises
    ------
    ReportError
        When ``summary`` lacks ``kind`` or ``run.name``.

    Examples
    --------
    >>> from morphml.reports import render_html
    >>> html = render_html({"kind": "pretrain", "run": {"name": "demo"}})
    >>> html.startswith("<!DOCTYPE html>"), "demo" in html
    (True, True)
    """
    if not isinstance(summary, dict):
        raise ReportError(f"summary must be a dict from summarize(); got {type(summary).__name__}")
    run = summary.get("run")
    kinds = ("pretrain", "transfer", "external_validation")
    if summary.get("kind") not in kinds or not isinstance(run, dict):
        raise ReportError(
            "summary needs 'kind' (pretrain or transfer) and a 'run' mapping; make it with "
            "morphml.reports.summarize(run_dir)"
        )
    if not run.get("name"):
        raise ReportError("summary['run'] needs the run's 'name'")
    view = {key: summary.get(key) for key in _SECTIONS}
    view["warnings"] = list(view["warnings"] or [])
    view["importance"] = list(view["importance"] or [])
    view["tripod"] = list(view["tripod"] or [])
    config = view["config"]
    config_text = yaml.safe_dump(config, sort_keys=False).rstrip() if config else None
    template = _environment().get_template("report.html")
    return str(
        template.render(
            s=view,
            run=run,
            figures=_figures(summary),
            config_text=config_text,
            version=__version__,
        )
    )


def write_report(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    db: str | os.PathLike[str] | None = None,
) -> Path:
    """Summarise a run directory and write its HTML report.

    Parameters
    ----------
    run_dir : path-like
        A run directory written by ``morphml fit``.
    out : path-like, optional
        The HTML file to write (parent folders are created); ``run_dir/report.html`` by
        default.
    db : path-like, optional
        The database the run was fitted on, for cohort facts, QC and SHAP values.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ReportError
        When the run cannot be summarised or the file cannot be written.

    Examples
    --------
    >>> from morphml.reports import write_report  # doctest: +SKIP
    >>> write_report("runs/pretrain", db="morphml.duckdb")  # doctest: +SKIP
    PosixPath('runs/pretrain/report.html')
    """
    from morphml.reports._summary import summarize

    html = render_html(summarize(run_dir, db=db))
    target = Path(out) if out is not None else Path(run_dir) / "report.html"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(html, encoding="utf-8")
    except OSError as err:
        raise ReportError(
            f"cannot write {target} ({err.strerror or err}); give another file with --out"
        ) from None
    return target
