"""Figures of a saved `kind = "transfer"` run (spec §6, T8–T10): drawn from its arrays only."""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..runs import Run
from ._plots import _mean_se, style


def _labels(a) -> list[str]:
    return [
        "one-layer" if not t else f"two-layer, a={float(x):g}"
        for t, x in zip(a["two_layer"], a["exponents"], strict=True)
    ]


def _loss_key(a) -> str:
    return "loss_test" if np.any(np.isfinite(a["loss_test"])) else "loss_train"


def loss_vs_lr_figure(run: Run) -> Figure:
    """Loss after the budget vs η0, one curve per depth (largest width), limit dashed."""
    from ..experiments._transfer import argmin_lrs

    a, cfg = run.arrays, run.config
    key = _loss_key(a)
    opts, labels, depths = cfg.transfer.optimizers, _labels(a), a["depths"]
    i = len(a["widths"]) - 1
    cmap = plt.get_cmap("viridis")
    with style():
        fig, axes = plt.subplots(
            len(opts),
            len(labels),
            figsize=(3.0 * len(labels), 2.6 * len(opts)),
            squeeze=False,
            layout="constrained",
        )
        for o, opt in enumerate(opts):
            lrs = a["lrs"][o]
            R = int(np.sum(np.isfinite(lrs)))
            for v, label in enumerate(labels):
                ax = axes[o, v]
                for j, L in enumerate(depths):
                    color = cmap(j / max(len(depths) - 1, 1))
                    mean, se = _mean_se(a[key][o, v, i, j, :R], axis=-1)
                    ax.errorbar(
                        lrs[:R],
                        mean,
                        se,
                        color=color,
                        marker="o",
                        ms=3,
                        lw=1.2,
                        label=f"L={int(L)}",
                    )
                    am = argmin_lrs(a[key][o, v, i, j, :R], lrs[:R])
                    if np.isfinite(am["best"]):
                        ax.plot(
                            am["best"], am["best_loss"], "*", color=color, ms=9, mec="k", mew=0.5
                        )
                    lim = a["limit_" + key][o, v, j, :R]
                    if np.any(np.isfinite(lim)):
                        lm, _ = _mean_se(lim, axis=-1)
                        ax.plot(lrs[:R], lm, "--", color=color, lw=1.2)
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                # a near-diverged η0 (loss ~1e30, finite) would flatten every curve: clip the
                # axis at 10× the worst loss at the grid's smallest η0 (about the untrained loss)
                means = _mean_se(a[key][o, v, i, :, :R], axis=-1)[0]  # (J, R)
                if np.any(np.isfinite(means[:, 0])) and np.any(means > 0):
                    high = min(ax.get_ylim()[1], 10 * float(np.nanmax(means[:, 0])))
                    ax.set_ylim(0.5 * float(np.nanmin(np.where(means > 0, means, np.nan))), high)
                ax.set_title(f"{opt}, {label}", fontsize=9)
                ax.set_xlabel("η0")
                if v == 0:
                    ax.set_ylabel(key.replace("_", " ") + f" at t={cfg.optim.steps}")
        axes[0, -1].legend(fontsize=7, title="finite (solid), limit K=L (dashed)", title_fontsize=7)
        fig.suptitle(
            f"{cfg.task.name}: loss vs η0 per depth, n={int(a['widths'][i])}, "
            f"{cfg.model.activation}, {cfg.seeds} seeds (★ argmin)",
            fontsize=9,
        )
    return fig


def argmin_figure(run: Run) -> Figure:
    """Argmin η0 vs L (with the 2-SE tie range) and the best loss vs L, per variant."""
    from ..experiments._transfer import argmin_lrs

    a, cfg = run.arrays, run.config
    key = _loss_key(a)
    opts, labels, depths = cfg.transfer.optimizers, _labels(a), a["depths"]
    i = len(a["widths"]) - 1
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), layout="constrained")
        for o, opt in enumerate(opts):
            lrs = a["lrs"][o]
            R = int(np.sum(np.isfinite(lrs)))
            am = argmin_lrs(a[key][o, :, i, :, :R], lrs[:R])
            for v, label in enumerate(labels):
                color = f"C{v}"
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
            ax.set_xscale("log", base=2)
            ax.set_xlabel("depth L")
        axes[0].set_yscale("log", base=2)
        axes[0].set_ylabel("argmin η0 (bars: within 2 SE)")
        axes[1].set_yscale("log")
        axes[1].set_ylabel("best " + key.replace("_", " "))
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncols=5, fontsize=6)
        fig.suptitle(f"learning-rate transfer across depth (n={int(a['widths'][i])})", fontsize=9)
    return fig


