"""Figures: a saved run in, a matplotlib Figure out. The house look is an `rc_context`."""

import contextlib
import warnings
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..runs import Run  # noqa: E402

HOUSE: dict[str, Any] = {
    "figure.dpi": 120,
    "savefig.dpi": 150,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 9,
    "legend.fontsize": 7,
    "legend.frameon": False,
}


@contextlib.contextmanager
def style():
    """The house style for every nfd figure."""
    with plt.rc_context(HOUSE):  # pyright: ignore[reportArgumentType]
        yield


def _mean_se(x: np.ndarray, axis: int = 0):
    """Mean and standard error over ``axis``, ignoring non-finite values (diverged members)."""
    x = np.where(np.isfinite(x), x, np.nan)
    n = np.sum(np.isfinite(x), axis=axis)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: every member diverged
        mean = np.nanmean(x, axis=axis)
        sd = np.nanstd(x, axis=axis, ddof=1) if x.shape[axis] > 1 else np.zeros_like(mean)
    return mean, np.where(n > 1, sd / np.sqrt(np.maximum(n, 1)), 0.0)


def demo_figure(run: Run) -> Figure:
    """Train and test loss vs step for every (width, depth) of a demo run (mean ± SE over seeds)."""
    a = run.arrays
    widths, depths, steps = a["widths"], a["depths"], a["steps"]
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True, layout="constrained")
        cmap = plt.get_cmap("viridis")
        cfg = run.config
        for ax, key, title in ((axes[0], "loss_train", "train"), (axes[1], "loss_test", "test")):
            for j, L in enumerate(depths):
                for i, n in enumerate(widths):
                    mean, se = _mean_se(a[key][i, j], axis=0)
                    color = cmap(j / max(len(depths) - 1, 1))
                    ls = ["-", "--", ":", "-."][i % 4]
                    ax.plot(steps, mean, ls, color=color, lw=1.2, label=f"n={n}, L={L}")
                    ax.fill_between(steps, mean - se, mean + se, color=color, alpha=0.15, lw=0)
                lim = a.get("limit_" + key)
                if lim is not None:
                    mean, se = _mean_se(lim[j], axis=0)
                    color = cmap(j / max(len(depths) - 1, 1))
                    ax.plot(steps, mean, color="k", lw=2.2, alpha=0.9, zorder=0)
                    ax.plot(
                        steps,
                        mean,
                        color=color,
                        lw=1.0,
                        zorder=0.5,
                        label=f"limit n=∞, K=L={L} ({cfg.limit.coupling})",
                    )
            ax.set_yscale("log")
            ax.set_xlabel("training step t")
            ax.set_title(f"{title} loss")
        axes[0].set_ylabel("loss")
        axes[1].legend(ncols=1, loc="upper right")
        fig.suptitle(
            f"{cfg.task.name}: {cfg.model.param} ResNet, {cfg.model.activation}, "
            f"{cfg.optim.name} η0={cfg.optim.lr:g}, γ0={cfg.model.gamma0:g}, {cfg.seeds} seeds",
            fontsize=9,
        )
    return fig


def loss_figure(run: Run) -> Figure:
    """Train and test loss vs step of a finite run (each member, and the seed mean)."""
    a = run.arrays
    steps = a["steps"]
    with style():
        fig, ax = plt.subplots(figsize=(4.5, 3.2), layout="constrained")
        for key, color in (("loss_train", "C0"), ("loss_test", "C1")):
            vals = a[key]
            for member in vals:
                ax.plot(steps, member, color=color, alpha=0.25, lw=0.8)
            mean, _ = _mean_se(vals)
            ax.plot(steps, mean, color=color, lw=1.6, label=key.replace("_", " "))
        ax.set_yscale("log")
        ax.set_xlabel("training step t")
        ax.set_ylabel("loss")
        ax.legend()
        m = run.config.model
        ax.set_title(f"n={m.width}, L={m.depth}, {m.activation}, {m.backward}")
    return fig


