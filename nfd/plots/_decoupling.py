"""Figures of a saved `kind = "decoupling"` run (arXiv 2512.21075 Fig. 2), drawn from its summary
(`nfd.analysis.decoupling_summary`); plots never compute. ``curves``: train and test loss vs step
per architecture, colour = depth (dark: shallow), solid = reused, dashed = decoupled backward
weights. ``gap``: |final-step gap| vs L per architecture, log-log, ±1 SE, with the power fit."""

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..runs import Run
from ._style import colour, entry, legend_outside, line_colours, log_axis, note_empty, style

TITLES = {"plain": "plain (muP, no skips)", "mup": "muP ResNet", "depth_mup": "depth-muP ResNet"}
MODES = {0: ("reused", "-"), 1: ("decoupled", "--")}


def curves_figure(run: Run, summary: Mapping) -> Figure:
    """Seed-mean train (top) and test (bottom) loss vs step, one column per architecture."""
    archs, depths, steps = summary["archs"], summary["depths"], np.asarray(summary["steps"])
    colours = line_colours(len(depths))
    with style():
        fig, axes = plt.subplots(
            2,
            len(archs),
            figsize=(2.8 * len(archs) + 1.8, 4.8),
            squeeze=False,
            layout="constrained",
            sharex=True,
        )
        for r, split in enumerate(("train", "test")):
            mean = summary[f"curves_{split}"][0]  # (A, J, B, S)
            for a, arch in enumerate(archs):
                ax = axes[r, a]
                for j, c in enumerate(colours):
                    for b, (_, ls) in MODES.items():
                        ax.plot(steps, mean[a, j, b], ls=ls, color=c, lw=1.2)
                log_axis(ax, "y")
                note_empty(ax)
                if r == 0:
                    ax.set_title(TITLES.get(arch, arch), fontsize=9)
                else:
                    ax.set_xlabel("step t")
                if a == 0:
                    ax.set_ylabel(f"{split} loss")
        handles = [entry(f"L={L}", color=c) for L, c in zip(depths, colours, strict=True)]
        handles += [entry(name, color="0.3", ls=ls) for name, ls in MODES.values()]
        legend_outside(fig, handles, title="seed mean")
    return fig


def gap_figure(run: Run, summary: Mapping) -> Figure:
    """|(ℓ_dec − ℓ_reu)/ℓ_reu| at the last step vs L, train and test, with the fit A L^p."""
    archs, depths = summary["archs"], np.asarray(summary["depths"], float)
    with style():
        fig, axes = plt.subplots(
            1,
            len(archs),
            figsize=(2.8 * len(archs) + 1.8, 2.8),
            squeeze=False,
            layout="constrained",
            sharey=True,
        )
        for a, arch in enumerate(archs):
            ax = axes[0, a]
            rows = [r for r in summary["rows"] if r["arch"] == arch]
            slopes = []
            for k, (split, mk) in enumerate((("train", "o"), ("test", "s"))):
                g = np.abs([r[f"gap_{split}"] for r in rows])
                se = np.asarray([r[f"gap_{split}_se"] for r in rows])
                c = colour(k)
                ax.errorbar(
                    depths,
                    g,
                    np.where(np.isfinite(se), se, 0),
                    color=c,
                    marker=mk,
                    ms=4,
                    lw=0,
                    elinewidth=1,
                    label=f"|gap| {split} ±1 SE",
                )
                fit = summary["fits"][arch][split]
                if np.isfinite(fit["slope"]):
                    ax.plot(
                        depths,
                        fit["amplitude"] * depths ** fit["slope"],
                        color=c,
                        lw=1,
                        ls=":",
                        label=f"fit A L^p ({split})",
                    )
                    slopes.append(f"p_{split} = {fit['slope']:+.2f} ± {fit['slope_se']:.2f}")
            log_axis(ax, "x", base=2, values=depths)
            log_axis(ax, "y")
            note_empty(ax)
            ax.set_title("\n".join([str(TITLES.get(arch, arch)), *slopes]), fontsize=8)
            ax.set_xlabel("depth L")
            if a == 0:
                ax.set_ylabel("|final loss gap|, decoupled vs reused")
        legend_outside(fig)
    return fig


def decoupling_figures(run: Run, summary: Mapping) -> dict[str, Figure]:
    """The figures of a decoupling run: ``curves`` and ``gap``."""
    return {"curves": curves_figure(run, summary), "gap": gap_figure(run, summary)}
