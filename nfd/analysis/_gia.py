"""The gradient-independence analysis (docs/math §5.3 procedure, §7.2, T6, T7): pure numpy on
the raw arrays of `nfd.experiments.run_gia`. `summarise` derives the ratios, χ diagnostics,
distances and gaps (arrays, saved with the run) and fits them (`decay_fits`, `power_fit`,
`constant_fit`: the summary that the report puts into words and the figures draw)."""

from typing import Any

import numpy as np

from ._stats import constant_fit, decay_fits, jackknife, power_fit

OBSERVABLES = ("dphi", "dg", "dtheta", "f_p1")
SLOPE_SE_MAX = 0.15  # a d_A n-slope counts as resolved only with an SE at most this (T7: ± 0.3)


def _rms(a, axis):
    return np.sqrt(np.mean(a**2, axis=axis))


def _inv_n_extrapolate(widths, *means):
    """Component-wise fit ``m(n) = m_∞ + a/n`` (unweighted) through the seed means of each width."""
    x = 1.0 / np.asarray(widths, float)
    A = np.stack([np.ones_like(x), x], axis=1)
    Y = np.stack([m.reshape(-1) for m in means])
    coef = np.linalg.lstsq(A, Y, rcond=None)[0][0]
    return coef.reshape(means[0].shape)


def _proj_ratio(std, dec):  # per τ: ⟨dec, std⟩/⟨std, std⟩ over the P×P entries
    return np.sum(dec * std, axis=(-2, -1)) / np.sum(std * std, axis=(-2, -1))


def _ratios(a: dict, d: dict, summ: dict) -> None:
    """1. The one-step feature-kernel ratio δΦ^dec/δΦ^std (= mode B / mode A at t = 1)."""
    widths, depths, taus = a["widths"].astype(float), a["depths"].astype(float), a["layer_times"]
    W, Ld, R = len(widths), len(depths), len(taus)
    d["ratio"], d["ratio_se"] = np.full((W, Ld, R), np.nan), np.full((W, Ld, R), np.nan)
    d["lim_ratio"], d["lim_ratio_se"] = np.full((Ld, R), np.nan), np.full((Ld, R), np.nan)
    d["ratio_inf"], d["ratio_inf_se"] = np.full((Ld, R), np.nan), np.full((Ld, R), np.nan)
    for j in range(Ld):
        for i in range(W):
            d["ratio"][i, j], d["ratio_se"][i, j] = jackknife(
                lambda s, t: _proj_ratio(s, t), a["std_dphi"][i, j], a["dec_dphi"][i, j]
            )
        d["lim_ratio"][j], d["lim_ratio_se"][j] = jackknife(
            _proj_ratio, a["limA_dphi"][j], a["limB_dphi"][j]
        )
        if W >= 3:

            def extrap(*ms):
                std = _inv_n_extrapolate(widths, *ms[:W])
                dec = _inv_n_extrapolate(widths, *ms[W:])
                return _proj_ratio(std, dec)

            groups = [a["std_dphi"][i, j] for i in range(W)]
            groups_dec = [a["dec_dphi"][i, j] for i in range(W)]
            # std and dec of one width are paired: jackknife them together
            paired = [np.stack([s, t], axis=1) for s, t in zip(groups, groups_dec, strict=True)]
            d["ratio_inf"][j], d["ratio_inf_se"][j] = jackknife(
                lambda *ms: extrap(*[m[0] for m in ms], *[m[1] for m in ms]), *paired
            )
        else:
            d["ratio_inf"][j], d["ratio_inf_se"][j] = d["ratio"][-1, j], d["ratio_se"][-1, j]
    summ["ratio_source"] = "1/n extrapolation" if W >= 3 else f"width {int(widths[-1])}"
    summ["ratio"] = {
        f"{t:g}": {
            "finite_deficit": decay_fits(depths, 1 - d["ratio_inf"][:, r], d["ratio_inf_se"][:, r]),
            "limit_deficit": decay_fits(depths, 1 - d["lim_ratio"][:, r], d["lim_ratio_se"][:, r]),
        }
        for r, t in enumerate(taus)
    }


