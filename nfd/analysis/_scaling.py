"""Scaling trends of a sweep (`kind = "sweep"`): the final test loss against width and depth at a
fixed step budget, and where more width or more depth stops paying (the paper's "diminishing
returns"). A pure function of the saved arrays, so the figure and report are remade without
recomputation.

- The final loss per (width, depth): the mean ± SE over seeds (antithetic pair means when the
  sweep paired its members; diverged members left out). The test loss, or the training loss when
  the task has no test points (``task.n_test = 0``; the summary says which).
- Each depth's n = ∞ limit loss at ``K = L`` (mode A, the exact limit of the standard network,
  when the sweep ran it; else its first mode), ± SE over limit repetitions.
- The L → ∞ value of the limit: the ``K → ∞`` (Richardson) limit loss at the deepest depth, where
  the sweep ran ``sweep.extrapolate_layers`` (its bias is O(1/L²) there); without it, the
  ``c + b/L`` extrapolation of the ``K = L`` limit losses over depths.
- `saturation_width`: per depth, the smallest width from which on every wider network's loss is
  within ``2`` combined SE of that depth's limit; `saturation_depth`: per width (and for the limit
  itself), the smallest depth beyond which every deeper network's loss is within ``2`` combined SE
  of its loss there; the gap of the largest finite cell (widest, deepest) to the L → ∞ value.
"""

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..experiments._sweep import KINF
from ._stats import fit_inverse
from ._sweep import _unit_mean_se

SAT_SE = 2.0  # "within" means within this many combined standard errors
MIN_WIDTHS = 2  # a saturation width needs this many widths with a finite loss
MIN_DEPTHS = 3  # a saturation depth needs this many depths (one to saturate, two to compare)


def _within(a, a_se, b, b_se, k: float) -> bool:
    """Whether ``a ± a_se`` and ``b ± b_se`` differ by at most ``k`` combined SE."""
    return bool(abs(float(a) - float(b)) <= k * math.hypot(float(a_se), float(b_se)))


def saturation_width(widths, y, se, limit: float, limit_se: float, *, k: float = SAT_SE) -> dict:
    """The smallest width ``n*`` from which on the loss of every wider network is within ``k``
    combined SE of the limit ``limit ± limit_se`` (widths ascending; ``y``, ``se`` per width).

    Returns ``status``: ``"saturated"`` (``width`` = n*, ``at_smallest``: n* is the smallest width
    run, so the loss may saturate earlier), ``"not_reached"`` (even the widest is more than k SE
    away) or ``"undetermined"`` (no finite limit, or fewer than `MIN_WIDTHS` finite widths); and
    ``z``: each width's distance to the limit in combined SE."""
    widths, y, se = (np.asarray(a, float) for a in (widths, y, se))
    z = [(a - limit) / math.hypot(s, limit_se) for a, s in zip(y, se, strict=True)]
    out = {"status": "undetermined", "width": None, "at_smallest": False, "z": z}
    ok = np.isfinite(y) & np.isfinite(se)
    if not (np.isfinite(limit) and np.isfinite(limit_se)) or ok.sum() < MIN_WIDTHS:
        return out
    idx = np.flatnonzero(ok)
    inside = [_within(y[i], se[i], limit, limit_se, k) for i in idx]
    if not inside[-1]:
        return {**out, "status": "not_reached"}
    first = len(inside) - 1
    while first > 0 and inside[first - 1]:
        first -= 1
    n = int(widths[idx[first]])
    return {**out, "status": "saturated", "width": n, "at_smallest": first == 0}


