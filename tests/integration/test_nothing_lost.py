"""Nothing lost, nothing misleading: the output is checked before computing, a killed run resumes
to the uninterrupted result, ensembles that do not fit run in chunks, divergence at the last step
is recorded, and every user error is one line with exit code 2."""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import StopAt, tiny_sweep

from nfd import config, gallery
from nfd.cli import EXIT, main
from nfd.config import build_limit, build_task, run_keys
from nfd.dynamics import Points, SaveAt, _checkpoint, assemble
from nfd.experiments import _plan, run_limit
from nfd.runs import load_run

ROOT = pathlib.Path(__file__).resolve().parents[2]
FINITE = str(ROOT / "configs/smoke/finite.toml")
LIMIT = str(ROOT / "configs/smoke/limit.toml")


TINY_SWEEP = tiny_sweep(widths=(16, 32), depths=(2, 3), steps=3)


def _run(*args: str) -> int:
    return main(["run", *args, "--quiet"])


def _arrays(run_dir: pathlib.Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "result.npz") as data:
        return {k: data[k] for k in data.files}


# -- the output, before any computing --------------------------------------------------------
@pytest.mark.parametrize("kind", ["not_empty", "file", "killed_run"])
def test_a_bad_out_is_refused_before_computing(tmp_path, capsys, kind):
    """A long run (1500 steps at width 256) is refused in well under 2 s: nothing is computed."""
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("precious")
    else:
        out.mkdir()
        (out / "keep.txt").write_text("precious")
        if kind == "killed_run":
            (out / "checkpoint").mkdir()
    sets = ["--set", "optim.steps=1500", "--set", "model.width=256"]
    t0 = time.perf_counter()
    rc = _run(FINITE, "--out", str(out), *sets)
    wall = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == EXIT["bad_input"] and wall < 2.0, (rc, wall)
    assert err.count("\n") == 1 and err.startswith("error: --out: "), err
    expected = {"not_empty": "is not empty", "file": "is a file", "killed_run": "killed run"}
    assert expected[kind] in err
    target = out if kind == "file" else out / "keep.txt"
    assert target.read_text() == "precious"


def test_figures_interrupted_keeps_the_previous_run(tmp_path, monkeypatch):
    """`nfd figures` replaces a run only once the new one is complete: a Ctrl-C in the middle of
    the second call leaves the first run loadable and unchanged, and a third call completes."""
    root = tmp_path / "configs"
    (root / "smoke").mkdir(parents=True)
    (root / "smoke" / "tiny.toml").write_text(
        (ROOT / "configs/smoke/finite.toml").read_text().replace("seed = 3", 'kind = "finite"')
    )
    out = tmp_path / "figs"
    gallery.make_figures(out, root=root, progress=False)
    before = _arrays(out / "runs" / "tiny")

    def interrupted(cfg, *, progress=None):
        raise KeyboardInterrupt

    finite = gallery.KINDS["finite"]
    monkeypatch.setitem(gallery.KINDS, "finite", dataclasses.replace(finite, run=interrupted))
    with pytest.raises(KeyboardInterrupt):
        gallery.make_figures(out, root=root, progress=False)
    after = load_run(out / "runs" / "tiny")
    for key, value in before.items():
        np.testing.assert_array_equal(after.arrays[key], value)
    monkeypatch.setitem(gallery.KINDS, "finite", finite)
    gallery.make_figures(out, root=root, progress=False)
    assert not any(p.name.startswith(".") for p in (out / "runs").iterdir())


