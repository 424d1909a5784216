"""Scaling trends of a sweep (the `scaling` figure and report section): the saturation analysis
recovers known answers on synthetic losses; on the smoke sweep the figure draws the saved final
losses, and the sweep's K = L limit loss is a separate `kind = "limit"` run's."""

import dataclasses
import pathlib

import jax
import matplotlib.pyplot as plt
import numpy as np
import pytest

from nfd import config
from nfd.analysis import saturation_depth, saturation_width, scaling_summary
from nfd.cli import main
from nfd.config import SweepConfig, build_limit, build_task, run_keys
from nfd.dynamics import Points
from nfd.gallery._kinds import experiment
from nfd.limit import MatrixParticles
from nfd.plots import scaling_figure
from nfd.reports import scaling_report
from nfd.runs import Run, load_run

ROOT = pathlib.Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs/figures/smoke/scaling.toml"


# -- the saturation analysis on synthetic losses with known answers ----------------------------
def test_saturation_width_is_the_first_width_within_two_se_for_good():
    """ℓ(n) = ℓ∞ + 0.5/n with SE 0.001 on both sides: within 2 combined SE (2√2·0.001) exactly
    when 0.5/n ≤ 0.002828, i.e. n ≥ 176.8: the first such width is 256. A width that dips into
    the band and leaves it again does not count; the widest outside: not reached."""
    widths = np.array([16, 32, 64, 128, 256])
    se = np.full(5, 0.001)
    threshold = 0.5 / (2 * np.sqrt(2) * 0.001)  # closed form: n* ≥ 176.8
    expected = int(widths[widths >= threshold][0])
    sat = saturation_width(widths, 0.1 + 0.5 / widths, se, 0.1, 0.001)
    assert sat["status"] == "saturated" and sat["width"] == expected == 256, sat
    assert not sat["at_smallest"]
    np.testing.assert_allclose(sat["z"], 0.5 / widths / (np.sqrt(2) * 0.001), rtol=1e-12)
    dip = np.array([0.1, 0.2, 0.1, 0.1, 0.1])  # n = 16 inside, 32 out, 64… inside again
    assert saturation_width(widths, dip, se, 0.1, 0.001)["width"] == 64
    flat = saturation_width(widths, np.full(5, 0.1), se, 0.1, 0.001)
    assert flat["width"] == 16 and flat["at_smallest"]
    out = saturation_width(widths, 0.1 + 5.0 / widths, se, 0.1, 0.001)
    assert out["status"] == "not_reached" and out["width"] is None
    assert saturation_width(widths, dip, se, np.nan, 0.001)["status"] == "undetermined"
    assert saturation_width(widths[:1], dip[:1], se[:1], 0.1, 0.001)["status"] == "undetermined"


def test_saturation_depth_is_where_deeper_stops_changing_the_loss():
    """ℓ(L) = 0.2 + 0.1/L², SE 0.001: deeper than L changes ℓ by at most 0.1 (1/L² − 1/32²), within
    2√2·0.001 exactly when L ≥ 5.85: the first such depth is 8. ℓ = 1/L never flattens at this
    SE; two depths cannot decide."""
    depths = np.array([2, 4, 8, 16, 32])
    se = np.full(5, 0.001)
    bound = 1 / np.sqrt(2 * np.sqrt(2) * 0.001 / 0.1 + 1 / 32**2)  # closed form: L* ≥ 5.85
    expected = int(depths[depths >= bound][0])
    sat = saturation_depth(depths, 0.2 + 0.1 / depths**2, se)
    assert sat["status"] == "saturated" and sat["depth"] == expected == 8, sat
    assert saturation_depth(depths, 1.0 / depths, se)["status"] == "not_reached"
    assert saturation_depth(depths, np.full(5, 0.3), se)["at_smallest"]
    assert saturation_depth(depths[:2], [0.3, 0.3], se[:2])["status"] == "undetermined"


