"""Issue 13: `nfd run CONFIG --dry-run` prints the memory and cost estimate with the chosen forms
and exits 0 without allocating; `limit.storage = "auto"` picks the lean particle form when the
stored one does not fit, with the same numbers."""

import pathlib
import time

import jax
import numpy as np
import pytest

from nfd import config
from nfd.cli import main
from nfd.config import build_limit, build_task, run_keys
from nfd.dynamics import Points
from nfd.experiments import _plan, parse_bytes, run_limit
from nfd.limit import estimate_memory

ROOT = pathlib.Path(__file__).resolve().parents[2]
LIMIT = str(ROOT / "configs/smoke/limit.toml")
# the paper-size case: M = 16384 particles, K = 64, one-layer blocks, mode A, P = 64
PAPER = [
    "limit.particles=16384",
    "model.depth=64",
    "task.n_train=64",
    "task.n_test=0",
    "optim.batch_size=0",
    "seeds=1",
    "output.ntk=false",
    "output.kernels=false",
]


def test_dry_run_of_the_paper_size_fits_80_gib_in_the_lean_form(tmp_path, capsys):
    """Estimated (lean, float32) at 68.5 GiB: fits an 80 GiB GPU, where the stored form (130 GiB)
    does not; at 20 GiB the history form (rank 6 steps × 64 points) is chosen with its own
    estimate, and at 4 GiB nothing fits: 'DOES NOT FIT'. Nothing is allocated (68 GiB could not
    be) and nothing is written."""
    path = tmp_path / "paper.toml"
    cfg = config.load(LIMIT, PAPER)
    path.write_text(config.dumps(cfg))
    t0 = time.perf_counter()
    assert (
        main(["run", str(path), "--dry-run", "--memory", "80GiB", "--out", str(tmp_path / "o")])
        == 0
    )
    assert time.perf_counter() - t0 < 30
    out = capsys.readouterr().out
    assert not (tmp_path / "o").exists()
    lean = estimate_memory(16384, 64, 64, 1, 6, 1, itemsize=4, decoupled=False, store_noise=False)
    assert lean < 0.9 * 80 * 2**30  # fits the plan's share of 80 GiB
    line = next(x for x in out.splitlines() if x.startswith("limit L = 64, K = 64"))
    assert f"{lean / 2**30:.3g} GiB" in line and "one batch" in line and "particles lean" in line
    assert "stored one needs 130.5 GiB" in line
    assert main(["run", str(path), "--dry-run", "--memory", "20GiB"]) == 0
    history = estimate_memory(
        *(16384, 64, 64, 1, 6, 1),
        **dict(itemsize=4, decoupled=False, store_noise=False, drift_rank=6 * 64),
    )
    assert history < 0.9 * 20 * 2**30 < lean
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("limit L = 64"))
    assert f"{history / 2**30:.3g} GiB" in line and "particles history" in line, line
    assert main(["run", str(path), "--dry-run", "--memory", "4GiB"]) == 0
    assert "DOES NOT FIT: limit.particles" in capsys.readouterr().out