def saturation_depth(depths, y, se, *, k: float = SAT_SE) -> dict:
    """The smallest depth ``L*`` such that the loss at every deeper depth is within ``k`` combined
    SE of the loss at ``L*`` (depths ascending): beyond ``L*`` more depth no longer changes the
    loss measurably.

    Returns ``status``: ``"saturated"`` (``depth`` = L*, ``at_smallest`` when it is the shallowest
    depth run), ``"not_reached"`` (the last two depths still differ by more than k SE) or
    ``"undetermined"`` (fewer than `MIN_DEPTHS` depths with a finite loss)."""
    depths, y, se = (np.asarray(a, float) for a in (depths, y, se))
    out = {"status": "undetermined", "depth": None, "at_smallest": False}
    idx = np.flatnonzero(np.isfinite(y) & np.isfinite(se))
    if len(idx) < MIN_DEPTHS:
        return out
    for pos, j in enumerate(idx[:-1]):
        if all(_within(y[i], se[i], y[j], se[j], k) for i in idx[pos + 1 :]):
            return {**out, "status": "saturated", "depth": int(depths[j]), "at_smallest": pos == 0}
    return {**out, "status": "not_reached"}


def _final(arrays: Mapping[str, np.ndarray], key: str, antithetic: bool) -> tuple:
    """Unit means and SEs of the last saved value of ``arrays[key]`` over its member axis (the one
    before the step axis), for every leading index."""
    x = np.asarray(arrays[key], float)[..., -1]
    mean, se = np.full(x.shape[:-1], np.nan), np.full(x.shape[:-1], np.nan)
    for idx in np.ndindex(*x.shape[:-1]):
        mean[idx], se[idx] = _unit_mean_se(x[idx], antithetic)
    return mean, se


def loss_source(arrays: Mapping[str, np.ndarray]) -> str:
    """``"test"``, or ``"train"`` when the task has no test points (``task.n_test = 0``)."""
    f_test = arrays.get("f_test")
    if arrays.get("loss_test") is None or (f_test is not None and np.shape(f_test)[-2] == 0):
        return "train"
    return "test"


def _limit_mode(couplings: Sequence[str]) -> str | None:
    """The limit mode drawn: mode A (``exact``) when run, else the first ``K = L`` mode."""
    base = [c for c in couplings if not c.endswith(KINF)]
    return "exact" if "exact" in base else (base[0] if base else None)


def _l_inf(depths, lim, lim_se, kinf, kinf_se) -> tuple[float, float, str | None]:
    """The L → ∞ value of the limit loss, its SE and how it was obtained."""
    if kinf is not None and np.isfinite(kinf[-1]):
        return float(kinf[-1]), float(kinf_se[-1]), "kinf"
    if lim is not None and np.sum(np.isfinite(lim) & (np.asarray(lim_se) > 0)) >= 2:
        c, c_se, _, _ = fit_inverse(depths, lim, lim_se)
        if np.isfinite(c):
            return float(c), float(c_se), "fit"
    return math.nan, math.nan, None


def _overall(sats: Sequence[Mapping], labels: Sequence[int], key: str) -> dict:
    """Across depths (or widths): the largest saturation ``key`` (width or depth) of the
    saturated ones, and the labels whose loss did not saturate or could not be decided."""
    done = [s[key] for s in sats if s["status"] == "saturated"]
    return {
        "largest": max(done) if done else None,
        "not_reached": [
            int(x) for x, s in zip(labels, sats, strict=True) if s["status"] == "not_reached"
        ],
        "undetermined": [
            int(x) for x, s in zip(labels, sats, strict=True) if s["status"] == "undetermined"
        ],
    }