def _exact_members(means: np.ndarray, members: int, rng) -> np.ndarray:
    """Members ``(..., E)`` whose sample mean is exactly ``means`` and whose sample SD is exactly
    0.01 (standardised noise): SE 0.01/√E."""
    noise = rng.standard_normal((*means.shape, members))
    noise -= noise.mean(-1, keepdims=True)
    noise /= noise.std(-1, ddof=1, keepdims=True)
    return means[..., None] + 0.01 * noise


def _known_sweep():
    """Saved sweep arrays with exact seed means ℓ(n, L) = 0.1 + 0.5/n + 0.2/L² (16 seeds, SD
    0.01) and limits 0.1 + 0.2/L² (K = L) and 0.1 (K → ∞) (8 repetitions, SD 0.01)."""
    rng = np.random.default_rng(0)
    widths, depths = np.array([16, 64, 256]), np.array([2, 4, 8, 16])
    n, L = np.meshgrid(widths, depths, indexing="ij")
    mean = 0.1 + 0.5 / n + 0.2 / L**2
    loss = np.stack([_exact_members(mean, 16, rng)] * 2, -1)[:, :, None]  # (W, Ld, 1, E, S=2)
    lim = np.stack([0.1 + 0.2 / depths**2, np.full(4, 0.1)])  # (X, Ld): K = L, K → ∞
    lim_loss = np.stack([_exact_members(lim, 8, rng)] * 2, -1)[:, :, None]
    arrays = {
        "widths": widths,
        "depths": depths,
        "lrs": np.array([0.5]),
        "steps": np.array([0, 10]),
        "couplings": np.array(["exact", "exact_kinf"]),
        "limit_particles": np.asarray(512),
        "loss_train": loss,
        "loss_test": loss,
        "limit_loss_train": lim_loss,
        "limit_loss_test": lim_loss,
    }
    return arrays, mean, lim


def test_scaling_summary_on_known_losses_with_the_k_infinity_limit():
    """Saved arrays with exact seed means ℓ(n, L) = 0.1 + 0.5/n + 0.2/L² (16 seeds, SE 0.0025)
    and limits 0.1 + 0.2/L² (K = L, 8 repetitions, SE 0.0035) and 0.1 (K → ∞). Closed forms:
    width saturates where 0.5/n ≤ 2·0.01·sqrt(1/16 + 1/8), n ≥ 57.7: n = 64 at every depth;
    depth where 0.2 (1/L² − 1/16²) ≤ 2·0.0025·√2, L ≥ 5.04: L = 8 at every width (the limit:
    ≤ 2·0.0035·√2, L ≥ 4.3: also 8); the L → ∞ value is K → ∞ at the deepest depth, the gap of
    the widest, deepest cell 0.5/256 + 0.2/256. The report states these; with no test points the
    training loss is read, and the report says so."""
    arrays, mean, lim = _known_sweep()
    widths, depths, loss = arrays["widths"], arrays["depths"], arrays["loss_test"]
    s = scaling_summary(arrays)
    p = s["per_lr"][0]
    assert s["source"] == "test" and s["mode"] == "exact" and s["drawable"]
    np.testing.assert_allclose(p["finite"], mean, rtol=1e-12)
    np.testing.assert_allclose(p["finite_se"], np.full(mean.shape, 0.01 / 4), rtol=1e-12)
    np.testing.assert_allclose(p["limit"], lim[0], rtol=1e-12)
    np.testing.assert_allclose(p["kinf"], lim[1], rtol=1e-12)
    assert p["L_inf_method"] == "kinf" and abs(p["L_inf"] - 0.1) < 1e-12
    assert abs(p["gap"]["gap"] - (0.5 + 0.2) / 256) < 1e-12
    n_star = int(widths[widths >= 0.5 / (2 * 0.01 * np.sqrt(1 / 16 + 1 / 8))][0])
    L_star = int(depths[depths >= 1 / np.sqrt(2 * 0.0025 * np.sqrt(2) / 0.2 + 1 / 256)][0])
    assert (n_star, L_star) == (64, 8)
    assert [w["width"] for w in p["width_saturation"]] == [n_star] * 4
    assert [d["depth"] for d in p["depth_saturation"]] == [L_star] * 3
    assert p["limit_depth_saturation"]["depth"] == L_star
    report = scaling_report(s)
    assert report.count(f"width saturates at n = {n_star}.") == 4
    assert report.count(f"depth saturates at L = {L_star}:") == 4
    assert f"more width stops paying by n = {n_star} at every depth" in report
    assert f"{p['gap']['gap']:.3g} ± {p['gap']['se']:.2g}" in report
    # no test points: f_test has Q = 0 and the test losses are NaN; the training loss is used
    no_test = {**arrays, "loss_test": np.full_like(loss, np.nan)}
    no_test["f_test"] = np.zeros((*loss.shape, 0, 1))
    s2 = scaling_summary(no_test)
    assert s2["source"] == "train"
    np.testing.assert_allclose(s2["per_lr"][0]["finite"], mean, rtol=1e-12)
    assert "TRAINING loss is used" in scaling_report(s2)


