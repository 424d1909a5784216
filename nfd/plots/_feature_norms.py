"""Figures of a saved `kind = "feature_norms"` run (arXiv 2512.21075 Fig. 1, T10), drawn from its
summary (`nfd.analysis.feature_norms_analysis`); plots never compute. Colour is depth (viridis,
shallow → deep), solid at initialisation and dashed at the end of training, every n = ∞ value
black and dashed (its markers in the depth's colour), error bars ±1 SE over seeds."""

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..runs import Run
from ._style import LIMIT, colour, entry, legend_outside, limit_entry, line_colours, log_axis, style

THIN_LIMIT = {**LIMIT, "lw": 1.5}


def norms_figure(run: Run, summary: Mapping) -> Figure:
    """Mean squared feature vs layer time τ = ℓ/L: panels pre | post, colour = depth, solid
    t = 0, dashed the end of training; the pre-activation n = ∞ values black dashed."""
    a = run.arrays
    depths, steps = a["depths"], a["steps"]
    prof = summary["profiles"]
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
        for j, (L, color) in enumerate(zip(depths, line_colours(len(depths)), strict=True)):
            L = int(L)
            taus = np.arange(L + 1) / L
            for ax, form in ((axes[0], "pre"), (axes[1], "post")):
                mean, se = prof[form]
                for t, ls in ((0, "-"), (-1, "--")):
                    ax.errorbar(
                        taus, mean[j, t, : L + 1], se[j, t, : L + 1], color=color, ls=ls, lw=1.2
                    )
            mark = dict(marker="D", ms=3, mfc=color, mec=color, markevery=max(L // 8, 1))
            axes[0].plot(taus, a["ref_init"][j, : L + 1], **THIN_LIMIT, **mark)
            lim = prof["limit"][0][j, -1, : L + 1]
            if np.any(np.isfinite(lim)):
                axes[0].plot(taus, lim, **THIN_LIMIT, **{**mark, "marker": "x", "ms": 5})
        axes[0].set_title("pre-activation h ← h + bWφ(h)/√n", fontsize=8)
        axes[1].set_title("post-activation h ← φ(h + bWh/√n)", fontsize=8)
        log_axis(axes[1], "y")
        for ax in axes:
            ax.set_xlabel("layer time τ = ℓ/L")
            ax.set_ylabel("mean squared feature h_rms²")
        handles = [
            entry(f"L={int(L)}", color=c)
            for L, c in zip(depths, line_colours(len(depths)), strict=True)
        ]
        handles += [
            entry(f"t = {int(steps[0])} (init)", color="0.4"),
            entry(f"t = {int(steps[-1])} (end)", color="0.4", ls="--"),
            limit_entry("n = ∞ at t = 0, K = L (recursion)", lw=1.5, marker="D", ms=3),
            limit_entry(f"n = ∞ at t = {int(steps[-1])}, K = L (limit)", lw=1.5, marker="x"),
        ]
        legend_outside(fig, handles, title="bars: ±1 SE over seeds")
        fig.suptitle(
            f"feature norms across layers, width {int(a['width'])} "
            f"({run.config.model.activation}, {run.config.seeds} seeds)",
            fontsize=9,
        )
    return fig


def growth_figure(run: Run, summary: Mapping) -> Figure:
    """Last-layer RMS feature vs L, both forms (solid t = 0, dashed the end), the n = ∞ values
    black dashed."""
    a = run.arrays
    depths = a["depths"]
    with style():
        fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
        for when, ls in (("init", "-"), ("end", "--")):
            at = summary[when]
            for k, form in enumerate(("pre", "post")):
                g = at[form]["growth"]
                ax.errorbar(
                    depths,
                    at[form]["rms_last"],
                    at[form]["rms_last_se"],
                    color=colour(k),
                    ls=ls,
                    marker="o",
                    ms=3,
                    label=f"{form}, t = {at['step']}: exponent {g['slope']:+.2f}",
                )
            ref = at["ref"]["rms_last"]
            if np.any(np.isfinite(ref)):
                ax.plot(depths, ref, **THIN_LIMIT, marker="D" if when == "init" else "x", ms=4)
        log_axis(ax, "x", base=2, values=depths)
        log_axis(ax, "y")
        ax.set_xlabel("depth L")
        ax.set_ylabel("last-layer RMS feature")
        handles = [
            *ax.get_legend_handles_labels()[0],
            limit_entry("n = ∞ pre-activation (◆ t = 0, × end)", lw=1.5),
        ]
        legend_outside(ax, handles, title="bars: ±1 SE over seeds")
        ax.set_title("growth of the last-layer feature norm with depth", fontsize=9)
    return fig


def feature_norms_figures(run: Run, summary: Mapping) -> dict[str, Figure]:
    """Every figure of a feature-norm run, by name."""
    return {"norms": norms_figure(run, summary), "growth": growth_figure(run, summary)}
