"""Non-degeneracy of finite networks' kernels against width (pure numpy on the arrays of
`nfd.experiments.run_nondegeneracy`).

For ``Φ`` and ``G`` and both normalisations (``abs``: ``λ_min``; ``rel``: ``λ_min`` over the mean
diagonal, scale-free), every (depth, saved step, τ) gets: the seed mean and SE per width, the
weighted fit ``λ(n) = λ_∞ + a/n`` (`fit_width`; its χ² p-value says whether ``1/n`` describes the
widths), the n = ∞ value (``t = 0``: the init-kernel recursion, exact; ``t > 0``: the kernel fixed
point, mean ± SE over draw sets, NaN without ``limit``) and a verdict (`VERDICTS`, `cell_verdict`).
The finite ``λ_min`` is biased at finite width (second-order perturbation theory: ``O(1/n)`` with
a coefficient set by the eigenvalue gaps; a Marchenko–Pastur ``O(√(P/n))`` edge when ``P/n`` is
not small), so the fit's p-value is part of the answer.
"""

from typing import Any

import numpy as np

from ._stats import lstsq, mean_se

FIELDS = {"phi": "Φ", "g": "G"}
NORMS = ("abs", "rel")
MIN_WIDTHS = 3  # a + b/n has two parameters: fewer widths leave no test of it
Z = 2.0  # "bounded away from 0": at least this many standard errors
VERDICTS = ("non-degenerate", "degenerate", "undetermined at this size")


def eigenvalues(grams: np.ndarray) -> np.ndarray:
    """The ascending eigenvalues of symmetric ``(..., P, P)`` matrices (NaN matrices: NaN)."""
    g = np.asarray(grams, float)
    ok = np.all(np.isfinite(g), axis=(-2, -1))
    out = np.full(g.shape[:-1], np.nan)
    out[ok] = np.linalg.eigvalsh(0.5 * (g[ok] + np.swapaxes(g[ok], -1, -2)))
    return out


def min_eig(grams: np.ndarray) -> dict[str, np.ndarray]:
    """``abs``: ``λ_min``; ``rel``: ``λ_min`` / mean diagonal (= mean eigenvalue)."""
    lam = eigenvalues(grams)
    return {"abs": lam[..., 0], "rel": lam[..., 0] / np.mean(lam, axis=-1)}


def fit_width(widths, mean, se) -> dict[str, Any]:
    """``λ(n) = λ_∞ + a/n`` by weighted least squares on the seed means: ``lam_inf``, ``a`` and
    their SEs, χ², dof and p-value (NaN coefficients with fewer than 2 finite widths)."""
    fit = lstsq(
        np.asarray(widths, float),
        np.asarray(mean, float),
        np.asarray(se, float),
        [np.ones_like, lambda n: 1.0 / n],
    )
    (c, a), (c_se, a_se) = fit["coef"], fit["se"]
    return {
        "lam_inf": float(c),
        "lam_inf_se": float(c_se),
        "a": float(a),
        "a_se": float(a_se),
        "chi2": fit["chi2"],
        "dof": fit["dof"],
        "p": fit["p"],
    }


def cell_verdict(lam_inf, lam_inf_se, limit, limit_se, widths_used: int) -> str:
    """One (depth, step, τ): non-degenerate when the extrapolated ``λ_∞`` and the n = ∞ value
    (where known) are both above 0 by at least `Z` SEs (an exact value: above 0); degenerate when
    either is within `Z` SEs of 0; undetermined with fewer than `MIN_WIDTHS` widths or a
    ``λ_∞`` significantly below 0 (the ``1/n`` model fails there)."""
    if widths_used < MIN_WIDTHS or not np.isfinite(lam_inf) or not np.isfinite(lam_inf_se):
        return VERDICTS[2]

    def z(x, s):
        return np.inf * np.sign(x) if s == 0 else x / s

    zs = [z(lam_inf, lam_inf_se)]
    if np.isfinite(limit):
        zs.append(z(limit, limit_se if np.isfinite(limit_se) else 0.0))
    if all(v >= Z for v in zs):
        return VERDICTS[0]
    if any(abs(v) < Z for v in zs):
        return VERDICTS[1]
    return VERDICTS[2]


