"""Strict configs: every error class exits 2 with one line naming the key; round trips."""

import pathlib
import subprocess
import sys

import pytest

from nfd import config
from nfd.cli import main

MINIMAL = '[task]\nname = "teacher_student"\n'


def _write(tmp_path, text, name="c.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_and_round_trip(tmp_path):
    cfg = config.load(_write(tmp_path, MINIMAL))
    assert (cfg.model.param, cfg.model.activation, cfg.model.block, cfg.model.backward) == (
        "depth_mup",
        "relu",
        "one_layer",
        "reused",
    )
    assert (cfg.model.branch_scale, cfg.model.gamma0, cfg.model.sigma_in, cfg.model.sigma_out) == (
        1.0,
        1.0,
        1.0,
        1.0,
    )
    assert (cfg.optim.name, cfg.optim.batch_size, cfg.optim.loss) == ("sgd", 0, "mse")
    again = config.load(_write(tmp_path, config.dumps(cfg), "resolved.toml"))
    assert again == cfg
    over = config.load(
        _write(tmp_path, MINIMAL),
        ["model.width=512", "output.layer_times=[0.25]", "model.activation=tanh", "optim.lr=1"],
    )
    assert (over.model.width, over.output.layer_times, over.model.activation, over.optim.lr) == (
        512,
        (0.25,),
        "tanh",
        1.0,
    )


ERRORS = [
    # (file text, overrides, expected "key: what" start, allowed fragment)
    (MINIMAL + "[model]\nwidht = 3\n", [], "model.widht: unknown key", "allowed: width"),
    ("colour = 1\n" + MINIMAL, [], "colour: unknown key", "allowed:"),
    (MINIMAL, ["model.width=abc"], "model.width: expected an integer", "an integer"),
    (MINIMAL, ["model.width=2.5"], "model.width: expected an integer", "an integer"),
    (MINIMAL, ["model.center_output=1"], "model.center_output: expected true or false", "true"),
    (MINIMAL, ["optim.lr=true"], "optim.lr: expected a number", "a number"),
    (MINIMAL, ["model.activation=softplus"], "model.activation: invalid value", "'relu'"),
    (MINIMAL, ["model.width=0"], "model.width: must be > 0", "an integer > 0"),
    (MINIMAL, ["optim.lr=-1"], "optim.lr: must be > 0", "> 0"),
    (MINIMAL, ["output.layer_times=[0.5, 1.5]"], "output.layer_times: contains 1.5", "[0, 1]"),
    ("seed = 1\n", [], "task.name: is required", "one of"),
    ('[task]\nname = "npz"\n', [], "task.path: is required", ".npz"),
    (
        MINIMAL,
        ["optim.first_layer_lr_exponent=0.5"],
        "optim.first_layer_lr_exponent: must be 0",
        "two_layer",
    ),
    (MINIMAL, ["optim.batch_size=1000"], "optim.batch_size: 1000 exceeds", "full batch"),
    (MINIMAL, ["modelwidth"], "modelwidth: an override needs the form KEY=VALUE", "--set"),
    (MINIMAL, ["modle.width=3"], "modle.width: unknown table", "allowed tables"),
    (MINIMAL, ["limit.noise=cholesky"], "limit.noise: 'cholesky' has no exact", "decoupled"),
    ("[task\n", [], "config: invalid TOML", "TOML syntax"),
    ('[task]\nname = "npz"\npath = "/nonexistent/x.npz"\n', [], "task.path: ", ""),
]


@pytest.mark.parametrize("text,overrides,start,allowed", ERRORS)
def test_config_errors_exit_2_with_one_line(tmp_path, capsys, text, overrides, start, allowed):
    args = ["run", str(_write(tmp_path, text)), "--out", str(tmp_path / "out"), "--quiet"]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: " + start), err
    assert allowed in err and err.rstrip().endswith(")"), err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_missing_config_file_exits_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "none.toml")]) == 2
    assert capsys.readouterr().err.startswith("error: config: cannot read")


