"""The transfer report (§6, T8–T10): the argmin table, the transfer verdict per optimizer,
the one-step collapse and coordinate checks and the T10 control, written from the numbers of
`nfd.analysis.transfer_analysis` only."""

from typing import Any

import numpy as np

from ._format import slope_text


def transfer_report(run: Any, summary: dict) -> str:
    """Plain-language summary of a saved transfer run (``summary``: `transfer_analysis` of its
    arrays; the setup from its config)."""
    a = run.arrays
    cfg = run.config
    opts = cfg.transfer.optimizers
    labels, rows = summary["labels"], summary["rows"]
    depths = ", ".join(str(int(L)) for L in a["depths"])
    lines = [
        f"Learning-rate transfer on `{cfg.task.name}` ({cfg.model.activation}, {cfg.seeds} seeds, "
        f"{cfg.optim.steps} steps, depths {depths}); loss = {rows[0]['loss'] if rows else '-'} "
        "after the budget. An argmin counts every grid point within 2 SE of the minimum (T8); "
        "the weighted slope weights each depth by its argmin's grid cell and tie range.\n",
        "| optimizer | variant | n | argmin η0 per L | slope d log η* / d log L | weighted slope "
        "| moves (grid steps) | T8 | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        am = ", ".join("—" if not np.isfinite(x) else f"{x:g}" for x in r["argmin"])
        lines.append(
            f"| {r['optimizer']} | {r['variant']} | {r['width']} | {am} | "
            f"{slope_text(r['slope'], r['slope_se'])} | "
            f"{slope_text(r['weighted_slope'], r['weighted_slope_se'])} | "
            f"{r['grid_steps']:.0f} | {'yes' if r['transfer'] else 'no'} | {r['verdict']} |"
        )
    lines += ["", "Transfer verdict (measured, this run):", *_verdicts(rows, opts, labels)]
    lines += _remedies_md(rows, opts, labels)
    if "collapse" in summary:
        lines += _collapse_md(a, opts, summary)
    if "t10" in summary:
        lines += _t10_md(a, summary["t10"])
    skipped = [s for s in a["limit_skipped"].tolist() if s]
    if skipped:
        lines += ["", "No limit overlay for: " + "; ".join(skipped)]
    return "\n".join(lines) + "\n"


def _names(labels: list[str]) -> str:
    return ", ".join(f"`{x}`" for x in labels)


def _verdicts(rows: list[dict], opts, labels) -> list[str]:
    """One sentence per optimizer: which variants transfer at every width, which do not, and
    which exponents a of the two-layer correction restore transfer."""
    out = []
    for opt in opts:
        state = {}
        for label in labels:
            vs = {r["verdict"] for r in rows if r["optimizer"] == opt and r["variant"] == label}
            state[label] = (
                "moves"
                if "moves" in vs
                else "undetermined"
                if "undetermined" in vs
                else "transfers"
            )
        group = {
            k: [lb for lb in labels if state[lb] == k]
            for k in ("transfers", "moves", "undetermined")
        }
        two = [lb for lb in labels if _exponent(lb) is not None]  # depth-μP, W1 rate × L^a
        fixed = [str(_exponent(lb)) for lb in two if state[lb] == "transfers"]
        text = f"- {opt}: the argmin η0 stays within one grid step over L (bracketed) for "
        text += _names(group["transfers"]) if group["transfers"] else "no variant"
        if group["moves"]:
            text += f"; it moves further for {_names(group['moves'])}"
        if group["undetermined"]:
            text += (
                f"; undetermined (an argmin at the grid's edge) for {_names(group['undetermined'])}"
            )
        if two:
            base = [lb for lb in two if _exponent(lb) == "0"]
            others = [x for x in fixed if x != "0"]
            if base and state[base[0]] == "transfers":
                text += ". Two-layer blocks transfer without the correction (a = 0)" + (
                    f", and also with L^a for a ∈ {{{', '.join(others)}}}." if others else "."
                )
            elif fixed:
                text += f". Two-layer blocks: the correction L^a restores transfer for a ∈ {{{', '.join(fixed)}}}."
            else:
                text += ". Two-layer blocks: no tested exponent a restores transfer in this run."
        others = [lb for lb in labels if lb.startswith("two-layer") and lb not in two]
        if others:
            text += " Other remedies: " + "; ".join(f"`{lb}` {state[lb]}" for lb in others)
        out.append(text if text.endswith(".") else text + ".")
    return out


def _exponent(label: str) -> str | None:
    """The ``a`` of a depth-μP two-layer label (``two-layer, a=0.5``), else ``None``."""
    if not label.startswith("two-layer, a=") or label.endswith("μP"):
        return None
    return label.split("a=")[1]


def _remedies_md(rows: list[dict], opts, labels) -> list[str]:
    """Per optimizer and two-layer variant (each a remedy of the first-layer collapse or its
    absence), at the largest width: the argmin η0's slope in L (least squares and weighted),
    the verdict and the best loss at the shallowest and deepest L."""
    two = [lb for lb in labels if lb.startswith("two-layer")]
    if not two:
        return []
    width = max(r["width"] for r in rows)
    lines = [
        "",
        f"Remedies for two-layer blocks (n = {width}): argmin η0 slope d log η* / d log L and "
        "best loss from the shallowest to the deepest L:",
        "",
        "| optimizer | remedy | argmin slope | weighted slope | verdict | best loss |",
        "|---|---|---|---|---|---|",
    ]
    for opt in opts:
        for lb in two:
            (r,) = [
                r
                for r in rows
                if r["optimizer"] == opt and r["variant"] == lb and r["width"] == width
            ]
            loss = r["best_loss"]
            lines.append(
                f"| {opt} | {lb} | {slope_text(r['slope'], r['slope_se'])} | "
                f"{slope_text(r['weighted_slope'], r['weighted_slope_se'])} | {r['verdict']} | "
                f"{loss[0]:.3g} → {loss[-1]:.3g} |"
            )
    return lines


def _collapse_md(a: dict, opts, summary: dict) -> list[str]:
    lr = ", ".join(f"{o} η0 = {x:g}" for o, x in zip(opts, a["collapse_lr"], strict=True))
    lines = [
        "",
        f"First-layer collapse after one step ({lr}; largest width; §6, T9; expected "
        "δz^own slope a − ½ under depth-μP, 0 with the 1/L branch, a under μP; K_W1 slope a; "
        "K_W1 and the limit exist for depth-μP variants only, n/a elsewhere):",
        "",
        "| optimizer | variant | δz^own slope (finite) | limit (K = L) | expected | ok | "
        "K_W1 slope (n = ∞) | finite K_W1: max abs z vs n = ∞ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["collapse"]:
        lines.append(
            f"| {r['optimizer']} | {r['variant']} | {slope_text(r['dz_slope'], r['dz_slope_se'])} | "
            f"{slope_text(r['limit_dz_slope'], r['limit_dz_slope_se'])} | "
            f"{r.get('expected', r['a'] - 0.5):+.2f} | {'yes' if r['dz_ok'] else 'no'} | "
            f"{slope_text(r['k_w1_slope'], np.nan)} | "
            f"{'n/a' if not np.isfinite(r['k_w1_max_z']) else format(r['k_w1_max_z'], '.1f')} |"
        )
    lines += [
        "",
        "Coordinate check (T8, |slope| ≤ 0.1 + 2 SE): slopes of L × per-block own update and of "
        "the one-step RMS change of f, against L (per width) and n (per depth):",
        "",
        "| optimizer | variant | L·block update vs L | vs n | Δf vs L | vs n | flat |",
        "|---|---|---|---|---|---|---|",
    ]

    def sl(items):
        return ", ".join(slope_text(s, se) for s, se in items) or "—"

    for r in summary["coordinate"]:
        b, f = r["block_move"], r["df_step"]
        lines.append(
            f"| {r['optimizer']} | {r['variant']} | {sl(b['slope_L'])} | {sl(b['slope_n'])} | "
            f"{sl(f['slope_L'])} | {sl(f['slope_n'])} | "
            f"{'yes' if b['flat'] and f['flat'] else 'no'} |"
        )
    return lines


def _t10_md(a: dict, t10: dict) -> list[str]:
    pre, pse, post = t10["pre"], t10["pre_se"], t10["post"]
    return [
        "",
        "Pre- vs post-activation (T10, ReLU, init): mean squared feature at τ = 1 per L: "
        + ", ".join(
            f"L={int(L)}: pre {p:.3g} ± {e:.2g} (n = ∞ at K = L: {r:.4g}, |z| {zr:.1f}; "
            f"e^(1/2): |z| {zl:.1f}), post {q:.3g}"
            for L, p, e, r, zr, zl, q in zip(
                a["depths"], pre, pse, t10["ref"], t10["z_ref"], t10["z_lim"], post, strict=True
            )
        )
        + f". Post-activation growth over the depths: ×{post[-1] / post[0]:.3g}; "
        f"pre-activation: ×{pre[-1] / pre[0]:.3g} (e^(1/2) = 1.649 is the L → ∞ value).",
    ]