def _limit(a: dict, field: str, norm: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The n = ∞ value and SE per (depth, step, τ): the recursion at ``t = 0`` (SE 0), the kernel
    fixed point's draw-set mean ± SE after (NaN without it); and the fixed point's own ``t = 0``
    value minus the recursion's ``(J, R)`` (its finite-sample bias; NaN without it)."""
    J, S, R = a[f"{field}_gram"].shape[1], len(a["steps"]), len(a["taus"])
    val, se = np.full((J, S, R), np.nan), np.full((J, S, R), np.nan)
    if f"limit_{field}" in a:
        x = min_eig(a[f"limit_{field}"])[norm]  # (J, E_l, S, R)
        ok = np.asarray(a["limit_converged"], bool)[:, :, None, None]
        val, se = mean_se(np.where(ok, x, np.nan), axis=1)
    ref = min_eig(a[f"ref_{field}"])[norm]
    gap = val[:, 0] - ref
    val[:, 0], se[:, 0] = ref, 0.0
    return val, se, gap


def _quantity(a: dict, field: str, norm: str) -> dict[str, Any]:
    widths = np.asarray(a["widths"], float)
    x = min_eig(a[f"{field}_gram"])[norm]  # (I, J, E, S, R)
    mean, se = mean_se(x, axis=2)  # (I, J, S, R)
    lim, lim_se, gap = _limit(a, field, norm)
    _, J, S, R = mean.shape
    keys = ("lam_inf", "lam_inf_se", "a", "a_se", "p")
    fits = {k: np.full((J, S, R), np.nan) for k in keys}
    verdict = np.empty((J, S, R), dtype=object)
    for j in range(J):
        for s in range(S):
            for r in range(R):
                f = fit_width(widths, mean[:, j, s, r], se[:, j, s, r])
                for k in keys:
                    fits[k][j, s, r] = np.nan if f[k] is None else f[k]
                used = int(np.sum(np.isfinite(mean[:, j, s, r]) & (se[:, j, s, r] > 0)))
                verdict[j, s, r] = cell_verdict(
                    f["lam_inf"], f["lam_inf_se"], lim[j, s, r], lim_se[j, s, r], used
                )
    z_limit = (fits["lam_inf"] - lim) / np.sqrt(fits["lam_inf_se"] ** 2 + lim_se**2)
    return {
        "mean": mean.tolist(),
        "se": se.tolist(),
        **{k: v.tolist() for k, v in fits.items()},
        "limit": lim.tolist(),
        "limit_se": lim_se.tolist(),
        "z_limit": z_limit.tolist(),
        "limit_t0_gap": gap.tolist(),
        "verdict": verdict.tolist(),
        "overall": overall(verdict.ravel().tolist()),
    }


def overall(verdicts: list[str]) -> str:
    """Non-degenerate if every cell is; degenerate if any is; else undetermined."""
    if verdicts and all(v == VERDICTS[0] for v in verdicts):
        return VERDICTS[0]
    return VERDICTS[1] if VERDICTS[1] in verdicts else VERDICTS[2]


def _spectrum(a: dict, field: str) -> dict[str, Any]:
    """The sorted eigenvalues over the mean diagonal at the largest width (seed mean) and of the
    n = ∞ kernels (the recursion at ``t = 0``, the fixed point's draw-set mean after)."""
    lam = eigenvalues(a[f"{field}_gram"][-1])  # (J, E, S, R, P)
    rel = lam / np.mean(lam, axis=-1, keepdims=True)
    out: dict[str, Any] = {"finite": np.nanmean(rel, axis=1).tolist()}  # (J, S, R, P)
    ref = eigenvalues(a[f"ref_{field}"])  # (J, R, P)
    ref = ref / np.mean(ref, axis=-1, keepdims=True)
    lim = np.full(np.asarray(out["finite"]).shape, np.nan)
    if f"limit_{field}" in a:
        ll = eigenvalues(a[f"limit_{field}"])
        lim = np.nanmean(ll / np.mean(ll, axis=-1, keepdims=True), axis=1)
    lim[:, 0] = ref
    out["limit"] = lim.tolist()
    return out


def nondegeneracy_summary(a: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per field (``phi``, ``g``) and normalisation (``abs``, ``rel``) the tables of
    `_quantity`, axes ``(J, S, R)`` (``mean``/``se``: ``(I, J, S, R)``), plus the spectra at the
    largest width; JSON-ready."""
    out: dict[str, Any] = {
        "widths": np.asarray(a["widths"]).tolist(),
        "depths": np.asarray(a["depths"]).tolist(),
        "taus": np.asarray(a["taus"]).tolist(),
        "steps": np.asarray(a["steps"]).tolist(),
        "layers": np.asarray(a["layers"]).tolist(),
        "seeds": int(a["phi_gram"].shape[2]),
        "points": int(a["phi_gram"].shape[-1]),
        "diverged": int(np.sum(a["diverged"])),
        "limit_path": "limit_phi" in a,
    }
    if "limit_phi" in a:
        out["limit_draw_sets"] = int(a["limit_phi"].shape[1])
        out["limit_unconverged"] = int(np.sum(~np.asarray(a["limit_converged"], bool)))
    for field in FIELDS:
        out[field] = {norm: _quantity(a, field, norm) for norm in NORMS}
        out[field]["spectrum"] = _spectrum(a, field)
    return out
