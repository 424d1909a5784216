"""Figures of a saved `kind = "transfer"` run (§6, T8–T10), drawn from its summary
(`nfd.analysis.transfer_analysis`: seed means ± SE, argmins, collapse η0); plots never compute.
Colour is depth (dark to light: shallow to deep) or variant, every n = ∞ limit black and dashed
(its markers in the series' colour), error bars ±1 SE, legends outside the data."""

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..analysis._transfer import expected_dz_slopes
from ..runs import Run
from ._style import (
    LIMIT,
    colour,
    entry,
    legend_outside,
    limit_entry,
    line_colours,
    log_axis,
    note_empty,
    style,
)

THIN_LIMIT = {**LIMIT, "lw": 1.5}  # the limit in a small panel, one per depth


def _lr_panel(ax, curves: Mapping, v: int, depths) -> None:
    """One variant's loss vs η0 per depth (★ argmin; black dashed: the limit), the y axis
    clipped."""
    lrs, argmin = curves["lrs"], curves["argmin"]
    for j, (L, color) in enumerate(zip(depths, line_colours(len(depths)), strict=True)):
        mean, se = curves["mean"][v, j], curves["se"][v, j]
        ax.errorbar(lrs, mean, se, color=color, marker="o", ms=3, lw=1.2, label=f"L={int(L)}")
        if np.isfinite(argmin["best"][v, j]):
            best, best_loss = argmin["best"][v, j], argmin["best_loss"][v, j]
            ax.plot(best, best_loss, "*", color=color, ms=9, mec="k", mew=0.5)
        lm = curves["limit"][v, j]
        if np.any(np.isfinite(lm)):
            ax.plot(lrs, lm, **THIN_LIMIT, marker="D", ms=3, mfc=color, mec=color)
    log_axis(ax, "x", base=2, values=lrs)
    logy = log_axis(ax, "y")
    note_empty(ax)
    # a near-diverged η0 (loss ~1e30, finite) would flatten every curve: clip the
    # axis at 10× the worst loss at the grid's smallest η0 (about the untrained loss)
    means = curves["mean"][v]  # (J, R)
    if logy and np.any(np.isfinite(means[:, 0]) & (means[:, 0] > 0)):
        high = min(ax.get_ylim()[1], 10 * float(np.nanmax(means[:, 0])))
        ax.set_ylim(0.5 * float(np.nanmin(np.where(means > 0, means, np.nan))), high)


def loss_vs_lr_figure(run: Run, summary: Mapping) -> Figure:
    """Loss after the budget vs η0, one curve per depth (largest width), limit dashed."""
    a, cfg = run.arrays, run.config
    key = summary["loss"]
    opts, labels, depths = cfg.transfer.optimizers, summary["labels"], a["depths"]
    i = len(a["widths"]) - 1
    with style():
        fig, axes = plt.subplots(
            len(opts),
            len(labels),
            figsize=(3.0 * len(labels) + 2.0, 2.6 * len(opts)),
            squeeze=False,
            layout="constrained",
        )
        for o, opt in enumerate(opts):
            for v, label in enumerate(labels):
                ax = axes[o, v]
                _lr_panel(ax, summary["curves"][o], v, depths)
                ax.set_title(f"{opt}, {label}", fontsize=9)
                ax.set_xlabel("η0")
                if v == 0:
                    ax.set_ylabel(key.replace("_", " ") + f" at t={cfg.optim.steps}")
        handles = [
            entry(f"finite, L={int(L)}", color=c, marker="o", ms=3)
            for L, c in zip(depths, line_colours(len(depths)), strict=True)
        ]
        handles.append(
            limit_entry("limit n = ∞, K = L\n(marker: depth's colour)", marker="D", ms=3)
        )
        handles.append(entry("★ argmin η0", ls="", marker="*", ms=9, color="0.6", mec="k"))
        legend_outside(fig, handles, title="bars: ±1 SE over seeds")
        fig.suptitle(
            f"{cfg.task.name}: loss vs η0 per depth, n={int(a['widths'][i])}, "
            f"{cfg.model.activation}, {cfg.seeds} seeds (★ argmin)",
            fontsize=9,
        )
    return fig


