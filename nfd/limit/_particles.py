"""The particle method, random-matrix realisation (spec NFD.md §4.1): modes A and B, P1 and P2.

``M`` particles are the coordinates of the single-site process. The forward and backward noises of
layer step ``k`` come from fixed matrices, ``ξ_k = W_k φ(h_k)/sqrt(M)`` and ``ρ_k = W̃_kᵀ g_{k+1}/sqrt(M)``,
with ``W̃_k = W_k`` in mode A (`ReusedWeights`: the response terms R, D then appear by themselves) or an
independent copy in mode B (`DecoupledWeights`: NFD/GIA). With ``dB_k = sqrt(dτ) W_k`` the
``M × M`` matrix Brownian increment of step ``k`` and ``b`` the branch multiplier at depth ``K``,
one training step is

    h_0 = σ_in U X/sqrt(D) + m_U η0γ0 σ_in² A_in X
    h_{k+1} = h_k + b sqrt(K) dB_k φ(h_k)/sqrt(M) + m_W b² η0γ0 A_k φ(h_k)                 (forward)
    g_K = φ'(h_K) ⊙ v,
    g_k = g_{k+1} + φ'(h_k) ⊙ [b sqrt(K) dB̃_kᵀ g_{k+1}/sqrt(M) + m_W b² η0γ0 A_kᵀ g_{k+1}]  (backward)

(depth-muP: ``b sqrt(K) = β`` and ``m_W b² = β² dτ``), both solved by `nfd.solver.solve_depth` with an
`AbstractItoSolver` (Euler–Maruyama). The drift is kept in **accumulator form** (required, §4.5):
``A_k += (1/M) Σ_{ν∈B_t} (g_{k+1,ν}·c_ν) φ(h_{k,ν})ᵀ``, ``A_in += (1/D) Σ_ν (g_{0,ν}·c_ν) x_νᵀ``,
``v += m_v η0γ0 Σ_ν φ(h_{K,ν}) c_νᵀ``, exactly as a finite net accumulates ``ΔW``, so the cost of a
training step, ``O(K M² (P+Q) C)``, does not grow with ``t``. With ``M = n``, ``K = L`` and the finite
network's own matrices this *is* that network (spec T5d), which the tests check to float precision.

Readouts (spec §3.3): `FeatureReadout` (P2) reads ``f = (vᵀφ(h_K) − F0)/(γ0 M)`` from the particles,
centred by its value at ``t = 0``; `NTKReadout` (P1) advances ``f(t+1) = f(t) + η0 Θ(t) c(t)`` from
``f(0) = 0`` with the particles' own kernel — computed here as the first-order change of the
particle function, without forming ``Θ``.
"""

import abc
import os
import sys
import time
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._results import RESULTS
from ..model import AbstractBackwardWeights, ResNet, ReusedWeights
from ..nn import AbstractActivation
from ..param import AbstractParameterization
from ..solver import AbstractItoSolver, AbstractTerm, EulerMaruyama, solve_depth

HIGHEST = jax.lax.Precision.HIGHEST


# -- readouts ---------------------------------------------------------------------------------
class AbstractReadout(eqx.Module):
    """How the limit turns its fields into predictions (spec §3.3)."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The config name (`limit.readout`)."""


class NTKReadout(AbstractReadout):
    """P1: ``f(0) = 0``, ``f(t+1) = f(t) + η0 Θ(t) c(t)`` with the fields' own NTK."""

    @property
    def name(self) -> str:
        return "ntk"


class FeatureReadout(AbstractReadout):
    """P2: ``f(t) = E[v(t) φ(h(1, t))]/γ0``, centred by its ``t = 0`` value (a control variate)."""

    @property
    def name(self) -> str:
        return "features"


READOUTS: dict[str, type[AbstractReadout]] = {"ntk": NTKReadout, "features": FeatureReadout}
COUPLINGS: dict[str, str] = {"exact": "reused", "decoupled": "decoupled"}  # limit → backward mode


