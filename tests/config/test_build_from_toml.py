"""TOML → objects, checked against values written here from the TOML text (not via the
builders): the parameterization's class and scalars, the branch multiplier and SGD multipliers of
§1.3, the activation and loss as functions, the backward mode, and the network's forward
pass re-done in numpy with the TOML's β, γ0, σ_in (and σ_out as the readout's spread)."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.special

import nfd
from nfd.config import build_loss, build_model, build_param, load
from nfd.tasks import Task

TOMLS = {
    "completep_two_layer": (
        """
seed = 4
precision = "float64"
[task]
name = "teacher_student"
n_train = 5
n_test = 0
in_dim = 6
out_dim = 3
[model]
width = 128
depth = 3
block = "two_layer"
activation = "erf"
branch_scale = 1.3
gamma0 = 0.7
sigma_in = 0.8
sigma_out = 1.2
param = "completep"
backward = "decoupled"
[optim]
loss = "cross_entropy"
first_layer_lr_exponent = 0.25
train_input = false
""",
        dict(
            cls=nfd.CompleteP,
            beta=1.3,
            gamma0=0.7,
            sigma_in=0.8,
            sigma_out=1.2,
            a=0.25,
            block="two_layer",
            decoupled=True,
            branch=1.3 / 3,  # CompleteP: β/L
            sgd={"U": 0.0, "W1": 3 * 3**0.25, "W2": 3.0, "v": 1.0},  # m_block = L; W1 × L^a
            act=scipy.special.erf,
            loss="cross_entropy",
        ),
    ),
    "mup_one_layer": (
        """
seed = 1
precision = "float64"
[task]
name = "teacher_student"
n_train = 5
n_test = 0
in_dim = 6
out_dim = 2
[model]
width = 128
depth = 2
block = "one_layer"
activation = "relu"
branch_scale = 0.9
gamma0 = 1.5
sigma_in = 1.1
sigma_out = 0.6
param = "mup"
backward = "reused"
[optim]
loss = "mse"
train_readout = false
""",
        dict(
            cls=nfd.MuP,
            beta=0.9,
            gamma0=1.5,
            sigma_in=1.1,
            sigma_out=0.6,
            a=0.0,
            block="one_layer",
            decoupled=False,
            branch=0.9,  # muP: no depth factor
            sgd={"U": 1.0, "W": 1.0, "v": 0.0},
            act=lambda x: np.maximum(x, 0.0),
            loss="mse",
        ),
    ),
}


def _np_forward(model, x, want):
    """Spec §1.1 in numpy from the model's raw arrays and the TOML's scalars."""
    phi, n, b = want["act"], model.width, want["branch"]
    h = want["sigma_in"] * np.asarray(model.U) @ x / np.sqrt(x.shape[0])
    for ell in range(model.depth):
        if want["block"] == "one_layer":
            h = h + b * np.asarray(model.blocks[0][ell]) @ phi(h) / np.sqrt(n)
        else:
            z = np.asarray(model.blocks[0][ell]) @ phi(h) / np.sqrt(n)
            h = h + b * np.asarray(model.blocks[1][ell]) @ phi(z) / np.sqrt(n)
    return np.asarray(model.v).T @ phi(h) / (want["gamma0"] * n)


@pytest.mark.parametrize("name", list(TOMLS))
def test_toml_keys_reach_the_built_objects(name, tmp_path):
    text, want = TOMLS[name]
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    cfg = load(path)
    # the data are irrelevant here: a hand-made task with the TOML's D and C
    x = np.random.default_rng(0).standard_normal((2, cfg.task.in_dim))
    y = np.eye(cfg.task.out_dim)[[0, 1]]
    task = Task(
        name="t",
        x_train=jnp.asarray(x),
        y_train=jnp.asarray(y),
        x_test=jnp.asarray(x[:0]),
        y_test=jnp.asarray(y[:0]),
        num_classes=0,
    )
    model = build_model(cfg, task, key=jr.key(0))
    for p in (model.param, build_param(cfg)):  # the finite model's and the limit's reader
        assert type(p) is want["cls"]
        assert (p.beta, p.gamma0, p.sigma_in, p.sigma_out) == (
            want["beta"],
            want["gamma0"],
            want["sigma_in"],
            want["sigma_out"],
        )
        assert p.first_layer_lr_exponent == want["a"]
        assert abs(float(p.branch_multiplier(model.depth)) - want["branch"]) < 1e-15
        m = {k: float(v) for k, v in p.sgd_multipliers(model.depth, model.block).items()}
        assert set(m) == set(want["sgd"])
        for k, v in want["sgd"].items():
            assert abs(m[k] - v) < 1e-12, (k, m[k], v)
    assert model.block.name == want["block"] and model.depth == cfg.model.depth
    assert model.block.matrices == (("W",) if want["block"] == "one_layer" else ("W1", "W2"))
    assert model.width == 128 and model.out_dim == task.out_dim
    assert (model.offsets is not None) == want["decoupled"]
    assert isinstance(
        model.backward, nfd.DecoupledWeights if want["decoupled"] else nfd.ReusedWeights
    )
    # the activation as a function
    grid = np.linspace(-2.5, 2.5, 11)
    np.testing.assert_allclose(model.activation(jnp.asarray(grid)), want["act"](grid), atol=1e-15)
    # the loss as a function: ½‖f − y‖² or −Σ y log softmax(f)
    f = np.array([0.3, -1.2, 0.5])[: task.out_dim]
    y = np.array([0.0, 1.0, 0.0])[: task.out_dim]
    if want["loss"] == "mse":
        ref = 0.5 * np.sum((f - y) ** 2)
    else:
        ref = -np.sum(y * (f - np.log(np.sum(np.exp(f)))))
    assert abs(float(build_loss(cfg)(jnp.asarray(f), jnp.asarray(y))) - ref) < 1e-14
    # the forward pass with the TOML's β, γ0, σ_in (float64, same arrays: round-off only)
    got = eqx.filter_jit(lambda m, x: m(x))(model, jnp.asarray(x[0]))
    np.testing.assert_allclose(np.asarray(got), _np_forward(model, x[0], want), rtol=1e-12)
    # σ_out is the readout's std: 128 × C draws estimate it to ≈ 1/sqrt(2·128·C) ≤ 4.5%;
    # 4 SE (≤ 18%) separates it from σ_out = 1 and from the other σ's
    v = np.asarray(model.v)
    se = 1 / np.sqrt(2 * v.size)
    assert abs(v.std() / want["sigma_out"] - 1) < 4 * se, v.std()
