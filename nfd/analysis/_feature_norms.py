"""The feature-norm analysis (arXiv 2512.21075 Fig. 1, T10): pure functions of a
`kind = "feature_norms"` run's arrays (`nfd.experiments.run_feature_norms`).

Per form (pre-, post-activation), depth and saved step: the ratio of the mean squared feature at
the last layer to the first, ``h_rms²[L] / h_rms²[0]``, with its SE over seeds, against the
n = ∞ value (the init-kernel recursion at ``t = 0``: ``(1 + 1/(2L))^L → e^{1/2}`` for ReLU; the
limit at ``K = L`` during training); the growth exponent in ``L`` of the last-layer RMS feature
(least squares in log-log, SE propagated from the seed means'); and the verdicts of T10.
"""

import numpy as np

from ._stats import finite_mean_se, log_slope, log_slope_se, mean_se

FORMS = ("pre", "post")
Z_MAX = 2.0  # a value agrees with its reference within this many (combined) SEs
# "does not grow with L": the exponent exceeds the n = ∞ one by at most this + Z_MAX SE (T8's
# coordinate-check tolerance; the K = L recursion's own exponent, from (1 + 1/(2L))^L, is 0.005)
GROWTH_TOL = 0.1


def _at_layer(norm2: np.ndarray, depths, layer: str) -> np.ndarray:
    """``norm2 (J, E, S, ℓ)`` at layer 0 or L of each depth: ``(J, E, S)``."""
    idx = [0 if layer == "first" else int(L) for L in depths]
    return np.stack([norm2[j, ..., i] for j, i in enumerate(idx)])


def ratios(norm2: np.ndarray, depths) -> np.ndarray:
    """``h_rms²[L] / h_rms²[0]`` per depth, member and step ``(J, E, S)``."""
    return _at_layer(norm2, depths, "last") / _at_layer(norm2, depths, "first")


def _growth(depths, rms_mean, rms_se) -> dict[str, float]:
    fit = log_slope_se(depths, rms_mean, rms_se)
    return {"slope": fit["slope"], "slope_se": fit["slope_se"]}


def _pre_verdict(ratio, rse, ref, ref_se, growth, ref_growth) -> dict:
    """The pre-activation stream "stays O(1)" when its last/first ratio is within `Z_MAX` SE of
    the n = ∞ value at every depth and the L-exponent of its last-layer norm exceeds the n = ∞
    one by at most `GROWTH_TOL` + `Z_MAX` SE; NaN references are skipped (no reference: the
    growth test against 0 alone)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.abs(ratio - ref) / np.sqrt(rse**2 + np.nan_to_num(ref_se, posinf=0.0) ** 2)
    has_ref = bool(np.all(np.isfinite(ref)))
    s, se = growth["slope"], growth["slope_se"]
    rs = ref_growth["slope"] if np.isfinite(ref_growth["slope"]) else 0.0
    rse_g = np.nan_to_num(ref_growth["slope_se"])
    if not np.isfinite(s) or not np.isfinite(se):
        grows = None
    else:
        grows = bool(s - rs > GROWTH_TOL + Z_MAX * np.hypot(se, rse_g))
    within = bool(np.all(z <= Z_MAX)) if has_ref else None
    if grows is None and within is None:
        verdict = "undetermined at this size"
    elif grows or within is False:
        verdict = "does not stay O(1)"
    else:
        verdict = "stays O(1)"
    return {
        "z": z,
        "max_z": float(np.nanmax(z)) if has_ref else np.nan,
        "within": within,
        "grows": grows,
        "verdict": verdict,
    }


def _post_verdict(growth) -> str:
    s, se = growth["slope"], growth["slope_se"]
    if not (np.isfinite(s) and np.isfinite(se)):
        return "undetermined at this size"
    return "grows" if s > Z_MAX * se else "no growth resolved"


def _at_time(arrays: dict, t: int) -> dict:
    """Every number of one saved step ``t`` (0: initialisation, −1: the end of training)."""
    depths = arrays["depths"]
    out: dict = {"step": int(arrays["steps"][t])}
    for form in FORMS:
        n2 = arrays[f"norm2_{form}"][:, :, t]  # (J, E, ℓ)
        r, rse = mean_se(ratios(n2[:, :, None], depths)[:, :, 0], axis=1)
        rms, rms_se = mean_se(np.sqrt(_at_layer(n2[:, :, None], depths, "last")[:, :, 0]), axis=1)
        out[form] = {
            "ratio": r,
            "ratio_se": rse,
            "rms_last": rms,
            "rms_last_se": rms_se,
            "growth": _growth(depths, rms, rms_se),
        }
    if t == 0:  # the n = ∞ recursion: exact values, no SE
        ref = arrays["ref_init"]
        ref_r = ratios(ref[:, None, None], depths)[:, 0, 0]
        ref_rms = np.sqrt(_at_layer(ref[:, None, None], depths, "last")[:, 0, 0])
        slope, _ = log_slope(depths, ref_rms)
        out["ref"] = {
            "ratio": ref_r,
            "ratio_se": np.zeros_like(ref_r),
            "rms_last": ref_rms,
            "growth": {"slope": slope, "slope_se": 0.0},
            "what": "init recursion",
        }
    else:
        lim = arrays["limit_norm2"][:, :, t]
        r, rse = mean_se(ratios(lim[:, :, None], depths)[:, :, 0], axis=1)
        rms, rms_se = mean_se(np.sqrt(_at_layer(lim[:, :, None], depths, "last")[:, :, 0]), axis=1)
        out["ref"] = {
            "ratio": r,
            "ratio_se": rse,
            "rms_last": rms,
            "growth": _growth(depths, rms, rms_se),
            "what": "limit at K = L",
        }
    ref = out["ref"]
    out["pre"]["check"] = _pre_verdict(
        out["pre"]["ratio"],
        out["pre"]["ratio_se"],
        ref["ratio"],
        ref["ratio_se"],
        out["pre"]["growth"],
        ref["growth"],
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        out["pre"]["z_sqrt_e"] = np.abs(out["pre"]["ratio"] - np.exp(0.5)) / out["pre"]["ratio_se"]
    out["post"]["verdict"] = _post_verdict(out["post"]["growth"])
    return out


def feature_norms_analysis(arrays: dict) -> dict:
    """Everything the report and figures read: ``init`` and ``end`` (`_at_time` at the first and
    last saved step) and ``profiles``: per form the seed mean ± SE of the mean squared feature
    ``(J, S, ℓ)``, and the limit's (NaN without it)."""
    profiles = {form: finite_mean_se(arrays[f"norm2_{form}"], axis=1) for form in FORMS}
    profiles["limit"] = finite_mean_se(arrays["limit_norm2"], axis=1)
    return {"init": _at_time(arrays, 0), "end": _at_time(arrays, -1), "profiles": profiles}