def test_scaling_figure_draws_the_known_losses_and_the_k_infinity_value():
    """On the known arrays: the figure's lines (read back by gid) are the exact seed means
    0.1 + 0.5/n + 0.2/L², the limit's 0.1 + 0.2/L², and the dotted L → ∞ line is the K → ∞
    value 0.1 (to round-off)."""
    arrays, mean, lim = _known_sweep()
    run = Run(path=pathlib.Path("known"), config=config.load(SMOKE), meta={}, arrays=arrays)
    fig = scaling_figure(run, {"scaling": scaling_summary(arrays)})
    lines = _lines(fig)
    plt.close(fig)
    for j, L in enumerate(arrays["depths"]):
        np.testing.assert_allclose(lines[f"finite L={L}"], mean[:, j], rtol=1e-12)
        np.testing.assert_allclose(lines[f"limit L={L}"], lim[0, j], rtol=1e-12)
    for i, n in enumerate(arrays["widths"]):
        np.testing.assert_allclose(lines[f"finite n={n}"], mean[i], rtol=1e-12)
    np.testing.assert_allclose(lines["limit"], lim[0], rtol=1e-12)
    np.testing.assert_allclose(lines["L_inf"], 0.1, rtol=1e-12)


# -- the smoke sweep ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaling") / "run"
    assert main(["run", str(SMOKE), "--out", str(out), "--quiet"]) == 0
    return load_run(out)


def _lines(fig) -> dict[str, np.ndarray]:
    """The y data of every line with a gid, across the figure's axes."""
    return {
        str(line.get_gid()): np.asarray(line.get_ydata(), float)
        for ax in fig.axes
        for line in ax.get_lines()
        if line.get_gid()
    }


@pytest.mark.slow  # the smoke sweep: ≈ 1 min of compilation on the shared 2-core CPU
def test_scaling_figure_draws_the_saved_final_losses(smoke_run):
    """The figure's per-depth and per-width lines are the seed means of the saved final test
    losses (numpy on `result.npz`, not the analysis), its dashed lines the limit's; the gallery
    wrote `scaling.png`."""
    run = smoke_run
    a = run.arrays
    summary = experiment("sweep").analyse(run)
    fig = scaling_figure(run, summary)
    lines = _lines(fig)
    plt.close(fig)
    final = a["loss_test"][:, :, 0, :, -1].mean(-1)  # (W, Ld): independent seeds, none diverged
    limit = a["limit_loss_test"][0, :, 0, :, -1].mean(-1)  # (Ld,): mode A at K = L
    assert np.all(a["status"] == 0) and [str(c) for c in a["couplings"]] == ["exact"]
    for j, L in enumerate(a["depths"]):
        np.testing.assert_allclose(lines[f"finite L={L}"], final[:, j], rtol=1e-12)
        np.testing.assert_allclose(lines[f"limit L={L}"], limit[j], rtol=1e-12)
    for i, n in enumerate(a["widths"]):
        np.testing.assert_allclose(lines[f"finite n={n}"], final[i], rtol=1e-12)
    np.testing.assert_allclose(lines["limit"], limit, rtol=1e-12)
    assert (run.path / "scaling.png").stat().st_size > 10_000
    report = (run.path / "report.md").read_text()
    assert report == experiment("sweep").report(run, summary)  # type: ignore[misc]
    p = summary["scaling"]["per_lr"][0]
    assert f"{p['limit'][-1]:.3g}" in report and "Scaling: where more width" in report


