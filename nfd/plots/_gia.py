"""Figures of a saved ``kind = "gia"`` run (spec NFD.md §5.3, §7.2, T6, T7); plots never compute.

Every curve is an array saved by `nfd.experiments.gia_experiment` (raw measurements and the
derived ratios, distances and gaps of `nfd.experiments._gia.summarise`); fitted lines are drawn
from the exponents and amplitudes stored in the run's ``meta.json``.
"""

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


def ratio_figure(run: Run) -> Figure:
    """(a) The one-step kernel ratio δΦ^dec/δΦ^std against L at each τ, with mode B / mode A."""
    a, s = run.arrays, run.meta["summary"]
    depths, widths, taus = a["depths"], a["widths"], a["layer_times"]
    colors = _width_colors(widths)
    offs = _offsets(len(widths) + 1)
    with style():
        fig, axes = plt.subplots(
            1, len(taus), figsize=(2.6 * len(taus) + 0.8, 3.3), sharey=True, layout="constrained"
        )
        axes = np.atleast_1d(axes)
        for r, (ax, tau) in enumerate(zip(axes, taus, strict=True)):
            for i, n in enumerate(widths):
                ax.errorbar(
                    depths * offs[i],
                    a["ratio"][i, :, r],
                    a["ratio_se"][i, :, r],
                    fmt=_MARKERS[i % len(_MARKERS)],
                    ms=3.5,
                    color=colors[i],
                    lw=0.8,
                    capsize=1.5,
                    label=f"finite n={n}",
                )
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


def chi_figure(run: Run) -> Figure:
    """(b) χ at τ ≈ ½ and Σ_ℓ χ_ℓ against L (log-log) with the fitted slopes, and the control."""
    a, s = run.arrays, run.meta["summary"]
    depths, widths, taus = a["depths"], a["widths"], a["layer_times"]
    chi = s["chi"]
    colors = _width_colors(widths)
    offs = _offsets(len(widths))
    with style():
        fig, axes = plt.subplots(1, 3, figsize=(10, 3.1), layout="constrained")
        ax = axes[0]
        if chi["tau"] is not None:
            r = int(np.argmin(np.abs(taus - chi["tau"])))
            for i, n in enumerate(widths):
                ax.errorbar(
                    depths * offs[i],
                    np.abs(a["chi_tau"][i, :, r]),
                    a["chi_tau_se"][i, :, r],
                    fmt=_MARKERS[i % len(_MARKERS)],
                    ms=3.5,
                    color=colors[i],
                    lw=0.8,
                    capsize=1.5,
                    label=f"standard n={n}",
                )
            if np.any(np.isfinite(a["lim_chi_tau"][:, r])):
                ax.plot(
                    depths,
                    np.abs(a["lim_chi_tau"][:, r]),
                    "k--",
                    marker="x",
                    ms=4,
                    lw=1.0,
                    label="limit mode A",
                )
            tf = chi["tau_fit"]
            if np.isfinite(tf.get("exponent", np.nan)):
                ax.plot(
                    depths,
                    tf["amplitude"] * depths ** tf["exponent"],
                    color="tab:red",
                    lw=0.9,
                    label=f"fit L^{tf['exponent']:.2f} ± {tf['exponent_se']:.2f}",
                )
            ax.set_title(f"|χ_ℓ| at ℓ = ⌊{chi['tau']:g}·L⌋ (project L⁻¹, paper L⁻²)", fontsize=8)
        _axes(ax, "depth L", "|χ|", logy=True, legend=6)
        ax = axes[1]
        for i, n in enumerate(widths):
            ax.errorbar(
                depths * offs[i],
                np.abs(a["chi_sum"][i]),
                a["chi_sum_se"][i],
                fmt=_MARKERS[i % len(_MARKERS)],
                ms=3.5,
                color=colors[i],
                lw=0.8,
                capsize=1.5,
                label=f"standard n={n}",
            )
        if np.any(np.isfinite(a["lim_chi_sum"])):
            ax.plot(
                depths,
                np.abs(a["lim_chi_sum"]),
                "k--",
                marker="x",
                ms=4,
                lw=1.0,
                label="limit mode A",
            )
        sf = chi["sum_fit"]["power"]
        if np.isfinite(sf.get("exponent", np.nan)):
            ax.plot(
                depths,
                sf["amplitude"] * depths ** sf["exponent"],
                color="tab:red",
                lw=0.9,
                label=f"fit L^{sf['exponent']:.2f} ± {sf['exponent_se']:.2f}",
            )
        _axes(
            ax,
            "depth L",
            "|Σ_ℓ χ_ℓ|",
            logy=True,
            title="total coupling |Σχ| (project: flat in L)",
            title_size=8,
            legend=6,
        )
        ax = axes[2]
        for i, n in enumerate(widths):
            ax.errorbar(
                depths * offs[i],
                a["chi_sum"][i],
                a["chi_sum_se"][i],
                fmt=_MARKERS[i % len(_MARKERS)],
                ms=3.5,
                color=colors[i],
                lw=0.8,
                capsize=1.5,
                label=f"standard n={n}",
            )
            ax.errorbar(
                depths * offs[i],
                a["chi_dec_sum"][i],
                a["chi_dec_sum_se"][i],
                fmt=_MARKERS[i % len(_MARKERS)],
                ms=3.5,
                mfc="none",
                color=colors[i],
                lw=0.8,
                capsize=1.5,
                label=f"decoupled control n={n}",
            )
        ax.axhline(0.0, color="k", lw=0.6)
        _axes(
            ax,
            "depth L",
            "Σ_ℓ χ_ℓ",
            title="Σχ with its decoupled control (must be ≈ 0)",
            title_size=8,
        )
        ax.legend(fontsize=5.5, ncols=2)
    return fig