def argmin_figure(run: Run, summary: Mapping) -> Figure:
    """Argmin η0 vs L (with the 2-SE tie range) and the best loss vs L, per variant."""
    a, cfg = run.arrays, run.config
    key = summary["loss"]
    opts, labels, depths = cfg.transfer.optimizers, summary["labels"], a["depths"]
    i = len(a["widths"]) - 1
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), layout="constrained")
        for o, opt in enumerate(opts):
            am = summary["curves"][o]["argmin"]
            for v, label in enumerate(labels):
                color = colour(v)
                ls = "-" if opt == "sgd" else ":"
                best, lo, hi = am["best"][v], am["lo"][v], am["hi"][v]
                axes[0].errorbar(
                    depths * (1 + 0.03 * v),
                    best,
                    yerr=[best - lo, hi - best],
                    color=color,
                    ls=ls,
                    marker="o",
                    ms=3,
                    capsize=2,
                    label=f"{opt}, {label}",
                )
                axes[1].plot(depths, am["best_loss"][v], ls=ls, color=color, marker="o", ms=3)
        for ax in axes:
            log_axis(ax, "x", base=2, values=depths)
            ax.set_xlabel("depth L")
        log_axis(axes[0], "y", base=2)
        axes[0].set_ylabel("argmin η0 (bars: within 2 SE)")
        log_axis(axes[1], "y")
        axes[1].set_ylabel("best " + key.replace("_", " "))
        for ax in axes:
            note_empty(ax)
        legend_outside(fig, where="below", ncols=5, title="solid: sgd, dotted: adam", fontsize=6)
        fig.suptitle(f"learning-rate transfer across depth (n={int(a['widths'][i])})", fontsize=9)
    return fig


def _collapse_series(axes, a, curves: Mapping, k_w1: tuple, o: int, opt: str, labels) -> None:
    """One optimizer's series: the block update (every variant) and, per two-layer variant, W1's
    own update with its limit and slope ``a − ½`` guide, and (first optimizer) W1's NTK share."""
    depths = a["depths"]
    expected = expected_dz_slopes(a)
    ls = "-" if opt == "sgd" else ":"
    for v, label in enumerate(labels):
        color = colour(v)
        mean, se = curves["move"][0][v], curves["move"][1][v]
        axes[2].errorbar(
            depths, mean, se, color=color, ls=ls, marker="o", ms=3, label=f"{opt}, {label}"
        )
        if not a["two_layer"][v]:
            continue
        mean, se = curves["dz"][0][v], curves["dz"][1][v]
        axes[0].errorbar(
            depths, mean, se, color=color, ls=ls, marker="o", ms=3, label=f"{opt}, {label}"
        )
        lim, lse = curves["limit_dz"][0][v], curves["limit_dz"][1][v]
        if np.any(np.isfinite(lim)):
            axes[0].errorbar(depths, lim, lse, **THIN_LIMIT, marker="x", ms=5, mec=color)
        if np.isfinite(mean[0]):
            ref = mean[0] * (depths / depths[0]) ** expected[v]
            axes[0].plot(depths, ref, color=color, lw=0.6, alpha=0.5)
        if o == 0:
            axes[1].plot(depths, a["k_w1"][v], **THIN_LIMIT, marker="D", ms=3, mfc=color, mec=color)
            km, kse = k_w1[0][v], k_w1[1][v]
            axes[1].errorbar(depths, km, kse, color=color, ls="none", marker="o", ms=3)


