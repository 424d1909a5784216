"""Figures of a saved ``kind = "gia"`` run (docs/math §5.3, §7.2, T6, T7); plots never compute.

Every curve is an array of the run's summary (`nfd.analysis.gia_summary`: the raw measurements
and the derived ratios, distances and gaps of `nfd.analysis.summarise`); fitted lines are drawn
from the exponents and amplitudes of its fits. Colour is width (dark to light: narrow to wide) or
observable, the n = ∞ limit is black and dashed, error bars are ±1 SE, legends sit right of each
panel (`nfd.plots._style`).
"""

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..runs import Run
from ._style import (
    GUIDE,
    LIMIT,
    colour,
    entry,
    legend_outside,
    line_colours,
    log_axis,
    note_empty,
    style,
)

_OBS_LABELS = {"dphi": "δΦ (all τ)", "dg": "δG (all τ)", "dtheta": "δΘ", "f_p1": "f under P1"}
_MARKERS = ["o", "s", "^", "D", "v", "P", "X"]


def _axes(
    ax,
    xlabel: str,
    ylabel: str,
    *,
    xs,
    logy: bool = False,
    title: str | None = None,
    title_size: float | int = 8,
    legend: float | int | None = None,
    handles=None,
) -> None:
    """log₂ x axis over the grid ``xs`` (log y with ``logy``; each only where it spans two
    values), labels, an optional title and a legend right of the panel (font size), a note on a
    panel without a finite value."""
    log_axis(ax, "x", base=2, values=xs)
    if logy:
        log_axis(ax, "y")
    note_empty(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title, fontsize=title_size)
    if legend is not None:
        legend_outside(ax, handles, fontsize=legend, title="bars: ±1 SE")


def _width_colors(widths):
    return line_colours(len(widths))


def _offsets(num: int, span: float = 0.06) -> np.ndarray:
    """Small multiplicative x-offsets so that error bars of several series do not overlap."""
    return np.exp(np.linspace(-span, span, num)) if num > 1 else np.ones(1)


def _width_bars(ax, a, i: int, y, se, colors, offs, who: str, **kw) -> None:
    """Width ``i``'s error bars ``y ± se`` against depth (``who n=…`` in the legend)."""
    ax.errorbar(
        a["depths"] * offs[i],
        y,
        se,
        fmt=_MARKERS[i % len(_MARKERS)],
        ms=3.5,
        color=colors[i],
        lw=0.8,
        capsize=1.5,
        label=f"{who} n={a['widths'][i]}",
        **kw,
    )


def ratio_figure(run: Run, summary: Mapping) -> Figure:
    """(a) The one-step kernel ratio δΦ^dec/δΦ^std against L at each τ, with mode B / mode A."""
    a, s = summary["arrays"], summary["fits"]
    depths, widths, taus = a["depths"], a["widths"], a["layer_times"]
    colors = _width_colors(widths)
    offs = _offsets(len(widths) + 1)
    with style():
        fig, axes = plt.subplots(
            1, len(taus), figsize=(2.6 * len(taus) + 3.0, 3.3), sharey=True, layout="constrained"
        )
        axes = np.atleast_1d(axes)
        for r, (ax, tau) in enumerate(zip(axes, taus, strict=True)):
            for i in range(len(widths)):
                y, se = a["ratio"][i, :, r], a["ratio_se"][i, :, r]
                _width_bars(ax, a, i, y, se, colors, offs, "finite")
            if len(widths) >= 3:
                ax.errorbar(
                    depths * offs[-1],
                    a["ratio_inf"][:, r],
                    a["ratio_inf_se"][:, r],
                    fmt="s",
                    ms=4.5,
                    mfc="none",
                    color=colour(1),
                    lw=0.9,
                    capsize=1.5,
                    label="finite, n → ∞ (1/n fit)",
                )
            ax.plot(
                depths,
                a["lim_ratio"][:, r],
                **LIMIT,
                marker="x",
                ms=5,
                label="limit n = ∞: mode B / mode A (K = L)",
            )
            ax.axhline(1.0, **GUIDE, label="GIA exact (ratio 1)")
            fit = s["ratio"][f"{tau:g}"]["finite_deficit"]["power"]
            ax.set_title(f"τ = {tau:g}; deficit ∝ L^{fit['exponent']:.2f}", fontsize=8)
            log_axis(ax, "x", base=2, values=depths)
            note_empty(ax)
            ax.set_xlabel("depth L")
        axes[0].set_ylabel("δΦ^dec / δΦ^std  (one step)")
        legend_outside(fig, title="bars: ±1 SE", fontsize=6)
        fig.suptitle("One-step feature-kernel change: decoupled over standard network", fontsize=9)
    return fig


