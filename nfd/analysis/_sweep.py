"""The finite → limit analysis of a sweep (`kind = "sweep"`): a pure function of its saved arrays,
so plots and reports are remade without recomputation. Per depth (§5.3, §7.1, T7, T11):

- ``d_X(n, L) = ‖E_seeds f_finite(n, L) − E f_X(K = L)‖`` (RMS over saved steps and points),
  debiased for the sampling noise of both means, with bootstrap errors;
- the n-slope of ``d_X`` (least squares of ``log d`` on ``log n``) and the fit ``d∞ + α/n``, with
  standard errors from a joint bootstrap (one resample of the limit shared by all widths, so the
  slope's error includes the limit's noise);
- the Richardson extrapolation ``f(n) = f∞ + a/n`` of the finite predictions (weighted least
  squares per coordinate; for two widths ``2 f(2n) − f(n)``) and its distance to each mode;
- the depth slope of the plateaus ``d∞(L)`` (`fit_depth_plateau`; for ``X_kinf`` modes the
  finite nets differ from the limit by O(1/L), slope −1);
- the depth-scaling fit of the final test loss, ``L∞ + α/n + b/L`` (T11), with χ² and the
  mode-A and mode-B limit losses extrapolated in ``1/L`` (`loss_summary`).
"""

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..experiments._sweep import pair_units
from ._kernels import kernel_summary
from ._stats import (
    debiased_rms,
    fit_inverse,
    log_slope,
    log_slope_se,
    mean_var,
    num,
    ok_mask,
    resample,
    wls,
)


def _distance(fin: np.ndarray, lim: np.ndarray, *, num_boot: int, rng) -> tuple[float, float]:
    """Debiased RMS distance between the unit means of ``fin (E, ...)`` and ``lim (E', ...)``, and
    its bootstrap standard error. The squared norm of a difference of sample means is biased up by
    the variances of the means; that bias is subtracted (and the result floored at 0)."""
    fin = pair_units(fin, False)
    lim = pair_units(lim, False)
    if len(fin) < 2 or len(lim) < 2:
        return float("nan"), float("nan")

    def est(a, b):
        (ma, va), (mb, vb) = mean_var(a), mean_var(b)
        return debiased_rms(ma - mb, va + vb)

    boots = [est(resample(fin, rng), resample(lim, rng)) for _ in range(num_boot)]
    return est(fin, lim), float(np.std(boots, ddof=1))


def fit_inverse_width(widths, d, se) -> dict[str, float]:
    """Weighted least squares ``d(n) = d_inf + alpha / n``; also the pure-power slope of d vs n
    (least squares of ``log d`` on ``log n``) and the fit's χ² per degree of freedom."""
    widths, d, se = (np.asarray(a, float) for a in (widths, d, se))
    ok = ok_mask(widths, d, se)
    out = {
        "d_inf": np.nan,
        "d_inf_se": np.nan,
        "alpha": np.nan,
        "alpha_se": np.nan,
        "slope": np.nan,
        "chi2_dof": np.nan,
    }
    if ok.sum() >= 2:
        fit = wls(np.stack([np.ones(ok.sum()), 1.0 / widths[ok]], 1), d[ok], se[ok])
        c, cov = fit["coef"], fit["cov"]
        out.update(
            d_inf=float(c[0]),
            d_inf_se=float(np.sqrt(cov[0, 0])),
            alpha=float(c[1]),
            alpha_se=float(np.sqrt(cov[1, 1])),
            chi2_dof=fit["chi2"] / fit["dof"] if fit["dof"] > 0 else np.nan,
        )
    out["slope"] = log_slope(widths, d)[0]
    return {k: float(v) for k, v in out.items()}


def fit_depth_plateau(depths, d_inf, se) -> dict[str, float]:
    """`log_slope_se` of the fitted plateaus ``d∞(L)`` of ``d∞ + α/n`` against depth (depths are
    independent runs). Finite nets at depth ``L`` differ from the ``K → ∞`` limit by O(1/L): the
    expected slope is −1."""
    fit = log_slope_se(depths, d_inf, se)
    return {"slope": fit["slope"], "slope_se": fit["slope_se"], "depths_used": fit["points_used"]}


