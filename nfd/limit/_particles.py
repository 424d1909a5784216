"""Particles of the random-matrix realisation (docs/math §4.1): the draw, and the depth sweeps.

``M`` particles are the coordinates of the single-site process. The forward and backward noises of
layer step ``k`` come from fixed matrices, ``ξ_k = W_k φ(h_k)/sqrt(M)`` and ``ρ_k = W̃_kᵀ g_{k+1}/sqrt(M)``,
with ``W̃_k = W_k`` in mode A (`ReusedWeights`: the response terms R, D then appear by themselves) or an
independent copy in mode B (`DecoupledWeights`: NFD/GIA).

The forward and backward sweeps are Euler steps of ``dy = F(y) dX`` driven by the *block-matrix
control* ``X(τ)``, whose increment over layer step ``k`` is the effective block matrix

    B_k = b W_k / sqrt(M)  +  m_W b² η0γ0 A_k,

the Brownian part (``b W_k/sqrt(M) = β sqrt(dτ) N(0,1)/sqrt(M)`` under depth-muP) plus the drift
(``β² dτ η0γ0 A_k``): a matrix semimartingale, as Diffrax's ControlTerm with a non-Brownian control.
The state keeps ``B_k`` itself, updated by the accumulator increment (one ``M × M`` matrix per step,
exactly as a finite network accumulates ``ΔW``), so a sweep costs one ``M × M`` product per block and
direction, and the Euler step on this control *is* the finite network's residual update.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..nn import AbstractActivation
from ..param import AbstractBackwardWeights, AbstractBlock, OneLayer
from ..solver import AbstractItoSolver, AbstractTerm, solve_depth

HIGHEST = jax.lax.Precision.HIGHEST


class Particles(eqx.Module):
    """The random initial draw of one particle system (§4.1, ``init``).

    Attributes:
        U: input weights ``(M, D)``, standard normal.
        W: the branch matrices ``(K, M, M)``, standard normal: the one-layer block's ``W_k``, or
            the two-layer block's second matrix ``W2_k`` (``dB_k = W_k / sqrt(K)``).
        W_back: their backward copies ``W̃_k = W + E`` (mode B), or ``None``: ``W̃ = W`` (mode A,
            not stored twice).
        v: readout ``(M, C)``, ``N(0, σ_out²)``.
        W1: the two-layer block's first matrices ``W1_k`` ``(K, M, M)``, or ``None`` (one-layer).
        W1_back: their backward copies (as ``W_back``), or ``None`` (mode A or one-layer).
    """

    U: Float[Array, "*E M D"]
    W: Float[Array, "*E K M M"]
    W_back: Float[Array, "*E K M M"] | None
    v: Float[Array, "*E M C"]
    W1: Float[Array, "*E K M M"] | None = None
    W1_back: Float[Array, "*E K M M"] | None = None

    def __check_init__(self):
        if self.W1 is None and self.W1_back is not None:
            raise ValueError("Particles: W1_back without W1 (a one-layer block has no W1).")
        if self.W1 is not None and (self.W_back is None) != (self.W1_back is None):
            raise ValueError(
                "Particles: W_back and W1_back must both be given (mode B) or neither."
            )

    @property
    def num_particles(self) -> int:
        return self.U.shape[-2]

    @property
    def num_layer_steps(self) -> int:
        return self.W.shape[-3]


def sample_particles(
    num_particles: int,
    num_layer_steps: int,
    in_dim: int,
    out_dim: int,
    *,
    sigma_out,
    coupling: AbstractBackwardWeights,
    block: AbstractBlock = OneLayer(),
    dtype=None,
    key: PRNGKeyArray,
) -> Particles:
    """Draw ``U, W_k, W̃_k, v(0)`` (and ``W1_k, W̃1_k`` for two-layer blocks) for ``M`` particles
    and ``K`` layer steps (§4.1): ``U``, ``v(0)`` and the matrices' keys of `draw_keys`, each
    layer's matrices from its own keys (`layer_matrices`)."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    U, v, keys, keys1 = draw_keys(
        num_particles,
        num_layer_steps,
        in_dim,
        out_dim,
        sigma_out=sigma_out,
        block=block,
        dtype=dtype,
        key=key,
    )
    M, ks = num_particles, jnp.arange(num_layer_steps)

    def stack(w_key, back_key):  # layer k from its own keys (`layer_matrices`, as the lean form),
        # one layer at a time: the draw holds M² transients, not K M² (a vmap would hold several);
        # mode A keeps W̃ = W once
        def layer(k):
            W, W_back = layer_matrices(w_key, back_key, k, M, dtype, coupling)
            return (W, W_back) if coupling.decoupled else (W, None)

        return jax.lax.map(layer, ks)

    W, W_back = stack(*keys)
    W1, W1_back = (None, None) if keys1 is None else stack(*keys1)
    return Particles(U=U, W=W, W_back=W_back, v=v, W1=W1, W1_back=W1_back)


