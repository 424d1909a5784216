"""`nfd run`, `nfd demo` and `nfd plot` end to end on smoke configs."""

import json
import pathlib

import numpy as np
import pytest

from nfd import config
from nfd.cli import main
from nfd.runs import load_run

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_run_writes_the_documented_result(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(ROOT / "configs/smoke/finite.toml"), "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    run = load_run(out)
    cfg = config.load(ROOT / "configs/smoke/finite.toml")
    assert run.config == cfg
    a = run.arrays
    E, S, P, Q, R = 2, 4, 12, 5, 3
    shapes = {
        "steps": (S,),
        "layer_times": (R,),
        "f_train": (E, S, P, 1),
        "f_test": (E, S, Q, 1),
        "loss_train": (E, S),
        "loss_test": (E, S),
        "ntk": (E, S, P + Q, P + Q),
        "h_kernel": (E, S, R, P + Q, P + Q),
        "g_kernel": (E, S, R, P + Q, P + Q),
    }
    for key, shape in shapes.items():
        assert a[key].shape == shape, key
    np.testing.assert_array_equal(a["steps"], [0, 2, 4, 6])
    # the saved losses are the per-sample means of ½|f − y|² of the saved predictions
    from nfd.config import build_task, run_keys

    task = build_task(cfg, key=run_keys(cfg)["task"])
    y = np.asarray(task.y_train)
    np.testing.assert_allclose(
        a["loss_train"], 0.5 * ((a["f_train"] - y) ** 2).sum(-1).mean(-1), rtol=1e-5
    )
    # the NTK is symmetric for reused weights and PSD
    ntk = a["ntk"][0, 0]
    np.testing.assert_allclose(ntk, ntk.T, rtol=1e-5, atol=1e-6)
    assert np.linalg.eigvalsh(ntk.astype(np.float64)).min() > -1e-4
    meta = json.loads((out / "meta.json").read_text())
    assert [m["status"] for m in meta["members"]] == ["ok", "ok"]
    assert meta["versions"]["jax"] and "timings" in meta
    assert (out / "loss.png").stat().st_size > 1000


def test_all_members_diverging_exits_3_and_is_recorded(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "run",
            str(ROOT / "configs/smoke/finite.toml"),
            "--out",
            str(out),
            "--quiet",
            "--set",
            "optim.lr=1e200",
            "--set",
            "model.activation=relu",
            "--set",
            "output.ntk=false",
            "--set",
            "output.kernels=false",
        ]
    )
    assert rc == 3  # EXIT["all_diverged"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["all_failed"] and all(m["status"] == "diverged" for m in meta["members"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)


