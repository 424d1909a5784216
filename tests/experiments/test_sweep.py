"""Sweeps: the grid runs as specified; the convergence analysis recovers known answers; the finite
seed means approach mode A like 1/n (T7, required); plots redraw from saved data only."""

import dataclasses
import json
import pathlib

import jax.random as jr
import numpy as np
import pytest

from nfd import config
from nfd.analysis import _sweep as sweep_analysis
from nfd.analysis import convergence_summary, fit_inverse_width
from nfd.analysis._kernels import kernel_distance
from nfd.analysis._sweep import (
    _distance,
    _richardson_weights,
    fit_depth_plateau,
    fit_depth_scaling,
)
from nfd.cli import main
from nfd.config import ConfigError, build_limit, build_task, run_keys
from nfd.experiments import _sweep, run_finite, run_limit
from nfd.experiments._limit import evolve_limit
from nfd.experiments._sweep import (
    coarsen_particles,
    limit_ensemble,
    pair_units,
    run_limits,
)
from nfd.limit import sample_particles
from nfd.param import DecoupledWeights
from nfd.reports import sweep_report
from nfd.runs import load_run

ROOT = pathlib.Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs/figures/smoke/convergence.toml"


# -- analysis on synthetic data with known answers ------------------------------------------
def test_debiased_distance_recovers_a_known_offset():
    """‖mean(a) − mean(b)‖ debiased for the sampling noise of both means, with bootstrap SE."""
    rng = np.random.default_rng(0)
    offset = 0.05
    a = rng.normal(0.0, 0.5, (4000, 6, 3))
    b = rng.normal(offset, 0.5, (3000, 6, 3))
    d, se = _distance(a, b, num_boot=200, rng=np.random.default_rng(1))
    naive = np.sqrt(np.mean((a.mean(0) - b.mean(0)) ** 2))
    # |d − offset| within 4 bootstrap SE; the naive estimate is biased up by the noise of the means
    # (≈ sqrt(offset² + 0.25 (1/4000 + 1/3000)) ≈ 0.0514): the debiased one must be closer
    assert abs(d - offset) < 4 * se and se < 0.004, (d, se)
    assert abs(d - offset) < abs(naive - offset), (d, naive)
    assert _distance(a, a[::-1].copy(), num_boot=10, rng=rng)[0] < 0.01


def test_kernel_distance_is_unbiased_with_calibrated_errors():
    """Two ensembles of 'kernels' (400 entries) with a known relative offset 0.05: over 300
    independent replications the squared debiased distance averages to the truth within 3 SE
    of that mean (the naive RMS is biased up by the sampling noise, ≈ 2× here), and the stated
    SE matches the spread of the estimates within 15% (300 replications: ≈ 4% resolution)."""
    rng = np.random.default_rng(3)
    mb = rng.standard_normal(400) + 2.0
    offset = rng.standard_normal(400)
    truth = 0.05
    ma = mb + truth * offset * np.sqrt(np.mean(mb**2) / np.mean(offset**2))
    na, nb, sd = 64, 48, 1.0
    est, ses, naive = [], [], []
    for _ in range(300):
        a = ma + sd * rng.standard_normal((na, 400))
        b = mb + sd * rng.standard_normal((nb, 400))
        d, se = kernel_distance(a.mean(0), a.var(0, ddof=1), na, b.mean(0), b.var(0, ddof=1), nb)
        est.append(d)
        ses.append(se)
        naive.append(np.sqrt(np.mean((a.mean(0) - b.mean(0)) ** 2) / np.mean(b.mean(0) ** 2)))
    est = np.asarray(est)
    sq = est**2
    assert abs(sq.mean() - truth**2) < 3 * sq.std(ddof=1) / np.sqrt(len(sq)), sq.mean()
    assert np.mean(naive) > 1.5 * truth
    assert abs(np.mean(ses) / est.std(ddof=1) - 1) < 0.15, (np.mean(ses), est.std(ddof=1))
    assert np.isnan(kernel_distance(ma, ma, 1, mb, mb, 10)[0])  # one unit: no variance


def test_inverse_width_fit_recovers_coefficients():
    widths = np.array([32, 64, 128, 256, 512])
    d = 0.02 + 3.0 / widths
    fit = fit_inverse_width(widths, d, np.full(5, 1e-4))
    assert abs(fit["d_inf"] - 0.02) < 1e-10 and abs(fit["alpha"] - 3.0) < 1e-8
    assert fit["chi2_dof"] < 1e-12
    pure = fit_inverse_width(widths, 3.0 / widths, np.full(5, 1e-4))
    assert abs(pure["slope"] + 1.0) < 1e-10