def draw_keys(
    num_particles: int,
    num_layer_steps: int,
    in_dim: int,
    out_dim: int,
    *,
    sigma_out,
    block: AbstractBlock,
    dtype,
    key: PRNGKeyArray,
) -> tuple[Float[Array, "M D"], Float[Array, "M C"], tuple, tuple | None]:
    """``(U, v(0), (w_key, back_key), (w1_key, back1_key) or None)``: what the stored draw
    (`sample_particles`) and the lean one (`nfd.limit._lean.draw_noise_keys`) share, so that
    both give the same numbers from the same key."""
    for name, value in (("particles", num_particles), ("layer_steps", num_layer_steps)):
        if value < 1:
            raise ValueError(f"[limit] {name} must be >= 1, got {value}.")
    u_key, w_key, v_key, back_key = jr.split(key, 4)
    keys1 = tuple(jr.split(jr.fold_in(key, 1))) if block.two_layer else None
    U = jr.normal(u_key, (num_particles, in_dim), dtype)
    v = sigma_out * jr.normal(v_key, (num_particles, out_dim), dtype)
    return U, v, (w_key, back_key), keys1


def layer_matrices(
    w_key: PRNGKeyArray,
    back_key: PRNGKeyArray,
    k: Int[Array, ""],
    num_particles: int,
    dtype,
    coupling: AbstractBackwardWeights,
) -> tuple[Float[Array, "M M"], Float[Array, "M M"]]:
    """``(W_k, W̃_k)`` of layer step ``k``, drawn from the counter-based keys
    ``fold_in(w_key, k)`` and ``fold_in(back_key, k)`` (§4.1).

    The stored draw (`sample_particles`) stacks these and the lean form (`nfd.limit._lean`)
    regenerates them inside the layer scan: the same keys and operations, so ``W_k`` bit for bit and
    ``W̃_k = W_k + E_k`` to its last bits (XLA may contract ``E_k``'s product into the sum in one
    fusion and not in the other).
    """
    M = num_particles
    W = jr.normal(jr.fold_in(w_key, k), (M, M), dtype)
    offset = coupling.offset(W, key=jr.fold_in(back_key, k))
    return W, (W if offset is None else W + offset)


def particles_from_resnet(model) -> Particles:
    """The particle system that *is* a finite network (``M = n``, ``K = L``; T5d).

    Reads a pre-activation `nfd.ResNet`'s ``U``, block matrices, backward offsets and ``v`` (mode A
    for a reused network, mode B, ``W̃ = W(0) + E``, for a decoupled one); one- and two-layer blocks.
    """
    if model.post_activation:
        raise ValueError("particles_from_resnet needs a pre-activation ResNet (no T10 control).")
    offsets = model.offsets if model.offsets is not None else (None,) * len(model.blocks)
    backs = tuple(None if o is None else w + o for w, o in zip(model.blocks, offsets, strict=True))
    if not model.block.two_layer:
        return Particles(U=model.U, W=model.blocks[0], W_back=backs[0], v=model.v)
    return Particles(
        U=model.U,
        W=model.blocks[1],
        W_back=backs[1],
        v=model.v,
        W1=model.blocks[0],
        W1_back=backs[0],
    )


# -- terms ------------------------------------------------------------------------------------
class _ControlTerm(AbstractTerm):
    """A term ``dy = F(y, args) dX`` with no separate ``dτ`` drift (it lives in the control)."""

    def drift(self, tau, y, args):
        return jax.tree.map(jnp.zeros_like, y)

    def increment(self, tau, y, args, dtau, dW):
        return self.noise(tau, y, args, dW)


class LowRankPlus(eqx.Module):
    """The matrix ``dense + left rightᵀ`` (``left``, ``right``: ``(M, r)``), never formed: the
    history form of the drift (`nfd.limit._lean`) applies it to the fields as ``dense x +
    left (rightᵀ x)``, ``O(M r)`` per column for the low-rank part instead of ``O(M²)``."""

    dense: Float[Array, "M M"]
    left: Float[Array, "M r"]
    right: Float[Array, "M r"]


def _matvec(B, x):
    """``B x`` for a matrix or a `LowRankPlus`."""
    if isinstance(B, LowRankPlus):
        low = jnp.matmul(B.left, jnp.matmul(B.right.T, x, precision=HIGHEST), precision=HIGHEST)
        return jnp.matmul(B.dense, x, precision=HIGHEST) + low
    return jnp.matmul(B, x, precision=HIGHEST)


class _Forward1(_ControlTerm):
    """One-layer forward: ``h_{k+1} = h_k + B_k φ(h_k)``."""

    activation: AbstractActivation

    def noise(self, tau, y, args, dW):
        return _matvec(dW, self.activation(y))


