"""Figures of a saved ``kind = "gia_limit"`` run: the n = ∞ gaps between mode A and mode B against
depth, the kernels' smallest eigenvalues, and the γ0 scan. Plots never compute: every curve is an
array of `nfd.analysis.gia_limit_summary`, every fitted line its fit's coefficients. Every curve
here is n = ∞, so colour is the activation (`nfd.plots._style` palette), error bars ±1 SE over
draw sets, legends right of the axes."""

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..runs import Run
from ._style import colour, entry, legend_outside, log_axis, note_empty, style

COLORS = {act: colour(k) for k, act in enumerate(("linear", "tanh", "relu", "gelu", "erf"))}
PANELS = (  # summary key, column (layer time or step), y label
    ("deficit", -1, "1 − δΦ_B/δΦ_A (τ = 1)"),
    ("f_gap", -1, "‖f_A − f_B‖ (P1, last step)"),
    ("loss_gap", -1, "|loss_A − loss_B| (P1, last step)"),
    ("ntk_dist", 1, "‖Θ_A(1) − Θ_B(1)‖ / ‖Θ_A(1)‖"),
)


def _gaps_figure(s: Mapping[str, Any]) -> Figure:
    """2×2: each gap against L (log–log) per activation: K = L (the depth-L network) solid with
    ± SE and its fitted c + b/L as a thin line; the K → ∞ (L = ∞) estimates of each (L, 2L) pair as
    open markers, the one of the largest depth as a dotted horizontal line."""
    depths = np.asarray(s["depths"], float)
    Lf = np.geomspace(depths[0], depths[-1], 100)
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), constrained_layout=True)
    for ax, (key, col, ylabel) in zip(axes.ravel(), PANELS, strict=True):
        for act in s["activations"]:
            color = COLORS.get(act, colour(5))
            for k in s["schemes"]:
                y = np.abs(np.asarray(s[act][k][key])[:, col])
                se = np.asarray(s[act][k][key + "_se"])[:, col]
                net = k == "L"
                ax.errorbar(
                    depths * (1.0 if net else 1.06),
                    y,
                    se,
                    color=color,
                    marker="o",
                    mfc=color if net else "white",
                    ls="-" if net else "none",
                    ms=4,
                    lw=1.4,
                    capsize=2,
                    label=f"{act}, " + ("K = L" if net else "K → ∞ from (L, 2L)"),
                )
                c = s[act][k]["limit"][key]["c"] if not net else np.nan
                if np.isfinite(c):
                    ax.axhline(abs(c), color=color, ls=":", lw=0.9)
            cb = s[act]["L"]["fits"][key]["c+b/L"]["coef"]
            if len(depths) > 1 and np.all(np.isfinite(cb)):
                ax.plot(Lf, np.abs(cb[0] + cb[1] / Lf), color=color, lw=0.6, alpha=0.7)
        log_axis(ax, "x", base=2, values=depths)
        log_axis(ax, "y")
        note_empty(ax)
        ax.set_xlabel("depth L")
        ax.set_ylabel(ylabel)
    styles = [entry("thin: c + b/L fitted to K = L", color="0.3", lw=0.6)]
    styles.append(entry("dotted: the L = ∞ value", color="0.3", ls=":", lw=0.9))
    handles = axes[0, 0].get_legend_handles_labels()[0] + styles
    legend_outside(fig, handles, title="bars: ±1 SE over draw sets")
    fig.suptitle(
        "Mode A (standard net) − mode B (NFD/GIA) at n = ∞",
        fontsize=10,
    )
    return fig


def _eig_figure(s: Mapping[str, Any]) -> Figure:
    """Smallest relative eigenvalue of Φ and G over (step, point) pairs against L (mode A, K = L,
    last layer time): the paper's nondegeneracy assumption needs it bounded away from 0."""
    depths = np.asarray(s["depths"], float)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), constrained_layout=True)
    for ax, (field, name) in zip(axes, (("A_phi", "Φ_τ"), ("A_g", "G_τ")), strict=True):
        for act in s["activations"]:
            e = s[act]["min_eig"]
            y = np.asarray(e[field])[:, -1]
            se = np.asarray(e[field + "_se"])[:, -1]
            color = COLORS.get(act, colour(5))
            label = f"{act}, all (step, point) pairs"
            ax.errorbar(depths, y, se, color=color, marker="o", ms=4, capsize=2, label=label)
            if field == "A_phi" and "A_phi_point" in e:  # the P × P kernel of the last step
                y = np.asarray(e["A_phi_point"])[:, -1]
                ax.plot(
                    depths,
                    y,
                    color=color,
                    ls="--",
                    marker="s",
                    ms=3,
                    mfc="white",
                    label=f"{act}, points at t = T",
                )
        log_axis(ax, "x", base=2, values=depths)
        lows = np.concatenate([np.asarray(s[a]["min_eig"][field])[:, -1] for a in s["activations"]])
        if np.all(lows > 0):
            log_axis(ax, "y")
        elif np.any(np.isfinite(lows)):  # exactly singular kernels (linear nets): round-off
            ax.set_yscale("symlog", linthresh=1e-8)  # puts some just below 0
        note_empty(ax)
        ax.set_xlabel("depth L")
        ax.set_ylabel(f"λ_min({name}) / mean diag")
        legend_outside(ax, title="bars: ±1 SE")
    fig.suptitle(
        "Nondegeneracy: smallest relative eigenvalue of the kernels at τ = 1 (mode A, K = L)",
        fontsize=10,
    )
    return fig


def _gamma_figure(s: Mapping[str, Any]) -> Figure | None:
    acts = [a for a in s["activations"] if s[a]["gamma"] is not None]
    if not acts:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.6), constrained_layout=True)
    for act in acts:
        g = s[act]["gamma"]
        gam, y, se = (np.asarray(g[k], float) for k in ("gammas", "f_gap", "f_gap_se"))
        ax.errorbar(
            gam,
            y,
            se,
            color=COLORS.get(act, colour(5)),
            marker="o",
            ms=4,
            capsize=2,
            label=f"{act} (∝ γ0^{g['f_gap_fit']['exponent']:.2f})",
        )
        ax.plot(gam, y[-1] * (gam / gam[-1]) ** 2, color=COLORS.get(act, colour(5)), ls=":", lw=0.8)
    log_axis(ax, "x", values=np.asarray(s[acts[0]]["gamma"]["gammas"], float))
    log_axis(ax, "y")
    note_empty(ax)
    ax.set_xlabel("γ0")
    ax.set_ylabel("‖f_A − f_B‖ (P1, last step)")
    ax.set_title(f"γ0 scan at L = {s[acts[0]]['gamma']['depth']}", fontsize=9)
    guide = entry("dotted: guide ∝ γ0²", color="0.3", ls=":", lw=0.8)
    legend_outside(ax, [*ax.get_legend_handles_labels()[0], guide], title="bars: ±1 SE")
    return fig


def gia_limit_figures(run: Run, summary: Mapping[str, Any]) -> dict[str, Figure]:
    """``gaps``, ``eigs`` and (with a γ0 scan) ``gamma``."""
    del run
    with style():
        figs = {"gaps": _gaps_figure(summary), "eigs": _eig_figure(summary)}
        gamma = _gamma_figure(summary)
    if gamma is not None:
        figs["gamma"] = gamma
    return figs