def fit_depth_scaling(widths, depths, y, se) -> dict[str, float]:
    """Weighted least squares ``y(n, L) = L_inf + alpha / n + b / L`` over a widths × depths grid
    (``y``, ``se`` of shape ``(W, Ld)``; T11), with χ², degrees of freedom and p-value."""
    n, L = np.meshgrid(np.asarray(widths, float), np.asarray(depths, float), indexing="ij")
    y, se = np.asarray(y, float), np.asarray(se, float)
    ok = ok_mask(y, se)
    keys = ("L_inf", "alpha", "b")
    out = {k: float("nan") for k in (*keys, *(k + "_se" for k in keys), "chi2", "p_value")}
    out["dof"] = 0
    cols = [np.ones(ok.sum()), 1.0 / n[ok], 1.0 / L[ok]]
    if ok.sum() < 3 or len(np.unique(n[ok])) < 2 or len(np.unique(L[ok])) < 2:
        return out
    fit = wls(np.stack(cols, 1), y[ok], se[ok])
    for i, k in enumerate(keys):
        out[k] = float(fit["coef"][i])
        out[k + "_se"] = float(np.sqrt(fit["cov"][i, i]))
    out.update(chi2=fit["chi2"], dof=fit["dof"], p_value=fit["p_value"])
    return out


