"""Figures of a saved sweep (`kind = "sweep"`): distances of the finite predictions and NTKs to
each limit mode, and the depth scaling of the loss, drawn from its summary
(`nfd.analysis.convergence_summary`); plots never compute.

Colour is depth (dark to light: shallow to deep), line style and marker are the limit mode; the
limit losses are black (`LIMIT`), error bars ±1 SE, legends right of each panel."""

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..runs import Run
from ._style import (
    EMPTY,
    GUIDE,
    LIMIT,
    colour,
    entry,
    legend_outside,
    line_colours,
    log_axis,
    lone_value,
    note_empty,
    style,
)


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


def _slope_label(fit: Mapping) -> str:
    slope, se = _arr(fit.get("slope")), _arr(fit.get("slope_se"))
    return f"slope {_fmt(slope)} ± {abs(float(se)):.2f}" if np.isfinite(se) else "no slope"


def _width_panel(ax, modes: Mapping, widths, depths, r: int, slope_of) -> None:
    """Distances ``res["d"] (W, Ld, Lr)`` ± ``res["se"]`` vs width for every mode and depth at
    learning rate ``r``, labelled with ``slope_of(res, j)``'s ``slope`` ± ``slope_se`` (with two
    widths or more); a 1/n guide through the largest distance; a log-log axis where it spans."""
    top = np.nan
    colours = line_colours(len(depths))
    for mode, res in modes.items():
        ls, marker, name, _ = _mode_style(mode)
        d, se = _arr(res["d"]), _arr(res["se"])
        if np.isfinite(d[:, :, r]).any():
            top = np.nanmax([top, np.nanmax(d[:, :, r])])
        for j, L in enumerate(depths):
            slope = f": {_slope_label(slope_of(res, j))}" if len(widths) > 1 else ""
            ax.errorbar(
                widths,
                d[:, j, r],
                yerr=se[:, j, r],
                ls=ls,
                marker=marker,
                ms=3.5,
                color=colours[j],
                capsize=2,
                lw=1.3,
                label=f"L={L:g}, {name}{slope}",
            )
    if len(widths) > 1 and np.isfinite(top) and top > 0:
        ax.plot(widths, top * widths[0] / widths, **GUIDE, label="guide ∝ 1/n")
    log_axis(ax, "x", base=2, values=widths)
    log_axis(ax, "y")
    note_empty(ax)
    ax.set_xlabel("width n")
    legend_outside(ax, title="bars: ±1 SE; colour: depth L", fontsize=6)


def sweep_figure(run: Run, summary: Mapping) -> Figure:
    """A sweep: (left) debiased distance of the finite seed-mean predictions to each limit mode
    (K = L, and K → ∞ for the ``X_kinf`` modes) vs width, per depth, with the fitted n-slope
    ± SE and a 1/n guide; (right) the distance of the n → ∞ Richardson extrapolation ``f∞`` to
    each mode vs depth."""
    widths, depths, lrs = (np.asarray(summary[k], float) for k in ("widths", "depths", "lrs"))
    r = 0  # first learning rate
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
        ax = axes[0]
        _width_panel(ax, summary["modes"], widths, depths, r, lambda res, j: res["fits"][j][r])
        ax.set_ylabel("‖E f_finite − f_limit‖")
        ax.set_title(f"finite → limit, η0 = {lrs[r]:g}", fontsize=9)
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
                color=colour(k),
                capsize=2,
                label=f"‖f∞ − f_{short}‖",
            )
        ax.axhline(0, color="0.5", lw=0.8)
        log_axis(ax, "x", base=2, values=depths)
        note_empty(ax, EMPTY if len(widths) > 1 else "n → ∞ needs two widths or more")
        ax.set_xlabel("depth L (= K)")
        ax.set_ylabel("distance of n → ∞ extrapolation")
        ax.set_title("n → ∞: f(n) = f∞ + a/n vs each mode", fontsize=9)
        legend_outside(ax, title="bars: ±1 SE")
        _sweep_title(fig, run)
    return fig


def kernel_figure(run: Run, summary: Mapping) -> Figure:
    """A sweep with ``output.ntk``: relative debiased distance of the finite seed-mean NTK (every
    saved step) to each limit mode vs width, per depth, with its n-slope ± SE and a 1/n guide."""
    widths, depths, lrs = (np.asarray(summary[k], float) for k in ("widths", "depths", "lrs"))
    r = 0
    with style():
        fig, ax = plt.subplots(figsize=(7.2, 3.8), layout="constrained")
        kern = summary.get("kernels", {})
        _width_panel(ax, kern, widths, depths, r, lambda res, j: res["slopes"][j][r])
        ax.set_ylabel("‖E Θ_finite − E Θ_limit‖ / ‖E Θ_limit‖")
        ax.set_title(f"NTK, finite → limit, η0 = {lrs[r]:g}", fontsize=9)
        _sweep_title(fig, run)
    return fig


def _sweep_title(fig: Figure, run: Run) -> None:
    m = run.config.model
    fig.suptitle(
        f"{run.config.task.name}: {m.param}, {m.activation}, γ0={m.gamma0:g}, "
        f"{run.config.seeds} seeds, M={run.config.limit.particles} particles",
        fontsize=9,
    )


