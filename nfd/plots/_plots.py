"""The house look of every figure (an `rc_context`), and the loss figures of finite, limit and demo
runs: a saved run and its `nfd.analysis.curves_summary` in, a matplotlib Figure out."""

import contextlib
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window
import matplotlib.pyplot as plt  # noqa: E402
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


def demo_figure(run: Run, summary: Mapping) -> Figure:
    """Train and test loss vs step for every (width, depth) of a demo run (mean ± SE over seeds;
    ``summary``: `nfd.analysis.curves_summary` of its arrays)."""
    a = run.arrays
    widths, depths, steps = a["widths"], a["depths"], a["steps"]
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True, layout="constrained")
        cmap = plt.get_cmap("viridis")
        cfg = run.config
        for ax, key, title in ((axes[0], "loss_train", "train"), (axes[1], "loss_test", "test")):
            for j, L in enumerate(depths):
                for i, n in enumerate(widths):
                    mean, se = summary[key]["mean"][i, j], summary[key]["se"][i, j]
                    color = cmap(j / max(len(depths) - 1, 1))
                    ls = ["-", "--", ":", "-."][i % 4]
                    ax.plot(steps, mean, ls, color=color, lw=1.2, label=f"n={n}, L={L}")
                    ax.fill_between(steps, mean - se, mean + se, color=color, alpha=0.15, lw=0)
                lim = summary.get("limit_" + key)
                if lim is not None:
                    mean = lim["mean"][j]
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


def loss_figure(run: Run, summary: Mapping) -> Figure:
    """Train and test loss vs step of a finite run (each member, and the seed mean of
    ``summary``: `nfd.analysis.curves_summary` of its arrays)."""
    a = run.arrays
    steps = a["steps"]
    with style():
        fig, ax = plt.subplots(figsize=(4.5, 3.2), layout="constrained")
        for key, color in (("loss_train", "C0"), ("loss_test", "C1")):
            vals = a[key]
            for member in vals:
                ax.plot(steps, member, color=color, alpha=0.25, lw=0.8)
            mean = summary[key]["mean"]
            ax.plot(steps, mean, color=color, lw=1.6, label=key.replace("_", " "))
        ax.set_yscale("log")
        ax.set_xlabel("training step t")
        ax.set_ylabel("loss")
        ax.legend()
        m = run.config.model
        ax.set_title(f"n={m.width}, L={m.depth}, {m.activation}, {m.backward}")
    return fig