def _per_lr(widths, depths, y, ys, lim, lim_se, kinf, kinf_se, M: int) -> dict:
    """The scaling summary of one learning rate (``y``, ``ys``: ``(W, Ld)``; limits ``(Ld,)``)."""
    L_inf, L_inf_se, how = _l_inf(depths, lim, lim_se, kinf, kinf_se)
    none = np.full(len(depths), np.nan)
    lim_a = none if lim is None else lim
    lim_s = none if lim_se is None else lim_se
    width_sat = [
        saturation_width(widths, y[:, j], ys[:, j], float(lim_a[j]), float(lim_s[j]))
        for j in range(len(depths))
    ]
    depth_sat = [saturation_depth(depths, y[i], ys[i]) for i in range(len(widths))]
    alpha = [fit_inverse(widths, y[:, j], ys[:, j])[2] for j in range(len(depths))]
    gap = y[-1, -1] - L_inf
    gap_se = math.hypot(ys[-1, -1], L_inf_se)
    return {
        "finite": y.tolist(),
        "finite_se": ys.tolist(),
        "limit": None if lim is None else lim.tolist(),
        "limit_se": None if lim_se is None else lim_se.tolist(),
        "kinf": None if kinf is None else kinf.tolist(),
        "kinf_se": None if kinf_se is None else kinf_se.tolist(),
        "L_inf": L_inf,
        "L_inf_se": L_inf_se,
        "L_inf_method": how,
        "width_saturation": width_sat,
        "depth_saturation": depth_sat,
        # per depth: the widths' verdicts in one line; per width: the depths'
        "width_overall": _overall(width_sat, depths.tolist(), "width"),
        "depth_overall": _overall(depth_sat, widths.tolist(), "depth"),
        "limit_depth_saturation": saturation_depth(depths, lim_a, lim_s),
        # the M-particle mode-A limit is a width-M network in law (T5d): its loss bias ≈ α/M
        "particle_bias": [a / M if M else math.nan for a in alpha],
        "gap": {
            "width": int(widths[-1]),
            "depth": int(depths[-1]),
            "gap": float(gap),
            "se": float(gap_se),
            "z": float(gap / gap_se) if gap_se > 0 else math.nan,
        },
    }


def scaling_summary(arrays: Mapping[str, np.ndarray]) -> dict:
    """Scaling trends of a sweep's saved arrays (see the module docstring), per learning rate.

    Returns a JSON-friendly dict: the grid, ``source`` (``"test"`` or ``"train"``), ``t_final``,
    ``mode`` (the limit mode drawn, or ``None``), ``drawable`` (two widths and two depths or more:
    the figure's condition) and ``per_lr``: for each learning rate the final losses ``finite``
    ``(W, Ld)`` ± ``finite_se``, the ``K = L`` limit ``(Ld,)`` ± SE, the ``K → ∞`` one (or
    ``None``), ``L_inf`` ± ``L_inf_se`` with ``L_inf_method`` (``"kinf"``, ``"fit"`` or
    ``None``), `saturation_width` per depth, `saturation_depth` per width and of the limit,
    ``particle_bias`` per depth and the ``gap`` of the widest, deepest cell to ``L_inf``."""
    widths, depths = np.asarray(arrays["widths"]), np.asarray(arrays["depths"])
    couplings = [str(c) for c in np.atleast_1d(arrays.get("couplings", np.array([], str)))]
    anti = bool(arrays.get("antithetic", False))
    lanti = bool(arrays.get("limit_antithetic", False))
    M = int(arrays.get("limit_particles", 0))
    source = loss_source(arrays)
    y, ys = _final(arrays, f"loss_{source}", anti)  # (W, Ld, Lr)
    mode = _limit_mode(couplings)
    lim = lim_se = kinf = kinf_se = None
    if mode is not None and arrays.get(f"limit_loss_{source}") is not None:
        ly, ls = _final(arrays, f"limit_loss_{source}", lanti)  # (X, Ld, Lr)
        lim, lim_se = ly[couplings.index(mode)], ls[couplings.index(mode)]
        if mode + KINF in couplings:
            kinf, kinf_se = ly[couplings.index(mode + KINF)], ls[couplings.index(mode + KINF)]
    per_lr = []
    for r in range(y.shape[-1]):

        def at(a, r=r):
            return None if a is None else a[:, r]

        limits = (at(lim), at(lim_se), at(kinf), at(kinf_se))
        per_lr.append(_per_lr(widths, depths, y[..., r], ys[..., r], *limits, M))
    return {
        "widths": widths.tolist(),
        "depths": depths.tolist(),
        "lrs": np.asarray(arrays["lrs"]).tolist(),
        "source": source,
        "t_final": int(np.asarray(arrays["steps"])[-1]),
        "mode": mode if lim is not None else None,
        "limit_particles": M,
        "drawable": len(widths) >= 2 and len(depths) >= 2,
        "per_lr": per_lr,
    }