def _fmt(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.2f}"


def sweep_figure(run: Run) -> Figure:
    """A sweep: (left) distance of finite predictions to each limit mode vs width, per depth, with
    the reference slope −1; (right) final test loss vs learning rate (or width), finite and limit."""
    from ..experiments import convergence_summary

    a = run.arrays
    widths, depths, lrs = a["widths"], a["depths"], a["lrs"]
    summary = convergence_summary(a)  # analysis of the saved arrays (bootstrap seed fixed)
    cmap = plt.get_cmap("viridis")
    styles = {"exact": ("-", "o"), "decoupled": ("--", "s")}
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.4), layout="constrained")
        ax = axes[0]
        r = 0  # first learning rate
        for mode, res in summary["modes"].items():
            ls, marker = styles.get(mode, ("-.", "^"))
            d, se = np.asarray(res["d"], float), np.asarray(res["se"], float)
            for j, L in enumerate(depths):
                color = cmap(j / max(len(depths) - 1, 1))
                ax.errorbar(
                    widths,
                    d[:, j, r],
                    yerr=se[:, j, r],
                    ls=ls,
                    marker=marker,
                    ms=3,
                    color=color,
                    capsize=2,
                    lw=1.1,
                    label=f"L={L}, {mode} (slope {res['fits'][j][r]['slope']:+.2f})",
                )
        if summary["modes"]:
            ref = np.nanmax(
                [np.nanmax(np.asarray(m["d"], float)) for m in summary["modes"].values()]
            )
            if np.isfinite(ref) and ref > 0:
                ax.plot(widths, ref * widths[0] / widths, ":", color="0.5", lw=1, label="∝ 1/n")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width n")
        ax.set_ylabel("‖E f_finite − f_limit‖ (K = L)")
        ax.set_title(f"finite → limit, η0 = {lrs[r]:g}")
        ax.legend(fontsize=6)
        ax = axes[1]
        final = a["loss_test"][..., -1]  # (W, Ld, Lr, E)
        key_lim = "limit_loss_test"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for j, L in enumerate(depths):
                color = cmap(j / max(len(depths) - 1, 1))
                if len(lrs) > 1:
                    mean, se = _mean_se(final[-1, j], axis=-1)
                    ax.errorbar(
                        lrs,
                        mean,
                        yerr=se,
                        color=color,
                        marker="o",
                        ms=3,
                        capsize=2,
                        label=f"n={widths[-1]}, L={L}",
                    )
                    if key_lim in a:
                        lm, _ = _mean_se(a[key_lim][0, j, :, :, -1], axis=-1)
                        ax.plot(lrs, lm, color=color, ls="--", lw=1.5, label=f"limit L={L}")
                    ax.set_xscale("log", base=2)
                    ax.set_xlabel("learning rate η0")
                else:
                    mean, se = _mean_se(final[:, j, 0], axis=-1)
                    ax.errorbar(
                        widths,
                        mean,
                        yerr=se,
                        color=color,
                        marker="o",
                        ms=3,
                        capsize=2,
                        label=f"finite L={L}",
                    )
                    if key_lim in a:
                        for x, mode in enumerate(a["couplings"]):
                            lm, _ = _mean_se(a[key_lim][x, j, 0, :, -1], axis=-1)
                            ax.axhline(
                                float(lm),
                                color=color,
                                ls=styles.get(str(mode), "-")[0],
                                lw=1,
                                label=f"limit L={L} ({mode})",
                            )
                    ax.set_xscale("log", base=2)
                    ax.set_xlabel("width n")
        ax.set_yscale("log")
        ax.set_ylabel(f"test loss at t = {int(a['steps'][-1])}")
        ax.legend(fontsize=6)
        m = run.config.model
        fig.suptitle(
            f"{run.config.task.name}: {m.param}, {m.activation}, γ0={m.gamma0:g}, "
            f"{run.config.seeds} seeds",
            fontsize=9,
        )
    return fig
