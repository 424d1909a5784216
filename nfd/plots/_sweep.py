"""Figures of a saved sweep (`kind = "sweep"`): distances of the finite predictions and NTKs to
each limit mode, and the depth scaling of the loss, drawn from its summary
(`nfd.analysis.convergence_summary`); plots never compute."""

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..runs import Run
from ._plots import style


def _fmt(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.2f}"


def _arr(x) -> np.ndarray:
    """A saved (JSON) nested list as a float array; ``None`` (a saved NaN) becomes NaN."""
    return np.array(x, dtype=float)


SWEEP_STYLES = {"exact": ("-", "o", "mode A"), "decoupled": ("--", "s", "mode B")}
KINF_STYLES = {"exact": (":", "v"), "decoupled": ("-.", "D")}  # the K → ∞ (Richardson) modes


def _mode_style(mode: str) -> tuple[str, str, str, str]:
    """Line style, marker, legend name and short subscript of a sweep's limit mode; ``X_kinf``
    (mode X at K → ∞, Richardson of K = L and 2L) gets its own style and ``K→∞`` in its name."""
    if mode.endswith("_kinf"):
        base = mode.removesuffix("_kinf")
        ls, marker = KINF_STYLES.get(base, (":", "^"))
        name = SWEEP_STYLES.get(base, ("", "", base))[2]
        return ls, marker, f"{name}, K→∞", f"{name.split()[-1]},K→∞"
    ls, marker, name = SWEEP_STYLES.get(mode, ("-.", "^", mode))
    return ls, marker, f"{name}, K=L", name.split()[-1]


def _width_panel(ax, modes: Mapping, widths, depths, r: int, slope_of) -> None:
    """Distances ``res["d"] (W, Ld, Lr)`` ± ``res["se"]`` vs width for every mode and depth at
    learning rate ``r``, labelled with ``slope_of(res, j)``'s ``slope`` ± ``slope_se``; a 1/n
    guide through the largest distance."""
    cmap = plt.get_cmap("viridis")
    top = np.nan
    for mode, res in modes.items():
        ls, marker, name, _ = _mode_style(mode)
        d, se = _arr(res["d"]), _arr(res["se"])
        top = np.nanmax([top, np.nanmax(d[:, :, r])]) if np.isfinite(d).any() else top
        for j, L in enumerate(depths):
            fit = slope_of(res, j)
            slope, slope_se = (_arr(fit.get(k)) for k in ("slope", "slope_se"))
            ax.errorbar(
                widths,
                d[:, j, r],
                yerr=se[:, j, r],
                ls=ls,
                marker=marker,
                ms=3,
                color=cmap(j / max(len(depths) - 1, 1)),
                capsize=2,
                lw=1.1,
                label=f"L={L:g}, {name}: slope {_fmt(slope)} ± {abs(float(slope_se)):.2f}",
            )
    if np.isfinite(top) and top > 0:
        ax.plot(widths, top * widths[0] / widths, ":", color="0.5", lw=1, label="∝ 1/n")


def sweep_figure(run: Run, summary: Mapping) -> Figure:
    """A sweep: (left) debiased distance of the finite seed-mean predictions to each limit mode
    (K = L, and K → ∞ for the ``X_kinf`` modes) vs width, per depth, with the fitted n-slope
    ± SE and a 1/n guide; (right) the distance of the n → ∞ Richardson extrapolation ``f∞`` to
    each mode vs depth."""
    widths, depths, lrs = (np.asarray(summary[k], float) for k in ("widths", "depths", "lrs"))
    r = 0  # first learning rate
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.4), layout="constrained")
        ax = axes[0]
        _width_panel(ax, summary["modes"], widths, depths, r, lambda res, j: res["fits"][j][r])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width n")
        ax.set_ylabel("‖E f_finite − f_limit‖")
        ax.set_title(f"finite → limit, η0 = {lrs[r]:g}")
        ax.legend(fontsize=6, ncol=2 if len(summary["modes"]) * len(depths) > 8 else 1)
        ax = axes[1]
        for k, (mode, res) in enumerate(summary["modes"].items()):
            ls, marker, _, short = _mode_style(mode)
            d, se = _arr(res["extrap"]["d"])[:, r], _arr(res["extrap"]["se"])[:, r]
            ax.errorbar(
                depths * (1 + 0.04 * k),
                d,
                yerr=se,
                ls=ls,
                marker=marker,
                ms=4,
                color=f"C{k}",
                capsize=2,
                label=f"‖f∞ − f_{short}‖",
            )
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("depth L (= K)")
        ax.set_ylabel("distance of n → ∞ extrapolation")
        ax.set_title("n → ∞: f(n) = f∞ + a/n vs each mode", fontsize=9)
        ax.legend(fontsize=7)
        _sweep_title(fig, run)
    return fig


def kernel_figure(run: Run, summary: Mapping) -> Figure:
    """A sweep with ``output.ntk``: relative debiased distance of the finite seed-mean NTK (every
    saved step) to each limit mode vs width, per depth, with its n-slope ± SE and a 1/n guide."""
    widths, depths, lrs = (np.asarray(summary[k], float) for k in ("widths", "depths", "lrs"))
    r = 0
    with style():
        fig, ax = plt.subplots(figsize=(5.2, 3.6), layout="constrained")
        kern = summary.get("kernels", {})
        _width_panel(ax, kern, widths, depths, r, lambda res, j: res["slopes"][j][r])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width n")
        ax.set_ylabel("‖E Θ_finite − E Θ_limit‖ / ‖E Θ_limit‖")
        ax.set_title(f"NTK, finite → limit, η0 = {lrs[r]:g}", fontsize=9)
        ax.legend(fontsize=6, ncol=2 if len(kern) * len(depths) > 8 else 1)
        _sweep_title(fig, run)
    return fig