def test_richardson_weights_are_exact_for_a_plus_b_over_n():
    """Two widths n, 2n: f∞ = 2 f(2n) − f(n) whatever the variances; three widths with any
    weights: an exact f∞ + a/n is recovered exactly (the weights sum to 1 and kill 1/n)."""
    rng = np.random.default_rng(0)
    c = _richardson_weights(np.array([16.0, 32.0]), rng.uniform(0.1, 2.0, (2, 5)))
    np.testing.assert_allclose(c, np.array([[-1.0] * 5, [2.0] * 5]), rtol=1e-12)
    widths = np.array([8.0, 16.0, 32.0])
    c = _richardson_weights(widths, rng.uniform(0.1, 2.0, (3, 4)))
    f_inf, a = rng.normal(size=4), rng.normal(size=4)
    np.testing.assert_allclose(np.sum(c * (f_inf + a / widths[:, None]), 0), f_inf, atol=1e-12)


def test_depth_scaling_fit_recovers_closed_form_and_rejects_a_wrong_model():
    widths, depths = np.array([8, 16, 32, 64]), np.array([2, 4, 8])
    n, L = np.meshgrid(widths, depths, indexing="ij")
    exact = 0.3 + 2.0 / n - 0.5 / L
    fit = fit_depth_scaling(widths, depths, exact, np.full(exact.shape, 1e-3))
    assert abs(fit["L_inf"] - 0.3) < 1e-10 and abs(fit["alpha"] - 2.0) < 1e-8
    assert abs(fit["b"] + 0.5) < 1e-9 and fit["dof"] == 9 and fit["chi2"] < 1e-12
    # known Gaussian noise of the stated size: coefficients within 3 SE, χ² test passes (p > 1e-3)
    rng = np.random.default_rng(3)
    se = np.full(exact.shape, 0.01)
    noisy = fit_depth_scaling(widths, depths, exact + se * rng.normal(size=exact.shape), se)
    assert abs(noisy["L_inf"] - 0.3) < 3 * noisy["L_inf_se"], noisy
    assert abs(noisy["b"] + 0.5) < 3 * noisy["b_se"] and noisy["p_value"] > 1e-3, noisy
    # a 20/n² term (0.31 at n = 8, 30× the noise) is not L∞ + α/n + b/L: its noiseless χ² is
    # 69 on 9 dof (p ≈ 2e−11); with noise the χ² stays far above the 1% point (21.7)
    wrong = fit_depth_scaling(widths, depths, exact + 20 / n**2, se)
    assert wrong["p_value"] < 1e-8, wrong


def _synthetic_sweep(rng, *, antithetic: bool):
    """Saved arrays of a sweep whose answers are known: finite f(n) = f∞ + a/n + noise/√n, mode A
    = f∞, mode B = f∞ + δ; test losses ℓ(n, L) = 0.2 + 0.5/n + 0.1/L, limits 0.2 + 0.1/L (A)
    and 0.25 + 0.1/L (B)."""
    widths, depths = np.array([16, 32, 64, 128]), np.array([2, 4])
    E, El, S, P = 400, 200, 3, 5
    f_inf = rng.normal(size=(S, P, 1))
    a = rng.normal(size=(S, P, 1))
    delta = 0.05 * rng.normal(size=(S, P, 1))
    f = np.empty((4, 2, 1, E, S, P, 1))
    loss = np.empty((4, 2, 1, E, S))
    for i, n in enumerate(widths):
        for j, L in enumerate(depths):
            noise = rng.normal(size=(E, S, P, 1)) / np.sqrt(n)
            if antithetic:  # a large part odd in the pair sign, which pair means cancel exactly
                noise[1::2] = -noise[0::2] + 0.1 * noise[1::2]
            f[i, j, 0] = f_inf + a / n + 0.3 * noise
            loss[i, j, 0] = 0.2 + 0.5 / n + 0.1 / L + 0.02 * rng.normal(size=(E, S))
    lim_f = np.stack([f_inf + 0.0 * delta, f_inf + delta])[:, None, None, None]
    lim_f = lim_f + 0.002 * rng.normal(size=(2, 2, 1, El, S, P, 1))
    lim_loss = np.empty((2, 2, 1, El, S))
    for j, L in enumerate(depths):
        lim_loss[0, j] = 0.2 + 0.1 / L + 0.01 * rng.normal(size=(1, El, S))
        lim_loss[1, j] = 0.25 + 0.1 / L + 0.01 * rng.normal(size=(1, El, S))
    arrays = {
        "widths": widths,
        "depths": depths,
        "lrs": np.array([0.5]),
        "steps": np.arange(S),
        "couplings": np.array(["exact", "decoupled"]),
        "antithetic": np.asarray(antithetic),
        "limit_antithetic": np.asarray(False),
        "limit_particles": np.asarray(0),
        "f_train": f[..., :3, :],
        "f_test": f[..., 3:, :],
        "loss_train": loss,
        "loss_test": loss,
        "status": np.zeros((4, 2, 1, E), int),
        "limit_f_train": lim_f[..., :3, :],
        "limit_f_test": lim_f[..., 3:, :],
        "limit_loss_train": lim_loss,
        "limit_loss_test": lim_loss,
    }
    return arrays, np.sqrt(np.mean(a**2)), np.sqrt(np.mean(delta**2))


