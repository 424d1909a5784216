"""The scaling section of a sweep report: the final loss against width and depth with the n = ∞
limit, and where more width or more depth stops paying, in a table and sentences written from
`nfd.analysis.scaling_summary` only."""

from collections.abc import Mapping

import numpy as np

from ..analysis._scaling import MIN_DEPTHS, MIN_WIDTHS, SAT_SE
from ..analysis._stats import num
from ._format import UNDETERMINED, pm, too_few
from ._sweep import mode_name

L_INF_WORDS = {
    "kinf": "the K → ∞ (Richardson) limit loss at the deepest depth",
    "fit": "the c + b/L extrapolation of the K = L limit losses over depth",
}


def _table(s: Mapping, p: Mapping) -> list[str]:
    md = ["| n \\ L | " + " | ".join(str(L) for L in s["depths"]) + " |"]
    md.append("|" + "---|" * (len(s["depths"]) + 1))
    for i, n in enumerate(s["widths"]):
        cells = [
            pm(num(p["finite"][i][j]), num(p["finite_se"][i][j])) for j in range(len(s["depths"]))
        ]
        md.append(f"| {n} | " + " | ".join(cells) + " |")
    for key, label in (("limit", "∞ (K = L)"), ("kinf", "∞ (K → ∞)")):
        if p[key] is not None:
            cells = [pm(num(p[key][j]), num(p[key + "_se"][j])) for j in range(len(s["depths"]))]
            md.append(f"| {label} | " + " | ".join(cells) + " |")
    return md + [""]


def _width_words(s: Mapping, p: Mapping) -> list[str]:
    md = []
    for j, L in enumerate(s["depths"]):
        sat = p["width_saturation"][j]
        lim = pm(num(p["limit"][j]), num(p["limit_se"][j])) if p["limit"] is not None else "n/a"
        if sat["status"] == "saturated":
            n = sat["width"]
            words = (
                f"width saturates at or below n = {n} (the smallest width run)"
                if sat["at_smallest"]
                else f"width saturates at n = {n}"
            )
        elif sat["status"] == "not_reached":
            z = num(sat["z"][-1])
            side = "above" if z > 0 else "below"
            words = (
                f"not within the widths run (n = {s['widths'][-1]} is still {abs(z):.1f} combined "
                f"SE {side} the limit)"
            )
        else:
            few = p["limit"] is None and "no n = ∞ limit in this sweep"
            words = f"{UNDETERMINED} ({few or f'fewer than {MIN_WIDTHS} widths'})"
        md.append(f"  - L = {L} (limit {lim}): {words}.")
    return md


def _depth_words(s: Mapping, p: Mapping) -> list[str]:
    rows = [(f"n = {n}", p["depth_saturation"][i]) for i, n in enumerate(s["widths"])]
    if p["limit"] is not None:
        rows.append(("n = ∞ (limit, K = L)", p["limit_depth_saturation"]))
    md = []
    few = too_few(len(s["depths"]), "depths", minimum=MIN_DEPTHS)
    for label, sat in rows:
        if sat["status"] == "saturated":
            L = sat["depth"]
            at = " (the shallowest depth run)" if sat["at_smallest"] else ""
            words = f"depth saturates at L = {L}{at}: deeper changes the loss by < {SAT_SE:g} SE"
        elif sat["status"] == "not_reached":
            words = (
                f"not within the depths run (L = {s['depths'][-2]} → {s['depths'][-1]} still "
                f"changes the loss by more than {SAT_SE:g} SE)"
            )
        else:
            words = few or f"{UNDETERMINED} (too few finite losses)"
        md.append(f"  - {label}: {words}.")
    return md


def _gap_words(p: Mapping) -> str:
    g, how = p["gap"], p["L_inf_method"]
    if how is None:
        return f"- Largest finite cell vs the L → ∞ limit: {UNDETERMINED} (no L → ∞ value)."
    z = num(g["z"])
    verdict = (
        "consistent with it (within 2 SE)"
        if abs(z) <= SAT_SE
        else ("above it" if z > 0 else "below it") + f" by {abs(z):.1f} SE"
    )
    return (
        f"- The largest finite cell (n = {g['width']}, L = {g['depth']}) sits "
        f"{pm(num(g['gap']), num(g['se']))} from the L → ∞ value "
        f"{pm(num(p['L_inf']), num(p['L_inf_se']))} ({L_INF_WORDS[how]}): {verdict}."
    )


def _overall_words(o: Mapping, what: str, unit: str, other: str, last) -> str:
    """One clause: where more ``what`` stops paying across the other axis (`_overall`)."""
    parts = []
    if o["largest"] is not None:
        every = "" if o["not_reached"] or o["undetermined"] else f" at every {other}"
        parts.append(f"more {what} stops paying by {unit} = {o['largest']}{every}")
    if o["not_reached"]:
        short = "L" if other == "depth" else "n"
        labels = ", ".join(str(x) for x in o["not_reached"])
        parts.append(f"not within the {what}s run ({unit} ≤ {last}) for {short} = {labels}")
    if not parts:
        parts.append(f"where more {what} stops paying is {UNDETERMINED}")
    return "; ".join(parts)


def _headline(s: Mapping, p: Mapping) -> str:
    """One sentence: where more width and more depth stop paying, across the grid."""
    width = _overall_words(p["width_overall"], "width", "n", "depth", s["widths"][-1])
    depth = _overall_words(p["depth_overall"], "depth", "L", "width", s["depths"][-1])
    return f"- **Diminishing returns:** {width}; {depth}."


def scaling_report(s: Mapping) -> str:
    """Markdown: the scaling section of a sweep report (`nfd.analysis.scaling_summary`)."""
    what = "test" if s["source"] == "test" else "training"
    md = ["### Scaling: where more width or more depth stops paying", ""]
    if s["source"] != "test":
        md += ["The task has no test points (`task.n_test = 0`): the TRAINING loss is used.", ""]
    limit = (
        f"the n = ∞ limit is {mode_name(s['mode'])} with M = {s['limit_particles']} particles"
        if s["mode"]
        else "this sweep has no n = ∞ limit"
    )
    md.append(
        f"Final {what} loss at t = {s['t_final']} (a fixed step budget), mean ± SE over seeds; "
        f'{limit}. "Saturates" means: from there on every larger network is within '
        f"{SAT_SE:g} combined SE (of the limit for width, of that depth's loss for depth)."
    )
    md.append("")
    for r, lr in enumerate(s["lrs"]):
        p = s["per_lr"][r]
        md.append(f"η0 = {lr:g}:")
        md.append("")
        md += _table(s, p)
        md.append(_headline(s, p))
        md.append("- More width, per depth (against that depth's n = ∞ limit at K = L):")
        md += _width_words(s, p)
        md.append("- More depth, per width:")
        md += _depth_words(s, p)
        md.append(_gap_words(p))
        bias = [num(b) for b in p["particle_bias"]]
        if s["mode"] == "exact" and np.isfinite(bias).any():
            cells = ", ".join(f"{b:+.2g}" for b in bias)
            md.append(
                f"- The M-particle mode-A limit is a width-M network in law (T5d): its own loss "
                f"bias is about α/M = {cells} at L = {s['depths']} (α from ℓ∞ + α/n per depth)."
            )
        md.append("")
    return "\n".join(md) + "\n"
