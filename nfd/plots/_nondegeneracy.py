"""Figures of a saved ``kind = "nondegeneracy"`` run: the smallest relative eigenvalue of the
finite networks' kernels against width (with the ``1/n`` fit and the n = ∞ value), and the full
sorted spectrum at the largest width against the limit's. Plots never compute: every curve is an
array of `nfd.analysis.nondegeneracy_summary`, every fitted line its fit's coefficients. Colour is
τ (dark → light: shallow → deep blocks), the n = ∞ values black dashed, legends right of the axes.
"""

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..runs import Run
from ._style import LIMIT, entry, legend_outside, limit_entry, line_colours, log_axis, style

NAMES = {"phi": "Φ_ℓ", "g": "G_ℓ"}


def _rows(s: Mapping[str, Any]) -> list[int]:
    return sorted({0, len(s["steps"]) - 1})


def _panels(rows: int, cols: int):
    """One panel per (step row, depth column), room on the right for the legend."""
    return plt.subplots(
        rows,
        cols,
        figsize=(3.6 * cols + 2.2, 3.0 * rows),
        squeeze=False,
        sharex=True,
        constrained_layout=True,
    )


def _eig_figure(s: Mapping[str, Any], field: str) -> Figure:
    """λ_min / mean diagonal vs width, one panel per (step, depth), one colour per τ."""
    q = s[field]["rel"]
    widths = np.asarray(s["widths"], float)
    depths, taus, rows = s["depths"], s["taus"], _rows(s)
    colours = line_colours(len(taus))
    fig, axes = _panels(len(rows), len(depths))
    grid = np.geomspace(widths[0], widths[-1], 64)
    x_inf = widths[-1] * 1.6  # where the n = ∞ value is marked
    for a, srow in enumerate(rows):
        for j, L in enumerate(depths):
            ax = axes[a, j]
            for r, tau in enumerate(taus):
                c = colours[r]
                mean = np.asarray(q["mean"], float)[:, j, srow, r]
                se = np.nan_to_num(np.asarray(q["se"], float)[:, j, srow, r], posinf=0.0)
                ax.errorbar(
                    widths, mean, se, color=c, marker="o", ms=4, capsize=2, label=f"τ = {tau:g}"
                )
                lam, slope = q["lam_inf"][j][srow][r], q["a"][j][srow][r]
                if lam is not None and slope is not None and np.isfinite(lam):
                    ax.plot(grid, lam + slope / grid, color=c, lw=0.8, ls=":")
                lim = q["limit"][j][srow][r]
                if lim is not None and np.isfinite(lim):
                    ax.plot([widths[0], x_inf], [lim, lim], **{**LIMIT, "lw": 1.0})
                    ax.plot([x_inf], [lim], marker="s", ms=5, color=c, mec="black")
            log_axis(ax, "x", base=2, values=widths)
            log_axis(ax, "y")
            ax.set_title(f"L = {L}, t = {s['steps'][srow]}", fontsize=9)
            ax.set_xlabel("width n")
            ax.set_ylabel(f"λ_min({NAMES[field]}) / mean diag")
    handles = [entry(f"τ = {t:g}", color=c, marker="o") for t, c in zip(taus, colours, strict=True)]
    handles += [
        entry("1/n fit", color="0.3", ls=":", lw=0.8),
        limit_entry("n = ∞ (squares at right)", lw=1.0),
    ]
    legend_outside(fig, handles, title="bars: ±1 SE over seeds")
    fig.suptitle(
        f"Smallest eigenvalue of {NAMES[field]} over the training points vs width", fontsize=10
    )
    return fig


def _spectrum_figure(s: Mapping[str, Any]) -> Figure:
    """Sorted eigenvalues / mean diagonal of Φ_ℓ at the largest width (seed mean, solid) and of
    the n = ∞ kernel (black dashed), one panel per (step, depth), one colour per τ."""
    sp = s["phi"]["spectrum"]
    depths, taus, rows = s["depths"], s["taus"], _rows(s)
    colours = line_colours(len(taus))
    fig, axes = _panels(len(rows), len(depths))
    for a, srow in enumerate(rows):
        for j, L in enumerate(depths):
            ax = axes[a, j]
            for r, c in enumerate(colours):
                fin = np.asarray(sp["finite"], float)[j, srow, r]
                k = np.arange(1, fin.size + 1)
                ax.plot(k, fin, color=c, marker="o", ms=3)
                lim = np.asarray(sp["limit"], float)[j, srow, r]
                ax.plot(k, lim, **{**LIMIT, "lw": 1.0})
            log_axis(ax, "y")
            ax.set_title(f"L = {L}, t = {s['steps'][srow]}", fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("eigenvalue index (ascending)")
            ax.set_ylabel("λ_k(Φ_ℓ) / mean diag")
    handles = [entry(f"τ = {t:g}", color=c, marker="o") for t, c in zip(taus, colours, strict=True)]
    handles.append(limit_entry("n = ∞"))
    legend_outside(fig, handles, title=f"n = {s['widths'][-1]}, seed mean")
    fig.suptitle("Spectrum of Φ_ℓ at the largest width against the n = ∞ kernel", fontsize=10)
    return fig


def nondegeneracy_figures(run: Run, summary: Mapping[str, Any]) -> dict[str, Figure]:
    """``eigs`` (Φ), ``eigs_g`` (G) and ``spectrum``."""
    del run
    with style():
        return {
            "eigs": _eig_figure(summary, "phi"),
            "eigs_g": _eig_figure(summary, "g"),
            "spectrum": _spectrum_figure(summary),
        }
