"""The sweep report: the finite → limit distances, their n-slopes and the depth scaling of the
loss (§5.3, §7.1, T7, T11) in tables and sentences generated from the numbers only."""

from collections.abc import Mapping

import numpy as np

from ..analysis._stats import num
from ..experiments._sweep import KINF
from ._format import fixed, pm, too_few

MODE_NAMES = {"exact": "mode A (exact)", "decoupled": "mode B (decoupled, NFD/GIA)"}
KINF_WORDS = "K → ∞ (Richardson of K = L and 2L)"


def mode_name(mode: str) -> str:
    """A limit mode in words; ``X_kinf`` is mode ``X`` at ``K → ∞``."""
    if mode.endswith(KINF):
        base = mode.removesuffix(KINF)
        return f"{MODE_NAMES.get(base, base)} at {KINF_WORDS}"
    return MODE_NAMES.get(mode, mode)


def layer_words(mode: str) -> str:
    """The layer steps of a mode's limit: ``K = L``, or the Richardson ``K → ∞``."""
    return KINF_WORDS if mode.endswith(KINF) else "K = L"


def summary_table(summary: Mapping) -> str:
    """A plain-text table of the distances to each limit mode, the n-slopes and n → ∞ values."""
    lines = []
    for mode, res in summary["modes"].items():
        lines.append(
            f"distance of finite predictions to the {mode} limit ({layer_words(mode)}), "
            "seed means, debiased, ± bootstrap SE"
        )
        header = "  lr      L  " + "  ".join(f"n={n:<15d}" for n in summary["widths"])
        lines.append(header + "  slope in n     d(n→∞) [d∞ + α/n]   ‖f∞ − f_limit‖")
        for r, lr in enumerate(summary["lrs"]):
            for j, L in enumerate(summary["depths"]):
                cells = "  ".join(
                    f"{fixed(res['d'][i][j][r])}±{fixed(res['se'][i][j][r], 1)}"
                    for i in range(len(summary["widths"]))
                )
                fit = res["fits"][j][r]
                ext = res["extrap"]
                lines.append(
                    f"  {lr:<7.3g} {L:<3d} {cells}  {fixed(fit.get('slope'), 2, 'f')}±"
                    f"{fixed(fit.get('slope_se'), 2, 'f')}   {fixed(fit.get('d_inf'))}±"
                    f"{fixed(fit.get('d_inf_se'), 1)}   {fixed(ext['d'][j][r])}±{fixed(ext['se'][j][r], 1)}"
                )
    return "\n".join(lines)


def sweep_report(summary: Mapping, *, diverged: int = 0, members: int = 0) -> str:
    """Markdown report of a sweep: tables and sentences generated from the numbers only."""
    md = ['## Finite networks → NFD limit (`kind = "sweep"`)', ""]
    anti = "antithetic pairs v(0) ↔ −v(0)" if summary.get("antithetic") else "independent seeds"
    md.append(
        f"Widths {summary['widths']}, depths {summary['depths']}, learning rates "
        f"{summary['lrs']}; finite ensembles use {anti}; the particle limit uses "
        f"M = {summary.get('limit_particles')} particles at K = L"
        + (
            f"; modes marked {KINF_WORDS} combine coupled runs at K = L and 2L layer steps, "
            "2 f(2L) − f(L) per repetition (bias O(1/L²))"
            if any(m.endswith(KINF) for m in summary["modes"])
            else ""
        )
        + ". Distances are RMS over the saved steps and the train and test points of the "
        "seed-mean centred predictions, debiased for sampling noise; errors are bootstrap SEs "
        "(limit resampled jointly)."
    )
    md.append("")
    for mode, res in summary["modes"].items():
        md.append(f"### Distance to {mode_name(mode)}")
        md.append("")
        head = "| η0 | L | " + " | ".join(f"n = {n}" for n in summary["widths"])
        md.append(head + " | n-slope | d∞ + α/n: d∞ | ‖f∞ − f_limit‖ (Richardson) |")
        md.append("|" + "---|" * (len(summary["widths"]) + 5))
        for r, lr in enumerate(summary["lrs"]):
            for j, L in enumerate(summary["depths"]):
                fit = res["fits"][j][r]
                cells = " | ".join(
                    pm(num(res["d"][i][j][r]), num(res["se"][i][j][r]))
                    for i in range(len(summary["widths"]))
                )
                md.append(
                    f"| {lr:g} | {L} | {cells} | "
                    f"{pm(num(fit.get('slope')), num(fit.get('slope_se')))} | "
                    f"{pm(num(fit.get('d_inf')), num(fit.get('d_inf_se')))} | "
                    f"{pm(num(res['extrap']['d'][j][r]), num(res['extrap']['se'][j][r]))} |"
                )
        md.append("")
    md += _sentences(summary)
    md += _kernel_md(summary)
    md += _depth_scaling_md(summary)
    if members:
        md.append(f"Diverged members: {diverged} of {members}.")
    return "\n".join(md) + "\n"