# -- particles --------------------------------------------------------------------------------
class Particles(eqx.Module):
    """The random initial state of one particle system (spec §4.1, ``init``).

    Attributes:
        U: input weights ``(M, D)``, standard normal.
        W: the branch matrices ``(K, M, M)``, standard normal: the one-layer block's ``W_k``, or
            the two-layer block's second matrix ``W2_k`` (``dB_k = W_k / sqrt(K)``).
        W_back: their backward copies ``W̃_k``: ``W`` itself (mode A) or ``W + E`` (mode B).
        v: readout ``(M, C)``, ``N(0, σ_out²)``.
        coupling: `ReusedWeights` (mode A, `exact`) or `DecoupledWeights` (mode B, `decoupled`).
        W1: the two-layer block's first matrices ``W1_k`` ``(K, M, M)``, or ``None`` (one-layer).
        W1_back: their backward copies (as ``W_back``), or ``None``.
    """

    U: Float[Array, "*E M D"]
    W: Float[Array, "*E K M M"]
    W_back: Float[Array, "*E K M M"]
    v: Float[Array, "*E M C"]
    coupling: AbstractBackwardWeights
    W1: Float[Array, "*E K M M"] | None = None
    W1_back: Float[Array, "*E K M M"] | None = None

    def __check_init__(self):
        if (self.W1 is None) != (self.W1_back is None):
            raise ValueError("Particles: W1 and W1_back must both be given (two-layer) or neither.")

    @property
    def num_particles(self) -> int:
        return self.U.shape[-2]

    @property
    def num_layer_steps(self) -> int:
        return self.W.shape[-3]

    @property
    def block(self) -> str:
        """``"one_layer"`` or ``"two_layer"`` (the block type the particles realise)."""
        return "one_layer" if self.W1 is None else "two_layer"


def sample_particles(
    num_particles: int,
    num_layer_steps: int,
    in_dim: int,
    out_dim: int,
    *,
    sigma_out: float,
    coupling: AbstractBackwardWeights,
    block: str = "one_layer",
    dtype=None,
    key: PRNGKeyArray,
) -> Particles:
    """Draw ``U, W_k, W̃_k, v(0)`` (and ``W1_k, W̃1_k`` for two-layer blocks) for ``M`` particles
    and ``K`` layer steps (spec §4.1)."""
    for name, value in (("limit.particles", num_particles), ("limit.layer_steps", num_layer_steps)):
        if value < 1:
            raise ValueError(f"[limit] {name.split('.')[1]} must be >= 1, got {value}.")
    if block not in ("one_layer", "two_layer"):
        raise ValueError(
            f"sample_particles: block must be 'one_layer' or 'two_layer', got {block!r}."
        )
    dtype = jnp.result_type(float) if dtype is None else dtype
    u_key, w_key, v_key, back_key = jr.split(key, 4)
    M, K = num_particles, num_layer_steps
    W = jr.normal(w_key, (K, M, M), dtype)
    offset = coupling.offset(W, key=back_key)
    W1 = W1_back = None
    if block == "two_layer":
        w1_key, back1_key = jr.split(jr.fold_in(key, 1))
        W1 = jr.normal(w1_key, (K, M, M), dtype)
        offset1 = coupling.offset(W1, key=back1_key)
        W1_back = W1 if offset1 is None else W1 + offset1
    return Particles(
        U=jr.normal(u_key, (M, in_dim), dtype),
        W=W,
        W_back=W if offset is None else W + offset,
        v=sigma_out * jr.normal(v_key, (M, out_dim), dtype),
        coupling=coupling,
        W1=W1,
        W1_back=W1_back,
    )


def particles_from_resnet(model: ResNet) -> Particles:
    """The particle system that *is* a finite network (``M = n``, ``K = L``; spec T5d).

    Mode A for a reused network, mode B (``W̃ = W(0) + E``) for a decoupled one; one- and
    two-layer pre-activation blocks.
    """
    if model.post_activation:
        raise ValueError("particles_from_resnet needs a pre-activation ResNet (no T10 control).")
    offsets = model.offsets if model.offsets is not None else (None,) * len(model.blocks)
    backs = tuple(w if o is None else w + o for w, o in zip(model.blocks, offsets, strict=True))
    if model.block == "one_layer":
        return Particles(
            U=model.U, W=model.blocks[0], W_back=backs[0], v=model.v, coupling=model.backward
        )
    return Particles(
        U=model.U,
        W=model.blocks[1],
        W_back=backs[1],
        v=model.v,
        coupling=model.backward,
        W1=model.blocks[0],
        W1_back=backs[0],
    )


