"""The loss figures of finite, limit and demo runs: a saved run and its
`nfd.analysis.curves_summary` in, a matplotlib Figure out (house look: `nfd.plots._style`)."""

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..runs import Run
from ._style import (
    BAND_ALPHA,
    LIMIT,
    band_entry,
    colour,
    entry,
    legend_outside,
    limit_entry,
    line_colours,
    log_axis,
    note_empty,
    style,
)

__all__ = ["demo_figure", "loss_figure", "style"]

ROWS = (("loss_train", "train loss"), ("loss_test", "test loss"))


def _demo_panel(ax, steps, summary: Mapping, key: str, j: int, widths) -> None:
    """Depth ``j``'s ``key`` curves: one solid line ± SE band per width, the limit black dashed."""
    for i, c in enumerate(line_colours(len(widths))):
        mean, se = summary[key]["mean"][i, j], summary[key]["se"][i, j]
        ax.plot(steps, mean, color=c, lw=1.6)
        ax.fill_between(steps, mean - se, mean + se, color=c, alpha=BAND_ALPHA, lw=0)
    lim = summary.get("limit_" + key)
    if lim is not None:
        mean, se = lim["mean"][j], lim["se"][j]
        ax.plot(steps, mean, **LIMIT, zorder=3)
        ax.fill_between(steps, mean - se, mean + se, color="k", alpha=BAND_ALPHA / 2, lw=0)


def demo_figure(run: Run, summary: Mapping) -> Figure:
    """Train (top) and test (bottom) loss vs step, one column per depth: every width a solid
    line (dark to light: narrow to wide) with its ±1 SE band over seeds, the n = ∞ limit at
    K = L black and dashed (``summary``: `nfd.analysis.curves_summary` of the run's arrays)."""
    a, cfg = run.arrays, run.config
    widths, depths, steps = a["widths"], a["depths"], a["steps"]
    with style():
        fig, axes = plt.subplots(
            2,
            len(depths),
            figsize=(2.9 * len(depths) + 2.4, 5.4),
            sharex=True,
            sharey="row",
            squeeze=False,
            layout="constrained",
        )
        for j, L in enumerate(depths):
            for r, (key, name) in enumerate(ROWS):
                _demo_panel(axes[r, j], steps, summary, key, j, widths)
                axes[r, j].set_title(f"{name}, L = {L}", fontsize=9)
            axes[1, j].set_xlabel("training step t")
        for ax in axes.ravel():
            log_axis(ax, "y")
            note_empty(ax)
        for r, (_, name) in enumerate(ROWS):
            axes[r, 0].set_ylabel(name)
        handles: list[Any] = [
            entry(f"n = {n}", color=c, lw=1.6)
            for n, c in zip(widths, line_colours(len(widths)), strict=True)
        ]
        if "limit_loss_train" in summary:
            handles.append(limit_entry(f"limit n = ∞, K = L ({cfg.limit.coupling})"))
        handles.append(band_entry(f"±1 SE over {cfg.seeds} seeds"))
        legend_outside(fig, handles, title="finite width n (solid)")
        fig.suptitle(
            f"{cfg.task.name}: {cfg.model.param} ResNet, {cfg.model.activation}, "
            f"{cfg.optim.name} η0={cfg.optim.lr:g}, γ0={cfg.model.gamma0:g}, {cfg.seeds} seeds",
            fontsize=9,
        )
    return fig


def loss_figure(run: Run, summary: Mapping) -> Figure:
    """Train and test loss vs step of a finite or limit run (each member thin, and the seed mean
    of ``summary``: `nfd.analysis.curves_summary` of its arrays, thick), and beside it the
    accuracy of a classification run."""
    a = run.arrays
    panels = [("loss", "loss")] + ([("acc", "accuracy")] if "acc_train" in summary else [])
    with style():
        fig, axes = plt.subplots(
            1, len(panels), figsize=(5.6 + 3.4 * (len(panels) - 1), 3.2), layout="constrained"
        )
        axes = np.atleast_1d(axes)
        for ax, (prefix, label) in zip(axes, panels, strict=True):
            handles = _curve_panel(ax, a, summary, prefix)
            if prefix == "loss":
                log_axis(ax, "y")
            note_empty(ax)
            ax.set_xlabel("training step t")
            ax.set_ylabel(label)
            legend_outside(ax, handles)
        axes[0].set_title(_run_title(run), fontsize=9)
    return fig


def _curve_panel(ax, a: Mapping, summary: Mapping, prefix: str) -> list:
    """The train and test curves ``{prefix}_train``, ``{prefix}_test`` of every member (thin) and
    their seed mean (thick); returns the legend handles."""
    handles = []
    for k, key in enumerate((f"{prefix}_train", f"{prefix}_test")):
        if key not in a or key not in summary:
            continue  # no test points (task.n_test = 0): no test curve
        for member in np.atleast_2d(a[key]):
            ax.plot(a["steps"], member, color=colour(k), alpha=0.3, lw=0.8)
        ax.plot(a["steps"], summary[key]["mean"], color=colour(k), lw=1.8)
        name = key.replace("_", " ").replace("acc", "accuracy")
        handles.append(entry(f"{name}, seed mean", color=colour(k), lw=1.8))
    handles.append(entry("thin: one seed each", color="0.4", alpha=0.5, lw=0.8))
    return handles


def _run_title(run: Run) -> str:
    """What a finite or limit run is, for its figure's title (a limit has no width n)."""
    m = run.config.model
    lim = run.meta.get("limit")
    if run.meta.get("kind") != "limit" or not isinstance(lim, dict):
        return f"n={m.width}, L={m.depth}, {m.activation}, {m.backward}"
    mode = {"exact": "mode A", "decoupled": "mode B (GIA)"}.get(lim["coupling"], lim["coupling"])
    readout = {"features": "P2", "ntk": "P1"}.get(lim["readout"], lim["readout"])
    size = f", M={lim['particles']}" if lim["method"] == "particles" else ""
    return (
        f"limit n=∞ ({lim['method']}{size}), L={m.depth}, K={lim['layer_steps']}, "
        f"{mode}, {readout}, {m.activation}"
    )
