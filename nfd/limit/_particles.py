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
        W: forward block matrices ``(K, M, M)``, standard normal (``dB_k = W_k / sqrt(K)``).
        W_back: backward matrices ``W̃_k`` ``(K, M, M)``: ``W`` itself (mode A) or a copy (mode B).
        v: readout ``(M, C)``, ``N(0, σ_out²)``.
        coupling: `ReusedWeights` (mode A, `exact`) or `DecoupledWeights` (mode B, `decoupled`).
    """

    U: Float[Array, "*E M D"]
    W: Float[Array, "*E K M M"]
    W_back: Float[Array, "*E K M M"]
    v: Float[Array, "*E M C"]
    coupling: AbstractBackwardWeights

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
    sigma_out: float,
    coupling: AbstractBackwardWeights,
    dtype=None,
    key: PRNGKeyArray,
) -> Particles:
    """Draw ``U, W_k, W̃_k, v(0)`` for ``M`` particles and ``K`` layer steps (spec §4.1)."""
    for name, value in (("limit.particles", num_particles), ("limit.layer_steps", num_layer_steps)):
        if value < 1:
            raise ValueError(f"[limit] {name.split('.')[1]} must be >= 1, got {value}.")
    dtype = jnp.result_type(float) if dtype is None else dtype
    u_key, w_key, v_key, back_key = jr.split(key, 4)
    M, K = num_particles, num_layer_steps
    W = jr.normal(w_key, (K, M, M), dtype)
    offset = coupling.offset(W, key=back_key)
    return Particles(
        U=jr.normal(u_key, (M, in_dim), dtype),
        W=W,
        W_back=W if offset is None else W + offset,
        v=sigma_out * jr.normal(v_key, (M, out_dim), dtype),
        coupling=coupling,
    )


def particles_from_resnet(model: ResNet) -> Particles:
    """The particle system that *is* a finite one-layer network (``M = n``, ``K = L``; spec T5d).

    Mode A for a reused network, mode B (``W̃ = W(0) + E``) for a decoupled one.
    """
    if model.block != "one_layer" or model.post_activation:
        raise ValueError("particles_from_resnet needs a pre-activation one_layer ResNet.")
    W = model.blocks[0]
    back = W if model.offsets is None else W + model.offsets[0]
    return Particles(U=model.U, W=W, W_back=back, v=model.v, coupling=model.backward)


# -- terms ------------------------------------------------------------------------------------
class _ForwardTerm(AbstractTerm):
    """``dh = m_W b² K η0γ0 A_k φ(h) dτ + b sqrt(K) dB_k φ(h)/sqrt(M)`` (args: ``A_k``)."""

    activation: AbstractActivation
    noise_coef: float
    drift_coef: Float[Array, ""]

    def drift(self, tau, y, args):
        return self.drift_coef * jnp.matmul(args, self.activation(y), precision=HIGHEST)

    def noise(self, tau, y, args, dW):
        m = y.shape[0]
        return (self.noise_coef / m**0.5) * jnp.matmul(dW, self.activation(y), precision=HIGHEST)


class _BackwardTerm(AbstractTerm):
    """``-d_τ g = φ'(h_k) ⊙ [m_W b² K η0γ0 A_kᵀ g dτ + b sqrt(K) dB̃_kᵀ g/sqrt(M)]``
    (state ``(C, M, P)``; args: ``(A_k, h_k)``)."""

    activation: AbstractActivation
    noise_coef: float
    drift_coef: Float[Array, ""]

    def drift(self, tau, y, args):
        A, h = args
        ag = jnp.einsum("ji,cjn->cin", A, y, precision=HIGHEST)
        return self.drift_coef * self.activation.deriv(h)[None] * ag

    def noise(self, tau, y, args, dW):
        _, h = args
        m = y.shape[1]
        wg = jnp.einsum("ji,cjn->cin", dW, y, precision=HIGHEST)
        return (self.noise_coef / m**0.5) * self.activation.deriv(h)[None] * wg


class ParticleState(eqx.Module):
    """The evolving state of one particle system: accumulators, readout, P1 predictions."""

    A: Float[Array, "*E K M M"]
    A_in: Float[Array, "*E M D"]
    v: Float[Array, "*E M C"]
    f_ntk: Float[Array, "*E Pts C"]
    F0: Float[Array, "*E Pts C"]


class _Sweep(eqx.Module):
    H: Float[Array, "Kp1 M Pts"]
    G: Float[Array, "Kp1 C M Pts"]
    f: Float[Array, "Pts C"]
    result: Int[Array, ""]


class LimitSettings(eqx.Module):
    """Static settings of a particle simulation (what shapes and code paths depend on)."""

    param: AbstractParameterization
    activation: AbstractActivation
    readout: AbstractReadout
    solver: AbstractItoSolver


def _coefficients(settings: LimitSettings, K: int, lr):
    p = settings.param
    b = p.branch_multiplier(K)
    m = p.sgd_multipliers(K, "one_layer")
    noise_coef = b * K**0.5
    drift_w = m["W"] * b**2  # per-step drift weight (β² dτ under depth-muP)
    return noise_coef, drift_w, m


def _sweep(
    settings: LimitSettings,
    particles: Particles,
    state: ParticleState,
    x_all,
    lr,
    *,
    true_sensitivity: bool = False,
):
    """Forward then backward over the K layer steps for every tracked point.

    The backward pass uses ``W̃`` (the mode's own fields) or, with ``true_sensitivity``, the forward
    matrices ``W``: then ``g = γ0 M ∂f/∂h`` of the P2 readout, the row fields of ``Θ̃`` (spec §1.6).
    """
    p = settings.param
    phi = settings.activation
    K, M = particles.num_layer_steps, particles.num_particles
    noise_coef, drift_w, _ = _coefficients(settings, K, lr)
    eg = lr * p.gamma0
    dB_back = (particles.W if true_sensitivity else particles.W_back) / K**0.5
    fwd = _forward_only(settings, particles, state, x_all, lr)
    H = fwd.ys
    phiK = phi(H[-1])
    if isinstance(settings.readout, FeatureReadout):
        f = (jnp.matmul(phiK.T, state.v, precision=HIGHEST) - state.F0) / (p.gamma0 * M)
    else:
        f = state.f_ntk
    gK = phi.deriv(H[-1])[None] * state.v.T[:, :, None]  # (C, M, Pts)
    bwd = solve_depth(
        _BackwardTerm(phi, noise_coef, K * drift_w * eg),
        settings.solver,
        gK,
        dB_back,
        (state.A, H[:-1]),
        reverse=True,
        throw=False,
    )
    result = jnp.maximum(fwd.result._value, bwd.result._value)
    return _Sweep(H=H, G=bwd.ys, f=f, result=result)


def _forward_only(settings: LimitSettings, particles: Particles, state: ParticleState, x_all, lr):
    """The forward sweep alone: ``h_k`` for k = 0..K, ``(K+1, M, Pts)``."""
    p = settings.param
    K = particles.num_layer_steps
    D = x_all.shape[1]
    noise_coef, drift_w, m = _coefficients(settings, K, lr)
    eg = lr * p.gamma0
    h0 = (p.sigma_in / D**0.5) * jnp.matmul(particles.U, x_all.T, precision=HIGHEST)
    h0 = h0 + (m["U"] * p.sigma_in**2) * eg * jnp.matmul(state.A_in, x_all.T, precision=HIGHEST)
    term = _ForwardTerm(settings.activation, noise_coef, K * drift_w * eg)
    return solve_depth(term, settings.solver, h0, particles.W / K**0.5, state.A, throw=False)


def _error_signal(loss, f, y, idx, num_points):
    """``c_ν = 1[ν ∈ B_t] Δ_ν / |B_t|`` over all tracked points ``(Pts, C)``."""
    delta = jax.vmap(loss.error_signal)(f[idx], y[idx]) / idx.shape[0]
    return jnp.zeros((num_points, f.shape[1]), f.dtype).at[idx].add(delta)


@eqx.filter_jit
def particle_step(
    settings: LimitSettings,
    particles: Particles,
    state: ParticleState,
    alive,
    failed,
    lr,
    idx,
    t,
    x_all,
    y_all,
    loss,
):
    """One training step of every repetition (vmapped over the leading axis E); jitted entry."""

    def one(particles: Particles, state: ParticleState, alive, failed, lr):
        p = settings.param
        K, M = particles.num_layer_steps, particles.num_particles
        D = x_all.shape[1]
        _, drift_w, m = _coefficients(settings, K, lr)
        eg = lr * p.gamma0
        sw = _sweep(settings, particles, state, x_all, lr)
        num_points = x_all.shape[0]
        c = _error_signal(loss, sw.f, y_all, idx, num_points)  # (Pts, C)
        value = jnp.mean(jax.vmap(loss)(sw.f[idx], y_all[idx]))
        gc = jnp.einsum("kcmn,nc->kmn", sw.G, c, precision=HIGHEST)  # (K+1, M, Pts)
        phis = settings.activation(sw.H)  # (K+1, M, Pts)
        gcb, phib = gc[:, :, idx], phis[:, :, idx]  # batch columns only
        dA = jnp.einsum("kib,kjb->kij", gcb[1:], phib[:-1], precision=HIGHEST) / M
        dA_in = jnp.matmul(gcb[0], x_all[idx], precision=HIGHEST) / D
        dv = jnp.matmul(phis[-1], c, precision=HIGHEST)  # (M, C)
        f_ntk = state.f_ntk
        if isinstance(settings.readout, NTKReadout):
            # P1: f += η0 Θ c, with Θ c in Gram form over the batch (never forming Θ or an
            # extra M×M product): Σ_ν Θ_μν c_ν = m_U σ² Σ_b K^x_μb (g_0μ·gc_0b)/M
            #   + m_W b² Σ_k Σ_b (g_{k+1,μ}·gc_{k+1,b})(φ_kμ·φ_kb)/M² + m_v Σ_b (φ_Kμ·φ_Kb) c_b/M
            xb = x_all[idx]
            kxb = jnp.matmul(x_all, xb.T, precision=HIGHEST) / D  # (Pts, B)
            u_term = jnp.einsum("cmp,mb,pb->pc", sw.G[0], gcb[0], kxb, precision=HIGHEST)
            gg = jnp.einsum("kcmp,kmb->kcpb", sw.G[1:], gcb[1:], precision=HIGHEST)
            ff = jnp.einsum("kmp,kmb->kpb", phis[:-1], phib[:-1], precision=HIGHEST)
            w_term = jnp.einsum("kcpb,kpb->pc", gg, ff, precision=HIGHEST) / M
            v_term = jnp.matmul(phis[-1].T, dv, precision=HIGHEST)
            df = (m["U"] * p.sigma_in**2 * u_term + drift_w * w_term + m["v"] * v_term) / M
            f_ntk = f_ntk + lr * df
        # H and G are finite (solve_depth's result), so dA is unless it overflows: checking the
        # small arrays keeps the step free of extra passes over the K·M² accumulators
        ok = jnp.isfinite(value) & (sw.result == RESULTS.successful._value)
        ok = ok & jnp.all(jnp.isfinite(dv)) & jnp.all(jnp.isfinite(dA_in))
        keep = alive & ok
        zero = jnp.zeros((), dA.dtype)
        state = ParticleState(
            A=state.A + jnp.where(keep, dA, zero),
            A_in=state.A_in + jnp.where(keep, dA_in, zero),
            v=state.v + jnp.where(keep, m["v"] * eg * dv, zero),
            f_ntk=jnp.where(keep, f_ntk, state.f_ntk),
            F0=state.F0,
        )
        failed = jnp.where(alive & ~ok, t, failed)
        return state, keep, failed, value

    return eqx.filter_vmap(one)(particles, state, alive, failed, lr)


def _ntk_from_sweep(settings, K, x_all, sw: _Sweep, left: _Sweep):
    p = settings.param
    M = sw.H.shape[1]
    C = sw.G.shape[1]
    _, drift_w, m = _coefficients(settings, K, 1.0)
    phis = settings.activation(sw.H)
    Phi = jnp.einsum("kmp,kmq->kpq", phis, phis, precision=HIGHEST) / M
    G = jnp.einsum("kcmp,kcmq->kpq", left.G, sw.G, precision=HIGHEST) / (M * C)
    kx = jnp.matmul(x_all, x_all.T, precision=HIGHEST) / x_all.shape[1]
    return (
        m["U"] * p.sigma_in**2 * kx * G[0]
        + drift_w * jnp.sum(G[1:] * Phi[:-1], axis=0)
        + m["v"] * Phi[-1]
    )


@eqx.filter_jit
def particle_observe(
    settings: LimitSettings,
    particles: Particles,
    state: ParticleState,
    H0: Float[Array, "E Kp1 M Pts"],
    lr,
    x_all,
    y_all,
    num_train: int,
    loss,
    layer_steps_saved,
    want_ntk: bool,
    want_kernels: bool,
):
    """Observables of every repetition at the current step (vmapped, jitted)."""

    def one(particles, state, H0, lr):
        K, M = particles.num_layer_steps, particles.num_particles
        sw = _sweep(settings, particles, state, x_all, lr)
        losses = jax.vmap(loss)(sw.f, y_all)
        _, drift_w, _ = _coefficients(settings, K, lr)
        eg = lr * settings.param.gamma0
        moved = (
            drift_w
            * eg
            * jnp.einsum("kij,kjn->kin", state.A, settings.activation(sw.H[:-1]), precision=HIGHEST)
        )
        out = {
            "f": sw.f,
            "loss_train": jnp.mean(losses[:num_train]),
            "loss_test": jnp.mean(losses[num_train:])
            if x_all.shape[0] > num_train
            else jnp.array(jnp.nan, sw.f.dtype),
            "h_rms": jnp.sqrt(jnp.mean(sw.H**2, axis=(1, 2))),
            "h_movement": jnp.sqrt(jnp.mean((sw.H - H0) ** 2, axis=(1, 2))),
            "block_movement": jnp.sqrt(jnp.mean(moved**2, axis=(1, 2))),
        }
        if want_ntk:
            # the kernel by which the reported f moves: Θ̃ (true g rows, mode-B g̃ columns) for
            # mode B read out by P2 (the decoupled network); the fields' own kernel otherwise
            decoupled_p2 = not isinstance(particles.coupling, ReusedWeights) and isinstance(
                settings.readout, FeatureReadout
            )
            left = (
                _sweep(settings, particles, state, x_all, lr, true_sensitivity=True)
                if decoupled_p2
                else sw
            )
            out["ntk"] = _ntk_from_sweep(settings, K, x_all, sw, left)
        if want_kernels:
            sel = jnp.asarray(layer_steps_saved)
            H, G = sw.H[sel], sw.G[sel]
            out["h_kernel"] = jnp.einsum("rmp,rmq->rpq", H, H, precision=HIGHEST) / M
            out["g_kernel"] = jnp.einsum("rcmp,rcmq->rpq", G, G, precision=HIGHEST) / (
                M * G.shape[1]
            )
        return out

    return eqx.filter_vmap(one)(particles, state, H0, lr)


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
) -> int:
    """Estimated peak bytes of a particle simulation (arrays held at once, all repetitions).

    Per repetition: five ``K M²`` buffers — ``W`` and ``W̃`` (separate buffers even when equal, in
    mode A), the accumulators ``A``, their increment and the updated copy (no buffer donation) —
    and two stored sweeps (``(K+1) M Pts (1 + C)`` each, plus ``φ`` and ``g·c``).
    """
    M, K, Pts, C = num_particles, num_layer_steps, num_points, out_dim
    del decoupled  # W̃ is its own buffer in both modes
    mats = 5 * K * M * M
    sweeps = 2 * (K + 1) * M * Pts * (1 + C) + 2 * (K + 1) * M * Pts
    small = M * (in_dim + 2 * C) + 4 * Pts * C
    return int(repeats * (mats + sweeps + small) * itemsize)


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
        every, layer_times, ntk, kernels: what to save (as `nfd.train.train`); layer time τ maps
            to layer step ``round(τ K)``.
        solver: the Itô scheme over layer-time (Euler–Maruyama: with ``K = L`` it is exactly the
            ``n = ∞`` limit of the depth-``L`` network).

    Returns:
        A `nfd.train.TrainResult` with the same arrays as a finite run (``dz_own = None``).
    """
    from ..train import save_steps
    from ..train._train import _progress, result_from_records

    if not isinstance(solver, AbstractItoSolver):
        raise ValueError(f"simulate_limit needs an AbstractItoSolver, got {type(solver)}.")
    e = lr.shape[0]
    K = particles.W.shape[-3]
    x_all = jnp.concatenate([x_train, x_test])
    y_all = jnp.concatenate([y_train, y_test])
    P, num_points, C = x_train.shape[0], x_all.shape[0], y_train.shape[1]
    M = particles.U.shape[-2]
    dtype = x_all.dtype
    settings = LimitSettings(param=param, activation=activation, readout=readout, solver=solver)
    state = ParticleState(
        A=jnp.zeros((e, K, M, M), dtype),
        A_in=jnp.zeros((e, M, x_all.shape[1]), dtype),
        v=particles.v,
        f_ntk=jnp.zeros((e, num_points, C), dtype),
        F0=jnp.zeros((e, num_points, C), dtype),
    )
    H0 = _initial_features(settings, particles, state, x_all, lr)  # (E, K+1, M, Pts)
    F0 = jnp.einsum("emp,emc->epc", activation(H0[:, -1]), particles.v, precision=HIGHEST)
    state = eqx.tree_at(lambda s: s.F0, state, F0)
    num_steps = schedule.shape[0]
    saves = save_steps(num_steps, every)
    steps_saved = tuple(int(round(t * K)) for t in layer_times)
    alive = jnp.ones((e,), bool)
    failed = jnp.full((e,), -1, jnp.int32)
    records: list[dict] = []
    step_times = np.zeros((num_steps,))
    show = sys.stderr.isatty() if progress is None else progress

    def record():
        obs = particle_observe(
            settings, particles, state, H0, lr, x_all, y_all, P, loss, steps_saved, ntk, kernels
        )
        records.append(jax.device_get(obs))

    with _progress(num_steps, show, desc) as bar:
        for t in range(num_steps + 1):
            if t in saves:
                record()
            if t == num_steps:
                break
            t0 = time.perf_counter()
            state, alive, failed, values = particle_step(
                settings,
                particles,
                state,
                alive,
                failed,
                lr,
                schedule[t],
                jnp.asarray(t, jnp.int32),
                x_all,
                y_all,
                loss,
            )
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
def _initial_features(
    settings: LimitSettings, particles: Particles, state: ParticleState, x_all, lr
):
    """The t = 0 forward sweep of every repetition (P2's control variate and h_movement's origin)."""
    return eqx.filter_vmap(lambda pt, st, r: _forward_only(settings, pt, st, x_all, r).ys)(
        particles, state, lr
    )