# -- terms ------------------------------------------------------------------------------------
# The forward and backward sweeps are Euler steps of  dy = F(y) dX  driven by the *block-matrix
# control* X(τ), whose increment over layer step k is the effective block matrix
#     B_k = b W_k / sqrt(M)  +  m_W b² η0γ0 A_k,
# the Brownian part (b W_k/sqrt(M) = β sqrt(dτ) N(0,1)/sqrt(M) under depth-muP) plus the drift
# (β² dτ η0γ0 A_k): a matrix semimartingale, as Diffrax's ControlTerm with a non-Brownian control.
# The state keeps B_k itself, updated by the accumulator increment (one M×M matrix per step,
# exactly as a finite network accumulates ΔW), so a sweep costs one M×M product per block and
# direction, and the Euler step on this control *is* the finite network's residual update.
class _ControlTerm(AbstractTerm):
    """A term ``dy = F(y, args) dX`` with no separate ``dτ`` drift (it lives in the control)."""

    def drift(self, tau, y, args):
        return jax.tree.map(jnp.zeros_like, y)

    def increment(self, tau, y, args, dtau, dW):
        return self.noise(tau, y, args, dW)


class _Forward1(_ControlTerm):
    """One-layer forward: ``h_{k+1} = h_k + B_k φ(h_k)``."""

    activation: AbstractActivation

    def noise(self, tau, y, args, dW):
        return jnp.matmul(dW, self.activation(y), precision=HIGHEST)


class _Forward2(_ControlTerm):
    """Two-layer forward, state ``(h, z)``: ``z_k = B1_k φ(h_k)``, ``h_{k+1} = h_k + B2_k φ(z_k)``
    (``dX = B2_k``, args ``B1_k``); the state's second slot stores ``z_k`` for the backward pass."""

    activation: AbstractActivation

    def noise(self, tau, y, args, dW):
        h, z_prev = y
        z = jnp.matmul(args, self.activation(h), precision=HIGHEST)
        return jnp.matmul(dW, self.activation(z), precision=HIGHEST), z - z_prev


def _tmatvec(B, g):
    """``Bᵀ g`` for every output channel: ``B (M, M)``, ``g (C, M, P)``."""
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


class ParticleState(eqx.Module):
    """The evolving state of one particle system (spec §4.1 in accumulator form).

    ``B`` (and ``B1`` for two-layer blocks) are the effective block matrices
    ``b W_k/sqrt(M) + m_W b² η0γ0 A_k`` (``W1_k/sqrt(M) + m_W1 η0γ0 A1_k``); ``B_back``/``B1_back``
    are the backward ones, ``None`` in mode A (the backward pass reuses ``B``).
    """

    B: Float[Array, "*E K M M"]
    B_back: Float[Array, "*E K M M"] | None
    B1: Float[Array, "*E K M M"] | None
    B1_back: Float[Array, "*E K M M"] | None
    A_in: Float[Array, "*E M D"]
    v: Float[Array, "*E M C"]
    f_ntk: Float[Array, "*E Pts C"]
    F0: Float[Array, "*E Pts C"]


class _Sweep(eqx.Module):
    H: Float[Array, "Kp1 M Pts"]
    G: Float[Array, "Kp1 C M Pts"]
    Z: Float[Array, "K M Pts"] | None  # two-layer internal preactivations z_k
    Gz: Float[Array, "K C M Pts"] | None  # their backward fields g^z_k
    f: Float[Array, "Pts C"]
    result: Int[Array, ""]


class LimitSettings(eqx.Module):
    """Static settings of a particle simulation (what shapes and code paths depend on)."""

    param: AbstractParameterization
    activation: AbstractActivation
    readout: AbstractReadout
    solver: AbstractItoSolver


class _Coefficients(eqx.Module):
    branch: float  # b: B_k(0) = b W_k / sqrt(M)
    mult: dict  # per trained block matrix: the weight of its accumulator (m_W b², m_W1)
    m: dict  # the SGD multipliers


def _coefficients(settings: LimitSettings, K: int, block: str) -> _Coefficients:
    p = settings.param
    b = p.branch_multiplier(K)
    m = p.sgd_multipliers(K, block)  # type: ignore[arg-type]
    if block == "one_layer":
        mult = {"W": m["W"] * b**2}  # β² dτ under depth-muP
    else:
        mult = {"W2": m["W2"] * b**2, "W1": m["W1"]}
    return _Coefficients(branch=b, mult=mult, m=m)


