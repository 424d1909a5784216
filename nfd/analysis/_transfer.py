"""The transfer analysis (§6, T8–T10): pure functions of a transfer run's saved arrays
(`nfd.experiments.run_transfer`): argmin η0 per depth with T8's tie rule and its slope, the
one-step coordinate check (T8) and first-layer collapse (T9) at each optimizer's collapse η0, the
T10 control, and the seed means ± SE that the figures draw (`transfer_analysis`)."""

import warnings
from collections.abc import Sequence

import numpy as np

from ..experiments._transfer_variants import variant_label
from ._stats import finite_mean_se, log_slope, log_slope_se, mean_se, wls


def argmin_lrs(loss: np.ndarray, lrs: np.ndarray) -> dict[str, np.ndarray]:
    """Argmin η0 of the seed-mean loss per curve, with the T8 tie rule.

    ``loss`` has the η0 grid on axis −2 and seeds on axis −1. A grid point counts as an argmin
    when its mean is within 2 SE (combined) of the minimum; a member that diverged makes its
    grid point's mean NaN (never an argmin). Returns ``best`` (the η0 of the minimum), ``lo`` and
    ``hi`` (the range of η0 counted as argmins) and ``best_loss``, each shaped like ``loss``
    without its last two axes (NaN where every grid point diverged).
    """
    mean, se = mean_se(loss, axis=-1)  # (..., R)
    lrs = np.asarray(lrs, float)
    finite = np.isfinite(mean)
    # a grid point where any seed diverged is not a candidate (its loss is not < ∞)
    diverged = np.any(~np.isfinite(loss), axis=-1)
    ok = finite & ~diverged
    masked = np.where(ok, mean, np.inf)
    k = np.argmin(masked, axis=-1)
    best_mean = np.take_along_axis(masked, k[..., None], -1)[..., 0]
    best_se = np.take_along_axis(np.where(ok, se, np.inf), k[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore"):  # inf − inf where a whole curve diverged: not an argmin
        gap = masked - best_mean[..., None]
        within = ok & (gap <= 2 * np.sqrt(se**2 + best_se[..., None] ** 2))
    any_ok = np.any(ok, axis=-1)
    grid = np.broadcast_to(lrs, mean.shape)
    lo = np.where(within, grid, np.inf).min(axis=-1)
    hi = np.where(within, grid, -np.inf).max(axis=-1)
    return {
        "best": np.where(any_ok, lrs[k], np.nan),
        "lo": np.where(any_ok, lo, np.nan),
        "hi": np.where(any_ok, hi, np.nan),
        "best_loss": np.where(any_ok, best_mean, np.nan),
    }


def argmin_slope(depths, best, lo, hi, grid_step: float) -> tuple[float, float, float]:
    """Weighted least-squares slope of ``log2 η*`` on ``log2 L``, its SE and the χ² p-value.

    Each depth's argmin is known to its grid cell and its 2-SE tie range ``[lo, hi]``: its
    variance is ``Δ²/12 + ((log2 hi − log2 lo)/4)²`` (``Δ = log2`` grid step: a uniform
    quantisation error, plus the tie range read as ±2 SE). NaN with fewer than two depths.
    """
    x = np.log2(np.asarray(depths, float))
    y, ylo, yhi = (np.log2(np.asarray(u, float)) for u in (best, lo, hi))
    keep = np.isfinite(y) & np.isfinite(ylo) & np.isfinite(yhi)
    if keep.sum() < 2:
        return float("nan"), float("nan"), float("nan")
    var = grid_step**2 / 12 + ((yhi - ylo) / 4) ** 2
    A = np.stack([x[keep], np.ones(int(keep.sum()))], axis=1)
    fit = wls(A, y[keep], np.sqrt(var[keep]))
    return float(fit["coef"][0]), float(np.sqrt(fit["cov"][0, 0])), fit["p_value"]


def loss_key(arrays: dict) -> str:
    """The loss a transfer curve reads: test, or train when no test loss was saved."""
    return "loss_test" if np.any(np.isfinite(arrays["loss_test"])) else "loss_train"


def _row(arrays, am, opt, label, v, i, n, grid, step, key) -> dict:
    """One (optimizer, variant, width) row of `transfer_summary`."""
    depths = arrays["depths"]
    best, lo, hi = am["best"][v, i], am["lo"][v, i], am["hi"][v, i]
    s, se = log_slope(depths, best)
    ws, wse, wp = argmin_slope(depths, best, lo, hi, step)
    found = bool(np.all(np.isfinite(best)))
    steps = np.log2(np.nanmax(best) / np.nanmin(best)) if found else np.nan
    transfer = bool(np.all(np.isfinite(lo)) and np.nanmax(lo) <= 2 * np.nanmin(hi))
    bracketed = found and bool(np.all((best > grid[0]) & (best < grid[-1])))
    verdict = "moves" if not transfer else "transfers" if bracketed else "undetermined"
    return {
        "optimizer": opt,
        "variant": label,
        "width": int(n),
        "argmin": best.tolist(),
        "slope": s,
        "slope_se": se,
        "weighted_slope": ws,
        "weighted_slope_se": wse,
        "weighted_slope_p": wp,
        "grid_steps": float(steps),
        "best_loss": am["best_loss"][v, i].tolist(),
        "transfer": transfer,
        "bracketed": bracketed,
        "verdict": verdict,
        "loss": key,
    }


def transfer_summary(arrays: dict, optimizers, labels) -> list[dict]:
    """Per (optimizer, variant, width): argmin η0 per depth (T8's 2-SE tie rule), its log-log
    slope (least squares and weighted, `argmin_slope`), how many grid steps it moves, the best
    loss per depth, whether every argmin is *bracketed* (strictly inside the grid: an argmin at
    the grid's edge says only that the optimum lies at or beyond it) and T8's criterion: one
    η0 interval within a factor 2 of every depth's tie range. ``verdict`` is "transfers" (T8
    holds and every argmin is bracketed), "moves" (T8 fails) or "undetermined" (T8 holds only
    with an argmin at the grid's edge)."""
    key = loss_key(arrays)
    loss = arrays[key]
    rows = []
    for o, opt in enumerate(optimizers):
        lrs = arrays["lrs"][o]
        R = int(np.sum(np.isfinite(lrs)))
        grid = lrs[:R]
        step = float(np.median(np.diff(np.log2(grid))))
        am = argmin_lrs(loss[o, ..., :R, :], grid)
        for v, label in enumerate(labels):
            for i, n in enumerate(arrays["widths"]):
                rows.append(_row(arrays, am, opt, label, v, i, n, grid, step, key))
    return rows


def at_collapse_lr(arrays: dict, name: str, o: int) -> np.ndarray:
    """``arrays[name][o]`` at the optimizer's collapse η0 (the η0 axis removed)."""
    r = int(np.nanargmin(np.abs(arrays["lrs"][o] - arrays["collapse_lr"][o])))
    return arrays[name][o][..., r, :]


def _seed_slope(xs, x: np.ndarray) -> tuple[float, float]:
    """log-log slope of the seed means ``x (..., S)`` against ``xs`` and its SE propagated from
    the seed means' SEs (``se/mean`` in ``log mean``; the points are independent runs), NaN with
    fewer than two points (`log_slope_se`)."""
    mean, se = mean_se(x, axis=-1)
    fit = log_slope_se(xs, mean, se)
    return fit["slope"], fit["slope_se"]


def coordinate_check(arrays: dict, optimizers, labels, tol: float = 0.1) -> list[dict]:
    """T8's coordinate check at each optimizer's collapse η0: the slopes of ``L ×`` (per-block
    RMS own update) and of the RMS one-step change of ``f`` against ``L`` (per width) and
    against ``n`` (per depth, with ≥ 2 widths), with SEs from the seed spread; ``flat`` when
    every ``|slope| ≤ tol + 2 SE`` (a slope without an SE must be within ``tol``)."""
    rows = []
    widths, depths = arrays["widths"], arrays["depths"]
    for o, opt in enumerate(optimizers):
        for v, label in enumerate(labels):
            row: dict = {"optimizer": opt, "variant": label}
            for name in ("block_move", "df_step"):
                x = at_collapse_lr(arrays, name, o)[v]  # (I, J, S)
                in_L = [_seed_slope(depths, x[i]) for i in range(len(widths))]
                in_n = [_seed_slope(widths, x[:, j]) for j in range(len(depths))]
                if len(widths) < 2:
                    in_n = []
                slopes = [(sl, se) for sl, se in in_L + in_n if np.isfinite(sl)]
                row[name] = {
                    "slope_L": in_L,
                    "slope_n": in_n,
                    "flat": bool(slopes)
                    and all(abs(sl) <= tol + 2 * np.nan_to_num(se) for sl, se in slopes),
                }
            rows.append(row)
    return rows


def collapse_check(arrays: dict, optimizers, labels, tol: float = 0.1) -> list[dict]:
    """T9 per two-layer variant and optimizer (collapse η0, largest width): the L-slope of rms
    ``δz^own`` (finite, and the limit at K = L for SGD) against its expected slope (``a − 1/2``
    under depth-μP, 0 with CompleteP's 1/L branch, ``a`` under μP: `expected_dz_slopes`), and of
    ``K_W1`` (n = ∞ recursion, depth-μP only: NaN otherwise) against ``a``; the finite
    ``K_W1``'s largest |z| against the recursion."""
    rows = []
    depths = arrays["depths"]
    expected = expected_dz_slopes(arrays)
    params = params_of(arrays)
    for o, opt in enumerate(optimizers):
        dz = at_collapse_lr(arrays, "dz_own", o)  # (V, I, J, S)
        ldz = at_collapse_lr(arrays, "limit_dz_own", o)  # (V, J, S)
        for v, label in enumerate(labels):
            if not arrays["two_layer"][v]:
                continue
            a = float(arrays["exponents"][v])
            fin, fse = _seed_slope(depths, dz[v, -1])
            lim, lse = _seed_slope(depths, ldz[v])
            kw, _ = log_slope(depths, arrays["k_w1"][v])
            kf, kse = mean_se(arrays["k_w1_finite"][v], axis=-1)  # (I, J)
            with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: not depth-μP
                z = (kf - arrays["k_w1"][v][None]) / kse
            rows.append(
                {
                    "optimizer": opt,
                    "variant": label,
                    "a": a,
                    "param": params[v],
                    "expected": float(expected[v]),
                    "dz_slope": fin,
                    "dz_slope_se": fse,
                    "limit_dz_slope": lim,
                    "limit_dz_slope_se": lse,
                    "dz_ok": bool(np.isfinite(fin) and abs(fin - expected[v]) <= tol),
                    "k_w1_slope": kw,
                    "k_w1_ok": bool(np.isfinite(kw) and abs(kw - a) <= tol),
                    "k_w1_max_z": float(np.nanmax(np.abs(z))) if np.any(np.isfinite(z)) else np.nan,
                }
            )
    return rows


def t10_check(arrays: dict) -> dict[str, np.ndarray]:
    """T10 at τ = 1 per depth: the pre-activation mean squared feature ± SE, its |z| against the
    n = ∞ recursion at K = L and against the L → ∞ value e^(1/2), and the post-activation one."""
    pre, pse = mean_se(arrays["t10_pre"][..., -1], axis=-1)
    post, _ = mean_se(arrays["t10_post"][..., -1], axis=-1)
    ref = arrays["t10_ref"][:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        z_ref = np.abs(pre - ref) / pse
        z_lim = np.abs(pre - np.exp(0.5)) / pse
    return {"pre": pre, "pre_se": pse, "post": post, "ref": ref, "z_ref": z_ref, "z_lim": z_lim}


def params_of(arrays: dict) -> list[str]:
    """Each variant's parameterization (a run saved before `transfer.params`: depth-μP)."""
    V = len(arrays["exponents"])
    return [str(p) for p in arrays["params"]] if "params" in arrays else ["depth_mup"] * V


def expected_dz_slopes(arrays: dict) -> np.ndarray:
    """The expected L-slope of δz^own per variant (`nfd.experiments._transfer_variants.dz_expected`;
    a run saved before it: depth-μP's ``a − ½``)."""
    if "dz_expected" in arrays:
        return np.asarray(arrays["dz_expected"], float)
    return np.asarray(arrays["exponents"], float) - 0.5


def labels_of(arrays: dict) -> list[str]:
    """The variant labels of a transfer run (`variant_label`), from its saved arrays."""
    return [
        variant_label("two_layer" if t else "one_layer", float(x), p)
        for t, x, p in zip(arrays["two_layer"], arrays["exponents"], params_of(arrays), strict=True)
    ]


def _curves(arrays: dict, optimizers: Sequence[str], key: str) -> list[dict]:
    """Per optimizer, at the largest width: the η0 grid, the seed means ± SE of the loss curves and
    of the limit's ``(V, J, R)``, and the argmins (`argmin_lrs`, ``(V, J)``)."""
    i = len(arrays["widths"]) - 1
    out = []
    for o in range(len(optimizers)):
        lrs = arrays["lrs"][o]
        R = int(np.sum(np.isfinite(lrs)))
        mean, se = finite_mean_se(arrays[key][o, :, i, :, :R], axis=-1)
        limit, _ = finite_mean_se(arrays["limit_" + key][o, :, :, :R], axis=-1)
        argmin = argmin_lrs(arrays[key][o, :, i, :, :R], lrs[:R])
        out.append({"lrs": lrs[:R], "mean": mean, "se": se, "limit": limit, "argmin": argmin})
    return out


def _collapse_curves(arrays: dict, optimizers: Sequence[str]) -> dict:
    """Seed means ± SE at each optimizer's collapse η0, largest width, ``(V, J)``: W1's own update
    ``dz`` (and the limit's, ``limit_dz``) and T8's ``L ×`` block update ``move``; and W1's NTK
    share of the finite networks at init, ``k_w1_finite``."""
    per = []
    for o in range(len(optimizers)):
        per.append(
            {
                "dz": finite_mean_se(at_collapse_lr(arrays, "dz_own", o)[:, -1], axis=-1),
                "limit_dz": finite_mean_se(at_collapse_lr(arrays, "limit_dz_own", o), axis=-1),
                "move": finite_mean_se(at_collapse_lr(arrays, "block_move", o)[:, -1], axis=-1),
            }
        )
    return {"per_optimizer": per, "k_w1_finite": finite_mean_se(arrays["k_w1_finite"][:, -1])}


def transfer_analysis(arrays: dict, optimizers: Sequence[str]) -> dict:
    """Everything the transfer report and figures read, from the saved arrays: ``labels``,
    ``loss`` (the loss key), ``rows`` (`transfer_summary`), ``curves`` (`_curves`); with the
    one-step diagnostics ``collapse`` (`collapse_check`), ``coordinate`` (`coordinate_check`)
    and ``collapse_curves``; with T10 ``t10`` (`t10_check`) and ``t10_curves`` (seed means ± SE
    of the mean squared feature ``(J, τ)``, pre- and post-activation)."""
    labels = labels_of(arrays)
    key = loss_key(arrays)
    out: dict = {
        "labels": labels,
        "loss": key,
        "rows": transfer_summary(arrays, optimizers, labels),
        "curves": _curves(arrays, optimizers, key),
    }
    if "dz_own" in arrays:
        out["collapse"] = collapse_check(arrays, optimizers, labels)
        out["coordinate"] = coordinate_check(arrays, optimizers, labels)
        out["collapse_curves"] = _collapse_curves(arrays, optimizers)
    if "t10_pre" in arrays:
        out["t10"] = t10_check(arrays)
        out["t10_curves"] = {k: finite_mean_se(arrays[k], axis=1) for k in ("t10_pre", "t10_post")}
    return out