def _kernel_md(summary: Mapping) -> list[str]:
    """The NTK distance table (present when the sweep saved ``output.ntk``)."""
    kern = summary.get("kernels")
    if not kern:
        return []
    md = [
        "### NTK distance (relative, every saved step, seed means, debiased, ± SE)",
        "",
        "| limit | η0 | L | " + " | ".join(f"n = {n}" for n in summary["widths"]) + " | n-slope |",
        "|" + "---|" * (len(summary["widths"]) + 4),
    ]
    for mode, res in kern.items():
        for r, lr in enumerate(summary["lrs"]):
            for j, L in enumerate(summary["depths"]):
                cells = " | ".join(
                    pm(num(res["d"][i][j][r]), num(res["se"][i][j][r]))
                    for i in range(len(summary["widths"]))
                )
                sl = res["slopes"][j][r]
                md.append(
                    f"| {mode_name(mode)} | {lr:g} | {L} | {cells} | "
                    f"{pm(num(sl['slope']), num(sl['slope_se']))} |"
                )
    return md + [""]


def _slope_words(mode: str, s: float, se: float) -> str:
    """One mode's n-slope in words; for mode A with the T7 requirement (−1 ± 0.3)."""
    name = mode_name(mode)
    if s >= 0:
        return f"the distance to {name} does not fall with n (slope {s:+.2f} ± {se:.2f})"
    words = f"the distance to {name} falls like n^({s:+.2f} ± {se:.2f})"
    if mode == "exact":
        ok = abs(s + 1) <= 0.3
        sig = f", {abs(s + 1) / se:.1f} SE from −1" if np.isfinite(se) and se > 0 else ""
        words += f" (T7, required −1 ± 0.3: {'met' if ok else 'NOT met'}{sig})"
    return words


def _sentences(summary: Mapping) -> list[str]:
    md = []
    modes = summary["modes"]
    for r, lr in enumerate(summary["lrs"]):
        for j, L in enumerate(summary["depths"]):
            parts = []
            for mode, res in modes.items():
                fit = res["fits"][j][r]
                s, se = num(fit.get("slope")), num(fit.get("slope_se"))
                if np.isfinite(s):
                    parts.append(_slope_words(mode, s, se))
            if parts:
                dof = f" (n-slopes from {len(summary['widths'])} widths, dof {len(summary['widths']) - 2})"
                md.append(f"- η0 = {lr:g}, L = {L}: " + "; ".join(parts) + dof + ".")
            ext = {
                m: (num(v["extrap"]["d"][j][r]), num(v["extrap"]["se"][j][r]))
                for m, v in modes.items()
            }
            ext = {m: v for m, v in ext.items() if np.isfinite(v[0]) and np.isfinite(v[1])}
            if not ext:
                continue
            zero = [m for m, (d, se) in ext.items() if d <= 3 * se]
            words = ", ".join(f"{pm(d, se)} from {mode_name(m)}" for m, (d, se) in ext.items())
            few = too_few(len(summary["widths"]), "widths", minimum=3)
            if few:
                verdict = few
            elif len(zero) == 1:
                verdict = f"only {mode_name(zero[0])} is consistent with 0"
            elif zero:
                verdict = "every mode is consistent with 0 (not resolved at this size)"
            else:
                best = min(ext, key=lambda m: ext[m][0])
                verdict = f"none is within 3 SE of 0; the closest is {mode_name(best)}"
            md.append(
                f"  Extrapolated to n = ∞ (f∞ + a/n), the finite predictions sit {words}: "
                f"{verdict}."
            )
            bias = num(summary["particle_bias"][j][r]) if "particle_bias" in summary else np.nan
            if "exact" in ext and np.isfinite(bias):
                d, se = ext["exact"]
                close = "within" if abs(d - bias) <= 3 * se else "beyond"
                md.append(
                    f"  The M-particle mode-A limit is itself ≈ ‖a‖/M = {bias:.2g} from f∞ "
                    f"(a width-M network in law); the mode-A distance is {close} 3 SE of that."
                )
    md += _plateau_sentences(summary)
    return md + [""] if md else md