def _initial_state(particles: Particles, settings: LimitSettings, x_all, num_points: int):
    """``B_k(0) = b W_k/sqrt(M)`` etc. for one repetition (unbatched)."""
    K, M = particles.num_layer_steps, particles.num_particles
    co = _coefficients(settings, K, particles.block)
    reused = isinstance(particles.coupling, ReusedWeights)
    scale = co.branch / M**0.5
    two = particles.block == "two_layer"
    dtype = x_all.dtype
    C = particles.v.shape[-1]
    return ParticleState(
        B=scale * particles.W,
        B_back=None if reused else scale * particles.W_back,
        B1=particles.W1 / M**0.5 if two else None,  # type: ignore[operator]
        B1_back=particles.W1_back / M**0.5 if two and not reused else None,  # type: ignore[operator]
        A_in=jnp.zeros((M, x_all.shape[1]), dtype),
        v=particles.v,
        f_ntk=jnp.zeros((num_points, C), dtype),
        F0=jnp.zeros((num_points, C), dtype),
    )


def _backward_matrices(state: ParticleState, true_sensitivity: bool):
    """The backward pass's ``(B̃, B̃1)``: the mode's own, or (``true_sensitivity``) the forward ones."""
    if true_sensitivity or state.B_back is None:
        return state.B, state.B1
    return state.B_back, state.B1_back


def _sweep(
    settings: LimitSettings,
    particles: Particles,
    state: ParticleState,
    x_all,
    *,
    true_sensitivity: bool = False,
):
    """Forward then backward over the K layer steps for every tracked point.

    The backward pass uses ``B̃`` (the mode's own fields) or, with ``true_sensitivity``, the forward
    matrices ``B``: then ``g = γ0 M ∂f/∂h`` of the P2 readout, the row fields of ``Θ̃`` (spec §1.6).
    """
    p = settings.param
    phi = settings.activation
    M = particles.num_particles
    fwd = _forward_only(settings, particles, state, x_all)
    H, Z = fwd.ys if particles.block == "two_layer" else (fwd.ys, None)
    phiK = phi(H[-1])
    if isinstance(settings.readout, FeatureReadout):
        f = (jnp.matmul(phiK.T, state.v, precision=HIGHEST) - state.F0) / (p.gamma0 * M)
    else:
        f = state.f_ntk
    gK = phi.deriv(H[-1])[None] * state.v.T[:, :, None]  # (C, M, Pts)
    B_back, B1_back = _backward_matrices(state, true_sensitivity)
    if Z is None:
        bwd = solve_depth(
            _Backward1(phi), settings.solver, gK, B_back, H[:-1], reverse=True, throw=False
        )
        G, Gz = bwd.ys, None
    else:
        y0 = (gK, jnp.zeros_like(gK))
        args = (B1_back, H[:-1], Z[1:])
        bwd = solve_depth(
            _Backward2(phi), settings.solver, y0, B_back, args, reverse=True, throw=False
        )
        G, Gz = bwd.ys[0], bwd.ys[1][:-1]  # g^z_k is stored in the state at τ_k
        Z = Z[1:]  # z_k is stored in the forward state at τ_{k+1}
    result = jnp.maximum(fwd.result._value, bwd.result._value)
    return _Sweep(H=H, G=G, Z=Z, Gz=Gz, f=f, result=result)


def _forward_only(settings: LimitSettings, particles: Particles, state: ParticleState, x_all):
    """The forward sweep alone: ``h_k`` for k = 0..K, ``(K+1, M, Pts)`` (two-layer: ``(h, z)``
    with ``z_k`` stored at ``k + 1``)."""
    p = settings.param
    D = x_all.shape[1]
    m_U = p.sgd_multipliers(particles.num_layer_steps, particles.block)["U"]  # type: ignore[arg-type]
    h0 = (p.sigma_in / D**0.5) * jnp.matmul(particles.U, x_all.T, precision=HIGHEST)
    h0 = h0 + (m_U * p.sigma_in**2 * p.gamma0) * jnp.matmul(state.A_in, x_all.T, precision=HIGHEST)
    if particles.block == "one_layer":
        return solve_depth(
            _Forward1(settings.activation), settings.solver, h0, state.B, throw=False
        )
    y0 = (h0, jnp.zeros_like(h0))
    return solve_depth(
        _Forward2(settings.activation), settings.solver, y0, state.B, state.B1, throw=False
    )