@pytest.mark.parametrize("antithetic", [False, True])
def test_convergence_summary_recovers_known_rates_offsets_and_losses(antithetic):
    arrays, a_rms, delta_rms = _synthetic_sweep(np.random.default_rng(0), antithetic=antithetic)
    s = convergence_summary(arrays, num_boot=100)
    widths = np.asarray(s["widths"], float)
    A, B = s["modes"]["exact"], s["modes"]["decoupled"]
    for j in range(2):
        d, se = np.asarray(A["d"])[:, j, 0], np.asarray(A["se"])[:, j, 0]
        np.testing.assert_array_less(np.abs(d - a_rms / widths), 4 * se)  # d_A = ‖a‖/n
        fit = A["fits"][j][0]
        assert abs(fit["slope"] + 1) < 3 * fit["slope_se"], fit  # slope −1 within 3 SE
        assert fit["slope_se"] < 0.1, fit
        # Richardson f∞: 0 from mode A, ‖δ‖ from mode B (within 3 bootstrap SE)
        assert A["extrap"]["d"][j][0] < 3 * A["extrap"]["se"][j][0], A["extrap"]
        ext_b, ext_b_se = B["extrap"]["d"][j][0], B["extrap"]["se"][j][0]
        assert abs(ext_b - delta_rms) < 3 * ext_b_se, (ext_b, delta_rms, ext_b_se)
    ds = s["depth_scaling"][0]
    assert abs(ds["L_inf"] - 0.2) < 3 * ds["L_inf_se"] and abs(ds["b"] - 0.1) < 3 * ds["b_se"]
    assert abs(ds["alpha"] - 0.5) < 3 * ds["alpha_se"], ds
    la, lb = ds["limits"]["exact"], ds["limits"]["decoupled"]
    assert abs(la["inf"] - 0.2) < 3 * la["inf_se"] and abs(lb["inf"] - 0.25) < 3 * lb["inf_se"]
    assert abs(la["z"]) < 3 < abs(lb["z"]), (la["z"], lb["z"])  # L∞ agrees with A, not with B
    assert s["units"][0][0][0] == (200 if antithetic else 400)
    report = sweep_report(s)
    assert f"{ds['L_inf']:.3g}" in report and "only mode A (exact) is consistent with 0" in report


# -- finite networks and the limit ---------------------------------------------------------
def _cfg(*overrides):
    cfg = config.load(SMOKE, list(overrides))
    return cfg, build_task(cfg, key=run_keys(cfg)["task"])