def collapse_figure(run: Run, summary: Mapping) -> Figure:
    """One-step diagnostics vs L at each optimizer's collapse η0 (largest width): W1's own
    feature update δz^own (finite, and the limit for SGD) with the slope ``a − ½``, W1's NTK
    share (n = ∞ recursion and finite networks), and T8's coordinate ``L ×`` block update."""
    a, cfg = run.arrays, run.config
    labels = summary["labels"]
    opts = cfg.transfer.optimizers
    curves = summary["collapse_curves"]
    with style():
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), layout="constrained")
        for o, opt in enumerate(opts):
            per = curves["per_optimizer"][o]
            _collapse_series(axes, a, per, curves["k_w1_finite"], o, opt, labels)
        lr = ", ".join(f"{o} η0={x:g}" for o, x in zip(opts, a["collapse_lr"], strict=True))
        axes[0].set_ylabel("rms δz^own after one step")
        axes[0].set_title("solid: sgd, dotted: adam; thin: expected slope", fontsize=8)
        axes[1].set_ylabel("K_W1 at t = 0 (mean diagonal)")
        axes[1].set_title("black dashed: n = ∞ recursion; dots: finite", fontsize=8)
        axes[2].set_ylabel("L × rms block update after one step")
        axes[2].set_title("T8 coordinate check (flat = depth-μP)", fontsize=8)
        for ax in axes:
            log_axis(ax, "x", base=2, values=a["depths"])
            log_axis(ax, "y")
            note_empty(ax)
            ax.set_xlabel("depth L")
        handles = axes[2].get_legend_handles_labels()[0]
        handles.append(limit_entry("limit n = ∞ (sgd; marker: variant's colour)", marker="x"))
        legend_outside(fig, handles, where="below", ncols=4, title="bars: ±1 SE", fontsize=6)
        fig.suptitle(
            f"first-layer collapse of two-layer blocks (§6, T9), n={int(a['widths'][-1])}, {lr}",
            fontsize=9,
        )
    return fig


def t10_figure(run: Run, summary: Mapping) -> Figure:
    """Mean squared feature vs τ per depth: pre-activation (with the n = ∞ recursion) vs post."""
    a = run.arrays
    depths, taus = a["depths"], a["taus"]
    curves = summary["t10_curves"]
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
        for j, (L, color) in enumerate(zip(depths, line_colours(len(depths)), strict=True)):
            for ax, key in ((axes[0], "t10_pre"), (axes[1], "t10_post")):
                mean, se = curves[key][0][j], curves[key][1][j]
                ax.errorbar(taus, mean, se, color=color, marker="o", ms=3, label=f"L={int(L)}")
            ref = a["t10_ref"][j]
            axes[0].plot(taus, ref, **THIN_LIMIT, marker="D", ms=3, mfc=color, mec=color)
        axes[0].plot(taus, np.exp(taus / 2), color="k", ls=":", lw=2, label="e^{τ/2} (n, L → ∞)")
        axes[0].set_title("pre-activation H(τ)_μμ", fontsize=8)
        axes[1].set_title("post-activation h ← φ(h + bWh/√n)", fontsize=8)
        log_axis(axes[1], "y")
        limit = limit_entry("n = ∞ at K = L (marker: depth's colour)", lw=1.5, marker="D", ms=3)
        for ax in axes:
            note_empty(ax)
            ax.set_xlabel("layer time τ")
            ax.set_ylabel("mean squared feature")
        legend_outside(
            axes[0], [*axes[0].get_legend_handles_labels()[0], limit], title="bars: ±1 SE"
        )
        legend_outside(axes[1], title="bars: ±1 SE")
        fig.suptitle("T10: ReLU at initialisation, 1/√L branches", fontsize=9)
    return fig


def transfer_figures(run: Run, summary: Mapping) -> dict[str, Figure]:
    """Every figure of a transfer run, by name (``summary``: `nfd.analysis.transfer_analysis`)."""
    figs = {
        "transfer_loss": loss_vs_lr_figure(run, summary),
        "transfer_argmin": argmin_figure(run, summary),
    }
    if "dz_own" in run.arrays and np.any(run.arrays["two_layer"]):
        figs["collapse"] = collapse_figure(run, summary)
    if "t10_pre" in run.arrays:
        figs["post_activation"] = t10_figure(run, summary)
    return figs
