"""The decoupling experiment's analysis (arXiv 2512.21075 Fig. 2; docs/math §1.6, §1.7).

The **gap** of a seed is the relative difference of its final losses in the two backward modes,
``(ℓ_decoupled − ℓ_reused) / ℓ_reused``, for the train and the test loss. Both modes of a seed
share their forward initialisation, so this is a paired difference; its mean ± SE over seeds is
taken per (arch, depth). Per arch, ``|mean gap| ≈ A L^p`` is fitted by weighted least squares on
logs (`power_fit`, weights from the SEs), and the slope's SE is inflated by the Birge ratio
``sqrt(χ²/dof)`` when the points scatter more than their errors say.

Verdict per arch (`VERDICT_SIGMAS` = 2):

* fewer than `MIN_POINTS` (4) depths with a finite gap: "undetermined at this size"
  (`nfd.reports._format.too_few`);
* fewer than 2 depths whose gap is resolved from 0 (``|gap| > 2 SE``): undetermined (no gap
  to follow);
* slope ``p + 2 SE < 0``: **merges with depth** (the curves approach each other as L grows);
* otherwise (``p ≥ 0`` within 2 SE): **does not merge**.
"""

import math
from typing import Any

import numpy as np

from ._stats import finite_mean_se, mean_se, power_fit

VERDICT_SIGMAS = 2.0
MIN_POINTS = 4  # = nfd.reports._format.MIN_POINTS (analysis does not import reports)


def paired_gaps(loss: np.ndarray, step: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SE over seeds of ``(ℓ_dec − ℓ_reu)/ℓ_reu`` at ``step``, from losses
    ``(..., B=2, E, S)`` (reused first); a seed with a non-finite loss in either mode is dropped."""
    reused, decoupled = loss[..., 0, :, step], loss[..., 1, :, step]
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = (decoupled - reused) / reused
    rel = np.where(np.isfinite(rel), rel, np.nan)
    return mean_se(rel, axis=-1)


def gap_fit(depths, gap, se) -> dict[str, Any]:
    """``|gap| ≈ A L^p``: slope ``p`` and its SE (Birge-inflated), amplitude, χ², dof, p-value
    and the number of depths used."""
    L, g, s = (np.asarray(a, float) for a in (depths, gap, se))
    ok = np.isfinite(g) & (g != 0) & np.isfinite(s)
    fit = power_fit(L[ok], g[ok], s[ok] if ok.any() else None)
    slope_se = fit["exponent_se"]
    if fit["chi2"] is not None and fit["dof"] > 0:
        slope_se = slope_se * max(1.0, math.sqrt(fit["chi2"] / fit["dof"]))
    return {
        "slope": fit["exponent"],
        "slope_se": slope_se,
        "amplitude": fit.get("amplitude", math.nan),
        "chi2": fit["chi2"],
        "dof": fit["dof"],
        "p": fit["p"],
        "points": int(ok.sum()),
        "resolved": int(np.sum(ok & (np.abs(g) > VERDICT_SIGMAS * s))),
    }


def gap_verdict(fit: dict[str, Any]) -> str:
    """The verdict of the module docstring for one fit (`gap_fit`), as a code: ``merges``,
    ``no_merge``, or why it is undetermined (``too_few``, ``unresolved``, ``no_se``); the report
    puts the codes into words."""
    if fit["points"] < MIN_POINTS:
        return "too_few"
    if fit["resolved"] < 2:
        return "unresolved"
    if not np.isfinite(fit["slope_se"]):
        return "no_se"
    if fit["slope"] + VERDICT_SIGMAS * fit["slope_se"] < 0:
        return "merges"
    return "no_merge"


def decoupling_summary(arrays: dict[str, Any]) -> dict[str, Any]:
    """Final-step paired gaps per (arch, depth), the power-law fits and verdicts per arch, the
    step-0 gap (exactly 0: same forward initialisation) and the seed-mean curves for the plots."""
    archs = [str(a) for a in np.asarray(arrays["archs"])]
    depths = np.asarray(arrays["depths"], int)
    out: dict[str, Any] = {"archs": archs, "depths": depths.tolist(), "rows": [], "fits": {}}
    gaps = {}
    for split in ("train", "test"):
        loss = np.asarray(arrays[f"loss_{split}"], float)
        gaps[split] = paired_gaps(loss)
        out[f"step0_gap_{split}"] = float(np.nanmax(np.abs(paired_gaps(loss, 0)[0])))
        out[f"curves_{split}"] = finite_mean_se(loss, axis=-2)  # (A, J, B, S) mean, SE
    status = np.asarray(arrays["status"])
    final = finite_mean_se(np.asarray(arrays["loss_train"], float)[..., -1], axis=-1)[0]
    for a, arch in enumerate(archs):
        out["fits"][arch] = {}
        for split in ("train", "test"):
            fit = gap_fit(depths, gaps[split][0][a], gaps[split][1][a])
            out["fits"][arch][split] = {**fit, "verdict": gap_verdict(fit)}
        for j, L in enumerate(depths):
            row = {"arch": arch, "depth": int(L), "diverged": int(np.sum(status[a, j] != 0))}
            for split in ("train", "test"):
                row[f"gap_{split}"] = float(gaps[split][0][a, j])
                row[f"gap_{split}_se"] = float(gaps[split][1][a, j])
            row["loss_reused"], row["loss_decoupled"] = (float(x) for x in final[a, j])
            out["rows"].append(row)
    out["steps"] = np.asarray(arrays["steps"]).tolist()
    return out
