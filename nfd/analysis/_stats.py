"""The shared statistics of the analyses: means with standard errors, weighted least squares, power
and log-log slope fits with their errors, χ² p-values, constant and decay fits, the jackknife and
the bootstrap. Pure numpy (and scipy's incomplete gamma) on arrays; no nfd imports."""

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import gammaincc


def num(x) -> float:
    """A saved number as a float; ``None`` (a NaN saved in JSON) becomes NaN."""
    return math.nan if x is None else float(x)


def mean_se(x: np.ndarray, axis: int = -1, *, lone: float = math.inf):
    """Mean and standard error over ``axis``, ignoring NaNs (diverged members); where fewer than
    two values are finite the SE is ``lone`` (``inf``: unknown; plots draw ``0``)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: every member diverged
        n = np.sum(np.isfinite(x), axis=axis)
        mean = np.nanmean(x, axis=axis)
        sd = np.nanstd(x, axis=axis, ddof=1)
    return mean, np.where(n > 1, sd / np.sqrt(np.maximum(n, 1)), lone)


def finite_mean_se(x: np.ndarray, axis: int = -1):
    """`mean_se` of the finite entries only (``±inf`` dropped too), with SE 0 for a lone value:
    the error bars of a figure."""
    x = np.asarray(x)  # float32 curves stay float32
    return mean_se(np.where(np.isfinite(x), x, np.nan), axis, lone=0.0)


def mean_var(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over units (axis 0) and the variance of that mean."""
    return x.mean(0), x.var(0, ddof=1) / x.shape[0]


def debiased_rms(diff: np.ndarray, var: np.ndarray) -> float:
    """RMS of ``diff`` with the expected noise ``mean(var)`` of ``diff²`` removed (floored at 0)."""
    return float(np.sqrt(max(float(np.mean(diff**2) - np.mean(var)), 0.0)))


def resample(x: np.ndarray, rng) -> np.ndarray:
    """One bootstrap resample of the units (axis 0) of ``x``."""
    return x[rng.integers(0, len(x), len(x))]


def chi2_pvalue(chi2: float, dof: int) -> float:
    """Upper tail ``P(χ²_dof > chi2)`` (exact regularised incomplete gamma; 1.0 when dof = 0)."""
    if dof <= 0:
        return 1.0
    return float(gammaincc(dof / 2.0, max(chi2, 0.0) / 2.0))


def ok_mask(*arrays) -> np.ndarray:
    """Mask of entries finite in every array, with positive error bars (the last array)."""
    ok = np.all([np.isfinite(np.asarray(a, float)) for a in arrays], axis=0)
    return ok & (np.nan_to_num(np.asarray(arrays[-1], float)) > 0)


def wls(A: np.ndarray, y: np.ndarray, se: np.ndarray) -> dict:
    """Weighted least squares ``y ≈ A c`` with weights ``1/se²``: coefficients, their covariance
    (from the stated errors, not rescaled by χ²), χ², degrees of freedom and the χ² p-value (NaN
    without degrees of freedom)."""
    w = 1.0 / se
    coef, *_ = np.linalg.lstsq(A * w[:, None], y * w, rcond=None)
    cov = np.linalg.pinv((A * w[:, None]).T @ (A * w[:, None]))
    chi2 = float(np.sum(((y - A @ coef) * w) ** 2))
    dof = int(len(y) - A.shape[1])
    p = chi2_pvalue(chi2, dof) if dof > 0 else float("nan")
    return {"coef": coef, "cov": cov, "chi2": chi2, "dof": dof, "p_value": p}


def fit_inverse(x, y, se) -> tuple[float, float, float, float]:
    """``y = c + b / x`` by weighted least squares: ``(c, c_se, b, b_se)`` (NaN if < 2 points)."""
    x, y, se = (np.asarray(a, float) for a in (x, y, se))
    ok = ok_mask(x, y, se)
    if ok.sum() < 2:
        return math.nan, math.nan, math.nan, math.nan
    fit = wls(np.stack([np.ones(ok.sum()), 1.0 / x[ok]], 1), y[ok], se[ok])
    c, cov = fit["coef"], fit["cov"]
    return float(c[0]), float(np.sqrt(cov[0, 0])), float(c[1]), float(np.sqrt(cov[1, 1]))