class _Forward2(_ControlTerm):
    """Two-layer forward, state ``(h, z)``: ``z_k = B1_k φ(h_k)``, ``h_{k+1} = h_k + B2_k φ(z_k)``
    (``dX = B2_k``, args ``B1_k``); the state's second slot stores ``z_k`` for the backward pass."""

    activation: AbstractActivation

    def noise(self, tau, y, args, dW):
        h, z_prev = y
        z = _matvec(args, self.activation(h))
        return _matvec(dW, self.activation(z)), z - z_prev


def _tmatvec(B, g):
    """``Bᵀ g`` for every output channel: ``B (M, M)`` or a `LowRankPlus`, ``g (C, M, P)``."""
    if isinstance(B, LowRankPlus):
        low = jnp.einsum("jr,cjn->crn", B.left, g, precision=HIGHEST)
        low = jnp.einsum("ir,crn->cin", B.right, low, precision=HIGHEST)
        return _tmatvec(B.dense, g) + low
    return jnp.einsum("ji,cjn->cin", B, g, precision=HIGHEST)


class _Backward1(_ControlTerm):
    """One-layer backward: ``g_k = g_{k+1} + φ'(h_k) ⊙ B̃_kᵀ g_{k+1}`` (args ``h_k``)."""

    activation: AbstractActivation

    def noise(self, tau, y, args, dW):
        return self.activation.deriv(args)[None] * _tmatvec(dW, y)


class _Backward2(_ControlTerm):
    """Two-layer backward, state ``(g, g^z)``: ``g^z_k = φ'(z_k) ⊙ B̃2_kᵀ g_{k+1}``,
    ``g_k = g_{k+1} + φ'(h_k) ⊙ B̃1_kᵀ g^z_k`` (``dX = B̃2_k``, args ``(B̃1_k, h_k, z_k)``)."""

    activation: AbstractActivation

    def noise(self, tau, y, args, dW):
        g, gz_prev = y
        B1, h, z = args
        gz = self.activation.deriv(z)[None] * _tmatvec(dW, g)
        return self.activation.deriv(h)[None] * _tmatvec(B1, gz), gz - gz_prev


# -- sweeps -------------------------------------------------------------------------------------
class Sweep(eqx.Module):
    """The fields of one forward-backward sweep over all tracked points.

    Attributes:
        H: preactivations ``h_k``, ``(K+1, M, Pts)``.
        G: backward fields ``g_k``, ``(K+1, C, M, Pts)``.
        Z: two-layer internal preactivations ``z_k`` ``(K, M, Pts)``, or ``None``.
        Gz: their backward fields ``g^z_k`` ``(K, C, M, Pts)``, or ``None``.
        result: the solver's `RESULTS` code (non-finite fields).
    """

    H: Float[Array, "Kp1 M Pts"]
    G: Float[Array, "Kp1 C M Pts"]
    Z: Float[Array, "K M Pts"] | None
    Gz: Float[Array, "K C M Pts"] | None
    result: Int[Array, ""]


def forward_sweep(
    activation: AbstractActivation,
    solver: AbstractItoSolver,
    h0: Float[Array, "M Pts"],
    B: Float[Array, "K M M"],
    B1: Float[Array, "K M M"] | None,
):
    """``h_k`` for k = 0..K (two-layer: ``(h, z)`` with ``z_k`` stored at ``k + 1``)."""
    if B1 is None:
        return solve_depth(_Forward1(activation), solver, h0, B, throw=False)
    y0 = (h0, jnp.zeros_like(h0))
    return solve_depth(_Forward2(activation), solver, y0, B, B1, throw=False)


def backward_sweep(
    activation: AbstractActivation,
    solver: AbstractItoSolver,
    H: Float[Array, "Kp1 M Pts"],
    Z: Float[Array, "K M Pts"] | None,
    v: Float[Array, "M C"],
    B_back: Float[Array, "K M M"],
    B1_back: Float[Array, "K M M"] | None,
):
    """``(G, Gz, result)``: the backward fields from ``g_K = φ'(h_K) ⊙ v`` through ``B̃`` (and ``B̃1``)."""
    gK = activation.deriv(H[-1])[None] * v.T[:, :, None]  # (C, M, Pts)
    if Z is None:
        bwd = solve_depth(
            _Backward1(activation), solver, gK, B_back, H[:-1], reverse=True, throw=False
        )
        return bwd.ys, None, bwd.result
    y0 = (gK, jnp.zeros_like(gK))
    args = (B1_back, H[:-1], Z)
    bwd = solve_depth(_Backward2(activation), solver, y0, B_back, args, reverse=True, throw=False)
    return bwd.ys[0], bwd.ys[1][:-1], bwd.result  # g^z_k is stored in the state at τ_k