def _richardson_weights(widths: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Per-coordinate weights ``c_i`` of ``f∞ = Σ_i c_i f(n_i)`` from the weighted fit
    ``f(n) = f∞ + a/n`` (weights ``1/var``); for two widths ``n, 2n``: ``c = (−1, 2)``.
    ``var``: ``(W, N)`` variances of the width means; ``widths``: ``(W,)``."""
    floor = 1e-12 * float(np.mean(var)) + 1e-300
    w = 1.0 / np.maximum(var, floor)
    x = (1.0 / widths)[:, None]
    s0, s1, s2 = w.sum(0), (w * x).sum(0), (w * x * x).sum(0)
    return w * (s2 - s1 * x) / (s0 * s2 - s1**2)


def _inverse_width_weights(widths: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Per-coordinate weights of the fitted 1/n coefficient ``a = Σ_i c_i f(n_i)`` of the same
    weighted fit as `_richardson_weights`."""
    floor = 1e-12 * float(np.mean(var)) + 1e-300
    w = 1.0 / np.maximum(var, floor)
    x = (1.0 / widths)[:, None]
    s0, s1, s2 = w.sum(0), (w * x).sum(0), (w * x * x).sum(0)
    return w * (s0 * x - s1) / (s0 * s2 - s1**2)


def _depth_distances(
    fins: Sequence[np.ndarray], lims: Mapping[str, np.ndarray], widths: np.ndarray, c: np.ndarray
) -> dict[str, tuple[np.ndarray, float]]:
    """Debiased distances of each width's mean (``d``, shape ``(W,)``) and of the Richardson
    extrapolation (``d∞``) to each limit mode, from unit arrays ``(units, N)``."""
    mv = [mean_var(f) for f in fins]
    means = np.stack([m for m, _ in mv])
    var = np.stack([v for _, v in mv])
    f_inf, v_inf = np.sum(c * means, 0), np.sum(c**2 * var, 0)
    out = {}
    for mode, lim in lims.items():
        lm, lv = mean_var(lim)
        d = np.array([debiased_rms(m - lm, v + lv) for m, v in zip(means, var, strict=True)])
        d_inf = debiased_rms(f_inf - lm, v_inf + lv) if len(widths) >= 2 else math.nan
        out[mode] = (d, d_inf)
    return out


def _grid_point(fins, lims, widths, modes: dict, j: int, r: int, *, num_boot: int, rng) -> float:
    """The distances of one (depth, learning rate) to every mode with their bootstrap errors and
    fits, written into ``modes``; returns the RMS of the fitted 1/n coefficient ``a`` (NaN with one
    width)."""
    W = len(widths)
    var = np.stack([mean_var(f)[1] for f in fins])
    c = _richardson_weights(widths.astype(float), var) if W >= 2 else np.ones((1, 1))
    point = _depth_distances(fins, lims, widths, c)
    a_rms = math.nan
    if W >= 2:
        means = np.stack([f.mean(0) for f in fins])
        a = np.sum(_inverse_width_weights(widths.astype(float), var) * means, 0)
        a_rms = float(np.sqrt(np.mean(a**2)))
    boots = []
    for _ in range(num_boot):
        bf = [resample(f, rng) for f in fins]
        bl = {m: resample(v, rng) for m, v in lims.items()}
        boots.append(_depth_distances(bf, bl, widths, c))
    for m, (d, d_inf) in point.items():
        bd = np.stack([b[m][0] for b in boots])  # (B, W)
        b_inf = np.array([b[m][1] for b in boots])
        se = bd.std(0, ddof=1)
        res = modes[m]
        res["d"][:, j, r], res["se"][:, j, r] = d, se
        fit = fit_inverse_width(widths, d, se)
        slopes = np.array([log_slope(widths, b)[0] for b in bd])
        pos = np.all(d > 0)  # slopes of replicates use the same widths as the estimate
        keep = np.isfinite(slopes) & (np.all(bd > 0, 1) if pos else True)
        fit["slope_se"] = float(np.std(slopes[keep], ddof=1)) if keep.sum() > 2 else np.nan
        fit["slope_boot_kept"] = float(np.mean(keep))
        res["fits"][j][r] = fit
        res["extrap"]["d"][j, r] = d_inf
        finite = np.asarray(b_inf)[np.isfinite(b_inf)]  # one width: no extrapolation, no SE
        res["extrap"]["se"][j, r] = float(np.std(finite, ddof=1)) if finite.size > 1 else np.nan
    return a_rms


def _plateaus(modes: dict, depths: np.ndarray, Lr: int) -> None:
    """Per mode and learning rate: d∞(L) against depth (for X_kinf: expected slope −1)."""
    for res in modes.values():
        res["plateau"] = []
        for r in range(Lr):
            d_inf = [num(res["fits"][j][r].get("d_inf")) for j in range(len(depths))]
            d_se = [num(res["fits"][j][r].get("d_inf_se")) for j in range(len(depths))]
            fit = fit_depth_plateau(depths, d_inf, d_se)
            res["plateau"].append({**fit, "d_inf": d_inf, "d_inf_se": d_se})


def _header(arrays: Mapping[str, np.ndarray], num_boot: int) -> dict:
    """The grid and settings of a sweep, as the summary's first keys."""
    return {
        "widths": np.asarray(arrays["widths"]).tolist(),
        "depths": np.asarray(arrays["depths"]).tolist(),
        "lrs": np.asarray(arrays["lrs"]).tolist(),
        "couplings": [str(c) for c in np.atleast_1d(arrays.get("couplings", np.array([], str)))],
        "antithetic": bool(arrays.get("antithetic", False)),
        "limit_antithetic": bool(arrays.get("limit_antithetic", False)),
        "limit_particles": int(arrays.get("limit_particles", 0)),
        "t_final": int(np.asarray(arrays["steps"])[-1]),
        "num_boot": num_boot,
        "modes": {},
    }


def convergence_summary(
    arrays: Mapping[str, np.ndarray], *, num_boot: int = 200, seed: int = 0
) -> dict:
    """The finite → limit analysis of a sweep's saved arrays (see the module docstring).

    Returns a JSON-friendly dict: ``modes[mode]`` holds ``d``, ``se`` ``(W, Ld, Lr)``, ``fits``
    (per depth and lr: ``d_inf``, ``alpha``, ``slope``, ``slope_se``, …) and ``extrap``
    (``d``, ``se`` ``(Ld, Lr)``: distance of the Richardson-extrapolated predictions) and
    ``plateau`` (per lr: `fit_depth_plateau` of the ``d_inf`` over depths); ``loss``
    holds the final test losses, and ``depth_scaling`` the T11 fit per learning rate.
    """
    rng = np.random.default_rng(seed)
    out = _header(arrays, num_boot)
    widths, depths = np.asarray(arrays["widths"]), np.asarray(arrays["depths"])
    couplings, anti, lanti = out["couplings"], out["antithetic"], out["limit_antithetic"]
    M = out["limit_particles"]
    W, Ld, Lr = len(widths), len(depths), len(out["lrs"])
    f_fin = np.concatenate([arrays["f_train"], arrays["f_test"]], axis=-2)
    has_limit = bool(couplings) and arrays.get("limit_f_train") is not None
    f_lim = (
        np.concatenate([arrays["limit_f_train"], arrays["limit_f_test"]], axis=-2)
        if has_limit
        else None
    )
    units = np.zeros((W, Ld, Lr), int)
    a_rms = np.full((Ld, Lr), np.nan)  # RMS of the fitted 1/n coefficient a of f(n) = f∞ + a/n
    modes = {
        m: {
            "d": np.full((W, Ld, Lr), np.nan),
            "se": np.full((W, Ld, Lr), np.nan),
            "fits": [[{} for _ in range(Lr)] for _ in range(Ld)],
            "extrap": {"d": np.full((Ld, Lr), np.nan), "se": np.full((Ld, Lr), np.nan)},
        }
        for m in (couplings if has_limit else [])
    }
    for j in range(Ld):
        for r in range(Lr):
            size = f_fin[0, 0, 0, 0].size
            fins = [pair_units(f_fin[i, j, r], anti).reshape(-1, size) for i in range(W)]
            units[:, j, r] = [len(f) for f in fins]
            if not modes:
                continue
            lims = {
                m: pair_units(f_lim[x, j, r], lanti).reshape(-1, size)  # pyright: ignore[reportOptionalSubscript]
                for x, m in enumerate(couplings)
            }
            if min(len(f) for f in fins) < 2 or min(len(v) for v in lims.values()) < 2:
                continue
            a_rms[j, r] = _grid_point(fins, lims, widths, modes, j, r, num_boot=num_boot, rng=rng)
    _plateaus(modes, depths, Lr)
    ntk = arrays.get("ntk_mean") is not None and arrays.get("limit_ntk_mean") is not None
    if has_limit and ntk:
        out["kernels"] = kernel_summary(arrays)
    out["units"] = units.tolist()
    out["a_rms"] = a_rms.tolist()
    # a mode-A particle system of M particles is a width-M network in law (T5d): its own
    # seed mean sits ≈ ‖a‖/M from f∞
    out["particle_bias"] = (a_rms / M if M else np.full_like(a_rms, np.nan)).tolist()
    out["modes"] = {
        m: {
            "d": v["d"].tolist(),
            "se": v["se"].tolist(),
            "fits": v["fits"],
            "extrap": {k: a.tolist() for k, a in v["extrap"].items()},
            "plateau": v.get("plateau", []),
        }
        for m, v in modes.items()
    }
    out["loss"], out["depth_scaling"] = loss_summary(arrays, couplings, anti, lanti, M)
    return out


def _unit_mean_se(x: np.ndarray, antithetic: bool) -> tuple[float, float]:
    u = pair_units(x, antithetic)
    if len(u) < 2:
        return math.nan, math.nan
    return float(u.mean()), float(u.std(ddof=1) / math.sqrt(len(u)))


def loss_summary(arrays, couplings, anti, lanti, M) -> tuple[dict, list[dict]]:
    """Final test losses (unit means ± SE) and the depth-scaling fit per learning rate (T11)."""
    widths, depths, lrs = (np.asarray(arrays[k], float) for k in ("widths", "depths", "lrs"))
    W, Ld, Lr = len(widths), len(depths), len(lrs)
    fin = np.asarray(arrays["loss_test"], float)[..., -1]  # (W, Ld, Lr, E)
    y, ys = np.full((W, Ld, Lr), np.nan), np.full((W, Ld, Lr), np.nan)
    for idx in np.ndindex(W, Ld, Lr):
        y[idx], ys[idx] = _unit_mean_se(fin[idx], anti)
    lim_y = {m: np.full((Ld, Lr), np.nan) for m in couplings}
    lim_s = {m: np.full((Ld, Lr), np.nan) for m in couplings}
    if arrays.get("limit_loss_test") is not None:
        lim = np.asarray(arrays["limit_loss_test"], float)[..., -1]  # (X, Ld, Lr, El)
        for x, m in enumerate(couplings):
            for j, r in np.ndindex(Ld, Lr):
                lim_y[m][j, r], lim_s[m][j, r] = _unit_mean_se(lim[x, j, r], lanti)
    loss = {
        "finite": y.tolist(),
        "finite_se": ys.tolist(),
        "limit": {m: v.tolist() for m, v in lim_y.items()},
        "limit_se": {m: v.tolist() for m, v in lim_s.items()},
    }
    scaling = []
    for r in range(Lr):
        fit: dict = fit_depth_scaling(widths, depths, y[:, :, r], ys[:, :, r])
        per = [fit_inverse(widths, y[:, j, r], ys[:, j, r]) for j in range(Ld)]
        fit["per_depth"] = {"inf": [p[0] for p in per], "se": [p[1] for p in per]}
        fit["particle_bias"] = fit["alpha"] / M if M else math.nan
        limits = {}
        for m in couplings:
            c, c_se, b, b_se = fit_inverse(depths, lim_y[m][:, r], lim_s[m][:, r])
            z = (fit["L_inf"] - c) / math.hypot(fit["L_inf_se"], c_se)
            z_depth = [
                (p[0] - lim_y[m][j, r]) / math.hypot(p[1], lim_s[m][j, r])
                for j, p in enumerate(per)
            ]
            limits[m] = {"inf": c, "inf_se": c_se, "b": b, "b_se": b_se, "z": z, "z_depth": z_depth}
        fit["limits"] = limits
        scaling.append(fit)
    return loss, scaling


def member_counts(status: np.ndarray) -> dict[str, int]:
    """How many finite members diverged (``diverged``) of how many (``members``)."""
    return {"diverged": int(np.sum(status != 0)), "members": int(np.asarray(status).size)}