def _std_bars(ax, a, key: str, colors, offs, r: int | None = None) -> None:
    """Standard networks' ``|a[key]| ± a[key + "_se"]`` against depth, one series per width (at
    layer time ``r`` when given)."""
    for i in range(len(a["widths"])):
        y = a[key][i] if r is None else a[key][i, :, r]
        se = a[key + "_se"][i] if r is None else a[key + "_se"][i, :, r]
        _width_bars(ax, a, i, np.abs(y), se, colors, offs, "standard")


def _fit_line(ax, depths, fit: Mapping) -> None:
    """A fitted power law ``amplitude · L^exponent`` (when the fit exists)."""
    if len(depths) > 1 and np.isfinite(fit.get("exponent", np.nan)):
        ax.plot(
            depths,
            fit["amplitude"] * depths ** fit["exponent"],
            color=colour(1),
            lw=1.2,
            label=f"fit L^{fit['exponent']:.2f} ± {fit['exponent_se']:.2f}",
        )


def _limit_line(ax, depths, y) -> None:
    """Mode A's value against depth (when the limit has one)."""
    if np.any(np.isfinite(y)):
        ax.plot(depths, np.abs(y), **LIMIT, marker="x", ms=5, label="limit n = ∞, mode A")


def chi_figure(run: Run, summary: Mapping) -> Figure:
    """(b) χ at τ ≈ ½ and Σ_ℓ χ_ℓ against L (log-log) with the fitted slopes, and the control."""
    a, s = summary["arrays"], summary["fits"]
    depths, widths, taus = a["depths"], a["widths"], a["layer_times"]
    chi = s["chi"]
    colors = _width_colors(widths)
    offs = _offsets(len(widths))
    with style():
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.3), layout="constrained")
        ax = axes[0]
        if chi["tau"] is not None:
            r = int(np.argmin(np.abs(taus - chi["tau"])))
            _std_bars(ax, a, "chi_tau", colors, offs, r)
            _limit_line(ax, depths, a["lim_chi_tau"][:, r])
            _fit_line(ax, depths, chi["tau_fit"])
            ax.set_title(f"|χ_ℓ| at ℓ = ⌊{chi['tau']:g}·L⌋ (project L⁻¹, paper L⁻²)", fontsize=8)
        _axes(ax, "depth L", "|χ|", xs=depths, logy=True, legend=6)
        ax = axes[1]
        _std_bars(ax, a, "chi_sum", colors, offs)
        _limit_line(ax, depths, a["lim_chi_sum"])
        _fit_line(ax, depths, chi["sum_fit"]["power"])
        _axes(
            ax,
            "depth L",
            "|Σ_ℓ χ_ℓ|",
            xs=depths,
            logy=True,
            title="total coupling |Σχ| (project: flat in L)",
            title_size=8,
            legend=6,
        )
        _control_panel(axes[2], a, colors, offs)
    return fig


def _control_panel(ax, a, colors, offs) -> None:
    """Σχ of the standard networks with its decoupled control (must be ≈ 0)."""
    for i in range(len(a["widths"])):
        _width_bars(ax, a, i, a["chi_sum"][i], a["chi_sum_se"][i], colors, offs, "standard")
        y, se = a["chi_dec_sum"][i], a["chi_dec_sum_se"][i]
        _width_bars(ax, a, i, y, se, colors, offs, "decoupled control", mfc="none")
    ax.axhline(0.0, color="0.5", lw=0.6)
    _axes(
        ax,
        "depth L",
        "Σ_ℓ χ_ℓ",
        xs=a["depths"],
        title="Σχ with its decoupled control (must be ≈ 0)",
        title_size=8,
        legend=6,
    )