@pytest.mark.parametrize(
    "text,value", [("80GiB", 80 * 2**30), ("80 GB", 80 * 10**9), ("512MiB", 2**29), ("1e9", 10**9)]
)
def test_memory_sizes_parse(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize(
    "sets,extra,key",
    [
        (["limit.method='kernel'", "limit.storage='lean'"], [], "limit.storage"),
        (["kind='sweep'", "limit.storage='lean'"], [], "limit.storage"),
        (["kind='gia'", "limit.storage='history'"], [], "limit.storage"),
        (["limit.storage='compressed'"], [], "limit.storage"),
        ([], ["--memory", "80XB"], "--memory"),
    ],
)
def test_storage_and_memory_errors_are_one_line_exit_2(sets, extra, key, capsys):
    args = ["run", LIMIT, "--dry-run", *extra] + [a for s in sets for a in ("--set", s)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {key}:"), err


def test_auto_storage_chooses_lean_when_stored_does_not_fit(monkeypatch, capsys):
    """With memory for the lean ensemble but not the stored one, `auto` runs the lean form: the
    same trajectory as `storage = 'lean'` (bitwise: the same computation) and as the stored run
    to rounding (the forms differ in summation order only; float64, 6 steps)."""
    cfg = config.load(LIMIT, ["precision='float64'", "optim.steps=3"])
    stored = run_limit(cfg, progress=False, quiet=True)
    lean_cfg = config.load(LIMIT, ["precision='float64'", "optim.steps=3", "limit.storage='lean'"])
    lean = run_limit(lean_cfg, progress=False, quiet=True)
    task = build_task(cfg, key=run_keys(cfg)["task"])
    points = Points.from_task(task)
    dyn = build_limit(cfg)
    need = dyn.estimate_memory(points, cfg.seeds)
    monkeypatch.setattr(_plan, "available_memory", lambda: int(0.9 * need / _plan.MEMORY_FRACTION))
    auto = run_limit(cfg, progress=False)
    assert "chose the lean form" in capsys.readouterr().err
    for name in ("f_train", "f_test", "loss_train", "h_rms"):
        a, b, c = (np.asarray(getattr(t, name)) for t in (auto, lean, stored))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-12)


def test_auto_storage_chooses_history_when_lean_does_not_fit(monkeypatch, capsys):
    """With memory for the history form (rank steps × batch = 12 < M/2) but not for the lean
    ensemble, `auto` runs the history form: the same trajectory as `storage = 'lean'` to
    rounding (D_k x as left (rightᵀ x) instead of the accumulated matrix; float64, 3 steps),
    and bitwise that of `storage = 'history'`."""
    sets = ["precision='float64'", "optim.steps=3"]
    cfg = config.load(LIMIT, sets)
    lean = run_limit(
        config.load(LIMIT, [*sets, "limit.storage='lean'"]), progress=False, quiet=True
    )
    hist_cfg = config.load(LIMIT, [*sets, "limit.storage='history'"])
    history = run_limit(hist_cfg, progress=False, quiet=True)
    points = Points.from_task(build_task(cfg, key=run_keys(cfg)["task"]))
    dyn = build_limit(hist_cfg)
    assert not dyn.store_noise  # type: ignore[attr-defined]
    rank = cfg.optim.steps * cfg.optim.batch_size
    sizes = [
        estimate_memory(
            *(cfg.limit.particles, cfg.model.depth, points.num_points, 1, cfg.task.in_dim),
            cfg.seeds,
            **dict(itemsize=8, decoupled=False, store_noise=False, drift_rank=r),
        )
        for r in (rank, 0)
    ]
    assert sizes[0] < sizes[1]
    have = (sizes[0] + sizes[1]) / 2 / _plan.MEMORY_FRACTION
    monkeypatch.setattr(_plan, "available_memory", lambda: int(have))
    auto = run_limit(cfg, progress=False)
    assert "chose the history form" in capsys.readouterr().err
    for name in ("f_train", "f_test", "loss_train", "h_rms"):
        a, b, c = (np.asarray(getattr(t, name)) for t in (auto, history, lean))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-12)


def test_demo_dry_run_lists_its_widest_deepest_cell_and_its_limit(capsys):
    """`nfd demo --dry-run`: the demo's largest finite cell (its widest width, deepest depth) and
    its limit at K = L, with the per-member estimates of those very dynamics, and nothing run."""
    from nfd.config import build_network, packaged_configs

    cfg = config.load(packaged_configs() / "demo.toml", ["kind='demo'"])
    n, L = max(cfg.demo.widths), max(cfg.demo.depths)
    assert main(["demo", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    task = build_task(cfg, key=run_keys(cfg)["task"])
    assert cfg.precision == "float32"  # the run's item size (this test session is float64)
    points = jax.tree.map(lambda x: x.astype(np.float32), Points.from_task(task))
    per = build_network(cfg, width=n, depth=L).estimate_memory(points, 1)
    assert any(
        x.startswith(f"finite n = {n}, L = {L}") and f"{per / 2**30:.3g} GiB" in x for x in out
    )
    assert any(x.startswith(f"limit L = K = {L}: MatrixParticles") for x in out), out
