"""The depth-transfer experiment (§6, T8–T10): analysis, the smoke run, re-plotting, errors."""

import pathlib
import runpy

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nfd
from nfd import config
from nfd.analysis import log_slope
from nfd.analysis._transfer import argmin_lrs, argmin_slope, collapse_check, transfer_summary
from nfd.cli import main
from nfd.config import ConfigError, build_task, run_keys
from nfd.experiments._finite import finite_ensemble
from nfd.experiments._transfer import run_transfer
from nfd.limit import init_kernels
from nfd.model import empirical_ntk, empirical_ntk_parts
from nfd.nn import Tanh
from nfd.reports._transfer import _verdicts
from nfd.runs import load_run

ROOT = pathlib.Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs/figures/smoke/transfer.toml"


def test_argmin_with_the_two_se_tie_rule_and_divergence():
    """A synthetic loss table with a known answer: the minimum, the 2-SE tie range, a diverged
    grid point that is never an argmin, and an all-diverged curve (NaN)."""
    lrs = np.array([0.25, 0.5, 1.0, 2.0])
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((4, 50))
    noise = (noise - noise.mean(1, keepdims=True)) / noise.std(1, ddof=1, keepdims=True)
    means = np.array([1.0, 0.50, 0.515, 2.0])  # 0.5 and 0.515 are 0.015 apart
    sd = 0.05  # SE = 0.05/√50 ≈ 0.0071, combined 0.0100: 0.515 is within 2 SE, 1.0 is not
    table = means[:, None] + sd * noise
    am = argmin_lrs(table, lrs)
    assert am["best"] == 0.5 and am["lo"] == 0.5 and am["hi"] == 1.0
    np.testing.assert_allclose(am["best_loss"], 0.5, atol=1e-12)
    table[0, 3] = np.nan  # a diverged member at the smallest loss makes that point ineligible
    table[1, :] = 0.1 + sd * noise[1]
    table[1, 7] = np.inf
    am = argmin_lrs(table, lrs)
    assert am["best"] == 1.0
    dead = argmin_lrs(np.full((4, 3), np.nan), lrs)
    assert np.isnan(dead["best"]) and np.isnan(dead["best_loss"])


def test_log_slope_recovers_a_power_law_with_zero_error():
    s, se = log_slope([2, 4, 8, 16], 3.0 * np.array([2, 4, 8, 16.0]) ** -0.5)
    assert abs(s + 0.5) < 1e-12 and se < 1e-12


def test_argmin_slope_weights_by_grid_cell_and_tie_range():
    """With no tie ranges every depth has the variance Δ²/12 of its grid cell: the weighted fit
    is ordinary least squares with SE sqrt(Δ²/12 / Sxx); a depth with a wide tie range barely
    counts (the fit then follows the other depths)."""
    depths = np.array([2, 4, 8, 16])
    best = np.array([1.0, 0.5, 0.5, 0.25])
    s, se, p = argmin_slope(depths, best, best, best, 1.0)
    x = np.log2(depths)
    ols = np.polyfit(x, np.log2(best), 1)[0]
    assert abs(s - ols) < 1e-12
    assert abs(se - np.sqrt(1 / 12 / np.sum((x - x.mean()) ** 2))) < 1e-12
    assert 0 < p < 1
    lo, hi = best.copy(), best.copy()
    lo[3], hi[3] = 2.0**-12, 2.0**12  # the last depth's argmin is unresolved
    s2, _, _ = argmin_slope(depths, best, lo, hi, 1.0)
    s3 = np.polyfit(x[:3], np.log2(best[:3]), 1)[0]
    assert abs(s2 - s3) < 0.01, (s2, s3)


def _table(means_per_depth, lrs, seeds=40, sd=0.01):
    """A loss table ``(O=1, V=1, I=1, J, R, S)`` with the given seed means (exact SD ``sd``)."""
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((len(means_per_depth), len(lrs), seeds))
    noise = (noise - noise.mean(-1, keepdims=True)) / noise.std(-1, ddof=1, keepdims=True)
    return (np.asarray(means_per_depth)[..., None] + sd * noise)[None, None, None]


