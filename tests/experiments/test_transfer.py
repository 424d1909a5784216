"""The depth-transfer experiment (spec §6, T8–T10): analysis, the smoke run, re-plotting, errors."""

import pathlib
import runpy

import jax.numpy as jnp
import numpy as np
import pytest

import nfd
from nfd import config
from nfd.cli import main
from nfd.config import ConfigError, build_task, run_keys
from nfd.experiments._transfer import _collapse, argmin_lrs, log_slope, variants
from nfd.limit import init_kernels
from nfd.nn import Tanh
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


@pytest.mark.parametrize("a", [0.0, 0.25, 0.5, 1.0])
def test_w1_ntk_share_grows_like_l_to_the_a(a):
    """T9's K_W1 = L^a (β²/L) Σ V'[Z] ⊙ G ⊙ V[H] (spec §6) from the n = ∞ two-layer recursion:
    its L-slope over L = 16 … 256 is a (the sum converges like 1/L, so within 0.02)."""
    param = nfd.DepthMuP(first_layer_lr_exponent=a)
    Ls = [16, 64, 256]
    k = [
        float(init_kernels(param, Tanh(), jnp.ones((1, 1)), L, "two_layer").Theta_parts["W1"][0, 0])
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
    assert np.all(np.isfinite(a["dz_own"][1:])) and np.all(np.isnan(a["dz_own"][0]))
    # the pre-activation stream at init is the n = ∞ recursion's H(τ)_μμ within finite-width
    # noise (n = 32, 2 seeds: O(1/sqrt(n)) ≈ 20% relative), the post-activation one is not O(1)
    np.testing.assert_allclose(np.mean(a["t10_pre"], axis=1), a["t10_ref"], rtol=0.3)
    report = (run_dir / "report.md").read_text()
    assert "Transfer verdict" in report and "First-layer collapse" in report
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
@pytest.mark.parametrize("a", [0.0, 0.5])
def test_collapse_slopes_match_spec(a):
    """T9: rms δz^own after one SGD step has L-slope a − 1/2 (n = 256, L = 4 … 64, tanh; the
    slope SE from 4 seeds is ≈ 0.03, and T9's tolerance is ± 0.1)."""
    cfg = config.load(
        SMOKE,
        [
            f"transfer.exponents=[{a}]",
            "transfer.one_layer=false",
            "transfer.widths=[256]",
            "transfer.depths=[4, 16, 64]",
            "seeds=4",
            "limit.particles=256",
        ],
    )
    task = build_task(cfg, key=run_keys(cfg)["task"])
    out = _collapse(cfg, task, variants(cfg), progress=False)
    depths = [4, 16, 64]
    s, se = log_slope(depths, np.mean(out["dz_own"][0], axis=-1))
    assert abs(s - (a - 0.5)) < 0.1 + 2 * se, (s, se, out["dz_own"])
    s_lim, se_lim = log_slope(depths, np.mean(out["limit_dz_own"][0], axis=-1))
    assert abs(s_lim - (a - 0.5)) < 0.1 + 2 * se_lim, (s_lim, out["limit_dz_own"])
