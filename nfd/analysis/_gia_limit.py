"""The n = ∞ gradient-independence verdict (docs/math §5.3): pure numpy on the arrays of
`nfd.experiments.run_gia_limit`.

Every A − B quantity is a function of the member means of paired draw sets (modes A and B share
each draw set), so its standard error is the jackknife over the pairs (`jackknife` on the stacked
pair), with the fixed point's stopping tolerance (1e-4 relative) as a floor. The kernel method
at ``K = L`` *is* the n = ∞ depth-``L`` network, so the ``K = L`` gaps against ``L`` get
`decay_fits` (pure power law with its SE; χ² p-values of "constant", "∝ 1/L", "∝ 1/L²" and
``c + b/L``). ``K → ∞`` is the depth continuum, one number per observable: each depth gives a
Richardson estimate of it from its ``(L, 2L)`` pair (bias ``O(1/L²)``; runs of different depths use
different draws), and the ``L → ∞`` value (``limit``) is the weighted mean of the estimates at
``L ≥ 16`` (`LIMIT_FROM`; the largest depth alone if none is that deep), with the χ² p-value of
their agreement. The report (`nfd.reports.gia_limit_report`) reads both.
"""

from typing import Any

import numpy as np

from ._stats import constant_fit, decay_fits, jackknife, power_fit

SCHEMES = {"L": "K = L", "inf": "K → ∞"}
LIMIT_FROM = 16  # the K → ∞ estimates from depths ≥ this are averaged into the L → ∞ value
STOP_TOL = (
    1e-4  # the kernel iteration's relative stopping tolerance: an accuracy floor on every value
)


def _paired(a: dict, key_a: str, key_b: str, i: int, j: int) -> np.ndarray:
    return np.stack([a[key_a][i, j], a[key_b][i, j]], axis=1)  # (E, 2, ...)


def _deficit(pair_mean: np.ndarray) -> np.ndarray:  # 1 − ⟨δΦ_B, δΦ_A⟩/‖δΦ_A‖² per τ
    A, B = pair_mean[0], pair_mean[1]
    return 1.0 - np.sum(A * B, axis=(-2, -1)) / np.sum(A * A, axis=(-2, -1))


def _f_gap(pair_mean: np.ndarray) -> np.ndarray:  # rms over points and outputs, per step
    return np.sqrt(np.mean((pair_mean[0] - pair_mean[1]) ** 2, axis=(-2, -1)))


def _loss_gap(pair_mean: np.ndarray) -> np.ndarray:
    return pair_mean[0] - pair_mean[1]


def _ntk_dist(pair_mean: np.ndarray) -> np.ndarray:  # ‖Θ_A − Θ_B‖_F / ‖Θ_A‖_F per step
    A, B = pair_mean[0], pair_mean[1]
    return np.linalg.norm(A - B, axis=(-2, -1)) / np.linalg.norm(A, axis=(-2, -1))


GAPS = {  # name: (raw field, statistic of the pair mean)
    "deficit": ("dphi", _deficit),
    "f_gap": ("f", _f_gap),
    "loss_gap": ("loss", _loss_gap),
    "ntk_dist": ("theta", _ntk_dist),
}


PICK = {"deficit": -1, "f_gap": -1, "loss_gap": -1, "ntk_dist": 1}  # τ = last, t = T, t = 1


def _scheme(a: dict, i: int, k: str) -> dict[str, Any]:
    """The gaps of activation ``i`` and scheme ``k`` at every depth; for ``K = L`` their fits in
    ``L`` (`PICK`: the deficit at the last layer time, the f and loss gaps at the last step, the NTK
    distance at ``t = 1``), for ``K → ∞`` the weighted mean of the deep estimates (``limit``)."""
    depths = a["depths"].astype(float)
    out: dict[str, Any] = {}
    for name, (field, stat) in GAPS.items():
        vals, ses = [], []
        for j in range(len(depths)):
            v, s = jackknife(stat, _paired(a, f"A_{k}_{field}", f"B_{k}_{field}", i, j))
            vals.append(v)
            # moment-matched linear runs have no spread: their error is the stopping tolerance
            ses.append(np.sqrt(s**2 + (STOP_TOL * np.abs(v)) ** 2))
        out[name], out[name + "_se"] = np.stack(vals).tolist(), np.stack(ses).tolist()
    if k == "L":
        out["fits"] = {
            name: decay_fits(
                depths, np.asarray(out[name])[:, col], np.asarray(out[name + "_se"])[:, col]
            )
            for name, col in PICK.items()
        }
    else:
        deep = depths >= min(LIMIT_FROM, depths[-1])
        out["limit"] = {}
        for name, col in PICK.items():
            fit = constant_fit(
                np.asarray(out[name])[deep, col], np.asarray(out[name + "_se"])[deep, col]
            )
            out["limit"][name] = {**fit, "depths": depths[deep].astype(int).tolist()}
    conv = np.concatenate([a[f"{m}_{k}_converged"][i].ravel() for m in "AB"])
    out["converged"] = float(np.mean(conv))
    return out


def _min_eig(a: dict, i: int) -> dict[str, Any]:
    """Mode A's (and B's) smallest relative eigenvalue of ``Φ_k``, ``G_k`` at the layer times
    (``K = L``): member mean and SE per depth, and a power fit in ``L`` at the last layer time."""
    depths = a["depths"].astype(float)
    out: dict[str, Any] = {}
    for m in "AB":
        for field in ("phi", "g", "phi_point"):
            if f"{m}_L_{field}_min_eig" not in a:  # runs saved before the point-only kernel
                continue
            x = a[f"{m}_L_{field}_min_eig"][i]  # (Ld, E, R)
            mean, se = x.mean(axis=1), x.std(axis=1, ddof=1) / np.sqrt(x.shape[1])
            key = f"{m}_{field}"
            out[key], out[key + "_se"] = mean.tolist(), se.tolist()
            out[key + "_fit"] = power_fit(depths, mean[:, -1], se[:, -1])
    return out


def _gamma(a: dict, i: int) -> dict[str, Any] | None:
    if "gammas" not in a or len(a["gammas"]) == 0:
        return None
    gam = a["gammas"].astype(float)
    f = a["gamma_f_gap"][i][..., -1]  # (G, E) at the last step
    d = a["gamma_dphi_gap"][i]  # (G, E)
    out: dict[str, Any] = {"gammas": gam.tolist(), "depth": int(a["gamma_depth"])}
    for name, x in (("f_gap", f), ("dphi_gap", d)):
        mean, se = x.mean(axis=1), x.std(axis=1, ddof=1) / np.sqrt(x.shape[1])
        out[name], out[name + "_se"] = mean.tolist(), se.tolist()
        out[name + "_fit"] = power_fit(gam, mean, se)
    return out


def gia_limit_summary(a: dict[str, np.ndarray], activations) -> dict[str, Any]:
    """The gaps, fits, eigenvalues and γ0 scan per activation (JSON-ready)."""
    schemes = [k for k in SCHEMES if f"A_{k}_f" in a]
    out: dict[str, Any] = {
        "activations": list(activations),
        "depths": a["depths"].tolist(),
        "layer_times": a["layer_times"].tolist(),
        "steps": a["steps"].tolist(),
        "schemes": schemes,
        "moment_matched": a["moment_matched"].tolist(),
    }
    for i, act in enumerate(activations):
        per: dict[str, Any] = {k: _scheme(a, i, k) for k in schemes}
        per["min_eig"] = _min_eig(a, i)
        per["gamma"] = _gamma(a, i)
        out[act] = per
    return out