def log_slope(xs, ys) -> tuple[float, float]:
    """Least-squares slope of ``log y`` against ``log x`` over the positive, finite entries and its
    standard error from the residuals (NaN if < 2 such points; SE NaN with 2)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    keep = np.isfinite(ys) & (ys > 0)
    if keep.sum() < 2:
        return float("nan"), float("nan")
    x, y = np.log(xs[keep]), np.log(ys[keep])
    A = np.stack([x, np.ones_like(x)], axis=1)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    dof = len(x) - 2
    if dof < 1:
        return float(coef[0]), float("nan")
    resid = y - A @ coef
    cov = np.linalg.inv(A.T @ A) * (resid @ resid) / dof
    return float(coef[0]), float(np.sqrt(cov[0, 0]))


def log_slope_se(x, d, se) -> dict[str, float]:
    """Log-log slope of ``d`` against ``x`` (`log_slope`: unweighted least squares of ``log d`` on
    ``log x``) and its standard error propagated from independent errors ``se`` (``se/d`` in
    ``log d``); ``points_used`` counts the positive, finite entries with finite errors."""
    x, d, se = (np.asarray(a, float) for a in (x, d, se))
    slope, _ = log_slope(x, d)
    pos = np.isfinite(d) & (d > 0) & np.isfinite(se)
    slope_se = math.nan
    if np.isfinite(slope) and pos.sum() >= 2:
        lx = np.log(x[pos])
        w = (lx - lx.mean()) / np.sum((lx - lx.mean()) ** 2)
        slope_se = float(np.sqrt(np.sum((w * se[pos] / d[pos]) ** 2)))
    return {"slope": slope, "slope_se": slope_se, "points_used": int(pos.sum())}


def lstsq(x: np.ndarray, y: np.ndarray, se: np.ndarray | None, basis) -> dict[str, Any]:
    """Weighted least squares ``y ≈ Σ_k a_k basis_k(x)``: coefficients, SEs, χ², dof, p-value.

    With no usable SEs (``None``, zeros: exact values) the fit is unweighted and its χ² and p-value
    are ``None``; the coefficient SEs are then residual-based (0 for an exact fit).
    """
    A = np.stack([b(x) for b in basis], axis=1).astype(float)
    y = np.asarray(y, float)
    ok = np.isfinite(y)
    weighted = se is not None and np.all(np.asarray(se)[ok] > 0)
    if weighted:
        w = 1.0 / np.asarray(se, float)
        w = np.where(ok, w, 0.0)
    else:
        w = ok.astype(float)
    Aw, yw = A * w[:, None], np.where(ok, y, 0.0) * w
    n_obs, k = int(ok.sum()), A.shape[1]
    dof = n_obs - k
    if n_obs < k:
        nan = [float("nan")] * k
        return {"coef": nan, "se": nan, "chi2": None, "dof": dof, "p": None}
    coef, *_ = np.linalg.lstsq(Aw, yw, rcond=None)
    resid = yw - Aw @ coef
    chi2 = float(resid @ resid)
    cov = np.linalg.pinv(Aw.T @ Aw)
    if not weighted:
        cov = cov * (chi2 / dof if dof > 0 else 0.0)
    out = {
        "coef": coef.tolist(),
        "se": np.sqrt(np.maximum(np.diag(cov), 0)).tolist(),
        "dof": dof,
        "chi2": chi2 if weighted else None,
        "p": chi2_pvalue(chi2, dof) if weighted else None,
    }
    if not weighted:
        scale = float(np.sqrt(np.mean(y[ok] ** 2))) or 1.0
        out["rel_rms_resid"] = float(np.sqrt(chi2 / n_obs)) / scale
    return out


def power_fit(x, y, se=None) -> dict[str, Any]:
    """``|y| ≈ A x^p`` by least squares on logs (weights ``|y|/se``): exponent ``p`` ± SE, χ², p."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(y) & (y != 0)
    if ok.sum() < 2:
        return {
            "exponent": float("nan"),
            "exponent_se": float("nan"),
            "chi2": None,
            "dof": 0,
            "p": None,
            "same_sign": False,
        }
    lse = None
    if se is not None:
        se_ok = np.asarray(se, float)[ok]
        lse = se_ok / np.abs(y[ok]) if np.all(se_ok > 0) else None  # zeros: exact values
    fit = lstsq(np.log(x[ok]), np.log(np.abs(y[ok])), lse, [np.ones_like, lambda t: t])
    signs = np.sign(y[ok])
    return {
        "exponent": fit["coef"][1],
        "exponent_se": fit["se"][1],
        "amplitude": float(np.exp(fit["coef"][0])),
        "chi2": fit["chi2"],
        "dof": fit["dof"],
        "p": fit["p"],
        "same_sign": bool(np.all(signs == signs[0])),
    }