@pytest.mark.slow  # two compiled ensembles (≈ 15 s); the pair analysis is in the fast tier above
def test_antithetic_pairs_cancel_exactly_the_part_odd_in_v0():
    """Pairs 2p, 2p + 1 share U, W and negate v(0). The uncentred f(0) is linear in v(0), so the
    pair mean is exactly 0 (the seed-to-seed variance drops by an infinite factor); equal and
    opposite f(0) at every point also shows that U, W are shared. For centred trajectories the even part (kernel
    fluctuations) dominates: pair members are positively correlated, so a pair mean has more
    than half a member's variance (a pair is worth less than two independent seeds)."""
    cfg, task = _cfg("seeds=256", "optim.steps=2", "output.every=2")
    raw = run_finite(
        dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, center_output=False)),
        width=8,
        depth=2,
        task=task,
        progress=False,
        antithetic=True,
    )
    f0 = np.asarray(raw.f_train[:, 0])
    assert np.std(f0) > 0.1  # O(1/√n) at n = 8
    np.testing.assert_allclose(f0[1::2], -f0[0::2], rtol=0, atol=1e-13)
    cen = run_finite(cfg, width=8, depth=2, task=task, progress=False, antithetic=True)
    f = np.asarray(cen.f_train[:, -1]).reshape(256, -1)  # t = 2
    ratio = np.mean(pair_units(f, True).var(0)) / np.mean(f.var(0))
    # independent members would give 0.5; 128 pairs estimate a variance to ≈ 12% (averaging over
    # coordinates only helps), and the measured ≈ 0.8 is > 0.5 by many such errors
    assert 0.6 < ratio <= 1.0, ratio


@pytest.mark.slow
def test_one_compiled_limit_for_both_modes_equals_separate_runs():
    """`run_limits` runs mode A as a decoupled particle system with offset 0 (W̃(t) = W(t)) in the
    same ensemble as mode B: its trajectories must equal `run_limit`'s reused-weight (mode A)
    solver to round-off. (Mode B's repetitions are `run_limit`'s own draws by construction.)"""
    cfg, task = _cfg("seeds=2", "limit.particles=16", "optim.steps=2", "output.every=1")
    merged = run_limits(
        cfg, depth=2, lrs=[0.5], couplings=("exact", "decoupled"), task=task, progress=False
    )
    alone = run_limit(cfg, depth=2, lrs=[0.5], coupling="exact", task=task, progress=False)
    for key in ("f_train", "f_test", "loss_test"):
        np.testing.assert_allclose(
            getattr(merged["exact"], key), getattr(alone, key), rtol=1e-10, atol=1e-12
        )
    # the modes differ from t = 1 on (R and D terms), by far more than round-off
    gap = np.abs(np.asarray(merged["exact"].f_train - merged["decoupled"].f_train))[:, 1:]
    assert gap.max() > 1e-4, gap.max()