def _factor_pairs(settings: LimitSettings, sw: _Sweep):
    """Per trained block matrix: (name, left fields ``(K, C, M, Pts)``, right features
    ``(K, M, Pts)``): its update is ``Σ_ν (left_ν·c_ν) right_νᵀ / M`` and its NTK part
    ``(left·left)/M ⊙ (right·right)/M``."""
    phi = settings.activation
    if sw.Z is None:
        return [("W", sw.G[1:], phi(sw.H[:-1]))]
    assert sw.Gz is not None
    return [("W2", sw.G[1:], phi(sw.Z)), ("W1", sw.Gz, phi(sw.H[:-1]))]


def _error_signal(loss, f, y, idx, num_points):
    """``c_ν = 1[ν ∈ B_t] Δ_ν / |B_t|`` over all tracked points ``(Pts, C)``."""
    delta = jax.vmap(loss.error_signal)(f[idx], y[idx]) / idx.shape[0]
    return jnp.zeros((num_points, f.shape[1]), f.dtype).at[idx].add(delta)


@eqx.filter_jit(donate="all-except-first")
def particle_step(static, state: ParticleState, alive, failed):
    """One training step of every repetition (vmapped over the leading axis E); jitted entry.

    ``static = (settings, particles, lr, idx, t, x_all, y_all, loss)`` is kept; ``state``,
    ``alive`` and ``failed`` are *donated* (updated in place: the K·M² matrices are never copied).
    Returns ``(state, alive, failed, loss values)``.
    """
    settings, particles, lr, idx, t, x_all, y_all, loss = static

    def one(particles: Particles, state: ParticleState, alive, failed, lr):
        p = settings.param
        K, M = particles.num_layer_steps, particles.num_particles
        D = x_all.shape[1]
        co = _coefficients(settings, K, particles.block)
        eg = lr * p.gamma0
        sw = _sweep(settings, particles, state, x_all)
        num_points = x_all.shape[0]
        c = _error_signal(loss, sw.f, y_all, idx, num_points)  # (Pts, C)
        value = jnp.mean(jax.vmap(loss)(sw.f[idx], y_all[idx]))
        phiK = settings.activation(sw.H[-1])
        dv = jnp.matmul(phiK, c, precision=HIGHEST)  # (M, C)
        # H and G are finite (solve_depth's result), so every update is unless it overflows:
        # checking the small arrays keeps the step free of extra passes over the K·M² matrices
        ok = jnp.isfinite(value) & (sw.result == RESULTS.successful._value)
        ok = ok & jnp.all(jnp.isfinite(dv))
        keep = alive & ok
        zero = jnp.zeros((), dv.dtype)
        c_keep = jnp.where(keep, c, zero)  # a dead member's updates are exactly zero
        pairs = _factor_pairs(settings, sw)
        # (left·c) over the batch, per trained block matrix: shared by its update and by P1
        lcs = {
            name: jnp.einsum("kcmn,nc->kmn", left[..., idx], c_keep[idx], precision=HIGHEST)
            for name, left, _ in pairs
        }
        gc0 = jnp.einsum("cmn,nc->mn", sw.G[0][..., idx], c_keep[idx], precision=HIGHEST)
        dA_in = jnp.matmul(gc0, x_all[idx], precision=HIGHEST) / D

        def accumulate(B, name):  # B + (left·c) rightᵀ: one batched matmul-accumulate per block
            if B is None:
                return None
            right = next(r for n, _, r in pairs if n == name)[..., idx]
            lc = lcs[name] * (co.mult[name] * eg / M)
            return B + jnp.einsum("kib,kjb->kij", lc, right, precision=HIGHEST)

        branch = "W" if particles.block == "one_layer" else "W2"
        f_ntk = state.f_ntk
        if isinstance(settings.readout, NTKReadout):
            # P1: f += η0 Θ c, with Θ c in Gram form over the batch (never forming Θ or an
            # extra M×M product): Σ_ν Θ_μν c_ν = m_U σ² Σ_b K^x_μb (g_0μ·gc_0b)/M
            #   + Σ_blocks mult Σ_k Σ_b (left_{kμ}·lc_{kb})(right_kμ·right_kb)/M² + m_v Φ_K c
            xb = x_all[idx]
            kxb = jnp.matmul(x_all, xb.T, precision=HIGHEST) / D  # (Pts, B)
            u_term = jnp.einsum("cmp,mb,pb->pc", sw.G[0], gc0, kxb, precision=HIGHEST)
            df = co.m["U"] * p.sigma_in**2 * u_term / M
            for name, left, right in pairs:  # c_keep = c wherever f_ntk is updated
                gg = jnp.einsum("kcmp,kmb->kcpb", left, lcs[name], precision=HIGHEST)
                ff = jnp.einsum("kmp,kmb->kpb", right, right[..., idx], precision=HIGHEST)
                df = (
                    df
                    + co.mult[name] * jnp.einsum("kcpb,kpb->pc", gg, ff, precision=HIGHEST) / M**2
                )
            df = df + co.m["v"] * jnp.matmul(phiK.T, dv, precision=HIGHEST) / M
            f_ntk = jnp.where(keep, f_ntk + lr * df, f_ntk)
        B = accumulate(state.B, branch)
        assert B is not None
        state = ParticleState(
            B=B,
            B_back=accumulate(state.B_back, branch),
            B1=accumulate(state.B1, "W1"),
            B1_back=accumulate(state.B1_back, "W1"),
            A_in=state.A_in + jnp.where(keep, lr * dA_in, zero),  # A_in carries η0
            v=state.v + jnp.where(keep, co.m["v"] * eg * dv, zero),
            f_ntk=f_ntk,
            F0=state.F0,
        )
        failed = jnp.where(alive & ~ok, t, failed)
        return state, keep, failed, value

    return eqx.filter_vmap(one)(particles, state, alive, failed, lr)


