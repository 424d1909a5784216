"""The empirical NTK against a Jacobian reference whose learning rates are docs/math's table,
written here (§1.3: η_θ = η0 γ0² n m_θ; m_U = m_v = 1; blocks: depth-muP and muP m = 1,
CompleteP m = L; two-layer W1 carries an extra L^a), not read from the parameterization."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import unit_inputs

import nfd
from nfd.model import empirical_ntk
from nfd.nn import Tanh

N, L, A = 12, 3, 0.5
BETA, GAMMA0, SIGMA_IN, SIGMA_OUT = 1.3, 0.6, 0.8, 1.2

# §1.3 block multipliers m_θ (the W1 entry includes L^a for two-layer blocks)
M_BLOCK = {"depth_mup": 1.0, "mup": 1.0, "completep": float(L)}
PARAMS = {"depth_mup": nfd.DepthMuP, "mup": nfd.MuP, "completep": nfd.CompleteP}
BLOCKS = {"one_layer": nfd.OneLayer(), "two_layer": nfd.TwoLayer()}


def spec_rates(param_name: str, block: str) -> dict[str, float]:
    """Raw SGD rates at η0 = 1: γ0² n m_θ."""
    base = GAMMA0**2 * N
    mb = M_BLOCK[param_name]
    if block == "one_layer":
        m = {"U": 1.0, "W": mb, "v": 1.0}
    else:
        m = {"U": 1.0, "W1": mb * L**A, "W2": mb, "v": 1.0}
    return {k: base * v for k, v in m.items()}


def jacobian_ntk_spec(model: nfd.ResNet, xs, rates):
    """(1/η0) Σ_θ η_θ J_θ J̃_θᵀ (J: true Jacobian; J̃: the network's own backward mode), class-
    averaged diagonal block, from `jax.jacrev` of the forward pass with respect to each tensor."""

    def tensors(m):
        return (m.U, *m.blocks, m.v)

    def jac(m):
        return jax.jacrev(lambda ts: jax.vmap(eqx.tree_at(tensors, m, ts))(xs))(tensors(m))

    names = ("U", *model.block.matrices, "v")
    theta = 0.0
    for name, jl, jr_ in zip(names, jac(model.as_reused()), jac(model), strict=True):
        p, c = jl.shape[:2]
        theta = theta + rates[name] * jnp.einsum(
            "pa...,qb...->paqb", jl.reshape(p, c, -1), jr_.reshape(p, c, -1)
        )
    return jnp.einsum("paqa->pq", theta) / theta.shape[1]


@pytest.mark.parametrize(
    "param_name,block,backward",
    [
        ("depth_mup", "one_layer", nfd.ReusedWeights()),
        ("depth_mup", "two_layer", nfd.DecoupledWeights()),
        ("mup", "one_layer", nfd.DecoupledWeights()),
        ("mup", "two_layer", nfd.ReusedWeights()),
        ("completep", "one_layer", nfd.ReusedWeights()),
        ("completep", "two_layer", nfd.ReusedWeights()),
    ],
)
def test_ntk_matches_jacobian_with_spec_rate_table(param_name, block, backward):
    """`empirical_ntk` = the Jacobian NTK with docs/math's hard-coded rates, to 1e-10 relative
    (float64 round-off of two different contractions; a wrong multiplier, e.g. a missing L^a or
    CompleteP's L, changes the W/W1 term by a factor ≥ 3^0.5 ≈ 1.7)."""
    a = A if block == "two_layer" else 0.0
    param = PARAMS[param_name](
        beta=BETA, gamma0=GAMMA0, sigma_in=SIGMA_IN, sigma_out=SIGMA_OUT, first_layer_lr_exponent=a
    )
    model = nfd.ResNet(
        4,
        2,
        N,
        L,
        param=param,
        activation=Tanh(),
        block=BLOCKS[block],
        backward=backward,
        key=jr.key(0),
    )
    xs = unit_inputs(3, 4, key=jr.key(1))
    want = eqx.filter_jit(jacobian_ntk_spec)(model, xs, spec_rates(param_name, block))
    got = eqx.filter_jit(empirical_ntk)(model, xs)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