def test_sweep_distance_to_mode_a_falls_like_inverse_width_and_replots(tmp_path, monkeypatch):
    """Spec T7 (required) at smoke size, one depth: the debiased distance of the seed-mean
    predictions to mode A (K = L) has n-slope −1 ± 0.3 over n = 8, 16, 32, and a bootstrap SE
    small enough (≤ 0.1) that the tolerance is ≥ 3 SE and an n^(−1/2) rate would be rejected.
    With `sweep.extrapolate_layers` an `exact_kinf` mode (2 f(2K) − f(K) per repetition) is
    appended, finite and distinct from K = L, and the report names it. Then `nfd plot DIR`
    redraws figures and report from the saved run without recomputing."""
    out = tmp_path / "sweep"
    overrides = [
        "sweep.depths=[2]",
        "sweep.couplings=['exact']",
        "sweep.lrs=[1.0, 0.5]",
        "sweep.extrapolate_layers=true",
    ]
    args = ["run", str(SMOKE), "--out", str(out), "--quiet"]
    assert main(args + [a for o in overrides for a in ("--set", o)]) == 0
    run = load_run(out)
    a = run.arrays
    cfg = run.config
    W, Ld, Lr, E, El = 3, 1, 2, cfg.seeds, cfg.sweep.limit_seeds
    assert a["loss_train"].shape == (W, Ld, Lr, E, len(a["steps"]))
    assert a["f_test"].shape == (W, Ld, Lr, E, len(a["steps"]), cfg.task.n_test, 1)
    assert a["limit_f_train"].shape == (2, Ld, Lr, El, len(a["steps"]), cfg.task.n_train, 1)
    assert [str(c) for c in a["couplings"]] == ["exact", "exact_kinf"]
    assert np.all(np.isfinite(a["limit_f_train"])) and np.all(a["limit_status"] == 0)
    assert np.abs(a["limit_f_train"][1] - a["limit_f_train"][0]).max() > 1e-6
    assert len(run.meta["summary"]["modes"]["exact_kinf"]["plateau"][0]["d_inf"]) == 1
    # the seed-mean NTK (output.ntk) approaches mode A's like 1/n too (measured −0.88 ± 0.08 at
    # η0 = 1); against K → ∞ it stays at the O(1/L) depth offset (L = 2: ≈ 0.2, measured)
    kern = run.meta["summary"]["kernels"]
    k_slope = kern["exact"]["slopes"][0][0]
    assert abs(k_slope["slope"] + 1) <= 0.3 and k_slope["slope_se"] <= 0.15, k_slope
    d_l, se_l = kern["exact"]["d"][-1][0][0], kern["exact"]["se"][-1][0][0]
    d_k, se_k = kern["exact_kinf"]["d"][-1][0][0], kern["exact_kinf"]["se"][-1][0][0]
    assert d_k > d_l + 3 * np.hypot(se_l, se_k), (d_l, d_k)
    np.testing.assert_allclose(a["lrs"], [1.0, 0.5])
    # each lr member starts from the same network: equal centred losses at t = 0, different later
    np.testing.assert_allclose(a["loss_train"][:, :, 0, :, 0], a["loss_train"][:, :, 1, :, 0])
    assert np.all(a["loss_train"][:, :, 0, :, -1] != a["loss_train"][:, :, 1, :, -1])
    fit = run.meta["summary"]["modes"]["exact"]["fits"][0][0]
    slope, se = fit["slope"], fit["slope_se"]
    assert abs(slope + 1) <= 0.3 and se <= 0.1 and abs(slope + 0.5) > 3 * se, fit
    # redraw from the saved run only: the experiment and the analysis must not run
    for name in ("sweep.png", "depth_scaling.png", "kernels.png", "report.md"):
        (out / name).unlink()

    def refuse(*args, **kwargs):
        raise AssertionError("nfd plot recomputed the sweep")

    monkeypatch.setattr(_sweep, "run_sweep", refuse)
    monkeypatch.setattr(sweep_analysis, "convergence_summary", refuse)
    monkeypatch.setattr("nfd.analysis.convergence_summary", refuse)
    assert main(["plot", str(out)]) == 0
    figs = ("sweep.png", "depth_scaling.png", "kernels.png")
    assert all((out / n).stat().st_size > 10_000 for n in figs)
    report = (out / "report.md").read_text()
    assert "NTK distance (relative" in report
    assert f"{slope:+.2f}" in report and "K → ∞ (Richardson of K = L and 2L)" in report


@pytest.mark.slow
def test_smoke_gallery_sweep_resolves_inverse_width_at_every_depth(tmp_path):
    """The gallery's smoke sweep (both depths, both modes) through `nfd.gallery.run_experiment`:
    T7's required n-slope −1 ± 0.3 of d_A at every L, with SE ≤ 0.1; the Richardson n → ∞
    predictions are closer to mode A than to mode B; the T11 fit is not rejected."""
    from nfd.gallery import run_experiment

    cfg = config.load(SMOKE)
    run_dir, all_failed = run_experiment(cfg, tmp_path / "run", progress=False)
    assert not all_failed
    s = json.loads((run_dir / "meta.json").read_text())["summary"]
    for j in range(len(s["depths"])):
        fit = s["modes"]["exact"]["fits"][j][0]
        assert abs(fit["slope"] + 1) <= 0.3 and fit["slope_se"] <= 0.1, fit
        ext = {m: s["modes"][m]["extrap"]["d"][j][0] for m in ("exact", "decoupled")}
        assert ext["exact"] < ext["decoupled"], ext
    assert s["depth_scaling"][0]["p_value"] > 0.01
    assert (run_dir / "sweep.png").exists() and (run_dir / "depth_scaling.png").exists()


# -- K → ∞ by Richardson of coupled K- and 2K-step limits (sweep.extrapolate_layers) -----------
def test_depth_plateau_slope_recovers_inverse_depth():
    """d∞(L) = 0.3/L with 2% errors: slope −1, and its propagated SE is 0.02·sqrt(Σ w²)."""
    depths = np.array([2, 4, 8, 16])
    d = 0.3 / depths
    fit = fit_depth_plateau(depths, d, 0.02 * d)
    lx = np.log(depths)
    w = (lx - lx.mean()) / np.sum((lx - lx.mean()) ** 2)
    assert abs(fit["slope"] + 1) < 1e-12 and fit["depths_used"] == 4, fit
    assert abs(fit["slope_se"] - 0.02 * np.sqrt(np.sum(w**2))) < 1e-12, fit
    assert np.isnan(fit_depth_plateau(depths, [0.1, -0.1, 0.0, np.nan], [0.01] * 4)["slope"])