def _limit_points(ax, loss: Mapping, j: int, r: int, x0: float, face) -> None:
    """Each mode's limit loss at depth ``j``, at ``1/n ≈ 0`` (slightly left, one mode each):
    black-edged markers (the limit), filled with the depth's colour."""
    for k, mode in enumerate(loss["limit"]):
        marker = _mode_style(mode)[1]
        ax.errorbar(
            [-0.03 * (k + 1) * x0],
            [_arr(loss["limit"][mode])[j, r]],
            yerr=[_arr(loss["limit_se"][mode])[j, r]],
            ls="",
            marker=marker,
            ms=5,
            mfc=face,
            mec=LIMIT["color"],
            mew=1.2,
            ecolor=LIMIT["color"],
            capsize=2,
        )


def _loss_width_panel(ax, summary: Mapping, fit: Mapping, r: int) -> None:
    """The final test loss vs 1/n per depth with the fitted ``L∞ + α/n + b/L`` lines and the
    limit losses at 1/n = 0."""
    widths, depths = (np.asarray(summary[k], float) for k in ("widths", "depths"))
    loss = summary["loss"]
    y, ys = _arr(loss["finite"])[:, :, r], _arr(loss["finite_se"])[:, :, r]
    L_inf, alpha, b = (float(_arr(fit[k])) for k in ("L_inf", "alpha", "b"))
    xs = np.linspace(0, 1 / widths.min(), 50)
    colours = line_colours(len(depths))
    handles = []
    for j, L in enumerate(depths):
        ax.errorbar(1 / widths, y[:, j], yerr=ys[:, j], ls="", marker="o", ms=3.5, color=colours[j])
        handles.append(entry(f"finite, L={L:g}", ls="", marker="o", ms=3.5, color=colours[j]))
        if np.isfinite(L_inf):
            ax.plot(xs, L_inf + alpha * xs + b / L, color=colours[j], lw=1)
        _limit_points(ax, loss, j, r, 1 / widths.min(), colours[j])
    for mode in loss["limit"]:
        _, marker, name, _ = _mode_style(mode)
        handles.append(entry(f"limit n = ∞, {name}", ls="", marker=marker, mfc="0.8", mec="k"))
    if np.isfinite(L_inf):
        handles.append(entry("fit L∞ + α/n + b/L", color="0.4", lw=1))
    note_empty(ax)
    ax.set_xlabel("1 / width")
    ax.set_ylabel(f"test loss at t = {summary['t_final']}")
    ax.set_title("loss vs 1/n", fontsize=9)
    legend_outside(ax, handles, title="bars: ±1 SE; colour: depth L")


def _loss_depth_panel(ax, summary: Mapping, fit: Mapping, r: int) -> None:
    """The per-depth n → ∞ extrapolations vs 1/L, the fitted ``L∞ + b/L`` and each mode's limit
    losses (black) with their own ``c + b/L`` extrapolations to 1/L = 0."""
    depths = np.asarray(summary["depths"], float)
    loss = summary["loss"]
    L_inf, b = (float(_arr(fit[k])) for k in ("L_inf", "b"))
    xl = np.linspace(0, 1 / depths.min(), 50)
    per = fit["per_depth"]
    kw = {"ls": "", "ms": 4.5, "capsize": 2}
    ax.errorbar(
        1 / depths,
        _arr(per["inf"]),
        yerr=_arr(per["se"]),
        marker="D",
        color=colour(0),
        label="finite, n → ∞ per depth",
        **kw,
    )
    if np.isfinite(L_inf):
        dof = fit["dof"]
        q = f", χ²/dof {fit['chi2'] / dof:.2f}" if dof else ""
        ax.plot(xl, L_inf + b * xl, color=colour(0), lw=1, label=f"fit L∞ + b/L{q}")
        ax.errorbar(
            [0],
            [L_inf],
            yerr=[float(_arr(fit["L_inf_se"]))],
            marker="*",
            ms=9,
            color=colour(0),
            capsize=2,
            label="L∞ (finite, n, L → ∞)",
        )
    for mode, lim in fit["limits"].items():
        _, marker, name, _ = _mode_style(mode)
        ly, lse = _arr(loss["limit"][mode])[:, r], _arr(loss["limit_se"][mode])[:, r]
        ax.errorbar(
            1 / depths,
            ly,
            yerr=lse,
            marker=marker,
            mfc="white",
            mec="k",
            mew=1.2,
            ecolor="k",
            label=f"limit n = ∞, {name}",
            **kw,
        )
        c, bx = float(_arr(lim["inf"])), float(_arr(lim["b"]))
        if np.isfinite(c):
            ax.plot(xl, c + bx * xl, **{**LIMIT, "lw": 1.2}, label=f"fit c + b/L, {name}")
    note_empty(ax)
    lone_value(ax, 1 / depths)
    ax.set_xlabel("1 / depth")
    ax.set_ylabel(f"test loss at t = {summary['t_final']}")
    fits = "" if np.isfinite(L_inf) else "; no fit: needs 2 widths and 2 depths"
    ax.set_title(f"loss vs 1/L (n → ∞ and limits){fits}", fontsize=9)
    legend_outside(ax, title="bars: ±1 SE")


def depth_scaling_figure(run: Run, summary: Mapping) -> Figure:
    """Spec T11 for a sweep: the final test loss (left) vs 1/n per depth, with the fitted
    ``L∞ + α/n + b/L`` lines and the limit losses at 1/n = 0; (right) vs 1/L: the per-depth
    n → ∞ extrapolations, the fitted ``L∞ + b/L`` and each mode's limit losses with their own
    ``c + b/L`` extrapolations to 1/L = 0. Fits are drawn only where the summary has them (two
    widths and two depths or more)."""
    r = 0  # first learning rate
    fit = summary["depth_scaling"][r]
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
        _loss_width_panel(axes[0], summary, fit, r)
        _loss_depth_panel(axes[1], summary, fit, r)
        _sweep_title(fig, run)
    return fig