DEPTH_STYLES = ["-", "--", "-.", (0, (6, 2, 1, 2, 1, 2))]  # dotted is the noise floor


def _d_a_panel(ax, a, obs) -> None:
    """d_A against n per observable (line style: depth), noise floors dotted, a slope −1 guide."""
    depths, widths = a["depths"], a["widths"]
    for o, name in enumerate(obs):
        for j in range(len(depths)):
            ax.errorbar(
                widths,
                a["d_A"][o, :, j],
                a["d_A_se"][o, :, j],
                ls=DEPTH_STYLES[j % 4],
                marker="o",
                ms=3,
                lw=1.0,
                capsize=1.5,
                color=colour(o),
                label=f"{_OBS_LABELS[name]}" if j == 0 else None,
            )
            ax.plot(widths, a["floor_A"][o, :, j], ls=":", lw=0.7, color=colour(o), alpha=0.7)
    handles = [entry(f"L = {L}", color="0.3", ls=DEPTH_STYLES[j % 4]) for j, L in enumerate(depths)]
    handles.append(entry("dotted: noise floor", color="0.3", ls=":", lw=0.7))
    first = a["d_A"][:, 0, :]  # the narrowest width: the guide starts at its largest d_A
    if len(widths) > 1 and np.any(np.isfinite(first) & (first > 0)):
        ref = np.nanmax(first)
        ax.plot(widths, ref * widths[0] / widths, **GUIDE, label="slope −1 (required, T7)")
    _axes(
        ax,
        "width n",
        "d_A = ‖E O_std − O_A‖ / ‖O_A‖",
        xs=widths,
        logy=True,
        title="standard → mode A",
        title_size=7,
        legend=6,
        handles=[*ax.get_legend_handles_labels()[0], *handles],
    )


def _d_b_panel(ax, a, s, obs) -> None:
    """d_B (n → ∞ where possible) against L per observable; the widest width dotted."""
    depths, widths = a["depths"], a["widths"]
    for o, name in enumerate(obs):
        ax.errorbar(
            depths,
            a["d_B_inf"][o],
            a["d_B_inf_se"][o],
            marker="o",
            ms=3.5,
            lw=1.0,
            capsize=1.5,
            color=colour(o),
            label=_OBS_LABELS[name],
        )
        ax.plot(depths, a["d_B"][o, -1], ls=":", marker=".", lw=0.8, color=colour(o), alpha=0.8)
    widest = entry(f"dotted: n = {widths[-1]}", color="0.3", ls=":", marker=".", lw=0.8)
    _axes(
        ax,
        "depth L",
        "d_B = ‖E O_std − O_B‖ / ‖O_A‖",
        xs=depths,
        logy=True,
        title=f"standard → mode B (solid: {s['ratio_source']})",
        title_size=7,
        legend=6,
        handles=[*ax.get_legend_handles_labels()[0], widest],
    )


def _output_gap_panel(ax, a, T: int) -> None:
    """Standard − decoupled output gaps at the widest width against L (P2 and P1, and the limit)."""
    depths, widths = a["depths"], a["widths"]

    def bar(y, se, **kw):
        ax.errorbar(depths, y, se, ms=3.5, lw=1.0, capsize=1.5, **kw)

    p2 = (("loss_gap", colour(0), "|loss gap| P2"), ("eps_f", colour(1), "ε_f P2"))
    for t, mk in sorted({(1, "o"), (T, "s")}):
        ls = "-" if t == 1 else "-."
        for key, color, name in p2:
            y = a[key][-1, :, t]
            y = np.abs(y) if key == "loss_gap" else y
            se = a[key + "_se"][-1, :, t]
            bar(y, se, marker=mk, color=color, ls=ls, label=f"{name}, t = {t}")
    y, se = a["p1_gap"][-1, :, T], a["p1_gap_se"][-1, :, T]
    bar(y, se, marker="^", color=colour(2), label=f"P1 gap, t = {T}")
    ax.plot(
        depths,
        a["lim_p1_gap"][:, T],
        **LIMIT,
        marker="x",
        ms=5,
        label=f"limit n = ∞, A − B P1 gap, t = {T}",
    )
    _axes(
        ax,
        "depth L",
        "standard − decoupled",
        xs=depths,
        logy=True,
        title=f"output gaps at n = {widths[-1]} against L (flat: no GIA restoration)",
        title_size=7,
        legend=6,
    )