def test_coarsened_particles_have_the_k_step_law_and_stay_coupled():
    """W_c[k] = (W[2k] + W[2k+1])/√2 (and W_back, mode B's independent copy, alike): entries of
    variance 1, uncorrelated across coarse steps and with the coarse backward copy, and
    correlated 1/√2 with each fine matrix they sum. 8 × 64 × 64 = 32768 entries per estimate: a
    variance has SE sqrt(2/N) = 0.008 and a correlation 1/sqrt(N) = 0.0055; tolerance 5 SE."""
    fine = sample_particles(64, 16, 3, 1, sigma_out=1.0, coupling=DecoupledWeights(), key=jr.key(0))
    c = coarsen_particles(fine)
    assert c.W.shape == (8, 64, 64) and c.num_layer_steps == 8 and c.W1 is None
    np.testing.assert_array_equal(c.U, fine.U)
    np.testing.assert_array_equal(c.v, fine.v)
    np.testing.assert_allclose(c.W[3], (fine.W[6] + fine.W[7]) / np.sqrt(2), rtol=1e-14)
    np.testing.assert_allclose(c.W_back[3], (fine.W_back[6] + fine.W_back[7]) / np.sqrt(2))
    W, Wb, Wf = (np.asarray(x).ravel() for x in (c.W, c.W_back, fine.W[0::2]))
    N = W.size
    assert abs(W.var() - 1) < 5 * np.sqrt(2 / N) and abs(Wb.var() - 1) < 5 * np.sqrt(2 / N)
    assert abs(W.mean()) < 5 / np.sqrt(N)
    steps = np.asarray(c.W).reshape(8, -1)
    assert abs(np.corrcoef(steps[:-1].ravel(), steps[1:].ravel())[0, 1]) < 5 / np.sqrt(N)
    assert abs(np.corrcoef(W, Wb)[0, 1]) < 5 / np.sqrt(N)
    assert abs(np.corrcoef(W, Wf)[0, 1] - 1 / np.sqrt(2)) < 5 / np.sqrt(N)
    with pytest.raises(ValueError, match="even number"):
        coarsen_particles(c.__class__(U=c.U, W=c.W[:3], W_back=c.W[:3], v=c.v))


@pytest.mark.slow
def test_refined_limits_are_the_coarsened_k_step_run_and_the_2k_run():
    """Plumbing of `run_limits(refine=True)`: its K-step run equals `evolve_limit` on the
    coarsened 2K-step draw of `limit_ensemble` (to round-off, both modes), and its 2K-step run is
    `run_limits` at depth 2K itself (the same draws); mode A's coarse W_back is its coarse W."""
    cfg, task = _cfg("seeds=2", "limit.particles=16", "optim.steps=2", "output.every=1")
    modes = ("exact", "decoupled")
    runs = run_limits(
        cfg, depth=2, lrs=[0.5], couplings=modes, task=task, progress=False, refine=True
    )
    assert set(runs) == {"exact", "decoupled", "exact@2K", "decoupled@2K"}
    _, draw, lrs = limit_ensemble(cfg, task, depth=2, lrs=[0.5], couplings=modes, refine=True)
    coarse = coarsen_particles(draw(slice(None)))
    assert coarse.W.shape == (4, 2, 16, 16)
    np.testing.assert_array_equal(coarse.W_back[:2], coarse.W[:2])  # mode A: W̃ = W
    dynamics = build_limit(cfg, depth=2, coupling="decoupled")
    alone = evolve_limit(cfg, task, coarse, lrs, dynamics=dynamics, progress=False, desc="coarse")
    direct = run_limits(cfg, depth=4, lrs=[0.5], couplings=modes, task=task, progress=False)
    for x, X in enumerate(modes):
        for key in ("f_train", "f_test", "loss_test"):
            got = np.asarray(getattr(runs[X], key))
            np.testing.assert_allclose(got, getattr(alone, key)[2 * x : 2 * x + 2], atol=1e-12)
            np.testing.assert_allclose(
                getattr(runs[X + "@2K"], key), getattr(direct[X], key), rtol=1e-10, atol=1e-12
            )
    # the coupled runs differ (K vs 2K) but are strongly correlated
    a, b = (np.asarray(runs[k].f_train)[:, -1].ravel() for k in ("exact", "exact@2K"))
    assert np.abs(a - b).max() > 1e-6 and np.corrcoef(a, b)[0, 1] > 0.9, np.corrcoef(a, b)


