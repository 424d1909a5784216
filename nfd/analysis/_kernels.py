"""The NTK part of the sweep analysis: relative debiased distances of the finite networks'
seed-mean NTK to each limit mode's, with standard errors and n-slopes (saved with
``output.ntk``)."""

import math
from collections.abc import Mapping

import numpy as np

from ._stats import log_slope_se


def kernel_distance(mean_a, var_a, n_a, mean_b, var_b, n_b) -> tuple[float, float]:
    """Relative debiased distance ``‖E Θ_a − E Θ_b‖ / ‖E Θ_b‖`` (RMS over every saved step and
    kernel entry) between two sample means of ``n_a`` and ``n_b`` independent units, with its
    standard error (delta method, entries treated as independent Gaussians).

    ``‖m_a − m_b‖²`` is biased up by ``s² = var_a/n_a + var_b/n_b`` per entry; that bias is
    subtracted (floored at 0), and ``‖m_b‖²`` is debiased by ``var_b/n_b``. Per entry
    ``Var((m_a − m_b)² − s²) ≈ 4 Δ² s² + 2 s⁴``. The square of the distance is unbiased (while
    it is well above 0); the distance itself carries Jensen's ``−SE²/(2 d)``."""
    ma, va, mb, vb = (np.asarray(a, float).ravel() for a in (mean_a, var_a, mean_b, var_b))
    ok = np.isfinite(ma) & np.isfinite(mb) & np.isfinite(va) & np.isfinite(vb)
    if n_a < 2 or n_b < 2 or not ok.any():
        return float("nan"), float("nan")
    diff, s2 = (ma - mb)[ok], (va / n_a + vb / n_b)[ok]
    norm2 = float(np.mean(mb[ok] ** 2 - (vb / n_b)[ok]))  # ‖E Θ_b‖², debiased likewise
    if norm2 <= 0:
        return float("nan"), float("nan")
    d2 = max(float(np.mean(diff**2 - s2)), 0.0)
    # E[diff²] = Δ² + s²: 4 Δ² s² + 2 s⁴ estimated by 4 diff² s² − 2 s⁴ (floored at 2 s⁴)
    var_d2 = max(float(np.sum(4 * diff**2 * s2 - 2 * s2**2)), float(np.sum(2 * s2**2)))
    var_d2 /= ok.sum() ** 2
    d = math.sqrt(d2 / norm2)
    # d = sqrt(d2/norm2): dd/dd2 = 1/(2 d norm2); at d2 ≈ 0 the SE is that of sqrt(|noise|)
    se = math.sqrt(var_d2) / (2 * math.sqrt(max(d2, math.sqrt(var_d2)) * norm2))
    return d, se


def kernel_summary(arrays: Mapping[str, np.ndarray]) -> dict:
    """Per limit mode: the relative NTK distance `kernel_distance` of the finite networks'
    seed-mean NTK (every saved step) to the mode's ``(W, Ld, Lr)``, with SEs, and per depth and
    learning rate its n-slope (`log_slope_se`; finite → mode A: expected −1)."""
    widths, depths, lrs = (np.asarray(arrays[k]) for k in ("widths", "depths", "lrs"))
    couplings = [str(c) for c in np.atleast_1d(arrays["couplings"])]
    out: dict = {}
    for x, mode in enumerate(couplings):
        d = np.full((len(widths), len(depths), len(lrs)), np.nan)
        se = d.copy()
        for i in range(len(widths)):
            for j in range(len(depths)):
                for r in range(len(lrs)):
                    d[i, j, r], se[i, j, r] = kernel_distance(
                        arrays["ntk_mean"][i, j, r],
                        arrays["ntk_var"][i, j, r],
                        int(arrays["ntk_units"][i, j, r]),
                        arrays["limit_ntk_mean"][x, j, r],
                        arrays["limit_ntk_var"][x, j, r],
                        int(arrays["limit_ntk_units"][x, j, r]),
                    )
        slopes = [
            [log_slope_se(widths, d[:, j, r], se[:, j, r]) for r in range(len(lrs))]
            for j in range(len(depths))
        ]
        out[mode] = {"d": d.tolist(), "se": se.tolist(), "slopes": slopes}
    return out
