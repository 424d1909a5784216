"""The feature-norm report (arXiv 2512.21075 Fig. 1, T10): pre- vs post-activation feature
norms across layers, at initialisation and after training, written from the numbers of
`nfd.analysis.feature_norms_analysis` only."""

from typing import Any

import numpy as np

from ._format import pm, slope_text

PAPER = (
    "The paper (arXiv 2512.21075, Fig. 1) states that the pre-activation depth-μP ResNet keeps its "
    "feature norms O(1) across layers and training, while the post-activation form "
    "h ← φ(h + b W h/√n) grows with depth."
)


def _table(a: dict, at: dict) -> list[str]:
    ref = at["ref"]
    lines = [
        "| L | pre: last/first | n = ∞ (" + ref["what"] + ") | abs z | pre: last-layer RMS | "
        "post: last/first | post: last-layer RMS |",
        "|---|---|---|---|---|---|---|",
    ]
    pre, post, z = at["pre"], at["post"], at["pre"]["check"]["z"]
    for j, L in enumerate(a["depths"]):
        lines.append(
            f"| {int(L)} | {pm(pre['ratio'][j], pre['ratio_se'][j])} | "
            f"{pm(ref['ratio'][j], ref['ratio_se'][j], 4, show_zero=False)} | {z[j]:.1f} | "
            f"{pm(pre['rms_last'][j], pre['rms_last_se'][j])} | "
            f"{pm(post['ratio'][j], post['ratio_se'][j])} | "
            f"{pm(post['rms_last'][j], post['rms_last_se'][j])} |"
        )
    return lines


def _verdict(at: dict, when: str) -> list[str]:
    pre, post, ref = at["pre"], at["post"], at["ref"]
    check = pre["check"]
    gp, gq, gr = pre["growth"], post["growth"], ref["growth"]
    if check["within"] is None:
        within = f"no n = ∞ reference at {when}"
    else:
        within = (
            f"last/first ratio {'within' if check['within'] else 'not within'} 2 SE of the "
            f"{ref['what']} at every depth (largest abs z {check['max_z']:.1f})"
        )
    return [
        f"- **Pre-activation, {when}: {check['verdict']}** — {within}; growth exponent of the "
        f"last-layer RMS feature in L {slope_text(gp['slope'], gp['slope_se'])} "
        f"(n = ∞: {slope_text(gr['slope'], gr['slope_se'])}).",
        f"- **Post-activation, {when}: {post['verdict']}** — growth exponent "
        f'{slope_text(gq["slope"], gq["slope_se"])} ("grows" needs > 0 by ≥ 2 SE).',
    ]


def feature_norms_report(run: Any, summary: dict) -> str:
    """Plain-language summary of a saved feature-norm run (``summary``:
    `feature_norms_analysis` of its arrays; the setup from its config)."""
    a, cfg = run.arrays, run.config
    init, end = summary["init"], summary["end"]
    batch = cfg.optim.batch_size or "full batch"
    lines = [
        f"Feature norms across layers on `{cfg.task.name}` ({cfg.model.activation}, width "
        f"{int(a['width'])}, depths {', '.join(str(int(L)) for L in a['depths'])}, "
        f"{cfg.seeds} seeds, {cfg.optim.name} η0 = {cfg.optim.lr:g}, batch {batch}, "
        f"{cfg.optim.steps} steps). Ratio = mean squared feature at layer L over layer 0 "
        "(its n = ∞ value at t = 0 is (1 + 1/(2L))^L → e^(1/2) = 1.649 for ReLU); ± SE over "
        "seeds.\n",
        PAPER + "\n",
        f"At initialisation (t = {init['step']}):\n",
        *_table(a, init),
        "",
        f"After training (t = {end['step']}):\n",
        *_table(a, end),
        "",
        "Verdict (measured, this run):",
        *_verdict(init, "initialisation"),
        *_verdict(end, f"t = {end['step']}"),
    ]
    zs = init["pre"]["z_sqrt_e"]
    lines.append(
        "- Pre-activation ratio at t = 0 against e^(1/2) (the L → ∞ value): abs z "
        + ", ".join(f"{z:.1f} (L = {int(L)})" for L, z in zip(a["depths"], zs, strict=True))
        + "."
    )
    skipped = str(a["limit_skipped"][0])
    if skipped:
        lines.append(
            f"- No n = ∞ reference during training ({skipped}): the pre-activation verdict "
            "after training rests on the growth exponent alone; at t = 0 the recursion is used."
        )
    for form in ("pre", "post"):
        lost = int(np.sum(~np.isfinite(a[f"norm2_{form}"][:, :, -1, 0])))
        if lost:
            lines.append(f"- {lost} {form}-activation member(s) diverged (left out of the means).")
    return "\n".join(lines) + "\n"