def _ntk_from_sweep(settings, K, block, x_all, sw: _Sweep, left: _Sweep):
    p = settings.param
    M = sw.H.shape[1]
    C = sw.G.shape[1]
    co = _coefficients(settings, K, block)
    phis = settings.activation(sw.H)
    G = jnp.einsum("kcmp,kcmq->kpq", left.G, sw.G, precision=HIGHEST) / (M * C)
    kx = jnp.matmul(x_all, x_all.T, precision=HIGHEST) / x_all.shape[1]
    ntk = co.m["U"] * p.sigma_in**2 * kx * G[0]
    ntk = ntk + co.m["v"] * jnp.einsum("mp,mq->pq", phis[-1], phis[-1], precision=HIGHEST) / M
    for (name, lf, right), (_, rf, _) in zip(
        _factor_pairs(settings, left), _factor_pairs(settings, sw), strict=True
    ):
        gg = jnp.einsum("kcmp,kcmq->kpq", lf, rf, precision=HIGHEST) / (M * C)
        ff = jnp.einsum("kmp,kmq->kpq", right, right, precision=HIGHEST) / M
        ntk = ntk + co.mult[name] * jnp.sum(gg * ff, axis=0)
    return ntk


def _own_movement(B, B0_scale, W, features):
    """RMS over particles and points of ``(B_k(t) − B_k(0)) features_k`` per layer step ``(K,)``.

    ``B_k(0) = B0_scale W_k`` is recomputed exactly as the initial state did, so the difference is
    exactly zero at ``t = 0`` (one extra pass over the K·M² matrices, at observation time only).
    """
    moved = jnp.einsum("kij,kjn->kin", B - B0_scale * W, features, precision=HIGHEST)
    return jnp.sqrt(jnp.mean(moved**2, axis=(1, 2)))