def test_demo_and_replot(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--config",
                str(ROOT / "configs/smoke/demo.toml"),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    png = out / "demo.png"
    first = png.stat().st_size
    assert first > 5000
    run = load_run(out)
    assert run.arrays["loss_train"].shape == (2, 2, 2, 3)  # widths × depths × seeds × saves
    png.unlink()
    assert main(["plot", str(out)]) == 0
    assert png.exists() and abs(png.stat().st_size - first) < 0.05 * first
    capsys.readouterr()


def test_existing_output_directory_is_refused(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    rc = main(
        [
            "run",
            str(ROOT / "configs/smoke/finite.toml"),
            "--out",
            str(out),
            "--quiet",
            "--set",
            "optim.steps=0",
        ]
    )
    assert rc == 2 and (out / "keep.txt").read_text() == "precious"
    assert capsys.readouterr().err.startswith("error: --out:")


@pytest.mark.parametrize("name", ["digits", pytest.param("mnist1d", marks=pytest.mark.slow)])
def test_classification_tasks_run(tmp_path, name, capsys):
    out = tmp_path / name
    rc = main(
        [
            "run",
            str(ROOT / "configs/smoke/finite.toml"),
            "--out",
            str(out),
            "--quiet",
            "--set",
            f"task.name={name}",
            "--set",
            "optim.loss=cross_entropy",
            "--set",
            "output.kernels=false",
            "--set",
            "seeds=1",
        ]
    )
    assert rc == 0
    run = load_run(out)
    a = run.arrays
    assert a["f_train"].shape[-1] == 10
    assert a["loss_train"][0, -1] < a["loss_train"][0, 0] < np.log(10) + 0.1
    # the accuracy beside the loss, against the saved predictions and the task's labels
    task = config.build_task(run.config, key=config.run_keys(run.config)["task"])
    for split, y in (("train", task.y_train), ("test", task.y_test)):
        want = np.mean(np.argmax(a[f"f_{split}"], -1) == np.argmax(np.asarray(y), -1), axis=-1)
        np.testing.assert_allclose(a[f"acc_{split}"], want, rtol=0, atol=1e-12)
    assert np.asarray(a["acc_train"]).shape == a["loss_train"].shape
    capsys.readouterr()


def test_limit_run_writes_the_same_result_format(tmp_path, capsys):
    out = tmp_path / "limit"
    assert main(["run", str(ROOT / "configs/smoke/limit.toml"), "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "estimated memory" in captured.err
    run = load_run(out)
    a = run.arrays
    E, S, P, Q, R = 2, 4, 12, 5, 3
    assert a["f_train"].shape == (E, S, P, 1) and a["ntk"].shape == (E, S, P + Q, P + Q)
    assert a["h_kernel"].shape == (E, S, R, P + Q, P + Q)
    assert run.meta["kind"] == "limit" and run.meta["limit"]["coupling"] == "exact"
    assert run.meta["limit"]["layer_steps"] == 4
    # the limit starts from f(0) = 0 (centred P2 readout) and its loss decreases
    np.testing.assert_allclose(a["f_train"][:, 0], 0.0, atol=1e-6)
    assert np.all(a["loss_train"][:, -1] < a["loss_train"][:, 0])


def test_two_layer_limit_run_reports_w1_feature_update(tmp_path, capsys):
    """`model.block = "two_layer"` runs the particle limit through the CLI and saves δz^own."""
    out = tmp_path / "two"
    args = ["run", str(ROOT / "configs/smoke/limit.toml"), "--out", str(out), "--quiet"]
    sets = ["model.block=two_layer", "optim.first_layer_lr_exponent=0.5", "output.kernels=false"]
    assert main(args + [arg for s in sets for arg in ("--set", s)]) == 0
    capsys.readouterr()
    a = load_run(out).arrays
    E, S, K = 2, 4, 4
    assert a["dz_own"].shape == (E, S, K) and a["block_movement"].shape == (E, S, K)
    np.testing.assert_array_equal(a["dz_own"][:, 0], 0.0)  # no update at t = 0
    assert np.all(a["dz_own"][:, -1] > 0)
    assert np.all(a["loss_train"][:, -1] < a["loss_train"][:, 0])


@pytest.mark.parametrize(
    "override,start",
    [
        (["optim.name=adam"], "error: optim.name: 'adam' has no limit solver"),
        (
            ["model.block=two_layer", "limit.method=kernel"],
            "error: model.block: two_layer blocks are solved by limit.method = 'particles'",
        ),
        (["limit.particles=100000000"], "error: limit.particles: the run needs an estimated"),
        (["limit.method=linear_exact"], "error: limit.method: 'linear_exact' needs"),
    ],
)
def test_limit_config_errors(tmp_path, capsys, override, start):
    rc = main(
        [
            "run",
            str(ROOT / "configs/smoke/limit.toml"),
            "--out",
            str(tmp_path / "x"),
            "--quiet",
            *[arg for item in override for arg in ("--set", item)],
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(start), err
    assert not (tmp_path / "x").exists()


def test_linear_exact_limit_run_first_step_is_kernel_step(tmp_path, capsys):
    """`limit.method = "linear_exact"` through the CLI: f(1) = η0 Θ(0) c(0) with c(0) = y/P
    (mode A, P2; §3.3), Θ(0) from the independent K = L recursion of §2."""
    import jax.numpy as jnp

    from nfd.config import build_activation, build_param, build_task, run_keys
    from nfd.limit import init_kernels

    sets = [
        "model.activation=linear",
        "limit.method=linear_exact",
        "optim.batch_size=0",
        "seeds=1",
        "output.kernels=false",
        "output.every=1",
        "optim.steps=1",
    ]
    out = tmp_path / "exact"
    assert (
        main(
            ["run", str(ROOT / "configs/smoke/limit.toml"), "--out", str(out), "--quiet"]
            + [a for s in sets for a in ("--set", s)]
        )
        == 0
    )
    capsys.readouterr()
    run = load_run(out)
    cfg = run.config
    task = build_task(cfg, key=run_keys(cfg)["task"])
    x_all = jnp.concatenate([task.x_train, task.x_test])
    theta = init_kernels(build_param(cfg), build_activation(cfg), x_all @ x_all.T / 6, 4).Theta
    P = task.n_train
    f1 = cfg.optim.lr * theta[:, :P] @ task.y_train / P  # (P+Q, 1); f(0) = 0
    a1 = run.arrays
    got = np.concatenate([a1["f_train"][0, 1], a1["f_test"][0, 1]])
    np.testing.assert_allclose(got, np.asarray(f1), rtol=1e-8, atol=1e-12)