def _plateau_sentences(summary: Mapping) -> list[str]:
    """For each ``X_kinf`` mode: the depth slope of the plateaus ``d∞(L)`` of ``d∞ + α/n`` (finite
    nets at depth L differ from the K → ∞ limit by O(1/L): expected −1)."""
    md = []
    for mode, res in summary["modes"].items():
        if not mode.endswith(KINF):
            continue
        for r, lr in enumerate(summary["lrs"]):
            plateau = res.get("plateau", [])
            if r >= len(plateau):
                continue
            p = plateau[r]
            s, se = num(p.get("slope")), num(p.get("slope_se"))
            cells = ", ".join(
                f"{pm(num(d), num(e))} (L = {L})"
                for d, e, L in zip(p["d_inf"], p["d_inf_se"], summary["depths"], strict=True)
            )
            if not np.isfinite(s):
                words = "too few positive plateaus for a depth slope"
            else:
                sig = f", {abs(s + 1) / se:.1f} SE from −1" if np.isfinite(se) and se > 0 else ""
                words = f"they fall like L^({s:+.2f} ± {se:.2g}) (expected −1 for O(1/L){sig})"
                few = too_few(len(summary["depths"]), "depths")
                words += f"; {few}" if few else ""
            md.append(
                f"- η0 = {lr:g}: the plateaus d∞ of d∞ + α/n against {mode_name(mode)} are "
                f"{cells}: {words}."
            )
    return md


def _depth_scaling_md(summary: Mapping) -> list[str]:
    md = ["### Depth scaling of the test loss (T11)", ""]
    t = summary["t_final"]
    for r, lr in enumerate(summary["lrs"]):
        fit = summary["depth_scaling"][r]
        if not np.isfinite(num(fit["L_inf"])):
            md.append(f"- η0 = {lr:g}: too few widths/depths for L∞ + α/n + b/L.")
            continue
        dof = fit["dof"]
        quality = (
            f"χ²/dof = {fit['chi2'] / dof:.2f} (dof {dof}, p = {num(fit['p_value']):.2g})"
            if dof > 0
            else "no degrees of freedom left for χ²"
        )
        verdict = (
            "the form describes the data"
            if dof > 0 and num(fit["p_value"]) > 0.01
            else "the form is rejected (p < 0.01)"
            if dof > 0
            else "fit quality untested"
        )
        md.append(
            f"- η0 = {lr:g}: the test loss at t = {t} fits L∞ + α/n + b/L with "
            f"L∞ = {pm(fit['L_inf'], fit['L_inf_se'])}, α = {pm(fit['alpha'], fit['alpha_se'])}, "
            f"b = {pm(fit['b'], fit['b_se'])}; {quality}: {verdict}."
        )
        for m, lim in fit["limits"].items():
            z = num(lim["z"])
            if not np.isfinite(z):
                continue
            agree = "agrees with L∞ (within 3 SE)" if abs(z) <= 3 else "differs from L∞"
            md.append(
                f"  {mode_name(m)} limit loss, extrapolated c + b/L in depth: "
                f"{pm(lim['inf'], lim['inf_se'])} (b = {pm(lim['b'], lim['b_se'])}); "
                f"L∞ − limit = {z:+.1f} SE: {agree}."
            )
        md.append("")
        md.append(
            "| L | finite n → ∞ (ℓ∞ + α/n) | "
            + " | ".join(
                f"{m.removesuffix(KINF)} limit ({'K → ∞' if m.endswith(KINF) else 'K = L'}) | z"
                for m in fit["limits"]
            )
            + " |"
        )
        md.append("|" + "---|" * (2 + 2 * len(fit["limits"])))
        loss = summary["loss"]
        for j, L in enumerate(summary["depths"]):
            cells = [
                f"{pm(num(loss['limit'][m][j][r]), num(loss['limit_se'][m][j][r]))} | "
                f"{num(lim['z_depth'][j]):+.1f}"
                for m, lim in fit["limits"].items()
            ]
            per = fit["per_depth"]
            md.append(
                f"| {L} | {pm(num(per['inf'][j]), num(per['se'][j]))} | " + " | ".join(cells) + " |"
            )
        bias = num(fit.get("particle_bias"))
        if np.isfinite(bias):
            md.append("")
            md.append(
                f"The mode-A particle limit with M particles is a width-M network in law (spec "
                f"T5d), so its own loss bias is about α/M = {bias:+.2g}."
            )
        md.append("")
    return md