@eqx.filter_jit
def particle_observe(
    settings: LimitSettings,
    particles: Particles,
    state: ParticleState,
    H0: Float[Array, "E Kp1 M Pts"],
    x_all,
    y_all,
    num_train: int,
    loss,
    layer_steps_saved,
    want_ntk: bool,
    want_kernels: bool,
):
    """Observables of every repetition at the current step (vmapped, jitted)."""

    def one(particles, state, H0):
        K, M = particles.num_layer_steps, particles.num_particles
        co = _coefficients(settings, K, particles.block)
        phi = settings.activation
        sw = _sweep(settings, particles, state, x_all)
        losses = jax.vmap(loss)(sw.f, y_all)
        out = {
            "f": sw.f,
            "loss_train": jnp.mean(losses[:num_train]),
            "loss_test": jnp.mean(losses[num_train:])
            if x_all.shape[0] > num_train
            else jnp.array(jnp.nan, sw.f.dtype),
            "h_rms": jnp.sqrt(jnp.mean(sw.H**2, axis=(1, 2))),
            "h_movement": jnp.sqrt(jnp.mean((sw.H - H0) ** 2, axis=(1, 2))),
        }
        # each block's own update (B(t) − B(0)) φ: Θ(1/L) under depth-muP; for two-layer blocks
        # the branch acts on φ(z) and W1's own feature update δz^own = (B1(t) − B1(0)) φ(h)
        if sw.Z is None:
            out["block_movement"] = _own_movement(
                state.B, co.branch / M**0.5, particles.W, phi(sw.H[:-1])
            )
        else:
            out["block_movement"] = _own_movement(
                state.B, co.branch / M**0.5, particles.W, phi(sw.Z)
            )
            out["dz_own"] = _own_movement(state.B1, 1 / M**0.5, particles.W1, phi(sw.H[:-1]))
        if want_ntk:
            # the kernel by which the reported f moves: Θ̃ (true g rows, mode-B g̃ columns) for
            # mode B read out by P2 (the decoupled network); the fields' own kernel otherwise
            decoupled_p2 = not isinstance(particles.coupling, ReusedWeights) and isinstance(
                settings.readout, FeatureReadout
            )
            left = (
                _sweep(settings, particles, state, x_all, true_sensitivity=True)
                if decoupled_p2
                else sw
            )
            out["ntk"] = _ntk_from_sweep(settings, K, particles.block, x_all, sw, left)
        if want_kernels:
            sel = jnp.asarray(layer_steps_saved)
            H, G = sw.H[sel], sw.G[sel]
            out["h_kernel"] = jnp.einsum("rmp,rmq->rpq", H, H, precision=HIGHEST) / M
            out["g_kernel"] = jnp.einsum("rcmp,rcmq->rpq", G, G, precision=HIGHEST) / (
                M * G.shape[1]
            )
        return out

    return eqx.filter_vmap(one)(particles, state, H0)


# -- memory ---------------------------------------------------------------------------------
def estimate_memory(
    num_particles: int,
    num_layer_steps: int,
    num_points: int,
    out_dim: int,
    in_dim: int,
    repeats: int,
    *,
    itemsize: int,
    decoupled: bool,
    blocks: int = 1,
) -> int:
    """Estimated peak bytes of a particle simulation (arrays held at once, all repetitions).

    Per repetition and block matrix (``blocks`` = 1 one-layer, 2 two-layer) the ``K M²`` buffers
    are: the initial ``W`` (kept for the observables), ``W̃`` (mode B), the effective matrices
    ``B`` and, in mode B, ``B̃`` (donated, so updated in place), and one transient rank-|B_t|
    product; plus two stored sweeps (``(K+1) M Pts (1 + C)`` each, plus ``φ`` and ``g·c``).
    """
    M, K, Pts, C = num_particles, num_layer_steps, num_points, out_dim
    per_block = 1 + int(decoupled) + (1 + int(decoupled)) + 1
    mats = blocks * per_block * K * M * M
    sweeps = blocks * (2 * (K + 1) * M * Pts * (1 + C) + 2 * (K + 1) * M * Pts)
    small = M * (in_dim + 2 * C) + 4 * Pts * C
    return int(repeats * (mats + sweeps + small) * itemsize)


def step_flops(
    num_particles: int,
    num_layer_steps: int,
    num_points: int,
    batch: int,
    out_dim: int,
    *,
    decoupled: bool,
    blocks: int = 1,
) -> float:
    """Floating-point operations of one training step of one repetition (the M×M products).

    Per block matrix and layer step: the forward product on every tracked point, the backward
    transpose product per output, and the rank-``batch`` update of ``B`` (and ``B̃`` in mode B);
    each multiply-add counts 2.
    """
    M, K = num_particles, num_layer_steps
    per_block = num_points + out_dim * num_points + (1 + int(decoupled)) * batch
    return 2.0 * blocks * K * M * M * per_block


