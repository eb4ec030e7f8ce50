"""The reference model in a transfer report: its provenance and centile curves with the cohort.

A transfer run that used a reference model (``reference: PATH``, representation
``reference_z``) writes ``reference.json``: where the reference came from (source, archive
SHA-256, people and sites, licence and citation) and, for a few features, the reference's
centile curves at the cohort's ages with the cohort's scans (age, raw value, sex, case or
control; no key or id). :func:`reference_section` reads it for the summary and
:func:`reference_figures` draws the curves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from morphml.exceptions import ReportError
from morphml.rundir import RunDir

__all__ = ["reference_figures", "reference_section"]


def reference_section(run: Path) -> dict[str, Any] | None:
    """The run's ``reference.json`` (None when the run used no reference model)."""
    path = RunDir(run).reference
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: cannot read the reference facts ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("provenance"), dict):
        raise ReportError(f"{path}: not a reference summary written by a transfer run")
    return data


def _curve_figure(ages: list[float], quantiles: list[float], entry: dict[str, Any]) -> Any:
    from morphml.reports._figures import _SEX_COLOURS, _figure, _new, _style

    fig, (ax,) = _new(4.6, 3.3)
    x = np.asarray(ages, dtype=np.float64)
    levels = [float(q) for q in quantiles]
    for sex, curves in (entry.get("quantiles") or {}).items():
        q = np.asarray(curves, dtype=np.float64)
        colour = _SEX_COLOURS.get(sex, "#999999")
        for i, level in enumerate(levels):
            style = "-" if abs(level - 0.5) < 1e-9 else "--" if level in (0.25, 0.75) else ":"
            ax.plot(x, q[i], color=colour, linewidth=1.4 if style == "-" else 0.9,
                    linestyle=style, label=f"{sex} median" if style == "-" else None)  # fmt: skip
    points = entry.get("points") or {}
    age = np.asarray(points.get("age") or [], dtype=np.float64)
    value = np.asarray(points.get("value") or [], dtype=np.float64)
    case = points.get("case")
    if case is None:
        ax.scatter(age, value, s=9, color="#555555", alpha=0.6, linewidths=0, label="scans")
    else:
        mask = np.asarray(case, dtype=bool)
        ax.scatter(age[~mask], value[~mask], s=10, color="#009E73", alpha=0.7, linewidths=0,
                   label="controls")  # fmt: skip
        ax.scatter(age[mask], value[mask], s=12, color="#D55E00", alpha=0.7, marker="^",
                   linewidths=0, label="cases")  # fmt: skip
    feature = str(entry.get("feature"))
    ax.set_title(feature, fontsize=8)
    ax.set_xlabel("age (years)")
    ax.set_ylabel("value (raw units)")
    ax.legend(frameon=False, fontsize=7)
    _style(ax)
    pct = ", ".join(f"{round(q * 100)}%" for q in levels)
    return _figure(
        fig,
        f"Reference centile curves ({pct}) of {feature} against age for females and males at "
        f"a site the reference does not know, with the cohort's {len(age)} scans as points.",
        f"{feature}: the reference's centiles ({pct}; solid median, dashed quartiles, dotted "
        "5% and 95%) for an unseen site, before the site is adapted, and the cohort's scans.",
    )


def reference_figures(reference: dict[str, Any] | None) -> list[dict[str, str]]:
    """One centile-curve figure per feature in a :func:`reference_section` (may be empty)."""
    curves = (reference or {}).get("curves") or {}
    ages, quantiles = curves.get("ages"), curves.get("quantiles")
    if not ages or not quantiles:
        return []
    return [_curve_figure(ages, quantiles, e) for e in curves.get("features") or []]
