"""The decoupling report (arXiv 2512.21075 Fig. 2): the paired final-step gaps between reused
and decoupled backward weights per architecture and depth, the power-law fit of the gap against
depth and the verdict per architecture, written from `nfd.analysis.decoupling_summary` only."""

from typing import Any

from ._format import UNDETERMINED, pm, slope_text, too_few

NAMES = {
    "plain": "plain muP network (no skips)",
    "mup": "muP ResNet (branch 1)",
    "depth_mup": "depth-muP ResNet (branch 1/√L)",
}
MERGES = "merges with depth"
NO_MERGE = "does not merge"


def verdict_words(fit: dict) -> str:
    """The words of an analysis verdict code (`nfd.analysis.gap_verdict`)."""
    code = fit["verdict"]
    if code == "merges":
        return MERGES
    if code == "no_merge":
        return NO_MERGE
    if code == "too_few":
        return too_few(fit["points"], "depths") or UNDETERMINED
    if code == "unresolved":
        return (
            f"{UNDETERMINED} (the gap is resolved from 0 at {fit['resolved']} depths; the fit "
            "needs 2)"
        )
    return f"{UNDETERMINED} (no SE for the slope)"


def _claim(summary: dict) -> list[str]:
    """The paper's claim (only depth-muP merges) against the measured train-loss verdicts."""
    verdicts = {a: verdict_words(summary["fits"][a]["train"]) for a in summary["archs"]}
    expected = {a: (MERGES if a == "depth_mup" else NO_MERGE) for a in verdicts}
    decided = {a: v for a, v in verdicts.items() if v in (MERGES, NO_MERGE)}
    if not decided:
        return [
            "The paper's claim is **undetermined at this size**: no architecture's gap "
            "could be fitted."
        ]
    agree = [a for a, v in decided.items() if v == expected[a]]
    disagree = [a for a, v in decided.items() if v != expected[a]]
    words = []
    if agree:
        words.append("agrees for " + ", ".join(f"`{a}`" for a in agree))
    if disagree:
        words.append("disagrees for " + ", ".join(f"`{a}`" for a in disagree))
    undecided = [a for a in verdicts if a not in decided]
    if undecided:
        words.append("is undetermined at this size for " + ", ".join(f"`{a}`" for a in undecided))
    return [
        "The paper (Fig. 2) reports that the reused and decoupled curves merge with depth only "
        "under depth-muP. Measured on the train-loss gap, this run " + "; ".join(words) + "."
    ]


def decoupling_report(run: Any, summary: dict) -> str:
    """Plain-language summary of a saved decoupling run."""
    cfg = run.config
    depths = ", ".join(str(L) for L in summary["depths"])
    lines = [
        f"Reused against decoupled backward weights on `{cfg.task.name}` ({cfg.model.activation}, "
        f"width {cfg.model.width}, {cfg.optim.name} η0 = {cfg.optim.lr:g}, {cfg.optim.loss}, "
        f"{cfg.seeds} seeds per cell, {cfg.optim.steps} steps, depths {depths}). The gap of a "
        "seed is (ℓ_decoupled − ℓ_reused)/ℓ_reused of its final loss; both modes of a seed "
        "share the forward initialisation (the step-0 gap is "
        f"{summary['step0_gap_train']:.1e} train, {summary['step0_gap_test']:.1e} test).\n",
        "| arch | L | train loss reused | train loss decoupled | train gap | test gap | diverged |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        lines.append(
            f"| {r['arch']} | {r['depth']} | {r['loss_reused']:.4g} | {r['loss_decoupled']:.4g} "
            f"| {pm(r['gap_train'], r['gap_train_se'], 2)} | "
            f"{pm(r['gap_test'], r['gap_test_se'], 2)} | {r['diverged']} |"
        )
    lines += [
        "",
        "Fit |gap| ≈ A L^p per architecture (weighted, slope SE inflated by sqrt(χ²/dof) when "
        "the points scatter more than their errors). Verdict: slope + 2 SE < 0 → merges with "
        "depth; otherwise does not merge; fewer than 4 depths, or a gap resolved from 0 at "
        "fewer than 2 depths → undetermined at this size.\n",
        "| arch | train slope p | train verdict | test slope p | test verdict |",
        "|---|---|---|---|---|",
    ]
    for a in summary["archs"]:
        tr, te = summary["fits"][a]["train"], summary["fits"][a]["test"]
        lines.append(
            f"| {NAMES.get(a, a)} | {slope_text(tr['slope'], tr['slope_se'])} | "
            f"{verdict_words(tr)} | {slope_text(te['slope'], te['slope_se'])} | "
            f"{verdict_words(te)} |"
        )
    lines += ["", *_claim(summary)]
    return "\n".join(lines) + "\n"