def _sweep_title(fig: Figure, run: Run) -> None:
    m = run.config.model
    fig.suptitle(
        f"{run.config.task.name}: {m.param}, {m.activation}, γ0={m.gamma0:g}, "
        f"{run.config.seeds} seeds, M={run.config.limit.particles} particles",
        fontsize=9,
    )


def _loss_width_panel(ax, summary: Mapping, fit: Mapping, r: int) -> None:
    """The final test loss vs 1/n per depth with the fitted ``L∞ + α/n + b/L`` lines and the
    limit losses at 1/n = 0."""
    widths, depths = (np.asarray(summary[k], float) for k in ("widths", "depths"))
    loss = summary["loss"]
    y, ys = _arr(loss["finite"])[:, :, r], _arr(loss["finite_se"])[:, :, r]
    L_inf, alpha, b = (float(_arr(fit[k])) for k in ("L_inf", "alpha", "b"))
    cmap = plt.get_cmap("viridis")
    xs = np.linspace(0, 1 / widths.min(), 50)
    for j, L in enumerate(depths):
        color = cmap(j / max(len(depths) - 1, 1))
        ax.errorbar(
            1 / widths,
            y[:, j],
            yerr=ys[:, j],
            ls="",
            marker="o",
            ms=3,
            color=color,
            capsize=2,
            label=f"finite, L={L:g}",
        )
        if np.isfinite(L_inf):
            ax.plot(xs, L_inf + alpha * xs + b / L, color=color, lw=1)
        for k, mode in enumerate(loss["limit"]):
            _, marker, name, _ = _mode_style(mode)
            ax.errorbar(
                [-0.03 * (k + 1) / widths.min()],
                [_arr(loss["limit"][mode])[j, r]],
                yerr=[_arr(loss["limit_se"][mode])[j, r]],
                ls="",
                marker=marker,
                ms=4,
                color=color,
                mfc="none",
                capsize=2,
                label=f"{name} limit, L={L:g}" if j == 0 or len(depths) == 1 else None,
            )
    ax.set_xlabel("1 / width")
    ax.set_ylabel(f"test loss at t = {summary['t_final']}")
    ax.set_title("loss vs 1/n (lines: L∞ + α/n + b/L)")
    ax.legend(fontsize=6)


def _loss_depth_panel(ax, summary: Mapping, fit: Mapping, r: int) -> None:
    """The per-depth n → ∞ extrapolations vs 1/L, the fitted ``L∞ + b/L`` and each mode's limit
    losses with their own ``c + b/L`` extrapolations to 1/L = 0."""
    depths = np.asarray(summary["depths"], float)
    loss = summary["loss"]
    L_inf, b = (float(_arr(fit[k])) for k in ("L_inf", "b"))
    xl = np.linspace(0, 1 / depths.min(), 50)
    per = fit["per_depth"]
    ax.errorbar(
        1 / depths,
        _arr(per["inf"]),
        yerr=_arr(per["se"]),
        ls="",
        marker="D",
        ms=4,
        color="k",
        capsize=2,
        label="finite, n → ∞ per depth",
    )
    if np.isfinite(L_inf):
        dof = fit["dof"]
        q = f", χ²/dof {fit['chi2'] / dof:.2f}" if dof else ""
        ax.plot(xl, L_inf + b * xl, color="k", lw=1, label=f"L∞ + b/L{q}")
        ax.errorbar(
            [0],
            [L_inf],
            yerr=[float(_arr(fit["L_inf_se"]))],
            marker="*",
            ms=8,
            color="k",
            capsize=2,
        )
    for k, (mode, lim) in enumerate(fit["limits"].items()):
        ls, marker, name, _ = _mode_style(mode)
        ly, lse = _arr(loss["limit"][mode])[:, r], _arr(loss["limit_se"][mode])[:, r]
        ax.errorbar(
            1 / depths,
            ly,
            yerr=lse,
            ls="",
            marker=marker,
            ms=4,
            color=f"C{k}",
            capsize=2,
            label=f"{name} limit",
        )
        c, bx = float(_arr(lim["inf"])), float(_arr(lim["b"]))
        if np.isfinite(c):
            ax.plot(xl, c + bx * xl, ls=ls, color=f"C{k}", lw=1)
    ax.set_xlabel("1 / depth")
    ax.set_ylabel(f"test loss at t = {summary['t_final']}")
    ax.set_title("loss vs 1/L (n → ∞ and limits)")
    ax.legend(fontsize=6)


def depth_scaling_figure(run: Run, summary: Mapping) -> Figure:
    """Spec T11 for a sweep: the final test loss (left) vs 1/n per depth, with the fitted
    ``L∞ + α/n + b/L`` lines and the limit losses at 1/n = 0; (right) vs 1/L: the per-depth
    n → ∞ extrapolations, the fitted ``L∞ + b/L`` and each mode's limit losses with their own
    ``c + b/L`` extrapolations to 1/L = 0."""
    r = 0  # first learning rate
    fit = summary["depth_scaling"][r]
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.4), layout="constrained")
        _loss_width_panel(axes[0], summary, fit, r)
        _loss_depth_panel(axes[1], summary, fit, r)
        _sweep_title(fig, run)
    return fig