def test_cli_subprocess_has_no_traceback(tmp_path):
    path = _write(tmp_path, MINIMAL + "[model]\nwidth = -3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "nfd.cli", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: model.width: must be > 0, got -3 (an integer > 0)"


@pytest.mark.parametrize(
    "coupling,backward", [("exact", "ReusedWeights"), ("decoupled", "DecoupledWeights")]
)
def test_kernel_limit_accepts_both_couplings(tmp_path, coupling, backward):
    """`limit.method = "kernel"` solves mode A (`exact`) and mode B (`decoupled`): the config loads
    and `build_limit` passes the coupling through to `KernelFixedPoint`."""
    from nfd.limit import KernelFixedPoint

    text = 'kind = "limit"\n' + MINIMAL + f'[limit]\nmethod = "kernel"\ncoupling = "{coupling}"\n'
    cfg = config.load(_write(tmp_path, text))
    dyn = config.build_limit(cfg)
    assert isinstance(dyn, KernelFixedPoint) and type(dyn.coupling).__name__ == backward


def test_kernel_iteration_keys_reach_the_solver_and_are_refused_elsewhere():
    """`limit.damping`, `tol`, `max_iter`, `stein_tol`, `start` configure the kernel fixed point (the built
    dynamics carries them; max_iter = 1 stops after one map evaluation, unconverged at tol = 1e-12),
    and are an error with another limit method (they would be silently ignored)."""
    import numpy as np
    import pytest

    from nfd.config import build_limit
    from nfd.experiments import run_limit

    base = ["limit.method='kernel'", "limit.particles=64", "model.activation='tanh'"]
    base += ["precision='float64'", "optim.steps=2", "seeds=1", "output.kernels=false"]
    path = pathlib.Path(__file__).resolve().parents[2] / "configs/smoke/limit.toml"
    sets = ["limit.damping=0.5", "limit.tol=1e-3", "limit.max_iter=7", "limit.stein_tol=1e-5"]
    dyn = build_limit(config.load(path, [*base, *sets, "limit.start='tiled'"]))
    assert (dyn.damping, dyn.tol, dyn.max_iter, dyn.stein_tol) == (0.5, 1e-3, 7, 1e-5)
    assert dyn.start == "tiled" and build_limit(config.load(path, base)).start == "causal"
    # the causal start is the fixed point to ~1e-6, so only a tol below that leaves it unconverged
    one = [*base, "limit.max_iter=1", "limit.tol=1e-12"]
    one = run_limit(config.load(path, one), progress=False, quiet=True)
    assert int(np.asarray(one.info.iterations)[0]) == 1
    assert not bool(np.asarray(one.info.converged)[0])
    with pytest.raises(config.ConfigError, match=r"^limit.tol: is read only by limit.method"):
        config.load(path, ["limit.tol=1e-3"])
    with pytest.raises(config.ConfigError, match=r"^limit.start: is read only by limit.method"):
        config.load(path, ["limit.start='tiled'"])
    with pytest.raises(config.ConfigError, match=r"^limit.start: "):
        config.load(path, [*base, "limit.start='warm'"])
    with pytest.raises(config.ConfigError, match=r"^limit.damping: must lie in"):
        config.load(path, [*base, "limit.damping=1.5"])


def test_matmul_precision_is_set_by_a_run_and_recorded():
    """`matmul_precision` sets JAX's default matmul precision when a run starts (`run_keys`) and
    "default" resets it; provenance records it. (On a CPU the setting changes no number.)"""
    import jax

    from nfd.config import run_keys
    from nfd.runs import provenance

    path = pathlib.Path(__file__).resolve().parents[2] / "configs/smoke/finite.toml"
    try:
        run_keys(config.load(path, ["matmul_precision='bfloat16'"]))
        assert jax.config.jax_default_matmul_precision == "bfloat16"
        assert provenance()["matmul_precision"] == "bfloat16"
    finally:
        run_keys(config.load(path))
    assert jax.config.jax_default_matmul_precision is None
    assert provenance()["matmul_precision"] == "default"
