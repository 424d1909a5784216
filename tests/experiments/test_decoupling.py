"""The decoupling experiment (reused vs decoupled backward weights across depth): the cells
against an independent `run_finite`, the paired step-0 gap, the gap fit on synthetic data with a
known slope, the verdict rule and the config errors."""

import pathlib

import numpy as np
import pytest

from nfd import config
from nfd.analysis import decoupling_summary, gap_fit, gap_verdict, paired_gaps
from nfd.cli import main
from nfd.experiments import run_decoupling, run_finite
from nfd.runs import load_run

ROOT = pathlib.Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs/figures/smoke/decoupling.toml"
# the default tier runs one architecture at one depth (2 ensembles, each compiled once); the whole
# smoke config (every architecture) runs through the CLI in the slow tier
SMALL = ['decoupling.archs=["depth_mup"]', "decoupling.depths=[2]"]


@pytest.fixture(scope="module")
def small():
    cfg = config.load(SMOKE, overrides=SMALL)
    return cfg, run_decoupling(cfg, progress=False)


def test_depth_mup_reused_cell_equals_run_finite(small):
    """An independent path: the finite config written out by hand, run by `run_finite`."""
    cfg, arrays = small
    data = config.to_dict(cfg)
    data.pop("decoupling")
    data["kind"] = "finite"
    data["model"] |= {"param": "depth_mup", "residual": True, "depth": 2, "backward": "reused"}
    res = run_finite(config.from_dict(data), progress=False)
    a = list(arrays["archs"]).index("depth_mup")
    # the same float64 computation on the same keys: equal to round-off (1e-12)
    for k in ("loss_train", "loss_test"):
        np.testing.assert_allclose(arrays[k][a, 0, 0], np.asarray(res.__dict__[k]), atol=1e-12)


def test_paired_gap_is_zero_at_step_0_and_not_after(small):
    """Same forward initialisation in both modes and centred outputs: the step-0 losses agree
    exactly; after training the decoupled backward pass has moved them apart."""
    _, arrays = small
    for k in ("loss_train", "loss_test"):
        loss = arrays[k]
        assert np.array_equal(loss[..., 0, :, 0], loss[..., 1, :, 0])
        assert np.all(np.abs(loss[..., 0, :, -1] - loss[..., 1, :, -1]) > 1e-8)
    s = decoupling_summary(arrays)
    assert s["step0_gap_train"] == 0.0 and s["step0_gap_test"] == 0.0
    assert [f["train"]["verdict"] for f in s["fits"].values()] == ["too_few"]


def _synthetic(depths, slope, amp=0.2, seeds=400, sd=0.02, seed=0):
    """Losses ``(A=1, J, B=2, E, S=1)`` whose paired relative gap has mean ``amp L^slope``."""
    rng = np.random.default_rng(seed)
    J = len(depths)
    reused = 1.0 + 0.1 * rng.random((J, seeds))
    gap = amp * np.asarray(depths, float)[:, None] ** slope + sd * rng.standard_normal((J, seeds))
    loss = np.stack([reused, reused * (1.0 + gap)], axis=1)  # (J, B, E)
    return loss[None, ..., None]


@pytest.mark.parametrize("slope", [-1.0, -0.5, 0.0, 0.3])
def test_gap_fit_recovers_a_known_slope(slope):
    depths = [2, 4, 8, 16, 32]
    mean, se = paired_gaps(_synthetic(depths, slope))
    fit = gap_fit(depths, mean[0], se[0])
    # SE-weighted fit of an unbiased mean: within 4 SE of the truth (a 4σ Monte Carlo bound)
    assert abs(fit["slope"] - slope) < 4 * fit["slope_se"], fit
    assert fit["slope_se"] < 0.1 and fit["points"] == 5 and fit["resolved"] == 5
    assert gap_verdict(fit) == ("merges" if slope < 0 else "no_merge")


def test_gap_verdict_undetermined_cases():
    few = paired_gaps(_synthetic([2, 4, 8], -1.0))
    assert gap_verdict(gap_fit([2, 4, 8], few[0][0], few[1][0])) == "too_few"
    none = paired_gaps(_synthetic([2, 4, 8, 16], 0.0, amp=0.0))  # no gap: noise only
    assert gap_verdict(gap_fit([2, 4, 8, 16], none[0][0], none[1][0])) in ("unresolved", "no_se")


@pytest.mark.parametrize(
    "override,start",
    [
        ('decoupling.archs=["resnet"]', "decoupling.archs: invalid value"),
        ("decoupling.archs=[]", "decoupling.archs: must not be empty"),
        ('decoupling.archs=["mup", "mup"]', "decoupling.archs: lists one twice"),
        ("decoupling.depths=[4, 2]", "decoupling.depths: must be strictly increasing"),
        ("decoupling.depths=[0]", "decoupling.depths: must be > 0"),
        ("seeds=1", "seeds: kind = 'decoupling' needs standard errors"),
    ],
)
def test_decoupling_config_errors_exit_2(tmp_path, capsys, override, start):
    out = tmp_path / "out"
    assert main(["run", str(SMOKE), "--out", str(out), "--quiet", "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: " + start), err
    assert not out.exists()


@pytest.mark.slow
def test_smoke_config_runs_with_figures_and_report(tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(SMOKE), "--out", str(out), "--quiet"]) == 0
    assert (out / "curves.png").is_file() and (out / "gap.png").is_file()
    report = (out / "report.md").read_text()
    assert "undetermined at this size" in report  # 2 depths cannot decide a slope
    arrays = load_run(out).arrays
    assert list(arrays["archs"]) == ["plain", "mup", "depth_mup"]
    for k in ("loss_train", "loss_test"):  # every architecture: same forward init in both modes
        assert np.array_equal(arrays[k][..., 0, :, 0], arrays[k][..., 1, :, 0])