@pytest.mark.slow  # ~30 s; the sweep's K → ∞ path also runs in the default tier (test_sweep_*)
def test_richardson_limit_of_a_linear_net_is_closer_to_the_exact_k_infinity_limit():
    """Honest accuracy of 2 f(2K) − f(K) on a linear net, where the exact M = ∞ limit at any K is
    known (`linear_exact`, no Monte Carlo). The K → ∞ oracle is its own Richardson at K = 32, 64
    (residual O(1/64²)). At L = K = 4 the K-bias is still large (measured RMS 0.15 in mode A,
    0.03 in mode B, against 0.03 and 0.005 left by the exact Richardson; at L = 1 the 1/K
    expansion does not hold yet and Richardson is worse); the Richardson trajectory (coupled
    particle runs at K = 4, 8) must be closer to the oracle than the K = L one by more than 3
    bootstrap SEs of the difference of the two distances (paired resampling of repetitions; both
    modes; the distances are not debiased, which only penalises the noisier Richardson)."""
    cfg, task = _cfg(
        "model.activation='linear'",
        "optim.lr=0.5",
        "seeds=128",
        "limit.particles=128",
        "optim.steps=4",
        "output.every=2",
    )
    modes = ("exact", "decoupled")
    runs = run_limits(
        cfg, depth=4, lrs=[0.5], couplings=modes, task=task, progress=False, refine=True
    )

    def oracle(X, K):
        lim = dataclasses.replace(cfg.limit, method="linear_exact", layer_steps=K)
        res = run_limit(
            dataclasses.replace(
                cfg,
                limit=lim,
                seeds=1,
                sweep=dataclasses.replace(cfg.sweep, extrapolate_layers=False),
            ),
            depth=4,
            lrs=[0.5],
            coupling=X,
            task=task,
            progress=False,
        )
        return np.concatenate([np.asarray(res.f_train), np.asarray(res.f_test)], -2)[0]

    rng = np.random.default_rng(0)
    for X in modes:
        ref = 2 * oracle(X, 64) - oracle(X, 32)
        f = {
            k: np.concatenate([np.asarray(runs[k].f_train), np.asarray(runs[k].f_test)], -2)
            for k in (X, X + "@2K")
        }
        f_L, f_inf = f[X], 2 * f[X + "@2K"] - f[X]

        def gap(idx, f_L=f_L, f_inf=f_inf, ref=ref):
            d_L = np.sqrt(np.mean((f_L[idx].mean(0) - ref) ** 2))
            d_inf = np.sqrt(np.mean((f_inf[idx].mean(0) - ref) ** 2))
            return d_L, d_inf

        d_L, d_inf = gap(np.arange(len(f_L)))
        boot = [np.subtract(*gap(rng.integers(0, len(f_L), len(f_L)))) for _ in range(200)]
        se = np.std(boot, ddof=1)
        assert d_L - d_inf > 3 * se, (X, d_L, d_inf, se)


@pytest.mark.parametrize(
    ("overrides", "start"),
    [
        (
            ["model.block='two_layer'"],
            "sweep.extrapolate_layers: needs model.block = 'one_layer' (coarsened one-layer "
            "noise), got 'two_layer' (false, or model.block = 'one_layer'",
        ),
        (
            ["limit.noise='cholesky'", "limit.coupling='decoupled'"],
            "sweep.extrapolate_layers: needs the random-matrix particle limit (coupled "
            "layer-step noise), got limit.method = 'particles', limit.noise = 'cholesky' (",
        ),
        (
            ["limit.method='kernel'"],
            "sweep.extrapolate_layers: needs the random-matrix particle limit (coupled "
            "layer-step noise), got limit.method = 'kernel', limit.noise = 'matrix' (",
        ),
    ],
)
def test_extrapolate_layers_config_errors(overrides, start):
    with pytest.raises(ConfigError) as err:
        config.load(SMOKE, ["sweep.extrapolate_layers=true", *overrides])
    msg = str(err.value)
    assert msg.startswith(start) and "\n" not in msg, msg
    assert err.value.key == "sweep.extrapolate_layers"
    config.load(SMOKE, ["sweep.extrapolate_layers=false", *overrides])  # off: allowed