def collapse_figure(run: Run) -> Figure:
    """One-step diagnostics vs L at each optimizer's collapse η0 (largest width): W1's own
    feature update δz^own (finite, and the limit for SGD) with the slope ``a − ½``, W1's NTK
    share (n = ∞ recursion and finite networks), and T8's coordinate ``L ×`` block update."""
    from ..experiments._transfer import _at_collapse_lr

    a, cfg = run.arrays, run.config
    labels, depths = _labels(a), a["depths"]
    opts = cfg.transfer.optimizers
    with style():
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), layout="constrained")
        for o, opt in enumerate(opts):
            ls = "-" if opt == "sgd" else ":"
            dz = _at_collapse_lr(a, "dz_own", o)[:, -1]  # (V, J, S)
            ldz = _at_collapse_lr(a, "limit_dz_own", o)  # (V, J, S)
            move = _at_collapse_lr(a, "block_move", o)[:, -1]  # (V, J, S)
            for v, label in enumerate(labels):
                color = f"C{v}"
                mean, se = _mean_se(move[v], axis=-1)
                axes[2].errorbar(
                    depths, mean, se, color=color, ls=ls, marker="o", ms=3, label=f"{opt}, {label}"
                )
                if not a["two_layer"][v]:
                    continue
                x = float(a["exponents"][v])
                mean, se = _mean_se(dz[v], axis=-1)
                axes[0].errorbar(
                    depths, mean, se, color=color, ls=ls, marker="o", ms=3, label=f"{opt}, {label}"
                )
                lim, lse = _mean_se(ldz[v], axis=-1)
                if np.any(np.isfinite(lim)):
                    axes[0].errorbar(depths, lim, lse, color=color, ls="--", marker="x", ms=4)
                if np.isfinite(mean[0]):
                    ref = mean[0] * (depths / depths[0]) ** (x - 0.5)
                    axes[0].plot(depths, ref, color=color, lw=0.6, alpha=0.5)
                if o == 0:
                    axes[1].plot(depths, a["k_w1"][v], color=color, label=label)
                    km, kse = _mean_se(a["k_w1_finite"][v, -1], axis=-1)
                    axes[1].errorbar(depths, km, kse, color=color, ls="none", marker="o", ms=3)
        lr = ", ".join(f"{o} η0={x:g}" for o, x in zip(opts, a["collapse_lr"], strict=True))
        axes[0].set_ylabel("rms δz^own after one step")
        axes[0].set_title("solid sgd, dotted adam, dashed limit; thin: slope a − ½", fontsize=8)
        axes[1].set_ylabel("K_W1 at t = 0 (mean diagonal)")
        axes[1].set_title("line: n = ∞ recursion; dots: finite (± SE)", fontsize=8)
        axes[2].set_ylabel("L × rms block update after one step")
        axes[2].set_title("T8 coordinate check (flat = depth-μP)", fontsize=8)
        for ax in axes:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("depth L")
        handles, names = axes[2].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncols=5, fontsize=6)
        fig.suptitle(
            f"first-layer collapse of two-layer blocks (spec §6, T9), n={int(a['widths'][-1])}, "
            f"{lr}",
            fontsize=9,
        )
    return fig


def t10_figure(run: Run) -> Figure:
    """Mean squared feature vs τ per depth: pre-activation (with the n = ∞ recursion) vs post."""
    a = run.arrays
    depths, taus = a["depths"], a["taus"]
    cmap = plt.get_cmap("viridis")
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), layout="constrained")
        for j, L in enumerate(depths):
            color = cmap(j / max(len(depths) - 1, 1))
            for ax, key in ((axes[0], "t10_pre"), (axes[1], "t10_post")):
                mean, se = _mean_se(a[key][j], axis=0)
                ax.errorbar(taus, mean, se, color=color, marker="o", ms=3, label=f"L={int(L)}")
            axes[0].plot(taus, a["t10_ref"][j], ":", color=color, lw=1)
        axes[0].plot(taus, np.exp(taus / 2), "k--", lw=1, label="e^{τ/2} (L → ∞)")
        axes[0].set_title("pre-activation H(τ)_μμ (dotted: n = ∞ at K = L)", fontsize=8)
        axes[1].set_title("post-activation h ← φ(h + bWh/√n)", fontsize=8)
        axes[1].set_yscale("log")
        for ax in axes:
            ax.set_xlabel("layer time τ")
            ax.set_ylabel("mean squared feature")
            ax.legend(fontsize=7)
        fig.suptitle("T10: ReLU at initialisation, 1/√L branches", fontsize=9)
    return fig


def transfer_figures(run: Run) -> dict[str, Figure]:
    """Every figure of a transfer run, by name."""
    figs = {"transfer_loss": loss_vs_lr_figure(run), "transfer_argmin": argmin_figure(run)}
    if "dz_own" in run.arrays and np.any(run.arrays["two_layer"]):
        figs["collapse"] = collapse_figure(run)
    if "t10_pre" in run.arrays:
        figs["post_activation"] = t10_figure(run)
    return figs
