"""Sweeps: the grid runs as specified; the convergence analysis recovers known answers."""

import pathlib

import numpy as np

from nfd.cli import main
from nfd.experiments import convergence_summary, fit_inverse_width
from nfd.experiments._sweep import _distance
from nfd.runs import load_run

ROOT = pathlib.Path(__file__).resolve().parents[2]


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


def test_inverse_width_fit_recovers_coefficients():
    widths = np.array([32, 64, 128, 256, 512])
    d = 0.02 + 3.0 / widths
    fit = fit_inverse_width(widths, d, np.full(5, 1e-4))
    assert abs(fit["d_inf"] - 0.02) < 1e-10 and abs(fit["alpha"] - 3.0) < 1e-8
    pure = fit_inverse_width(widths, 3.0 / widths, np.full(5, 1e-4))
    assert abs(pure["slope"] + 1.0) < 1e-10


def test_sweep_runs_the_grid_and_replots(tmp_path, capsys):
    out = tmp_path / "sweep"
    rc = main(
        [
            "run",
            str(ROOT / "configs/smoke/convergence.toml"),
            "--out",
            str(out),
            "--quiet",
            "--set",
            "sweep.widths=[16, 32]",
            "--set",
            "sweep.depths=[2]",
            "--set",
            "sweep.lrs=[0.25, 0.5]",
            "--set",
            "seeds=3",
            "--set",
            "optim.steps=2",
            "--set",
            "limit.particles=64",
            "--set",
            "sweep.couplings=['exact']",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "distance of finite predictions to the exact limit" in printed
    run = load_run(out)
    a = run.arrays
    W, Ld, Lr, E, S = 2, 1, 2, 3, 2
    assert a["loss_train"].shape == (W, Ld, Lr, E, S)
    assert a["f_test"].shape == (W, Ld, Lr, E, S, 4, 1)
    assert a["limit_f_train"].shape == (1, Ld, Lr, E, S, 6, 1)
    assert [str(c) for c in a["couplings"]] == ["exact"]
    np.testing.assert_allclose(a["lrs"], [0.25, 0.5])
    # each lr member starts from the same network: equal centred losses at t = 0, different later
    np.testing.assert_allclose(a["loss_train"][:, :, 0, :, 0], a["loss_train"][:, :, 1, :, 0])
    assert np.all(a["loss_train"][:, :, 1, :, -1] < a["loss_train"][:, :, 0, :, -1])
    summary = convergence_summary(a)
    assert np.asarray(summary["modes"]["exact"]["d"]).shape == (W, Ld, Lr)
    png = out / "sweep.png"
    size = png.stat().st_size
    png.unlink()
    assert main(["plot", str(out)]) == 0 and abs(png.stat().st_size - size) < 0.05 * size
    capsys.readouterr()