def _chi(a: dict, d: dict, summ: dict) -> None:
    """2. The χ diagnostic at ℓ = ⌊τL⌋ (τ < 1) and Σ_ℓ χ_ℓ, with the decoupled control."""
    widths, depths, taus = a["widths"].astype(float), a["depths"].astype(float), a["layer_times"]
    Ld = len(depths)
    cb = a["chi_blocks"]
    for kind, key in (("std", "chi"), ("dec", "chi_dec")):
        chi = a[f"{kind}_chi"]  # (W, Ld, E, Lmax)
        pick = np.stack([np.take(chi[:, j], cb[j], axis=-1) for j in range(Ld)], axis=1)
        d[f"{key}_tau"] = pick.mean(axis=2)
        d[f"{key}_tau_se"] = pick.std(axis=2, ddof=1) / np.sqrt(pick.shape[2])
        tot = np.nansum(chi, axis=-1)  # (W, Ld, E)
        d[f"{key}_sum"] = tot.mean(axis=2)
        d[f"{key}_sum_se"] = tot.std(axis=2, ddof=1) / np.sqrt(tot.shape[2])
    lchi = a["limA_chi"]  # (Ld, Rl, Lmax)
    lpick = np.stack([np.take(lchi[j], cb[j], axis=-1) for j in range(Ld)])  # (Ld, Rl, R)
    d["lim_chi_tau"] = np.mean(lpick, axis=1)  # NaN where the limit has no χ (minibatches)
    lsum = np.where(np.all(np.isnan(lchi), axis=-1), np.nan, np.nansum(lchi, axis=-1))
    d["lim_chi_sum"] = np.mean(lsum, axis=1)
    taus_chi = [r for r, t in enumerate(taus) if t < 1]
    half = min(taus_chi, key=lambda r: abs(taus[r] - 0.5)) if taus_chi else None
    summ["chi"] = {
        "tau": None if half is None else float(taus[half]),
        "width": float(widths[-1]),
        "tau_fit": None
        if half is None
        else power_fit(depths, d["chi_tau"][-1, :, half], d["chi_tau_se"][-1, :, half]),
        "sum_fit": decay_fits(depths, d["chi_sum"][-1], d["chi_sum_se"][-1]),
        "control_z": (
            d["chi_dec_sum"] / np.where(d["chi_dec_sum_se"] > 0, d["chi_dec_sum_se"], np.nan)
        ).tolist(),
        "limit_tau_fit": None if half is None else power_fit(depths, d["lim_chi_tau"][:, half]),
        "limit_sum": d["lim_chi_sum"].tolist(),
    }


def _gaps(a: dict, d: dict, summ: dict) -> None:
    """3. Type (a) gaps (P2: the networks' own outputs) and the P1 gap, standard − decoupled."""
    depths = a["depths"].astype(float)
    W, Ld, S = len(a["widths"]), len(depths), a["steps"].shape[0]
    for key in ("eps_f", "loss_gap", "p1_gap"):
        d[key], d[key + "_se"] = np.full((W, Ld, S), np.nan), np.full((W, Ld, S), np.nan)
    for i in range(W):
        for j in range(Ld):
            df = a["std_f_p2"][i, j] - a["dec_f_p2"][i, j]  # (E, S, P, C), paired
            d["eps_f"][i, j], d["eps_f_se"][i, j] = jackknife(lambda m: _rms(m, (-2, -1)), df)
            dl = a["std_loss_p2"][i, j] - a["dec_loss_p2"][i, j]
            d["loss_gap"][i, j] = dl.mean(0)
            d["loss_gap_se"][i, j] = dl.std(0, ddof=1) / np.sqrt(dl.shape[0])
            d1 = a["std_f_p1"][i, j] - a["dec_f_p1"][i, j]
            d["p1_gap"][i, j], d["p1_gap_se"][i, j] = jackknife(lambda m: _rms(m, (-2, -1)), d1)
    d["lim_p1_gap"], d["lim_p1_gap_se"] = np.full((Ld, S), np.nan), np.full((Ld, S), np.nan)
    for j in range(Ld):
        d["lim_p1_gap"][j], d["lim_p1_gap_se"][j] = jackknife(
            lambda x, y: _rms(x - y, (-2, -1)), a["limA_f_p1"][j], a["limB_f_p1"][j]
        )
    T = S - 1
    summ["gaps"] = {
        f"t={t}": {
            "eps_f": decay_fits(depths, d["eps_f"][-1, :, t], d["eps_f_se"][-1, :, t]),
            "loss_gap": decay_fits(depths, d["loss_gap"][-1, :, t], d["loss_gap_se"][-1, :, t]),
            "p1_gap": decay_fits(depths, d["p1_gap"][-1, :, t], d["p1_gap_se"][-1, :, t]),
            "lim_p1_gap": decay_fits(depths, d["lim_p1_gap"][:, t], d["lim_p1_gap_se"][:, t]),
        }
        for t in sorted({1, min(2, T), T})
    }