@pytest.mark.parametrize(
    "means,verdict",
    [
        ([[3, 1, 2, 4], [3, 1, 2, 4], [3, 2, 1, 4]], "transfers"),  # interior, moves one step
        ([[3, 1, 2, 4], [3, 4, 2, 1], [4, 3, 2, 1]], "moves"),  # factor 4 apart
        ([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]], "undetermined"),  # always at the edge
    ],
)
def test_transfer_verdict_needs_bracketed_argmins(means, verdict):
    lrs = np.array([0.25, 0.5, 1.0, 2.0])
    arrays = {
        "loss_test": _table(means, lrs),
        "lrs": lrs[None],
        "depths": np.array([2, 4, 8]),
        "widths": np.array([64]),
    }
    (row,) = transfer_summary(arrays, ["sgd"], ["two-layer, a=0.5"])
    assert row["verdict"] == verdict, row
    (text,) = _verdicts([row], ["sgd"], ["two-layer, a=0.5"])
    restored = "restores transfer for a ∈ {0.5}" in text
    assert restored == (verdict == "transfers"), text


@pytest.mark.slow  # ~16 s; K_W1 is also computed (finite and n = ∞) by the smoke run's collapse
def test_ntk_parts_sum_to_the_ntk_and_finite_k_w1_matches_the_recursion():
    """The per-tensor NTK terms sum to the NTK (an identity, both block types); W1's share of
    the finite networks' NTK diagonal at init agrees with the n = ∞ two-layer recursion within
    3 SE (tanh, n = 256, L = 4, 48 seeds: per-seed spread O(n^-1/2), bias O(1/n))."""
    cfg = config.load(
        SMOKE, ["model.block='two_layer'", "seeds=48", "optim.first_layer_lr_exponent=0.5"]
    )
    task = build_task(cfg, key=run_keys(cfg)["task"])
    _, models, _ = finite_ensemble(cfg, task, width=256, depth=4)
    xs = task.x_train[:6]
    one = jax.tree.map(lambda x: x[0] if eqx.is_array(x) else x, models)
    parts = empirical_ntk_parts(one, xs)
    assert set(parts) == {"U", "W1", "W2", "v"}
    np.testing.assert_allclose(sum(parts.values()), empirical_ntk(one, xs), rtol=1e-12)
    w1 = eqx.filter_vmap(lambda m: empirical_ntk_parts(m, xs)["W1"])(models)
    diag = np.diagonal(np.asarray(w1), axis1=-2, axis2=-1).mean(axis=-1)  # (seeds,)
    kx = xs @ xs.T / task.in_dim
    kern = init_kernels(nfd.DepthMuP(first_layer_lr_exponent=0.5), Tanh(), kx, 4, nfd.TwoLayer())
    ref = float(np.mean(np.diag(np.asarray(kern.Theta_parts["W1"]))))
    se = diag.std(ddof=1) / np.sqrt(len(diag))
    assert abs(diag.mean() - ref) <= 3 * se, (diag.mean(), ref, se)
    assert se < 0.05 * ref  # the comparison resolves W1's share to 5%


@pytest.mark.parametrize("a", [0.0, 0.25, 0.5, 1.0])
def test_w1_ntk_share_grows_like_l_to_the_a(a):
    """T9's K_W1 = L^a (β²/L) Σ V'[Z] ⊙ G ⊙ V[H] (§6) from the n = ∞ two-layer recursion:
    its L-slope over L = 16 … 256 is a (the sum converges like 1/L, so within 0.02)."""
    param = nfd.DepthMuP(first_layer_lr_exponent=a)
    Ls = [16, 64, 256]
    k = [
        float(
            init_kernels(param, Tanh(), jnp.ones((1, 1)), L, nfd.TwoLayer()).Theta_parts["W1"][0, 0]
        )
        for L in Ls
    ]
    s, _ = log_slope(Ls, k)
    assert abs(s - a) < 0.02, (s, k)


@pytest.mark.parametrize(
    "override,start",
    [
        ("transfer.lrs=[1.0]", "transfer.lrs: needs >= 2 values"),
        ("transfer.lrs=[1.0, 0.5]", "transfer.lrs: must be strictly increasing"),
        ("transfer.optimizers=[]", "transfer.optimizers: must not be empty"),
        ("transfer.exponents=[5.0]", "transfer.exponents: contains 5.0"),
        ("transfer.depth=[2]", "transfer.depth: unknown key"),
        ("transfer.init_seeds=1", "transfer.init_seeds: needs >= 2"),
    ],
)
def test_transfer_config_errors(override, start):
    with pytest.raises(ConfigError) as err:
        config.load(SMOKE, [override])
    assert str(err.value).startswith(start), str(err.value)


