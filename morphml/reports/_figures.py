"""The report's figures: matplotlib on the Agg canvas, returned as inline PNG data URIs.

Figures are built as :class:`matplotlib.figure.Figure` objects, never through ``pyplot``: no
global figure registry, backend switch or rcParams change leaks into the caller's session,
and nothing is left open once the PNG is written.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

__all__ = [
    "age_figure",
    "age_histogram_figure",
    "delta_figure",
    "harmonization_figure",
    "importance_figure",
    "learning_curve_figure",
    "per_site_figure",
    "sex_figure",
]

#: Okabe-Ito colours (distinguishable with the common colour-vision deficiencies)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000")  # fmt: skip
#: for more series than PALETTE holds: Paul Tol's "muted" scheme (nine colours that stay
#: distinct with colour-vision deficiencies), paired with a marker each in the figures
MANY = ("#332288", "#CC6677", "#117733", "#DDCC77", "#88CCEE", "#882255", "#44AA99",
        "#999933", "#AA4499", "#6699CC", "#661100", "#888888")  # fmt: skip
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")
_SEX_COLOURS = {"female": "#CC79A7", "male": "#0072B2", "unknown": "#999999"}
_DPI = 110


def _new(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, facecolor="white")
    fig.clear()
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(fig: Any, alt: str, caption: str) -> dict[str, str]:
    return {"uri": _png(fig), "alt": alt, "caption": caption}


def _style(ax: Any) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(True, color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)


def age_histogram_figure(hist: dict[str, Any]) -> dict[str, str] | None:
    """Stacked age histogram by sex."""
    edges = np.asarray(hist.get("edges") or [], dtype=np.float64)
    counts = hist.get("counts") or {}
    if len(edges) < 2 or not counts:
        return None
    fig, (ax,) = _new(6.4, 2.8)
    bottom = np.zeros(len(edges) - 1)
    for label, values in counts.items():
        values = np.asarray(values, dtype=np.float64)
        ax.bar(edges[:-1], values, width=np.diff(edges), bottom=bottom, align="edge",
               color=_SEX_COLOURS.get(label, "#999999"), edgecolor="white", linewidth=0.5,
               label=f"{label} (n={int(values.sum())})")  # fmt: skip
        bottom += values
    ax.set_xlabel("age at scan (years)")
    ax.set_ylabel("scans")
    ax.legend(frameon=False, fontsize=8)
    _style(ax)
    parts = ", ".join(f"{k} {int(sum(v))}" for k, v in counts.items())
    return _figure(
        fig,
        f"Stacked histogram of age at scan in {edges[1] - edges[0]:.0f}-year bins from "
        f"{edges[0]:.0f} to {edges[-1]:.0f} years, by sex ({parts}).",
        "Age at scan by sex.",
    )


def age_figure(points: dict[str, Any]) -> dict[str, str]:
    """Predicted vs true age before and after bias correction, and the gap against age."""
    y = np.asarray(points["y_true"], dtype=np.float64)
    p = np.asarray(points["y_pred"], dtype=np.float64)
    c = np.asarray(points["y_pred_corrected"], dtype=np.float64)
    fig, axes = _new(10.5, 3.5, 3)
    lo, hi = _limits(p, c)  # true ages always fit; predictions' central 99%
    lo, hi = min(lo, float(np.nanmin(y)) - 2), max(hi, float(np.nanmax(y)) + 2)
    size = 9 if len(y) < 500 else 4
    beyond = 0
    for ax, pred, title in ((axes[0], p, "uncorrected"), (axes[1], c, "bias-corrected")):
        beyond = max(beyond, _scatter_clipped(ax, y, pred, lo, hi, PALETTE[0], size, 0.6))
        ax.plot([lo, hi], [lo, hi], color="#555555", linewidth=1, linestyle="--")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("age (years)")
        ax.set_ylabel("predicted age (years)")
        ax.set_title(f"predicted vs true, {title}", fontsize=9)
        _style(ax)
    ax = axes[2]
    gap_lo, gap_hi = _limits(p - y, c - y, pad=1.0)
    gap_lo, gap_hi = min(gap_lo, -1.0), max(gap_hi, 1.0)
    beyond = max(beyond, _scatter_clipped(ax, y, p - y, gap_lo, gap_hi, PALETTE[1], size, 0.5,
                                          label="uncorrected"))  # fmt: skip
    beyond = max(beyond, _scatter_clipped(ax, y, c - y, gap_lo, gap_hi, PALETTE[0], size, 0.5,
                                          label="bias-corrected"))  # fmt: skip
    ax.set_ylim(gap_lo, gap_hi)
    ax.axhline(0, color="#555555", linewidth=1, linestyle="--")
    ax.set_xlabel("age (years)")
    ax.set_ylabel("brain-age gap (years)")
    ax.set_title("gap vs age", fontsize=9)
    ax.legend(frameon=False, fontsize=7, markerscale=1.5)
    _style(ax)
    shown = (
        f" ({points['n_shown']} of {points['n']} shown)"
        if points.get("n_shown") != points.get("n") else ""
    )  # fmt: skip
    name = f"{points['model']}, {points['scheme']}"
    clipped = (
        f" Axes span the central 99% of predictions; {beyond} more extreme points are drawn "
        "as triangles at the edge."
        if beyond else ""
    )  # fmt: skip
    return _figure(
        fig,
        f"Brain age, {name}: three scatter plots of {points['n']} out-of-fold predictions"
        f"{shown}: predicted against true age before and after bias correction with the "
        f"identity line, and the brain-age gap against age before and after correction.{clipped}",
        f"Brain age — {name}: out-of-fold predictions{shown}.{clipped}",
    )


def _limits(*arrays: np.ndarray, pad: float = 2.0) -> tuple[float, float]:
    """Axis limits over the central 99% of each array's finite values (an outlier or two,
    e.g. a bias-corrected age of 250 years, must not squeeze the rest into a corner)."""
    lows, highs = [], []
    for values in arrays:
        finite = np.asarray(values, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        if len(finite) == 0:
            continue
        if len(finite) >= 200:
            lows.append(float(np.percentile(finite, 0.5)))
            highs.append(float(np.percentile(finite, 99.5)))
        else:
            lows.append(float(finite.min()))
            highs.append(float(finite.max()))
    if not lows:
        return 0.0, 1.0
    return min(lows) - pad, max(highs) + pad


def _scatter_clipped(
    ax: Any,
    x: np.ndarray,
    y: np.ndarray,
    lo: float,
    hi: float,
    colour: str,
    size: float,
    alpha: float,
    label: str | None = None,
) -> int:
    """Scatter ``y`` against ``x``; values outside [lo, hi] as triangles on the edge.

    Returns how many points were outside.
    """
    y = np.asarray(y, dtype=np.float64)
    inside = (y >= lo) & (y <= hi)
    ax.scatter(x[inside], y[inside], s=size, alpha=alpha, color=colour, linewidths=0,
               label=label)  # fmt: skip
    above, below = y > hi, y < lo
    span = hi - lo
    if above.any():
        ax.scatter(x[above], np.full(int(above.sum()), hi - 0.01 * span), s=size * 2.5,
                   marker="^", color=colour, linewidths=0)  # fmt: skip
    if below.any():
        ax.scatter(x[below], np.full(int(below.sum()), lo + 0.01 * span), s=size * 2.5,
                   marker="v", color=colour, linewidths=0)  # fmt: skip
    return int(above.sum() + below.sum())


def sex_figure(curves: dict[str, Any]) -> dict[str, str]:
    """ROC, precision-recall and reliability curves of a sex model."""
    fig, axes = _new(10.5, 3.5, 3)
    roc, pr, cal = curves["roc"], curves["pr"], curves["calibration"]
    ax = axes[0]
    ax.plot(roc["fpr"], roc["tpr"], color=PALETTE[0], linewidth=1.6)
    ax.plot([0, 1], [0, 1], color="#555555", linewidth=1, linestyle="--")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title("ROC (positive = male)", fontsize=9)
    ax = axes[1]
    ax.plot(pr["recall"], pr["precision"], color=PALETTE[2], linewidth=1.6)
    ax.axhline(curves["prevalence"], color="#555555", linewidth=1, linestyle="--")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("precision-recall", fontsize=9)
    ax = axes[2]
    ax.plot([0, 1], [0, 1], color="#555555", linewidth=1, linestyle="--")
    sizes = 12 + 60 * np.asarray(cal["n"], dtype=np.float64) / max(1, max(cal["n"] or [1]))
    ax.plot(cal["mean_pred"], cal["frac_pos"], color=PALETTE[5], linewidth=1.2)
    ax.scatter(cal["mean_pred"], cal["frac_pos"], s=sizes, color=PALETTE[5], zorder=3)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed fraction male")
    ax.set_title("reliability (10 bins)", fontsize=9)
    for ax in axes:
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal", adjustable="box")
        _style(ax)
    name = f"{curves['model']}, {curves['scheme']}"
    return _figure(
        fig,
        f"Sex classification, {name}: ROC curve, precision-recall curve with the prevalence "
        f"{curves['prevalence']:.2f} as baseline, and a reliability plot of observed against "
        f"predicted probability in 10 bins, from {curves['n']} out-of-fold predictions.",
        f"Sex — {name}: discrimination and calibration of out-of-fold probabilities.",
    )


def importance_figure(entry: dict[str, Any]) -> dict[str, str] | None:
    """Horizontal bars of the top features (mean |SHAP| when computed, else gain)."""
    rows = entry.get("rows") or []
    if not rows:
        return None
    key = entry.get("ranked_by", "gain")
    values = np.asarray([r.get(key) or 0.0 for r in rows], dtype=np.float64)[::-1]
    labels = [_short(r["name"]) for r in rows][::-1]
    fig, (ax,) = _new(7.2, 0.9 + 0.24 * len(rows))
    ax.barh(np.arange(len(rows)), values, color=PALETTE[0])
    ax.set_yticks(np.arange(len(rows)))
    ax.set_yticklabels(labels, fontsize=7.5)
    what = (
        f"mean |SHAP| ({entry.get('shap_scale', 'model output')})"
        if key == "mean_abs_shap" else "mean gain per split"
    )  # fmt: skip
    ax.set_xlabel(what)
    _style(ax)
    ax.grid(False, axis="y")
    name = f"{entry['target']} {entry['model']}"
    return _figure(
        fig,
        f"Horizontal bar chart of the {len(rows)} most important features of the XGBoost "
        f"model {name} by {what}; the largest is {rows[0]['name']}.",
        f"Feature importance — {name} ({what}).",
    )


def _short(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _size_label(size: Any, scans: Any) -> str:
    return f"n={size}" if str(size) != "all" else f"all, n≈{scans}"


def series_styles(names: list[str], selected: str | None) -> dict[str, dict[str, Any]]:
    """Colour, marker and line of each learning curve: ``raw`` dark grey and dashed, the
    selected representation blue and thick, the others from :data:`MANY` with a marker each
    (so even 12 series stay apart in colour, in shape, and in greyscale print)."""
    styles: dict[str, dict[str, Any]] = {}
    others = [n for n in names if n not in ("raw", selected)]
    for name in names:
        if name == "raw":
            styles[name] = {"color": "#333333", "marker": "o", "linestyle": "--",
                            "linewidth": 1.8, "band": True}  # fmt: skip
        elif name == selected:
            styles[name] = {"color": "#0072B2", "marker": "D", "linestyle": "-",
                            "linewidth": 2.6, "band": True}  # fmt: skip
        else:
            k = others.index(name)
            colours = [c for c in MANY if c not in ("#332288", "#888888")]  # not near raw/sel.
            styles[name] = {"color": colours[k % len(colours)],
                            "marker": MARKERS[1:][k % (len(MARKERS) - 1)],
                            "linestyle": "-", "linewidth": 1.2, "band": False}  # fmt: skip
    return styles


def learning_curve_figure(transfer: dict[str, Any]) -> dict[str, str] | None:
    """Mean score against training scans per representation; 95% interval bands for raw and
    the selected representation, error bars for the others."""
    curves = transfer.get("learning_curve") or {}
    if not curves:
        return None
    fig, (ax,) = _new(6.8, 3.8)
    sizes: dict[str, float] = {}
    for curve in curves.values():
        for label, n in zip(curve["labels"], curve["n_train_scans"], strict=False):
            if n is not None:
                sizes.setdefault(label, float(n))
    xs = sorted(set(sizes.values()))
    log = len(xs) > 1 and xs[-1] / max(xs[0], 1.0) > 8
    if log:
        ax.set_xscale("log")
    spread = 0.015 if log else 0.012 * (xs[-1] - xs[0] if len(xs) > 1 else 1.0)
    selected = (transfer.get("selected") or {}).get("representation")
    styles = series_styles(list(curves), selected)
    for i, (name, curve) in enumerate(curves.items()):
        keep = [j for j, n in enumerate(curve["n_train_scans"]) if n is not None]
        if not keep:
            continue
        shift = (i - (len(curves) - 1) / 2) * spread
        x = np.asarray([float(curve["n_train_scans"][j]) for j in keep])
        x = x * (10**shift) if log else x + shift

        def column(key: str, keep: list[int] = keep, curve: dict[str, Any] = curve) -> Any:
            return np.asarray(
                [np.nan if curve[key][j] is None else curve[key][j] for j in keep],
                dtype=np.float64,
            )

        mean, lo, hi = column("mean"), column("lo"), column("hi")
        st = styles[name]
        label = f"{name} (selected)" if name == selected else name
        if st["band"]:  # raw and the selected one: interval as a band and error bars
            ax.fill_between(x, lo, hi, color=st["color"], alpha=0.13, linewidth=0)
            ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], color=st["color"],
                        linewidth=st["linewidth"], linestyle=st["linestyle"],
                        marker=st["marker"], markersize=5, capsize=2, elinewidth=0.8,
                        label=label, zorder=3)  # fmt: skip
        else:  # the others: means only (their intervals are in the table and forest plot)
            ax.plot(x, mean, color=st["color"], linewidth=st["linewidth"],
                    linestyle=st["linestyle"], marker=st["marker"], markersize=4,
                    label=label, zorder=2)  # fmt: skip
    ax.set_xticks(xs)
    ax.set_xticklabels(
        [next((_size_label(k, int(v)) for k, v in sizes.items() if v == x), str(x))
         for x in xs],
        fontsize=8,
    )  # fmt: skip
    ax.minorticks_off()
    ax.set_xlabel("training scans per fold")
    metric = transfer.get("metric_label", "score")
    ax.set_ylabel(f"{metric} (95% CI)")
    if transfer.get("metric") == "auc":
        ax.axhline(0.5, color="#555555", linewidth=1, linestyle=":")
    handles, labels = ax.get_legend_handles_labels()  # in the table's order, raw first
    names = list(curves)
    order = sorted(range(len(labels)), key=lambda k: names.index(labels[k].split(" (")[0]))
    ax.legend([handles[k] for k in order], [labels[k] for k in order], frameon=False,
              fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))  # fmt: skip
    _style(ax)
    return _figure(
        fig,
        f"Learning curves: mean {metric} against the number of training scans, with 95% "
        "intervals (shaded) for raw and the selected representation only, the others' being "
        f"in the table and the forest plot; training scans {', '.join(str(int(x)) for x in xs)}; "
        f"{len(curves)} representations ({', '.join(curves)}).",
        f"Learning curves: {metric} by training size; shaded: corrected resampled t intervals "
        "of raw and the selected representation (dotted: chance)."
        if transfer.get("metric") == "auc"
        else f"Learning curves: {metric} by training size; shaded: corrected resampled t "
        "intervals of raw and the selected representation.",
    )


def delta_figure(transfer: dict[str, Any]) -> dict[str, str] | None:
    """Forest plot of each representation's paired difference from raw, per training size."""
    rows = [r for r in (transfer.get("table") or {}).get("rows") or [] if r.get("delta")]
    rows = [r for r in rows if r["delta"].get("value") is not None]
    if not rows:
        return None
    fig, (ax,) = _new(6.8, 0.9 + 0.3 * len(rows))
    y = np.arange(len(rows))[::-1]
    for yi, row in zip(y, rows, strict=True):
        d = row["delta"]
        ci = d.get("ci") or [d["value"], d["value"]]
        colour = PALETTE[2] if ci[0] > 0 else PALETTE[5] if ci[1] < 0 else PALETTE[0]
        ax.plot([ci[0], ci[1]], [yi, yi], color=colour, linewidth=1.6)
        ax.plot([d["value"]], [yi], marker="o", color=colour, markersize=5)
    ax.axvline(0, color="#555555", linewidth=1, linestyle="--")
    ax.set_yticks(y)
    ax.set_yticklabels(
        [f"{r['representation']} ({_size_label(r['n_train'], r.get('n_train_scans'))})"
         for r in rows],
        fontsize=8,
    )  # fmt: skip
    metric = transfer.get("metric_label", "score")
    ax.set_xlabel(f"Δ{metric} vs raw (95% CI)")
    _style(ax)
    ax.grid(False, axis="y")
    return _figure(
        fig,
        f"Forest plot of the paired difference in {metric} from raw features, with 95% "
        f"intervals, for {len(rows)} representation and training-size pairs.",
        f"Difference from raw features (Δ{metric}, paired on the same splits).",
    )