def _obs(a: dict, prefix: str, name: str, idx):
    x = a[f"{prefix}_{name}"][idx]
    return x[:, 1:] if name == "f_p1" else x  # t ≥ 1 (f(0) = 0 everywhere)


def _distances_at(a: dict, d: dict, o: int, name: str, j: int) -> None:
    """``d_A``, ``d_B`` and their noise floors of observable ``o`` at depth ``j``, every width,
    and ``d_B`` extrapolated to n = ∞ (the widest width with fewer than three widths)."""
    widths = a["widths"].astype(float)
    W = len(widths)
    A, B = _obs(a, "limA", name, j), _obs(a, "limB", name, j)
    norm = np.linalg.norm(np.nanmean(A, 0))
    for i in range(W):
        F = _obs(a, "std", name, (i, j))
        for X, ref in (("A", A), ("B", B)):
            d[f"d_{X}"][o, i, j], d[f"d_{X}_se"][o, i, j] = jackknife(
                lambda f, r, aa: np.linalg.norm(f - r) / np.linalg.norm(aa), F, ref, A
            )
            se2 = np.sum(np.var(F, 0, ddof=1) / F.shape[0])
            if ref.shape[0] > 1:
                se2 += np.sum(np.var(ref, 0, ddof=1) / ref.shape[0])
            d[f"floor_{X}"][o, i, j] = np.sqrt(se2) / norm
    if W >= 3:
        paired = [_obs(a, "std", name, (i, j)) for i in range(W)]
        d["d_B_inf"][o, j], d["d_B_inf_se"][o, j] = jackknife(
            lambda *ms: (
                np.linalg.norm(_inv_n_extrapolate(widths, *ms[:W]) - ms[W])
                / np.linalg.norm(ms[W + 1])
            ),
            *paired,
            B,
            A,
        )
    else:
        d["d_B_inf"][o, j], d["d_B_inf_se"][o, j] = d["d_B"][o, -1, j], d["d_B_se"][o, -1, j]


def _d_a_slope(d: dict, o: int, j: int, W: int, widths: np.ndarray) -> dict[str, Any]:
    """T7: the n-slope of the noise-floor-corrected ``d_A`` of observable ``o`` at depth ``j``."""
    dA, fl, se = d["d_A"][o, :, j], d["floor_A"][o, :, j], d["d_A_se"][o, :, j]
    corr = np.sqrt(np.maximum(dA**2 - fl**2, 0))
    fit = (
        power_fit(widths, corr, se)
        if W >= 2
        else {"exponent": float("nan"), "exponent_se": float("nan")}
    )
    # resolved: the bias stands above its error at every width, and the slope is known
    # well enough (SE ≤ 0.15) for the ±0.3 window of T7 to mean something
    resolved = bool(W >= 2 and np.all(corr > 3 * se) and fit["exponent_se"] <= SLOPE_SE_MAX)
    return {
        "slope": fit["exponent"],
        "slope_se": fit["exponent_se"],
        "resolved": resolved,
        "pass": bool(resolved and abs(fit["exponent"] + 1) <= 0.3),
    }


def _distances(a: dict, d: dict, summ: dict) -> None:
    """4. ``d_A``, ``d_B`` (§5.3) and the required n-slope of ``d_A`` (T7)."""
    widths, depths = a["widths"].astype(float), a["depths"].astype(float)
    W, Ld, O = len(widths), len(depths), len(OBSERVABLES)
    for key in ("d_A", "d_B", "floor_A", "floor_B", "d_A_se", "d_B_se"):
        d[key] = np.full((O, W, Ld), np.nan)
    d["d_B_inf"], d["d_B_inf_se"] = np.full((O, Ld), np.nan), np.full((O, Ld), np.nan)
    slopes = {}
    for o, name in enumerate(OBSERVABLES):
        for j in range(Ld):
            _distances_at(a, d, o, name, j)
            slopes[f"{name}@L={int(depths[j])}"] = _d_a_slope(d, o, j, W, widths)
    summ["d_A_slopes"] = slopes
    summ["d_B_inf_fits"] = {
        name: decay_fits(depths, d["d_B_inf"][o], d["d_B_inf_se"][o])
        for o, name in enumerate(OBSERVABLES)
    }