def constant_fit(values: np.ndarray, se: np.ndarray) -> dict[str, float]:
    """Weighted constant fit ``c`` to ``values ± se`` with its χ² and p-value (T6: n·ΔG flat in n)."""
    w = 1.0 / np.asarray(se) ** 2
    c = float(np.sum(w * values) / np.sum(w))
    chi2 = float(np.sum(w * (values - c) ** 2))
    dof = len(values) - 1
    p = chi2_pvalue(chi2, dof)
    return {"c": c, "c_se": float(1 / np.sqrt(np.sum(w))), "chi2": chi2, "dof": dof, "p": p}


DECAY_MODELS: dict[str, list[Callable]] = {
    "constant": [np.ones_like],
    "1/L": [lambda L: 1.0 / L],
    "1/L^2": [lambda L: 1.0 / L**2],
    "c+b/L": [np.ones_like, lambda L: 1.0 / L],
}


def decay_fits(depths, y, se=None) -> dict[str, Any]:
    """A quantity against depth: the pure power fit and the forced models of `DECAY_MODELS`
    (constant, ∝ 1/L, ∝ 1/L², c + b/L), each with its χ² p-value (§5.3 step 2); ``best`` is
    the one-parameter model with the largest p-value (smallest residual for exact data)."""
    L = np.asarray(depths, float)
    out: dict[str, Any] = {"power": power_fit(L, y, se), "y": np.asarray(y, float).tolist()}
    for name, basis in DECAY_MODELS.items():
        out[name] = lstsq(L, np.asarray(y, float), se, basis)
    one = ["constant", "1/L", "1/L^2"]

    def score(name):
        f = out[name]
        if f["p"] is not None:
            return f["p"]
        return -f.get("rel_rms_resid", np.inf)

    out["best"] = max(one, key=score)
    return out


def jackknife(stat: Callable[..., Any], *groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``stat(mean_1, …, mean_k)`` of independent sample groups (leading axis: samples) and its
    jackknife standard error (the leave-one-out variances of the groups add; a group of one
    sample, e.g. an exact limit, contributes none)."""
    means = [np.mean(g, axis=0) for g in groups]
    value = np.asarray(stat(*means), float)
    var = np.zeros_like(value)
    for q, grp in enumerate(groups):
        m = grp.shape[0]
        if m < 2:
            continue
        total = np.sum(grp, axis=0)
        loo = []
        for k in range(m):
            cur = list(means)
            cur[q] = (total - grp[k]) / (m - 1)
            loo.append(np.asarray(stat(*cur), float))
        loo = np.stack(loo)
        var = var + (m - 1) / m * np.sum((loo - loo.mean(axis=0)) ** 2, axis=0)
    return value, np.asarray(np.sqrt(var))
