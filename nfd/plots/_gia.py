"""Figures of a saved ``kind = "gia"`` run (spec NFD.md §5.3, §7.2, T6, T7); plots never compute.

Every curve is an array of the run's summary (`nfd.analysis.gia_summary`: the raw measurements
and the derived ratios, distances and gaps of `nfd.analysis.summarise`); fitted lines are drawn
from the exponents and amplitudes of its fits.
"""

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..runs import Run
from ._plots import style

_OBS_LABELS = {"dphi": "δΦ (all τ)", "dg": "δG (all τ)", "dtheta": "δΘ", "f_p1": "f under P1"}
_MARKERS = ["o", "s", "^", "D", "v", "P", "X"]


def _axes(
    ax,
    xlabel: str,
    ylabel: str,
    *,
    logy: bool = False,
    title: str | None = None,
    title_size: float | int = 8,
    legend: float | int | None = None,
) -> None:
    """log₂ x axis (log y with ``logy``), labels, an optional title and legend (font sizes)."""
    ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title, fontsize=title_size)
    if legend is not None:
        ax.legend(fontsize=legend)


def _width_colors(widths):
    cmap = plt.get_cmap("viridis")
    return [cmap(0.15 + 0.7 * i / max(len(widths) - 1, 1)) for i in range(len(widths))]


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
            1, len(taus), figsize=(2.6 * len(taus) + 0.8, 3.3), sharey=True, layout="constrained"
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
                    color="k",
                    lw=0.9,
                    capsize=1.5,
                    label="finite, n → ∞ (1/n fit)",
                )
            ax.plot(
                depths,
                a["lim_ratio"][:, r],
                "k--",
                lw=1.2,
                marker="x",
                ms=4,
                label="limit: mode B / mode A (K = L)",
            )
            ax.axhline(1.0, color="tab:red", lw=0.8, ls=":", label="GIA exact (ratio 1)")
            fit = s["ratio"][f"{tau:g}"]["finite_deficit"]["power"]
            ax.set_title(f"τ = {tau:g}; deficit ∝ L^{fit['exponent']:.2f}", fontsize=8)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("depth L")
        axes[0].set_ylabel("δΦ^dec / δΦ^std  (one step)")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=6)
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
    if np.isfinite(fit.get("exponent", np.nan)):
        ax.plot(
            depths,
            fit["amplitude"] * depths ** fit["exponent"],
            color="tab:red",
            lw=0.9,
            label=f"fit L^{fit['exponent']:.2f} ± {fit['exponent_se']:.2f}",
        )


def _limit_line(ax, depths, y) -> None:
    """Mode A's value against depth (when the limit has one)."""
    if np.any(np.isfinite(y)):
        ax.plot(depths, np.abs(y), "k--", marker="x", ms=4, lw=1.0, label="limit mode A")


def chi_figure(run: Run, summary: Mapping) -> Figure:
    """(b) χ at τ ≈ ½ and Σ_ℓ χ_ℓ against L (log-log) with the fitted slopes, and the control."""
    a, s = summary["arrays"], summary["fits"]
    depths, widths, taus = a["depths"], a["widths"], a["layer_times"]
    chi = s["chi"]
    colors = _width_colors(widths)
    offs = _offsets(len(widths))
    with style():
        fig, axes = plt.subplots(1, 3, figsize=(10, 3.1), layout="constrained")
        ax = axes[0]
        if chi["tau"] is not None:
            r = int(np.argmin(np.abs(taus - chi["tau"])))
            _std_bars(ax, a, "chi_tau", colors, offs, r)
            _limit_line(ax, depths, a["lim_chi_tau"][:, r])
            _fit_line(ax, depths, chi["tau_fit"])
            ax.set_title(f"|χ_ℓ| at ℓ = ⌊{chi['tau']:g}·L⌋ (project L⁻¹, paper L⁻²)", fontsize=8)
        _axes(ax, "depth L", "|χ|", logy=True, legend=6)
        ax = axes[1]
        _std_bars(ax, a, "chi_sum", colors, offs)
        _limit_line(ax, depths, a["lim_chi_sum"])
        _fit_line(ax, depths, chi["sum_fit"]["power"])
        _axes(
            ax,
            "depth L",
            "|Σ_ℓ χ_ℓ|",
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
    ax.axhline(0.0, color="k", lw=0.6)
    _axes(
        ax,
        "depth L",
        "Σ_ℓ χ_ℓ",
        title="Σχ with its decoupled control (must be ≈ 0)",
        title_size=8,
    )
    ax.legend(fontsize=5.5, ncols=2)


def _d_a_panel(ax, a, obs, obs_colors) -> None:
    """d_A against n per observable (line style: depth), noise floors dotted, a slope −1 guide."""
    depths, widths = a["depths"], a["widths"]
    styles = ["-", "--", ":", "-."]
    for o, name in enumerate(obs):
        for j in range(len(depths)):
            ax.errorbar(
                widths,
                a["d_A"][o, :, j],
                a["d_A_se"][o, :, j],
                ls=styles[j % 4],
                marker="o",
                ms=3,
                lw=0.9,
                capsize=1.5,
                color=obs_colors(o),
                label=f"{_OBS_LABELS[name]}" if j == 0 else None,
            )
            ax.plot(widths, a["floor_A"][o, :, j], ls=":", lw=0.6, color=obs_colors(o), alpha=0.6)
    ref = np.nanmax(a["d_A"][:, 0, :]) if np.any(np.isfinite(a["d_A"])) else 1.0
    ax.plot(
        widths,
        ref * widths[0] / widths,
        color="0.4",
        lw=1.2,
        alpha=0.6,
        label="slope −1 (required, T7)",
    )
    _axes(ax, "width n", "d_A = ‖E O_std − O_A‖ / ‖O_A‖", logy=True)
    ax.set_title(
        f"standard → mode A (line style: L = {', '.join(map(str, depths))}; dotted: noise floor)",
        fontsize=7,
    )
    ax.legend(fontsize=6)


def _d_b_panel(ax, a, s, obs, obs_colors) -> None:
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
            color=obs_colors(o),
            label=_OBS_LABELS[name],
        )
        ax.plot(depths, a["d_B"][o, -1], ls=":", marker=".", lw=0.7, color=obs_colors(o), alpha=0.7)
    _axes(
        ax,
        "depth L",
        "d_B = ‖E O_std − O_B‖ / ‖O_A‖",
        logy=True,
        title=f"standard → mode B ({s['ratio_source']}; dotted: n = {widths[-1]})",
        title_size=7,
        legend=6,
    )