def _init(a: dict, d: dict, summ: dict) -> None:
    """5. The initial coupling (T6): n·ΔG_0 flat in n, no growth with L."""
    widths, depths = a["widths"].astype(float), a["depths"].astype(float)
    W = len(widths)
    g0 = a["init_gap"]
    d["init_gap_mean"] = g0.mean(axis=2)
    d["init_gap_mean_se"] = g0.std(axis=2, ddof=1) / np.sqrt(g0.shape[2])
    init = {}
    for j in range(len(depths)):
        ng, ngse = widths * d["init_gap_mean"][:, j], widths * d["init_gap_mean_se"][:, j]
        fit = constant_fit(ng, ngse) if W >= 2 and np.all(ngse > 0) else None
        init[f"L={int(depths[j])}"] = {
            "n_gap": ng.tolist(),
            "n_gap_se": ngse.tolist(),
            "constant": fit,
            "slope": power_fit(widths, d["init_gap_mean"][:, j], d["init_gap_mean_se"][:, j]),
        }
    summ["init"] = init


def summarise(a: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Derived arrays and fits from the raw arrays of `run_gia` (§5.3, §7.2, T6, T7).

    Returns ``(arrays, summary)``. Arrays (each with ``_se``): ``ratio (W, Ld, R)`` =
    ``⟨E δΦ^dec, E δΦ^std⟩/‖E δΦ^std‖²`` per layer time, ``ratio_inf (Ld, R)`` (the 1/n
    extrapolation when there are ≥ 3 widths, else the widest), ``lim_ratio (Ld, R)`` (mode B over
    mode A); ``chi_tau``, ``chi_tau_dec (W, Ld, R)`` and ``chi_sum``, ``chi_sum_dec (W, Ld)``,
    ``lim_chi_tau (Ld, R)``, ``lim_chi_sum (Ld,)``; ``eps_f``, ``loss_gap``, ``p1_gap (W, Ld, S)``
    (standard − decoupled: rms of the mean f difference, mean loss difference, P1 rms gap) and
    ``lim_p1_gap (Ld, S)``; ``d_A``, ``d_B``, ``floor_A``, ``floor_B (O, W, Ld)`` relative
    distances ``‖E O_std − O_X‖/‖O_A‖`` for the observables `OBSERVABLES` (δΦ at every τ, δG,
    δΘ, the P1 trajectory) with their noise floors ``‖SE‖/‖O_A‖``, ``d_B_inf (O, Ld)``;
    ``init_gap_mean (W, Ld)``. The summary holds the fits (`decay_fits`, `power_fit`,
    `constant_fit`) that `nfd.reports.gia_report` puts into words.
    """
    d: dict[str, np.ndarray] = {}
    summ: dict[str, Any] = {
        "widths": a["widths"].astype(float).tolist(),
        "depths": a["depths"].astype(float).tolist(),
        "layer_times": a["layer_times"].tolist(),
    }
    _ratios(a, d, summ)
    _chi(a, d, summ)
    _gaps(a, d, summ)
    _distances(a, d, summ)
    _init(a, d, summ)
    if a["gammas"].size >= 2:  # 6. γ0 scan of the limit gaps (type (b): ∝ γ0² expected)
        t = min(2, a["steps"].shape[0] - 1)
        summ["gamma"] = {
            "dphi_gap": power_fit(a["gammas"], a["gamma_dphi_gap"]),
            "f_gap": power_fit(a["gammas"], a["gamma_f_gap"][:, t]),
            "f_gap_t": t,
        }
    return d, summ


def gia_summary(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """What the figures and the report of a gia run read: ``arrays``, the run's arrays with the
    derived ones of `summarise` (recomputed, cheap), and ``fits``, its summary."""
    derived, fits = summarise(arrays)
    return {"arrays": {**arrays, **derived}, "fits": fits}