def available_memory() -> int | None:
    """Bytes of memory available to this process (MemAvailable on Linux), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# -- host loop ------------------------------------------------------------------------------
def simulate_limit(
    particles: Particles,
    x_train: Float[Array, "P D"],
    y_train: Float[Array, "P C"],
    x_test: Float[Array, "Q D"],
    y_test: Float[Array, "Q C"],
    *,
    param: AbstractParameterization,
    activation: AbstractActivation,
    readout: AbstractReadout,
    loss,
    lr: Float[Array, " E"],
    schedule: Int[Array, "T B"],
    every: int = 1,
    save_also: Sequence[int] = (),
    layer_times: Sequence[float] = (0.0, 0.5, 1.0),
    ntk: bool = False,
    kernels: bool = False,
    solver: AbstractItoSolver = EulerMaruyama(),
    progress: bool | None = None,
    desc: str = "limit",
):
    """Run the particle limit for ``T = len(schedule)`` training steps (leading axis E = repetitions).

    Args:
        particles: batched `Particles` (leading axis E), from `sample_particles` under vmap or from
            `particles_from_resnet`.
        x_train, y_train, x_test, y_test: the task's points (test points are tracked, not trained).
        param, activation: as for the finite network (one-layer blocks).
        readout: `NTKReadout` (P1) or `FeatureReadout` (P2).
        loss: `MSE` or `CrossEntropy`.
        lr: ``η0`` per repetition ``(E,)``.
        schedule: the batch index sequence (`nfd.train.batch_schedule`: the finite trainer's).
        every, save_also, layer_times, ntk, kernels: what to save (as `nfd.train.train`); layer
            time τ maps to layer step ``round(τ K)``.
        solver: the Itô scheme over layer-time (Euler–Maruyama: with ``K = L`` it is exactly the
            ``n = ∞`` limit of the depth-``L`` network).

    Returns:
        A `nfd.train.TrainResult` with the same arrays as a finite run (``dz_own`` for two-layer
        blocks only).
    """
    from ..train import save_steps
    from ..train._train import _progress, result_from_records

    if not isinstance(solver, AbstractItoSolver):
        raise ValueError(f"simulate_limit needs an AbstractItoSolver, got {type(solver)}.")
    e = lr.shape[0]
    K = particles.W.shape[-3]
    x_all = jnp.concatenate([x_train, x_test])
    y_all = jnp.concatenate([y_train, y_test])
    P, num_points = x_train.shape[0], x_all.shape[0]
    settings = LimitSettings(param=param, activation=activation, readout=readout, solver=solver)
    state = _initial_states(settings, particles, x_all)
    H0 = _initial_features(settings, particles, state, x_all)  # (E, K+1, M, Pts)
    F0 = jnp.einsum("emp,emc->epc", activation(H0[:, -1]), particles.v, precision=HIGHEST)
    state = eqx.tree_at(lambda s: s.F0, state, F0)
    num_steps = schedule.shape[0]
    saves = save_steps(num_steps, every, save_also)
    steps_saved = tuple(int(round(t * K)) for t in layer_times)
    alive = jnp.ones((e,), bool)
    failed = jnp.full((e,), -1, jnp.int32)
    records: list[dict] = []
    step_times = np.zeros((num_steps,))
    show = sys.stderr.isatty() if progress is None else progress
    del num_points

    def record():
        obs = particle_observe(
            settings, particles, state, H0, x_all, y_all, P, loss, steps_saved, ntk, kernels
        )
        records.append(jax.device_get(obs))

    with _progress(num_steps, show, desc) as bar:
        for t in range(num_steps + 1):
            if t in saves:
                record()
            if t == num_steps:
                break
            t0 = time.perf_counter()
            static = (
                settings,
                particles,
                lr,
                schedule[t],
                jnp.asarray(t, jnp.int32),
                x_all,
                y_all,
                loss,
            )
            state, alive, failed, values = particle_step(static, state, alive, failed)
            values.block_until_ready()
            step_times[t] = time.perf_counter() - t0
            bar.update(1)
            if show:
                bar.set_postfix(loss=f"{float(jnp.nanmean(values)):.4g}", alive=int(jnp.sum(alive)))
            if not bool(jnp.any(alive)):
                saves = np.append(saves[saves <= t], t + 1)
                record()
                break

    return result_from_records(records, saves, failed, step_times, num_train=P)


@eqx.filter_jit
def _initial_states(settings: LimitSettings, particles: Particles, x_all) -> ParticleState:
    """``B_k(0)``, zero accumulators and readout of every repetition (vmapped)."""
    num_points = x_all.shape[0]
    return eqx.filter_vmap(lambda pt: _initial_state(pt, settings, x_all, num_points))(particles)


@eqx.filter_jit
def _initial_features(settings: LimitSettings, particles: Particles, state: ParticleState, x_all):
    """The t = 0 forward sweep of every repetition (P2's control variate and h_movement's origin)."""

    def one(pt, st):
        ys = _forward_only(settings, pt, st, x_all).ys
        return ys if pt.block == "one_layer" else ys[0]

    return eqx.filter_vmap(one)(particles, state)