def _output_gap_panel(ax, a, T: int) -> None:
    """Standard − decoupled output gaps at the widest width against L (P2 and P1, and the limit)."""
    depths, widths = a["depths"], a["widths"]

    def bar(y, se, **kw):
        ax.errorbar(depths, y, se, ms=3.5, lw=1.0, capsize=1.5, **kw)

    p2 = (("loss_gap", "tab:blue", "|loss gap| P2"), ("eps_f", "tab:orange", "ε_f P2"))
    for t, mk in sorted({(1, "o"), (T, "s")}):
        ls = "-" if t == 1 else "--"
        for key, color, name in p2:
            y = a[key][-1, :, t]
            y = np.abs(y) if key == "loss_gap" else y
            bar(
                y, a[key + "_se"][-1, :, t], marker=mk, color=color, ls=ls, label=f"{name}, t = {t}"
            )
    bar(
        a["p1_gap"][-1, :, T],
        a["p1_gap_se"][-1, :, T],
        marker="^",
        color="tab:green",
        label=f"P1 gap, t = {T}",
    )
    ax.plot(
        depths,
        a["lim_p1_gap"][:, T],
        "k--",
        marker="x",
        ms=4,
        lw=1.0,
        label=f"limit A − B P1 gap, t = {T}",
    )
    _axes(
        ax,
        "depth L",
        "standard − decoupled",
        logy=True,
        title=f"output gaps at n = {widths[-1]} against L (flat: no GIA restoration)",
        title_size=7,
        legend=6,
    )


def _init_panel(ax, a) -> None:
    """n · ΔG_0 against n per depth (T6: flat in n means O(1/n))."""
    depths, widths = a["depths"], a["widths"]
    cols = plt.get_cmap("plasma")
    offs = _offsets(len(depths))
    for j, L in enumerate(depths):
        ax.errorbar(
            widths * offs[j],
            widths * a["init_gap_mean"][:, j],
            widths * a["init_gap_mean_se"][:, j],
            marker="o",
            ms=3.5,
            lw=1.0,
            capsize=1.5,
            color=cols(0.1 + 0.7 * j / max(len(depths) - 1, 1)),
            label=f"L = {L}",
        )
    ax.axhline(0.0, color="k", lw=0.6)
    _axes(ax, "width n", "n · (E G_0^std − E G_0^dec)")
    ax.set_title("initial coupling (T6: flat in n means O(1/n))", fontsize=7)
    ax.legend(fontsize=6)


def gaps_figure(run: Run, summary: Mapping) -> Figure:
    """(c) d_A against n, d_B against L, the standard − decoupled gaps, and the initial gap."""
    a, s = summary["arrays"], summary["fits"]
    obs = list(_OBS_LABELS)
    obs_colors = plt.get_cmap("tab10")
    with style():
        fig, axes = plt.subplots(2, 2, figsize=(9, 6.4), layout="constrained")
        _d_a_panel(axes[0, 0], a, obs, obs_colors)
        _d_b_panel(axes[0, 1], a, s, obs, obs_colors)
        _output_gap_panel(axes[1, 0], a, int(a["steps"][-1]))
        _init_panel(axes[1, 1], a)
    return fig


def gamma_figure(run: Run, summary: Mapping) -> Figure:
    """The γ0 scan of the limit gaps (mode A − mode B), log-log, with a slope-2 guide."""
    a, s = summary["arrays"], summary["fits"]
    g = a["gammas"]
    t = s["gamma"]["f_gap_t"]
    with style():
        fig, ax = plt.subplots(figsize=(4.2, 3.2), layout="constrained")
        ax.plot(g, a["gamma_dphi_gap"], "o-", ms=4, label="‖δΦ_A − δΦ_B‖ (τ = last)")
        ax.plot(g, a["gamma_f_gap"][:, t], "s-", ms=4, label=f"P1 gap rms, t = {t}")
        ax.plot(
            g, a["gamma_dphi_gap"][0] * (g / g[0]) ** 2, color="0.5", lw=0.9, ls=":", label="∝ γ0²"
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("γ0")
        ax.set_ylabel("mode A − mode B")
        ax.set_title(f"γ0 scan at L = {int(a['depths'][-1])}", fontsize=8)
        ax.legend(fontsize=6)
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