@pytest.mark.slow  # the smoke sweep and a limit run
def test_sweep_limit_loss_at_k_equal_l_is_a_separate_limit_run(smoke_run, tmp_path):
    """An independent path: the smoke config as `kind = "limit"` at the deepest depth (mode A,
    `sweep.limit_seeds` repetitions, through `nfd run`) gives the sweep's saved K = L limit test
    losses to 1e-10 (float64 round-off: the sweep runs mode A as a decoupled system with
    W̃ = W, the limit run the reused-weight solver; same draws fold_in(limit_key, s))."""
    cfg = smoke_run.config
    assert not cfg.sweep.extrapolate_layers and not cfg.sweep.antithetic  # run_limit's draws
    j = len(cfg.sweep.depths) - 1
    depth = cfg.sweep.depths[j]
    lcfg = dataclasses.replace(
        cfg,
        kind="limit",
        seeds=cfg.sweep.limit_seeds,
        model=dataclasses.replace(cfg.model, depth=depth),
        limit=dataclasses.replace(cfg.limit, coupling="exact"),
        sweep=SweepConfig(),
    )
    path = tmp_path / "limit.toml"
    path.write_text(config.dumps(lcfg))
    assert main(["run", str(path), "--out", str(tmp_path / "limit"), "--quiet"]) == 0
    alone = load_run(tmp_path / "limit").arrays["loss_test"]  # (El, S)
    swept = smoke_run.arrays["limit_loss_test"][0, j, 0]  # (El, S)
    np.testing.assert_allclose(swept, alone, rtol=1e-10, atol=0)


def test_gpu_config_limit_fits_one_h100():
    """The GPU config's header: its largest limit repetition (L = 64, K = 2L = 128, M = 4096) fits
    the 0.8 × 78 GiB an H100 run may plan with (`estimate_memory`; 0.9 since the estimate follows XLA), and
    the limit's cost over all depths at K = L and 2L is the stated ≈ 190 TFLOP (within 10%)."""
    cfg = config.load(ROOT / "configs/figures/gpu/scaling.toml")
    task = build_task(cfg, key=run_keys(cfg)["task"])
    # the run is float32 (`precision`); the test session is float64, which would double the bytes
    points = jax.tree.map(
        lambda x: x.astype(np.float32) if np.issubdtype(x.dtype, np.floating) else x,
        Points.from_task(task),
    )
    assert cfg.precision == "float32"
    largest, flops = 0, 0.0
    for L in cfg.sweep.depths:
        for K in (L, 2 * L):
            dyn = build_limit(cfg, depth=L, coupling="decoupled", layer_steps_override=K)
            assert isinstance(dyn, MatrixParticles)
            largest = max(largest, dyn.estimate_memory(points, 1))
            flops += dyn.step_flops(points, task.n_train) * cfg.sweep.limit_seeds * cfg.optim.steps
    assert largest <= 0.8 * 78 * 2**30, largest / 2**30
    assert abs(flops / 190e12 - 1) < 0.1, flops / 1e12