def harmonization_figure(diag: dict[str, Any]) -> dict[str, str] | None:
    """Site-classification accuracy before and after ComBat, against chance."""
    before, after = diag.get("site_accuracy_before"), diag.get("site_accuracy_after")
    if before is None or after is None:
        return None
    fig, (ax,) = _new(4.2, 2.6)
    ax.bar([0, 1], [before, after], color=[PALETTE[1], PALETTE[0]], width=0.55)
    if diag.get("chance") is not None:
        ax.axhline(diag["chance"], color="#555555", linewidth=1, linestyle="--")
        ax.text(1.3, diag["chance"] + 0.01, "chance", fontsize=7, va="bottom")
    ax.set_xticks([0, 1])
    ax.set_xticklabels(["before ComBat", "after ComBat"])
    ax.set_ylim(0, 1)
    ax.set_xlim(-0.5, 1.6)
    ax.set_ylabel("site accuracy (5-fold)")
    _style(ax)
    return _figure(
        fig,
        f"Bar chart of cross-validated site-classification accuracy: {before:.2f} before and "
        f"{after:.2f} after ComBat, chance {diag.get('chance') or 0:.2f}.",
        "Site separability before and after harmonisation (lower is better; chance dashed).",
    )


#: (metric key, axis label) of the per-site figure's panel for each target
_SITE_METRICS = {"age": ("mae", "brain-age MAE (years)"), "sex": ("auc", "sex AUC")}


