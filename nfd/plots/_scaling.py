"""The scaling figure of a sweep (`kind = "sweep"`): the final test loss against width and depth at
a fixed step budget, with the n = ∞ limit, drawn from `nfd.analysis.scaling_summary` (plots never
compute).

Left: loss vs width per depth (colour = depth), each depth's limit loss (K = L) a dashed line of
the same colour. Right: loss vs depth per width (colour = width), the limit loss per depth black
dashed and its L → ∞ value black dotted with its ±1 SE band. Error bars: ±1 SE over seeds. Every
data line carries a ``gid`` (``finite L=4``, ``limit L=4``, ``finite n=64``, ``limit``,
``L_inf``) so tests can read the plotted values back."""

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..runs import Run
from ._style import (
    BAND_ALPHA,
    LIMIT,
    band_entry,
    legend_outside,
    limit_entry,
    line_colours,
    log_axis,
    note_empty,
    style,
)

DOTTED = {**LIMIT, "ls": ":"}  # the L → ∞ value of the limit
POINTS = {"marker": "o", "ms": 3.5, "capsize": 2, "lw": 1.3}  # finite networks, ±1 SE bars


def _arr(x) -> np.ndarray:
    """A saved (JSON) nested list as a float array; ``None`` (a saved NaN) becomes NaN."""
    return np.array(x, dtype=float)


def _width_panel(ax: Axes, s: Mapping, p: Mapping) -> None:
    widths, depths = _arr(s["widths"]), _arr(s["depths"])
    y, se = _arr(p["finite"]), _arr(p["finite_se"])
    colours = line_colours(len(depths))
    for j, L in enumerate(depths):
        kw = {"color": colours[j], "label": f"L = {L:g}", **POINTS}
        eb = ax.errorbar(widths, y[:, j], yerr=np.nan_to_num(se[:, j]), **kw)
        eb.lines[0].set_gid(f"finite L={L:g}")
        if p["limit"] is not None and np.isfinite(p["limit"][j]):
            line = ax.axhline(p["limit"][j], color=colours[j], ls="--", lw=1.2)
            line.set_gid(f"limit L={L:g}")
    log_axis(ax, "x", base=2, values=widths)
    note_empty(ax)
    ax.set_xlabel("width n")
    handles = ax.get_legend_handles_labels()[0]
    if p["limit"] is not None:
        handles.append(limit_entry("n = ∞ limit (K = L), colour: its depth", color="0.3", lw=1.2))
    legend_outside(ax, handles, title="colour: depth L; bars: ±1 SE")


def _depth_panel(ax: Axes, s: Mapping, p: Mapping) -> None:
    widths, depths = _arr(s["widths"]), _arr(s["depths"])
    y, se = _arr(p["finite"]), _arr(p["finite_se"])
    colours = line_colours(len(widths))
    for i, n in enumerate(widths):
        kw = {"color": colours[i], "label": f"n = {n:g}", **POINTS}
        eb = ax.errorbar(depths, y[i], yerr=np.nan_to_num(se[i]), **kw)
        eb.lines[0].set_gid(f"finite n={n:g}")
    if p["limit"] is not None:
        kw = {"marker": "s", "ms": 4, "capsize": 2, "label": "n = ∞ limit (K = L)", **LIMIT}
        eb = ax.errorbar(depths, _arr(p["limit"]), yerr=np.nan_to_num(_arr(p["limit_se"])), **kw)
        eb.lines[0].set_gid("limit")
    L_inf, L_se = float(_arr(p["L_inf"])), float(_arr(p["L_inf_se"]))
    if np.isfinite(L_inf):
        how = "K → ∞, deepest L" if p["L_inf_method"] == "kinf" else "c + b/L fit of K = L"
        ax.axhline(L_inf, **DOTTED, label=f"L → ∞ value ({how})").set_gid("L_inf")
        if np.isfinite(L_se):
            ax.axhspan(L_inf - L_se, L_inf + L_se, color="black", alpha=BAND_ALPHA, lw=0, zorder=0)
    log_axis(ax, "x", base=2, values=depths)
    note_empty(ax)
    ax.set_xlabel("depth L")
    handles = ax.get_legend_handles_labels()[0]
    if np.isfinite(L_inf) and np.isfinite(L_se):
        handles.append(band_entry("±1 SE of the L → ∞ value"))
    legend_outside(ax, handles, title="colour: width n; bars: ±1 SE")


def scaling_figure(run: Run, summary: Mapping) -> Figure:
    """Final loss vs width per depth (left) and vs depth per width (right), first learning rate,
    with the limit losses (see the module docstring); ``summary``: the sweep's summary with its
    ``scaling`` entry (`nfd.analysis.scaling_summary`)."""
    s = summary["scaling"]
    p = s["per_lr"][0]
    what = "test" if s["source"] == "test" else "TRAINING (no test points)"
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
        _width_panel(axes[0], s, p)
        _depth_panel(axes[1], s, p)
        for ax in axes:
            ax.set_ylabel(f"{what} loss at t = {s['t_final']}")
        axes[0].set_title(f"more width, η0 = {s['lrs'][0]:g}", fontsize=9)
        axes[1].set_title("more depth", fontsize=9)
        m, lim = run.config.model, run.config.limit
        fig.suptitle(
            f"where more width or depth stops paying: {run.config.task.name}, {m.param}, "
            f"{m.activation}, {run.config.optim.steps} steps, {run.config.seeds} seeds, "
            f"limit M = {lim.particles} particles ({s['mode'] or 'none'})",
            fontsize=9,
        )
    return fig