# -- kill and resume -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg_path,sets,stop_after",
    [
        (FINITE, ["optim.steps=12"], 7),  # mid-way through the one evolve call
        (LIMIT, ["optim.steps=8"], 5),  # the particle limit
        ("sweep", [], 9),  # a sweep: completed cells are reused, the interrupted one continues
        # the history form's state (its factors and filled-column count) in the checkpoint
        pytest.param(
            LIMIT, ["optim.steps=8", "limit.storage='history'"], 5, marks=pytest.mark.slow
        ),
    ],
    ids=["finite", "limit", "sweep", "limit_history"],
)
def test_kill_and_resume_equals_the_uninterrupted_run(
    tmp_path, capsys, monkeypatch, cfg_path, sets, stop_after
):
    if cfg_path == "sweep":
        cfg_path = str(tmp_path / "sweep.toml")
        pathlib.Path(cfg_path).write_text(TINY_SWEEP)
    args = [a for s in ["precision='float64'", *sets] for a in ("--set", s)]
    ref = tmp_path / "ref"
    assert _run(cfg_path, "--out", str(ref), *args) in (0, 3)
    out = tmp_path / "killed"
    monkeypatch.setattr(_checkpoint, "Checkpoint", StopAt)
    StopAt.stop_after = stop_after
    rc = _run(cfg_path, "--out", str(out), "--checkpoint-every", "0", *args)
    err = capsys.readouterr().err
    assert rc == EXIT["interrupted"], err
    assert f"nfd run --resume {out}" in err.strip().splitlines()[-1]
    assert not (out / "result.npz").exists() and any((out / "checkpoint").iterdir())
    StopAt.stop_after = -1  # never again
    assert _run("--resume", str(out)) in (0, 3)
    resumed, expected = _arrays(out), _arrays(ref)
    assert resumed.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(resumed[key], expected[key], err_msg=key)  # bitwise
    meta = json.loads((out / "meta.json").read_text())
    assert meta["resumed"] and not (out / "checkpoint").exists()