def per_site_figure(per_site: dict[str, Any]) -> dict[str, str] | None:
    """Per-site performance of every model and scheme in one dot plot (age MAE, sex AUC).

    Sites run down the shared vertical axis; each model has a colour, each validation scheme
    a marker; lines are 95% intervals. The full tables are in the report's appendix.
    """
    panels = []
    for target, (key, label) in _SITE_METRICS.items():
        rows = [r for r in ((per_site.get(target) or {}).get("rows") or [])
                if isinstance(r.get(key), dict) and r[key].get("value") is not None]  # fmt: skip
        if rows:
            panels.append((target, key, label, rows))
    if not panels:
        return None
    sites = sorted({str(r["site"]) for _, _, _, rows in panels for r in rows}, reverse=True)
    where = {site: i for i, site in enumerate(sites)}
    fig, axes = _new(10.5 if len(panels) > 1 else 6.4, 1.4 + 0.24 * len(sites), len(panels))
    n_series = 0
    for ax, (target, key, label, rows) in zip(axes, panels, strict=True):
        models = list(dict.fromkeys(str(r["model"]) for r in rows))
        schemes = list(dict.fromkeys(str(r["scheme"]) for r in rows))
        series = [(m, s) for m in models for s in schemes]
        n_series = max(n_series, len(series))
        step = 0.7 / max(len(series), 1)
        for j, (model, scheme) in enumerate(series):
            mine = [r for r in rows if str(r["model"]) == model and str(r["scheme"]) == scheme]
            if not mine:
                continue
            offset = (j - (len(series) - 1) / 2) * step
            y = np.asarray([where[str(r["site"])] + offset for r in mine])
            value = np.asarray([r[key]["value"] for r in mine], dtype=np.float64)
            ci = [r[key].get("ci") or [None, None] for r in mine]
            lo = np.asarray([np.nan if c[0] is None else c[0] for c in ci], dtype=np.float64)
            hi = np.asarray([np.nan if c[1] is None else c[1] for c in ci], dtype=np.float64)
            colour = MANY[models.index(model) % len(MANY)]
            marker = MARKERS[schemes.index(scheme) % len(MARKERS)]
            ax.hlines(y, lo, hi, color=colour, linewidth=0.9, alpha=0.8)
            ax.scatter(value, y, color=colour, marker=marker, s=16, zorder=3,
                       label=f"{model}, {scheme}")  # fmt: skip
        if key == "auc":
            ax.axvline(0.5, color="#555555", linewidth=1, linestyle=":")
        ax.set_yticks(np.arange(len(sites)))
        ax.set_yticklabels(sites if ax is axes[0] else [""] * len(sites), fontsize=7.5)
        ax.set_ylim(-0.6, len(sites) - 0.4)
        ax.set_xlabel(f"{label} (95% CI)")
        ax.set_title(target, fontsize=9)
        ax.legend(frameon=False, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08),
                  ncol=2)  # fmt: skip
        _style(ax)
        ax.grid(False, axis="y")
    what = " and ".join(label for _, _, label, _ in panels)
    return _figure(
        fig,
        f"Dot plot of {what} with 95% intervals for each of {len(sites)} sites, one colour "
        "per model and one marker per validation scheme; the values are tabulated in the "
        "appendix.",
        f"Performance by site ({what}); sites with too few scans are not scored. Tables in "
        "the appendix.",
    )