def _init_panel(ax, a) -> None:
    """n · ΔG_0 against n per depth (T6: flat in n means O(1/n))."""
    depths, widths = a["depths"], a["widths"]
    offs = _offsets(len(depths))
    for j, (L, c) in enumerate(zip(depths, line_colours(len(depths)), strict=True)):
        ax.errorbar(
            widths * offs[j],
            widths * a["init_gap_mean"][:, j],
            widths * a["init_gap_mean_se"][:, j],
            marker="o",
            ms=3.5,
            lw=1.0,
            capsize=1.5,
            color=c,
            label=f"L = {L}",
        )
    ax.axhline(0.0, color="0.5", lw=0.6)
    _axes(
        ax,
        "width n",
        "n · (E G_0^std − E G_0^dec)",
        xs=widths,
        title="initial coupling (T6: flat in n means O(1/n))",
        title_size=7,
        legend=6,
    )


def gaps_figure(run: Run, summary: Mapping) -> Figure:
    """(c) d_A against n, d_B against L, the standard − decoupled gaps, and the initial gap."""
    a, s = summary["arrays"], summary["fits"]
    obs = list(_OBS_LABELS)
    with style():
        fig, axes = plt.subplots(2, 2, figsize=(12, 6.6), layout="constrained")
        _d_a_panel(axes[0, 0], a, obs)
        _d_b_panel(axes[0, 1], a, s, obs)
        _output_gap_panel(axes[1, 0], a, int(a["steps"][-1]))
        _init_panel(axes[1, 1], a)
    return fig


def gamma_figure(run: Run, summary: Mapping) -> Figure:
    """The γ0 scan of the limit gaps (mode A − mode B), log-log, with a slope-2 guide."""
    a, s = summary["arrays"], summary["fits"]
    g = a["gammas"]
    t = s["gamma"]["f_gap_t"]
    with style():
        fig, ax = plt.subplots(figsize=(6.2, 3.2), layout="constrained")
        ax.plot(
            g, a["gamma_dphi_gap"], "o-", color=colour(0), ms=4, label="‖δΦ_A − δΦ_B‖ (τ = last)"
        )
        ax.plot(
            g, a["gamma_f_gap"][:, t], "s-", color=colour(1), ms=4, label=f"P1 gap rms, t = {t}"
        )
        ax.plot(g, a["gamma_dphi_gap"][0] * (g / g[0]) ** 2, **GUIDE, label="guide ∝ γ0²")
        log_axis(ax, "x", values=g)
        log_axis(ax, "y")
        note_empty(ax)
        ax.set_xlabel("γ0")
        ax.set_ylabel("mode A − mode B (n = ∞)")
        ax.set_title(f"γ0 scan at L = {int(a['depths'][-1])}", fontsize=8)
        legend_outside(ax, fontsize=6)
    return fig


def gia_figures(run: Run, summary: Mapping) -> dict[str, Any]:
    """Every figure of a ``kind = "gia"`` run, by name (``gamma`` only when γ0 was scanned);
    ``summary``: `nfd.analysis.gia_summary` of its arrays."""
    figs = {
        "ratio": ratio_figure(run, summary),
        "chi": chi_figure(run, summary),
        "gaps": gaps_figure(run, summary),
    }
    if "gamma" in summary["fits"]:
        figs["gamma"] = gamma_figure(run, summary)
    return figs