def test_smoke_notebook_runs_reports_and_replots(tmp_path, capsys, monkeypatch):
    """notebooks/depth_transfer.py at smoke size (the test suite's one smoke run of this kind):
    every figure is drawn, the limit overlays the SGD curves only, the collapse diagnostic and
    T10 arrays are there, and `nfd plot` re-draws the same figures from the saved arrays alone."""
    monkeypatch.setenv("NFD_SMOKE", "1")
    monkeypatch.setenv("NFD_NOTEBOOK_OUT", str(tmp_path / "run"))
    ns = runpy.run_path(str(ROOT / "notebooks/depth_transfer.py"))
    assert ns["summary"]  # the notebook's transfer table
    run_dir = tmp_path / "run"
    cfg = config.load(SMOKE)
    names = sorted(p.name for p in run_dir.glob("*.png"))
    assert names == [
        "collapse.png",
        "post_activation.png",
        "transfer_argmin.png",
        "transfer_loss.png",
    ]
    a = load_run(run_dir).arrays
    O, V, I, J = 2, 3, 1, 2
    assert a["loss_train"].shape == (O, V, I, J, 3, cfg.seeds)
    assert np.all(np.isfinite(a["limit_loss_train"][0]))  # SGD: the limit's curve
    assert np.all(np.isnan(a["limit_loss_train"][1]))  # Adam: no limit
    R1 = a["lrs"].shape[1]
    assert a["dz_own"].shape == (O, V, I, J, R1, cfg.seeds)
    # W1's own update exists for the two-layer variants only; the limit's for SGD only
    assert np.all(np.isfinite(a["dz_own"][:, 1:])) and np.all(np.isnan(a["dz_own"][:, 0]))
    assert np.all(np.isfinite(a["limit_dz_own"][0, 1:])) and np.all(np.isnan(a["limit_dz_own"][1]))
    assert np.all(np.isfinite(a["block_move"])) and np.all(np.isfinite(a["df_step"]))
    assert np.all(np.isfinite(a["k_w1_finite"][1:])) and np.all(np.isnan(a["k_w1"][0]))
    np.testing.assert_allclose(a["collapse_lr"], [0.25, 0.04])  # nearest to optim.lr; middle
    # the pre-activation stream at init is the n = ∞ recursion's H(τ)_μμ within finite-width
    # noise (n = 32, 2 seeds: O(1/sqrt(n)) ≈ 20% relative), the post-activation one is not O(1)
    np.testing.assert_allclose(np.mean(a["t10_pre"], axis=1), a["t10_ref"], rtol=0.3)
    report = (run_dir / "report.md").read_text()
    assert "Transfer verdict" in report and "First-layer collapse" in report
    assert "Coordinate check (T8" in report and "Two-layer blocks:" in report
    sizes = {p.name: p.stat().st_size for p in run_dir.glob("*.png")}
    for p in run_dir.glob("*.png"):
        p.unlink()
    capsys.readouterr()
    assert main(["plot", str(run_dir)]) == 0
    again = {p.name: p.stat().st_size for p in run_dir.glob("*.png")}
    assert again.keys() == sizes.keys()
    for name, size in sizes.items():
        assert size > 5_000 and abs(again[name] - size) <= 0.02 * size, name


@pytest.mark.slow
def test_collapse_slopes_match_spec():
    """T9: rms δz^own after one step has L-slope a − 1/2 for SGD (finite and limit) and Adam
    (finite), a ∈ {0, 1/2} (n = 256, L = 4 … 64, tanh; the slope SE from 4 seeds is ≈ 0.03,
    and T9's tolerance is ± 0.1)."""
    cfg = config.load(
        SMOKE,
        [
            "transfer.exponents=[0.0, 0.5]",
            "transfer.one_layer=false",
            "transfer.widths=[256]",
            "transfer.depths=[4, 16, 64]",
            "transfer.lrs=[0.25, 0.5]",
            "transfer.adam_lrs=[0.01, 0.02, 0.04]",
            "transfer.post_activation=false",
            "optim.steps=1",
            "seeds=4",
            "limit.particles=256",
        ],
    )
    arrays = run_transfer(cfg, progress=False)
    rows = collapse_check(arrays, ["sgd", "adam"], ["two-layer, a=0", "two-layer, a=0.5"])
    assert len(rows) == 4
    for r in rows:
        want = r["a"] - 0.5
        assert abs(r["dz_slope"] - want) < 0.1 + 2 * r["dz_slope_se"], r
        if r["optimizer"] == "sgd":
            assert abs(r["limit_dz_slope"] - want) < 0.1 + 2 * r["limit_dz_slope_se"], r
        assert abs(r["k_w1_slope"] - r["a"]) < 0.1, r