def gaps_figure(run: Run) -> Figure:
    """(c) d_A against n, d_B against L, the standard − decoupled gaps, and the initial gap."""
    a, s = run.arrays, run.meta["summary"]
    depths, widths = a["depths"], a["widths"]
    obs = list(_OBS_LABELS)
    T = int(a["steps"][-1])
    obs_colors = plt.get_cmap("tab10")
    with style():
        fig, axes = plt.subplots(2, 2, figsize=(9, 6.4), layout="constrained")
        ax = axes[0, 0]
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
                ax.plot(
                    widths, a["floor_A"][o, :, j], ls=":", lw=0.6, color=obs_colors(o), alpha=0.6
                )
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
            f"standard → mode A (line style: L = {', '.join(map(str, depths))}; "
            "dotted: noise floor)",
            fontsize=7,
        )
        ax.legend(fontsize=6)
        ax = axes[0, 1]
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
            ax.plot(
                depths, a["d_B"][o, -1], ls=":", marker=".", lw=0.7, color=obs_colors(o), alpha=0.7
            )
        _axes(
            ax,
            "depth L",
            "d_B = ‖E O_std − O_B‖ / ‖O_A‖",
            logy=True,
            title=f"standard → mode B ({s['ratio_source']}; dotted: n = {widths[-1]})",
            title_size=7,
            legend=6,
        )
        ax = axes[1, 0]

        def bar(y, se, **kw):
            ax.errorbar(depths, y, se, ms=3.5, lw=1.0, capsize=1.5, **kw)

        for t, mk in sorted({(1, "o"), (T, "s")}):
            ls = "-" if t == 1 else "--"
            gap = np.abs(a["loss_gap"][-1, :, t])
            bar(
                gap,
                a["loss_gap_se"][-1, :, t],
                marker=mk,
                color="tab:blue",
                ls=ls,
                label=f"|loss gap| P2, t = {t}",
            )
            bar(
                a["eps_f"][-1, :, t],
                a["eps_f_se"][-1, :, t],
                marker=mk,
                color="tab:orange",
                ls=ls,
                label=f"ε_f P2, t = {t}",
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
        ax = axes[1, 1]
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
    return fig


def gamma_figure(run: Run) -> Figure:
    """The γ0 scan of the limit gaps (mode A − mode B), log-log, with a slope-2 guide."""
    a, s = run.arrays, run.meta["summary"]
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


def gia_figures(run: Run) -> dict[str, Any]:
    """Every figure of a ``kind = "gia"`` run, by name (``gamma`` only when γ0 was scanned)."""
    figs = {"ratio": ratio_figure(run), "chi": chi_figure(run), "gaps": gaps_figure(run)}
    if "gamma" in run.meta["summary"]:
        figs["gamma"] = gamma_figure(run)
    return figs
