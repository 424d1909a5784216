"""The random-matrix particle method as a dynamics (docs/math §4.1): modes A and B, P1 and P2.

With ``B_k`` the effective block matrices of `nfd.limit._particles` and ``b`` the branch multiplier
at depth ``K``, one training step is

    h_0 = σ_in U X/sqrt(D) + m_U η0γ0 σ_in² A_in X
    h_{k+1} = h_k + B_k φ(h_k)                                  (forward)
    g_K = φ'(h_K) ⊙ v,   g_k = g_{k+1} + φ'(h_k) ⊙ B̃_kᵀ g_{k+1}      (backward)

solved by `nfd.solver.solve_depth` with an `AbstractItoSolver` (Euler–Maruyama). The drift is kept
in **accumulator form** (required, §4.5): ``B_k += m_W b² η0γ0 (1/M) Σ_{ν∈B_t} (g_{k+1,ν}·c_ν)
φ(h_{k,ν})ᵀ``, ``A_in += (1/D) Σ_ν (g_{0,ν}·c_ν) x_νᵀ``, ``v += m_v η0γ0 Σ_ν φ(h_{K,ν}) c_νᵀ``, exactly
as a finite net accumulates ``ΔW``, so the cost of a training step, ``O(K M² (P+Q) C)``, does not
grow with ``t``. With ``M = n``, ``K = L`` and the finite network's own matrices this *is* that
network (T5d), which the tests check to float precision.

Readouts (§3.3): P2 reads ``f = (vᵀφ(h_K) − F0)/(γ0 M)`` from the particles, centred by its
value at ``t = 0``; P1 advances ``f(t+1) = f(t) + η0 Θ(t) c(t)`` from ``f(0) = 0`` with the
particles' own kernel, computed as the first-order change of the particle function, without
forming ``Θ``.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .. import nn
from .._results import RESULTS
from ..dynamics import AbstractDynamics, Points, SaveAt
from ..nn import AbstractActivation, AbstractLoss, AbstractReadout, FeatureReadout
from ..param import AbstractBackwardWeights, AbstractBlock, AbstractParameterization, OneLayer
from ..solver import AbstractItoSolver, EulerMaruyama
from ._lean import (
    DriftHistory,
    NoiseKeys,
    draw_noise_keys,
    lean_backward_sweep,
    lean_forward_sweep,
)
from ._particles import HIGHEST, Particles, Sweep, backward_sweep, forward_sweep, sample_particles


class ParticleState(eqx.Module):
    """The evolving state of one particle system (§4.1 in accumulator form).

    ``B`` (and ``B1`` for two-layer blocks) are the effective block matrices
    ``b W_k/sqrt(M) + m_W b² η0γ0 A_k`` (``W1_k/sqrt(M) + m_W1 η0γ0 A1_k``); ``B_back``/``B1_back``
    are the backward ones, ``None`` in mode A (the backward pass reuses ``B``). In the lean form
    (initial draw `NoiseKeys`, `nfd.limit._lean`) ``B``/``B1`` hold only the drift
    ``B_k − b W_k/sqrt(M)`` (``B1_k − W1_k/sqrt(M)``), shared by the backward matrices, and
    ``B_back``/``B1_back`` are ``None``: the sweeps regenerate the noise part; in its history form
    the drifts are `DriftHistory`s. ``F0`` (P2's control variate) and ``H0`` (the origin of
    ``h_movement``) are the ``t = 0`` sweep's.
    """

    B: Float[Array, "K M M"] | DriftHistory
    B_back: Float[Array, "K M M"] | None
    B1: Float[Array, "K M M"] | DriftHistory | None
    B1_back: Float[Array, "K M M"] | None
    A_in: Float[Array, "M D"]
    v: Float[Array, "M C"]
    f_ntk: Float[Array, "Pts C"]
    F0: Float[Array, "Pts C"]
    H0: Float[Array, "Kp1 M Pts"]


def _mm(a, b):
    return jnp.matmul(a, b, precision=HIGHEST)


class MatrixParticles(AbstractDynamics):
    """``M`` particles, ``K`` layer steps, noise from fixed random matrices (§4.1).

    Attributes:
        num_particles, num_layer_steps: ``M`` (`limit.particles`), ``K`` (`limit.layer_steps`).
        param, activation, loss: as the finite network's.
        readout: `FeatureReadout` (P2) or `NTKReadout` (P1).
        coupling: `ReusedWeights` (mode A, `exact`) or `DecoupledWeights` (mode B, `decoupled`).
        block: `OneLayer` or `TwoLayer`.
        solver: the Itô scheme over layer-time (Euler–Maruyama: with ``K = L`` it is exactly the
            ``n = ∞`` limit of the depth-``L`` network).
        store_noise: `draw` stores ``W_k`` (and ``W̃_k``) as `Particles` (the default); with
            ``False`` it returns `NoiseKeys` and the sweeps regenerate them from per-layer keys
            (the lean form: ``1 + 2·[mode B]`` fewer ``K M²`` buffers per block matrix, the same
            numbers). Explicit `Particles` (a finite network's own matrices) always run stored.
        drift_rank: lean form only: ``0`` keeps each drift as its ``M × M`` accumulator; ``r > 0``
            as the history of its increments, ``r`` columns (`DriftHistory`: at least steps ×
            batch size; ``2 K M r`` numbers per block matrix instead of ``K M²``).
    """

    num_particles: int = eqx.field(static=True)
    num_layer_steps: int = eqx.field(static=True)
    param: AbstractParameterization
    activation: AbstractActivation
    loss: AbstractLoss
    coupling: AbstractBackwardWeights
    readout: AbstractReadout = FeatureReadout()
    block: AbstractBlock = OneLayer()
    solver: AbstractItoSolver = EulerMaruyama()
    store_noise: bool = eqx.field(static=True, default=True)
    drift_rank: int = eqx.field(static=True, default=0)

    def __check_init__(self):
        if not isinstance(self.solver, AbstractItoSolver):
            raise ValueError(f"MatrixParticles needs an AbstractItoSolver, got {self.solver}.")
        if self.drift_rank < 0 or (self.drift_rank and self.store_noise):
            raise ValueError(
                f"MatrixParticles: drift_rank must be 0, or > 0 with store_noise=False (the "
                f"history form is lean), got {self.drift_rank} with store_noise={self.store_noise}."
            )

    # -- the interface ----------------------------------------------------------------------
    def draw(self, points: Points, *, key: PRNGKeyArray) -> Particles | NoiseKeys:
        return (sample_particles if self.store_noise else draw_noise_keys)(
            self.num_particles,
            self.num_layer_steps,
            points.in_dim,
            points.out_dim,
            sigma_out=self.param.sigma_out,
            coupling=self.coupling,
            block=self.block,
            dtype=points.x.dtype,
            key=key,
        )

    def start(self, initial: Particles | NoiseKeys, points: Points) -> ParticleState:
        M = initial.num_particles
        if isinstance(initial, NoiseKeys):  # the lean form: the drifts, zero at t = 0
            B, B_back = self._zero_drift(M, points.x.dtype), None  # two buffers: each is donated
            B1 = self._zero_drift(M, points.x.dtype) if initial.w1_key is not None else None
            B1_back = None
        else:
            scale = self._scale(initial)
            reused = not self.coupling.decoupled
            two = initial.W1 is not None
            B = scale * initial.W
            # a draw without W̃ (mode A's, or a reused network's) has W̃ = W
            W_back = initial.W if initial.W_back is None else initial.W_back
            W1_back = initial.W1 if initial.W1_back is None else initial.W1_back
            B_back = None if reused else scale * W_back
            B1 = initial.W1 / M**0.5 if two else None  # type: ignore[operator]
            B1_back = W1_back / M**0.5 if two and not reused else None  # type: ignore[operator]
        zeros = jnp.zeros((points.num_points, points.out_dim), points.x.dtype)
        state = ParticleState(
            B=B,
            B_back=B_back,
            B1=B1,
            B1_back=B1_back,
            A_in=jnp.zeros((M, points.in_dim), points.x.dtype),
            v=initial.v,
            f_ntk=zeros,
            F0=zeros,
            H0=jnp.zeros((self.num_layer_steps + 1, M, points.num_points), points.x.dtype),
        )
        H, _, _ = self._forward(initial, state, points)
        F0 = _mm(self.activation(H[-1]).T, initial.v)
        return eqx.tree_at(lambda s: (s.F0, s.H0), state, (F0, H))

    def step(self, initial: Particles | NoiseKeys, state: ParticleState, points, idx, lr, alive):
        p, phi = self.param, self.activation
        M, D = initial.num_particles, points.in_dim
        weights = p.ntk_weights(self.num_layer_steps, self.block)
        eg = lr * p.gamma0
        sw = self._sweep(initial, state, points)
        f = self._predict(state, sw)
        c = nn.error_signal(self.loss, f, points.y, idx)  # (Pts, C)
        value = nn.batch_loss(self.loss, f, points.y, idx)
        phiK = phi(sw.H[-1])
        dv = _mm(phiK, c)  # (M, C)
        # H and G are finite (solve_depth's result), so every update is unless it overflows:
        # checking the small arrays keeps the step free of extra passes over the K·M² matrices
        ok = jnp.isfinite(value) & (sw.result == RESULTS.successful._value)
        ok = ok & jnp.all(jnp.isfinite(dv))
        keep = alive & ok
        zero = jnp.zeros((), dv.dtype)
        c_keep = jnp.where(keep, c, zero)  # a dead member's updates are exactly zero
        pairs = self._pairs(sw)
        # (left·c) over the batch, per trained block matrix: shared by its update and by P1
        lcs = {
            name: jnp.einsum("kcmn,nc->kmn", left[..., idx], c_keep[idx], precision=HIGHEST)
            for name, (left, _) in pairs.items()
        }
        gc0 = jnp.einsum("cmn,nc->mn", sw.G[0][..., idx], c_keep[idx], precision=HIGHEST)
        dA_in = _mm(gc0, points.x[idx]) / D

        def accumulate(B, name):  # B + (left·c) rightᵀ: one batched matmul-accumulate per block
            if B is None:
                return None
            lc = lcs[name] * (weights[name] * eg / M)
            right = pairs[name][1][..., idx]
            return B.append(lc, right) if isinstance(B, DriftHistory) else _accumulate(B, lc, right)

        def theta_c():  # Θ c in Gram form over the batch (never forming Θ or an M×M product)
            return self._theta_c(sw, pairs, lcs, gc0, dv, points, idx, weights)

        f_ntk = jnp.where(keep, self.readout.advance(state.f_ntk, lr, theta_c), state.f_ntk)
        branch, first = self.block.branch, self.block.first_layer
        new = eqx.tree_at(
            lambda s: (s.B, s.B_back, s.B1, s.B1_back, s.A_in, s.v, s.f_ntk),
            state,
            (
                accumulate(state.B, branch),
                accumulate(state.B_back, branch),
                accumulate(state.B1, first),
                accumulate(state.B1_back, first),
                state.A_in + jnp.where(keep, lr * dA_in, zero),  # A_in carries η0
                state.v + jnp.where(keep, weights["v"] * eg * dv, zero),
                f_ntk,
            ),
            is_leaf=lambda x: x is None,
        )
        return new, ok, value

    def observe(
        self, initial: Particles | NoiseKeys, state: ParticleState, points: Points, saveat: SaveAt
    ):
        M, K = initial.num_particles, self.num_layer_steps
        phi = self.activation
        sw = self._sweep(initial, state, points)
        scale = self._scale(initial)
        out = {
            "f": self._predict(state, sw),
            "h_rms": jnp.sqrt(jnp.mean(sw.H**2, axis=(1, 2))),
            "h_movement": jnp.sqrt(jnp.mean((sw.H - state.H0) ** 2, axis=(1, 2))),
        }
        # each block's own update (B(t) − B(0)) φ: Θ(1/L) under depth-muP; for two-layer blocks
        # the branch acts on φ(z) and W1's own feature update δz^own = (B1(t) − B1(0)) φ(h)
        branch_in = phi(sw.H[:-1]) if sw.Z is None else phi(sw.Z)
        lean = isinstance(initial, NoiseKeys)  # then B, B1 are the drifts B(t) − B(0) themselves
        # B_k(0) = scale W_k is recomputed exactly as the initial state did, so the difference is
        # exactly zero at t = 0 (one extra pass over the K·M² matrices, at observation time only)
        moved = state.B if lean else state.B - scale * initial.W  # type: ignore[operator]
        out["block_movement"] = _own_movement(moved, branch_in)
        if sw.Z is not None:
            moved1 = state.B1 if lean else state.B1 - initial.W1 / M**0.5  # type: ignore[operator]
            out["dz_own"] = _own_movement(moved1, phi(sw.H[:-1]))
        if saveat.ntk:
            # the kernel by which the reported f moves: Θ̃ (true g rows, mode-B g̃ columns) for
            # mode B read out by P2 (the decoupled network); the fields' own kernel otherwise
            decoupled = self.coupling.decoupled
            left = sw
            if decoupled and self.readout.true_sensitivity:
                left = self._sweep(initial, state, points, true_sensitivity=True)
            out["ntk"] = self._ntk(sw, left, points)
        if saveat.kernels:
            sel = jnp.asarray(saveat.layer_indices(K))
            H, G = sw.H[sel], sw.G[sel]
            out["h_kernel"] = jnp.einsum("rmp,rmq->rpq", H, H, precision=HIGHEST) / M
            out["g_kernel"] = jnp.einsum("rcmp,rcmq->rpq", G, G, precision=HIGHEST) / (
                M * G.shape[1]
            )
        return out

    # -- memory and cost ---------------------------------------------------------------------
    def estimate_memory(self, points: Points, members: int) -> int:
        """Estimated peak bytes of ``members`` particle systems (arrays held at once).

        Per system and block matrix the ``K M²`` buffers are, stored (`store_noise`): the initial
        ``W`` (kept for the observables), ``W̃`` (mode B), the effective matrices ``B`` and, in mode
        B, ``B̃`` (donated, so updated in place); lean: the drift ``B − b W/sqrt(M)`` alone
        (donated). The update adds its rank-|B_t| product one layer step at a time (one ``M²``
        transient, `_accumulate`); the lean sweep regenerates a few ``M²`` matrices per layer
        step. Both add two stored sweeps (``(K+1) M Pts (1 + C)`` each, plus ``φ`` and ``g·c``).
        """
        return estimate_memory(
            self.num_particles,
            self.num_layer_steps,
            points.num_points,
            points.out_dim,
            points.in_dim,
            members,
            itemsize=points.x.dtype.itemsize,
            decoupled=self.coupling.decoupled,
            blocks=len(self.block.matrices),
            store_noise=self.store_noise,
            drift_rank=self.drift_rank,
        )

    def step_flops(self, points: Points, batch: int) -> float:
        return step_flops(
            self.num_particles,
            self.num_layer_steps,
            points.num_points,
            batch,
            points.out_dim,
            decoupled=self.coupling.decoupled,
            blocks=len(self.block.matrices),
            drift_rank=self.drift_rank,
        )

    # -- pieces ------------------------------------------------------------------------------
    def _zero_drift(self, M: int, dtype) -> Float[Array, "K M M"] | DriftHistory:
        """The lean form's drift at ``t = 0``: the ``M × M`` accumulators, or an empty history."""
        if self.drift_rank:
            return DriftHistory.zeros(self.num_layer_steps, M, self.drift_rank, dtype)
        return jnp.zeros((self.num_layer_steps, M, M), dtype)

    def _scale(self, initial) -> Float[Array, ""]:
        """``b/sqrt(M)``: ``B_k(0) = b W_k/sqrt(M)``."""
        return self.param.branch_multiplier(self.num_layer_steps) / initial.num_particles**0.5

    def _forward(self, initial: Particles | NoiseKeys, state: ParticleState, points: Points):
        """``(H, Z, result)`` of the forward sweep (``Z``: two-layer ``z_k``, else ``None``)."""
        p = self.param
        m_U = p.sgd_multipliers(self.num_layer_steps, self.block)["U"]
        x = points.x
        h0 = (p.sigma_in / points.in_dim**0.5) * _mm(initial.U, x.T)
        h0 = h0 + (m_U * p.sigma_in**2 * p.gamma0) * _mm(state.A_in, x.T)
        if isinstance(initial, NoiseKeys):
            fwd = lean_forward_sweep(
                *(self.activation, self.solver, h0, initial, self._scale(initial)),
                *(_control(state.B), _control(state.B1)),
            )
        else:
            B, B1 = state.B, state.B1  # the stored form: matrices, never a history
            fwd = forward_sweep(self.activation, self.solver, h0, B, B1)  # type: ignore[arg-type]
        if state.B1 is None:
            return fwd.ys, None, fwd.result
        H, Z = fwd.ys
        return H, Z[1:], fwd.result  # z_k is stored in the forward state at τ_{k+1}

    def _sweep(self, initial, state: ParticleState, points, *, true_sensitivity: bool = False):
        """Forward then backward over the K layer steps for every tracked point.

        The backward pass uses ``B̃`` (the mode's own fields) or, with ``true_sensitivity``, the
        forward matrices ``B``: then ``g = γ0 M ∂f/∂h`` of the P2 readout, the row fields of ``Θ̃``.
        """
        H, Z, fwd_result = self._forward(initial, state, points)
        if isinstance(initial, NoiseKeys):  # lean: W̃_k (mode B's own fields) or W_k regenerated
            G, Gz, bwd_result = lean_backward_sweep(
                *(self.activation, self.solver, H, Z, state.v, initial, self._scale(initial)),
                *(_control(state.B), _control(state.B1)),
                back=self.coupling.decoupled and not true_sensitivity,
            )
        else:
            B_back, B1_back = state.B_back, state.B1_back
            if true_sensitivity or B_back is None:  # mode A, or the P2 readout's true g
                B_back, B1_back = state.B, state.B1
            G, Gz, bwd_result = backward_sweep(
                *(self.activation, self.solver, H, Z, state.v),
                *(B_back, B1_back),  # type: ignore[arg-type]  # stored: matrices
            )
        return Sweep(H=H, G=G, Z=Z, Gz=Gz, result=jnp.maximum(fwd_result._value, bwd_result._value))

    def _predict(self, state: ParticleState, sw: Sweep):
        M = sw.H.shape[1]
        features = (_mm(self.activation(sw.H[-1]).T, state.v) - state.F0) / (self.param.gamma0 * M)
        return self.readout.predict(features, state.f_ntk)

    def _pairs(self, sw: Sweep) -> dict[str, tuple[Array, Array]]:
        """Per trained block matrix: (left fields ``(K, C, M, Pts)``, right features
        ``(K, M, Pts)``): its update is ``Σ_ν (left_ν·c_ν) right_νᵀ / M`` (`nfd.nn.block_pairs`)."""
        phi = self.activation
        phi_z = None if sw.Z is None else phi(sw.Z)
        return nn.block_pairs(self.block, sw.G, phi(sw.H), sw.Gz, phi_z)

    def _theta_c(self, sw, pairs, lcs, gc0, dv, points, idx, weights):
        """``Σ_ν Θ_μν c_ν`` (§3.4 step 5) in Gram form over the batch:
        ``m_U σ² Σ_b K^x_μb (g_0μ·gc_0b)/M + Σ_blocks w Σ_k Σ_b (left_kμ·lc_kb)(right_kμ·right_kb)/M²
        + m_v Φ_K c``."""
        M = sw.H.shape[1]
        x = points.x
        kxb = _mm(x, x[idx].T) / points.in_dim  # (Pts, B)
        u_term = jnp.einsum("cmp,mb,pb->pc", sw.G[0], gc0, kxb, precision=HIGHEST)
        df = weights["U"] * u_term / M
        for name, (left, right) in pairs.items():
            gg = jnp.einsum("kcmp,kmb->kcpb", left, lcs[name], precision=HIGHEST)
            ff = jnp.einsum("kmp,kmb->kpb", right, right[..., idx], precision=HIGHEST)
            df = df + weights[name] * jnp.einsum("kcpb,kpb->pc", gg, ff, precision=HIGHEST) / M**2
        return df + weights["v"] * _mm(self.activation(sw.H[-1]).T, dv) / M

    def _ntk(self, sw: Sweep, left: Sweep, points: Points):
        """The NTK (`nfd.nn.ntk`) from the particle kernels (``left`` fields on the rows)."""
        M, C = sw.H.shape[1], sw.G.shape[1]
        phi = self.activation

        def gram(a, b):
            return jnp.einsum("kmp,kmq->kpq", a, b, precision=HIGHEST) / M

        def class_gram(a, b):
            return jnp.einsum("kcmp,kcmq->kpq", a, b, precision=HIGHEST) / (M * C)

        phis = phi(sw.H)
        kernels = {"kx": points.kx, "G": class_gram(left.G, sw.G), "Phi": gram(phis, phis)}
        if sw.Z is not None:
            phiz = phi(sw.Z)
            kernels |= {"Gz": class_gram(left.Gz, sw.Gz), "Phiz": gram(phiz, phiz)}
        weights = self.param.ntk_weights(self.num_layer_steps, self.block)
        return nn.ntk(weights, self.block, **kernels)


def _accumulate(B, lc, right):
    """``B_k + lc_k right_kᵀ`` for every layer step ``k``, one layer at a time in place: the
    transient rank-|B_t| product is one ``M × M`` matrix, not ``K M²`` (``B`` is donated)."""

    def layer(k, B):
        return B.at[k].add(jnp.matmul(lc[k], right[k].T, precision=HIGHEST))

    return jax.lax.fori_loop(0, B.shape[0], layer, B)


def _control(drift):
    """The drift as the sweeps scan over it: the accumulators, or a history's factors."""
    return drift.control() if isinstance(drift, DriftHistory) else drift


def _own_movement(dB, features):
    """RMS over particles and points of ``(B_k(t) − B_k(0)) features_k`` per layer step ``(K,)``."""
    if isinstance(dB, DriftHistory):
        moved = dB.times(features)
    else:
        moved = jnp.einsum("kij,kjn->kin", dB, features, precision=HIGHEST)
    return jnp.sqrt(jnp.mean(moved**2, axis=(1, 2)))


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
    store_noise: bool = True,
    drift_rank: int = 0,
) -> int:
    """Estimated peak bytes of a particle simulation (see `MatrixParticles.estimate_memory`).

    The lean form (``store_noise=False``) holds ``(1 + 2·[decoupled]) K M²`` fewer numbers per
    block matrix and repetition (less a few ``M²``); its history form (``drift_rank = r``) holds
    ``2 K M r`` (and a transient copy of ``K M r``) instead of the drift's ``K M²``. Checked
    against XLA's buffer assignment of a compiled step (`tests/limit/test_particles_lean.py`).
    """
    M, K, Pts, C = num_particles, num_layer_steps, num_points, out_dim
    modes = 1 + int(decoupled)
    # per block matrix: W (W̃) and B (B̃) stored, or the drift alone, with the one-layer update
    # product; or the history's two factors and one copy (XLA's buffer assignment copies a factor
    # that the sweeps have read before the update writes its columns)
    if drift_rank:
        per_block = 3 * K * M * drift_rank
    else:
        per_block = (2 * modes if store_noise else 1) * K * M * M + M * M
    # lean: the layer step's regenerated W (W̃) and the B (B̃) formed from it
    # (the history form applies its W without forming B: XLA fuses the scaling into the product)
    regenerated = 0 if store_noise else (1 if drift_rank else 2) * modes * M * M
    mats = blocks * per_block + regenerated
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
    drift_rank: int = 0,
) -> float:
    """Floating-point operations of one training step of one repetition (the M×M products).

    Per block matrix and layer step: the forward product on every tracked point, the backward
    transpose product per output, and the rank-``batch`` update of ``B`` (and ``B̃`` in mode B);
    in the history form (``drift_rank = r``) no update, and the products with the drift's two
    ``M × r`` factors; each multiply-add counts 2.
    """
    M, K, r = num_particles, num_layer_steps, drift_rank
    fields = num_points + out_dim * num_points
    if r:
        return 2.0 * blocks * K * (M * M + 2 * M * r) * fields
    return 2.0 * blocks * K * M * M * (fields + (1 + int(decoupled)) * batch)