@pytest.mark.slow  # three fresh processes (~20 s); the in-process kill tests cover the checkpoints
def test_sigterm_saves_a_checkpoint_and_resume_finishes(tmp_path):
    """A real SIGTERM to `nfd run`: exit 4 with a one-line message naming the resume command,
    then `nfd run --resume` finishes with the uninterrupted run's numbers."""
    out, ref = tmp_path / "killed", tmp_path / "ref"
    sets = ["--set", "precision='float64'", "--set", "optim.steps=400", "--set", "output.every=50"]
    cmd = [sys.executable, "-m", "nfd.cli", "run", FINITE, "--quiet", *sets]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out), "--checkpoint-every", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    deadline = time.time() + 120
    while not list((out / "checkpoint").glob("*.partial.pkl")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT["interrupted"], err
    assert err.strip().splitlines()[-1].startswith("interrupted: ")
    subprocess.run([*cmd, "--out", str(ref)], check=True, capture_output=True)
    done = subprocess.run(
        [sys.executable, "-m", "nfd.cli", "run", "--resume", str(out), "--quiet"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    for key, value in _arrays(ref).items():
        np.testing.assert_array_equal(_arrays(out)[key], value, err_msg=key)


# -- memory ----------------------------------------------------------------------------------
def test_a_limit_ensemble_that_does_not_fit_runs_in_chunks(monkeypatch, capsys):
    """12 repetitions whose estimate exceeds the (pretended) memory run in chunks of 5, 5, 2:
    the same numbers as one vmapped batch (members never interact)."""
    sets = ["precision='float64'", "seeds=12", "optim.steps=3", "limit.storage='stored'"]
    cfg = config.load(LIMIT, sets)  # stored: with 'auto' a lean ensemble would fit in one batch
    whole = run_limit(cfg, progress=False, quiet=True)
    task = build_task(cfg, key=run_keys(cfg)["task"])
    per = build_limit(cfg).estimate_memory(Points.from_task(task), 1)
    monkeypatch.setattr(_plan, "available_memory", lambda: int(5.5 * per / _plan.MEMORY_FRACTION))
    chunked = run_limit(cfg, progress=False)
    assert "runs in chunks of 5 members" in capsys.readouterr().err
    for name in ("f_train", "f_test", "loss_train", "h_rms", "status"):
        np.testing.assert_allclose(
            np.asarray(getattr(chunked, name)), np.asarray(getattr(whole, name)), rtol=1e-12
        )


def test_heavy_members_on_one_cpu_run_one_at_a_time(monkeypatch, capsys):
    """Members whose step exceeds `CPU_ALONE_FLOPS` run one at a time on a single CPU device
    (bench_ensemble: a vmapped batch of them costs more than its members alone), with the numbers
    of one vmapped batch: members never interact; the batched and unbatched matmuls may round
    differently (float64, 4 steps: 1e-12)."""
    from nfd.experiments import run_finite
    from nfd.train import FiniteNetwork

    cfg = config.load(FINITE, ["precision='float64'", "seeds=3", "optim.steps=4"])
    task = build_task(cfg, key=run_keys(cfg)["task"])
    net = config.build_network(cfg)
    assert isinstance(net, FiniteNetwork)
    batch = cfg.optim.batch_size or task.n_train
    # the counted FLOPs: forward and backward matmuls of the batch, 6 b N (L N + D + C)
    n, L = cfg.model.width, cfg.model.depth
    flops = 6 * batch * n * (L * n + task.x_train.shape[-1] + task.y_train.shape[-1])
    assert net.step_flops(Points.from_task(task), batch) == flops
    whole = run_finite(cfg, progress=False)
    monkeypatch.setattr(_plan, "CPU_ALONE_FLOPS", flops - 1)
    alone = run_finite(cfg, progress=False)
    assert "runs its members one at a time" in capsys.readouterr().err
    for name in ("f_train", "f_test", "loss_train", "h_rms", "status"):
        a, b = np.asarray(getattr(alone, name)), np.asarray(getattr(whole, name))
        # relative to the array's scale: f(t = 0) is 0 by centring, up to rounding (~1e-17)
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.max(np.abs(b)))


@pytest.mark.parametrize(
    "cfg_path,sets,key",
    [
        (FINITE, ["model.width=1000000"], "model.width"),
        (FINITE, ["model.depth=100000000"], "model.width"),
        (LIMIT, ["limit.particles=10000000"], "limit.particles"),
    ],
)
def test_one_member_too_large_is_refused_naming_the_size_keys(
    tmp_path, capsys, cfg_path, sets, key
):
    rc = _run(cfg_path, "--out", str(tmp_path / "o"), *[a for s in sets for a in ("--set", s)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == EXIT["bad_input"] and err.startswith(f"error: {key}: the run needs an estimated")
    assert "model.depth" in err and not (tmp_path / "o").exists()


# -- results that mislead --------------------------------------------------------------------
def test_divergence_at_the_last_step_is_recorded(tmp_path, capsys):
    """lr = 1e4 for 6 steps: the final loss is inf or astronomically large — every member is
    recorded as diverged (exit 3), at the latest at the update into the last step."""
    out = tmp_path / "run"
    sets = ["optim.lr=1e4", "optim.steps=6", "output.ntk=false", "output.kernels=false"]
    rc = _run(FINITE, "--out", str(out), *[a for s in sets for a in ("--set", s)])
    assert rc == EXIT["all_diverged"]
    meta = json.loads((out / "meta.json").read_text())
    assert all(m["status"] == "diverged" and 0 <= m["failed_step"] <= 5 for m in meta["members"])
    capsys.readouterr()


def test_a_blown_up_but_finite_loss_is_diverged():
    """`optim.blowup` in the assembly of saved losses: member 0 grows to 1e34 (finite) at the last
    saved step, member 1 to 1e5 × its initial loss 3 (below 1e6 × 3), member 2 starts at 0.01 and
    reaches 2e6 (above 1e6 × max(0.01, 1)). Members 0 and 2 diverged at the update before."""
    losses = np.array([[2.0, 5.0, 1e34], [3.0, 30.0, 3e5], [0.01, 5.0, 2e6]])
    records = {
        t: {
            "f": np.zeros((3, 2, 1)),
            "loss_train": losses[:, i],
            "loss_test": losses[:, i],
            "h_rms": np.zeros((3, 2)),
            "h_movement": np.zeros((3, 2)),
            "block_movement": np.zeros((3, 1)),
        }
        for i, t in enumerate((0, 5, 10))
    }
    saveat = SaveAt(steps=(0, 5, 10))
    traj = assemble(records, saveat, np.full((3,), -1, np.int32), np.zeros((10,)), 2, 1e6)
    np.testing.assert_array_equal(np.asarray(traj.failed_step), [9, -1, 9])
    assert np.isnan(np.asarray(traj.loss_train)[0, 2]) and np.asarray(traj.loss_train)[1, 2] == 3e5
    lax = assemble(records, saveat, np.full((3,), -1, np.int32), np.zeros((10,)), 2, 1e40)
    np.testing.assert_array_equal(np.asarray(lax.failed_step), [-1, -1, -1])


def test_float64_is_honoured_by_the_python_api(tmp_path):
    """A fresh process (x64 off): `run_finite` on a float64 config returns float64 arrays."""
    code = (
        "from nfd import config; from nfd.experiments import run_finite;"
        f"cfg = config.load({FINITE!r}, ['precision=\"float64\"', 'optim.steps=1']);"
        "t = run_finite(cfg, progress=False); print(t.f_train.dtype, t.loss_train.dtype)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["float64", "float64"], out.stderr


# -- one-line errors -------------------------------------------------------------------------
def _plot_cases(tmp_path: pathlib.Path) -> list[tuple[list[str], str]]:
    empty = tmp_path / "empty"
    empty.mkdir()
    truncated = tmp_path / "truncated"
    assert _run(FINITE, "--out", str(truncated), "--set", "optim.steps=1") == 0
    data = (truncated / "result.npz").read_bytes()
    (truncated / "result.npz").write_bytes(data[: len(data) // 2])
    return [
        (["plot", str(empty)], "error: run_dir: "),
        (["plot", str(truncated)], "error: run_dir: "),
        (["run", FINITE, "--set", "seed=99999999999999999999"], "error: seed: is too large"),
        (["run", "--resume", str(empty)], "error: --resume: "),
        (["run"], "error: config: is required"),
        (["run", FINITE, "--checkpoint-every", "-1"], "error: --checkpoint-every: "),
        (["run", FINITE, "--set", "optim.blowup=0.5"], "error: optim.blowup: "),
        (["run", FINITE, "--set", "demo.widths=[8]"], "error: demo: is read only by kind = 'demo'"),
    ]


def test_every_user_error_is_one_line_with_exit_2(tmp_path, capsys):
    for argv, start in _plot_cases(tmp_path):
        capsys.readouterr()
        out = ["--out", str(tmp_path / "never")] if argv[0] == "run" and len(argv) > 1 else []
        if argv[:2] == ["run", "--resume"]:
            out = []
        rc = main([*argv, *out])
        err = capsys.readouterr().err
        assert rc == EXIT["bad_input"], (argv, err)
        assert err.count("\n") == 1 and err.startswith(start), (argv, err)
    assert not (tmp_path / "never").exists()


def test_version_and_the_saved_config_reproduces_the_demo(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("nfd ")
    demo = tmp_path / "demo"
    smoke = str(ROOT / "configs/smoke/demo.toml")
    assert main(["demo", "--config", smoke, "--out", str(demo), "--quiet"]) == 0
    again = tmp_path / "again"
    assert _run(str(demo / "config.toml"), "--out", str(again)) == 0
    capsys.readouterr()
    for key, value in _arrays(demo).items():
        np.testing.assert_array_equal(_arrays(again)[key], value, err_msg=key)


# -- provenance ------------------------------------------------------------------------------
def test_npz_data_provenance_and_paths_relative_to_the_config(tmp_path, monkeypatch, capsys):
    """A relative `task.path` in a config file is read relative to that file (not the working
    directory); meta.json records the data's real sizes and SHA-256; config.toml writes only the
    task keys an .npz task reads, and reproduces the run from another directory."""
    import hashlib

    rng = np.random.default_rng(0)
    data = tmp_path / "data" / "xy.npz"
    data.parent.mkdir()
    np.savez(data, x_train=rng.normal(size=(10, 3)), y_train=rng.normal(size=(10, 2)))
    cfg_file = tmp_path / "cfgs" / "run.toml"
    cfg_file.parent.mkdir()
    cfg_file.write_text(
        '[task]\nname = "npz"\npath = "../data/xy.npz"\n[model]\nwidth = 8\ndepth = 2\n'
        "[optim]\nsteps = 2\n"
    )
    monkeypatch.chdir(tmp_path / "data")  # not where the config is
    out = tmp_path / "run"
    assert _run(str(cfg_file), "--out", str(out)) == 0
    meta = json.loads((out / "meta.json").read_text())["data"]
    assert meta["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert (meta["n_train"], meta["n_test"], meta["in_dim"], meta["out_dim"]) == (10, 0, 3, 2)
    assert meta["path"] == str(data.resolve())
    saved = (out / "config.toml").read_text()
    task_table = saved.split("[task]")[1].split("[")[0]
    assert "n_train" not in task_table and "in_dim" not in task_table
    assert "loss_test" not in _arrays(out)  # no test points: no all-NaN test loss
    monkeypatch.chdir(tmp_path)
    again = tmp_path / "again"
    assert _run(str(out / "config.toml"), "--out", str(again)) == 0
    capsys.readouterr()
    for key, value in _arrays(out).items():
        np.testing.assert_array_equal(_arrays(again)[key], value, err_msg=key)


def test_the_wheel_carries_the_configs():
    """`nfd demo` and `nfd figures` read `nfd.config.packaged_configs()`: inside the package when
    installed from a wheel (pyproject force-includes configs/ as nfd/configs), else the checkout's
    configs/. Both hold the demo and the gallery."""
    import tomllib

    root = config.packaged_configs()
    assert (root / "demo.toml").is_file() and list((root / "figures" / "smoke").glob("*.toml"))
    hatch = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    assert hatch["targets"]["wheel"]["force-include"]["configs"] == "nfd/configs"


def test_a_run_directory_has_the_usual_permissions(tmp_path, capsys):
    """The atomic write goes through a temporary directory (owner-only when made): the finished
    run directory gets the permissions of any new directory under the process's umask."""
    out = tmp_path / "run"
    mask = os.umask(0o022)
    try:
        assert _run(FINITE, "--out", str(out), "--set", "optim.steps=1") == 0
    finally:
        os.umask(mask)
    capsys.readouterr()
    assert out.stat().st_mode & 0o777 == 0o755


def test_a_full_disk_is_refused_before_computing(tmp_path, capsys, monkeypatch):
    """Free disk below what the run will write (its arrays and checkpoint records; at least
    64 MiB): exit 2, one line, nothing computed or left behind."""
    import collections

    from nfd import runs

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda path: usage(1 << 40, 1 << 40, 10 << 20))
    out = tmp_path / "o"
    t0 = time.perf_counter()
    rc = _run(FINITE, "--out", str(out), "--set", "optim.steps=1500")
    err = capsys.readouterr().err
    assert rc == EXIT["bad_input"] and time.perf_counter() - t0 < 2.0
    assert err.count("\n") == 1 and err.startswith("error: --out: 10 MiB free"), err
    assert not out.exists()


def test_the_memory_plan_counts_each_accelerator(monkeypatch, capsys):
    """With 4 accelerators of 2.5 members' memory each (members shard over them), 12 repetitions
    run in chunks of 8 = 4 × 2 (a multiple of the device count: equal shards), not of 2."""
    cfg = config.load(LIMIT, ["precision='float64'", "seeds=12", "optim.steps=1"])
    task = build_task(cfg, key=run_keys(cfg)["task"])
    per = build_limit(cfg).estimate_memory(Points.from_task(task), 1)
    monkeypatch.setattr(_plan, "accelerators", lambda: 4)
    monkeypatch.setattr(_plan, "available_memory", lambda: int(2.5 * per / _plan.MEMORY_FRACTION))
    dyn = build_limit(cfg)
    assert _plan.plan_members(dyn, Points.from_task(task), 12, batch=4, size_keys=("k",)) == 8
    assert "runs in chunks of 8 members" in capsys.readouterr().err


def test_without_a_terminal_progress_is_a_line_a_minute(monkeypatch, capsys):
    """A batch job's log (stderr not a TTY) gets periodic progress lines instead of a bar (here
    every step: the period is set to 0)."""
    from nfd.dynamics import _evolve
    from nfd.experiments import run_finite

    monkeypatch.setattr(_evolve._Log, "EVERY", 0.0)
    run_finite(config.load(FINITE, ["optim.steps=3"]), progress=None, desc="job")
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("job: step")]
    assert [ln.split(",")[0] for ln in lines] == ["job: step 1/3", "job: step 2/3", "job: step 3/3"]
    assert all(ln.endswith("2/2 members alive") for ln in lines)


def test_a_member_too_large_for_one_accelerator_splits_its_particles(monkeypatch, capsys):
    """With 8 accelerators of a third of a particle system's memory each, one system no longer
    fits a device but fits split over its particles: the plan is 2 members per chunk (2 devices
    for the members × 4 for each one's particles: a quarter system per device), found by the
    mesh rule of `member_mesh` (3 members would put 3/8 of a system on each of 8 devices); with
    an odd M there is no split and nothing fits."""
    cfg = config.load(LIMIT, ["precision='float64'", "seeds=12", "optim.steps=1"])
    task = build_task(cfg, key=run_keys(cfg)["task"])
    points = Points.from_task(task)
    dyn = build_limit(cfg)
    per = dyn.estimate_memory(points, 1)
    monkeypatch.setattr(_plan, "accelerators", lambda: 8)
    monkeypatch.setattr(_plan, "available_memory", lambda: int(per / 3 / _plan.MEMORY_FRACTION))
    assert _plan.plan_members(dyn, points, 12, batch=4, size_keys=("k",)) == 2
    assert "runs in chunks of 2 members" in capsys.readouterr().err
    assert _plan._particle_split_chunk(12, 128, 8, 3, 1.0) == 2  # the same in units of a third
    assert _plan._particle_split_chunk(12, 127, 8, 3, 1.0) == 0  # M odd: no split, no fit
