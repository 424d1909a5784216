"""The particle method, Cholesky realisation, as a dynamics (docs/math §4.2): mode B only.

``M`` particles, as in `MatrixParticles` (§4.1), but with **no** ``M × M`` matrix. In mode B
(`DecoupledWeights`, NFD/GIA) the dynamics see the forward matrix ``W_k`` only through the noise
``ξ_k = W_k φ(h_k)/sqrt(M)`` and the backward matrix ``W̃_k`` only through ``ρ_k = W̃_kᵀ g_{k+1}/sqrt(M)``.
Conditional on everything revealed so far, the rows of ``W_k`` are i.i.d. ``N(0, I)`` restricted by the
linear observations ``W_k φ(H_old) = sqrt(M) ξ_old``, so the particle rows of ``ξ_k`` over all
evaluated (point, step) pairs are i.i.d. ``N(0, Φ̂_k)`` with the *empirical* kernel
``Φ̂_k = φ(H)ᵀφ(H)/M`` (sample-conditional), revealed causally. Per layer step the state keeps

* the history ``φ(h_k)`` of every evaluated pair, ``(M, N)``, ``N = (T+1)·Pts`` (every tracked point
  at every step ``t = 0..T``; ``T`` is the static `num_steps`, the run's length),
* a lower-triangular ``L^ξ_k`` with ``L Lᵀ = Φ̂_k`` on the filled pairs, ``(N, N)``, and its
  (pseudo-)inverse ``L⁻¹`` (grown by the block-inverse rule, so that the solve below is a product),

and the initial draw keeps the whitened ``Z^ξ_k ~ N(0, 1)`` ``(M, N)`` of every slot. For the
``b = Pts`` new pairs of step ``t`` the sweep solves ``L_old L_{new,old}ᵀ = Φ̂_k(old, new)``, factors
the Schur complement ``S = Φ̂_k(new, new) − L_{new,old} L_{new,old}ᵀ`` (negative eigenvalues clipped
to 0, their mass reported) and sets

    ξ_k(t) = Z_old L_{new,old}ᵀ + Z_new L_{new,new}ᵀ,

which is exactly the conditional law ``ξ_new | ξ_old ~ N(ξ_old Φ̂_old⁻¹ Φ̂(old,new), S)`` of the
random-matrix realisation (`nfd.limit._cholesky_factor`). ``ρ_k`` is built alike from ``g_{k+1}`` over
(point, step, output) pairs (``C × C`` blocks, ``N·C`` columns). Hence, given the same ``M``, this
realisation has **the same law** as `MatrixParticles` with `DecoupledWeights` (not only the same
``M → ∞`` limit); the tests check that statistically. Histories are preallocated at their final size
with zero columns for not-yet-filled pairs, so one compiled step serves every ``t``.

The noise of step ``t`` is a deterministic function of the state and the fixed ``Z``: `observe`
(called at saved steps, before the step) and `step` draw the *same* noise from the same slots, and
only `step` writes it. The observation at ``t = T`` (no step follows) uses the last slots.

Zero pivots (exactly dependent pairs: a duplicated input, ``g_K = v`` at every point of a linear
net, or fields that no longer leave the span of their past, as in the lazy limit where step ``t``'s
conditional variance is ``O((η0γ0)^{2t})``) are handled by a semi-definite factor whose zero-pivot
columns are zero, with ``L⁻¹`` zero in those rows and columns: those directions carry no new
randomness and everything is exact on the independent pairs (a pseudo-inverse). The clipped and
dropped mass and the zero pivots are observables (``clipped``, ``dropped``, ``zero_pivots``, each
``(2,)`` for ``ξ, ρ``, cumulative up to the observed step); `cholesky_info` reads them back.

**Drift.** The ΔW drift of §3.4 (mode B: no R, D terms) is a *history sum* over the stored columns,
``A_k φ(h) = Σ_pairs (g_{k+1}·c) Φ̂_k(pair, ·)`` and ``A_kᵀ g = (1/M) Σ_pairs φ_pair ((g_{k+1}·c)_pairᵀ g)``,
reusing the products the noise needs (``η0 (g·c)`` is stored as one more ``(M, N)`` history: like
``A_in``, it carries ``η0``). Each step costs what step ``T`` would, ``O(K (M N + N²) Pts C²)``;
memory ``O(K (M N (3 + 2C) + 2 N² (1 + C²)))`` per member, no ``M²``. It pays off when ``N ≪ M``;
``N ≤ M`` is required.

**Readouts and the NTK.** P1 (`NTKReadout`) advances ``f(t+1) = f(t) + η0 Θ(t) c(t)`` with the fields'
own kernel; P2 (`FeatureReadout`) reads ``(vᵀφ(h_K) − F0)/(γ0 M)``. The saved ``ntk`` follows
`MatrixParticles`: for P2 it is ``Θ̃`` with *true-sensitivity* rows ``ĝ = γ0 M ∂f/∂h`` (backprop
through ``W_k``, §1.6). ``W_k`` is never formed; its conditional law given the revealed history
is known (`conditional_transpose`), and ``W'`` is drawn at each observation from the initial draw's
key folded with the step. The true sensitivity never feeds back into the dynamics, so at each saved
step its law (jointly with the trajectory so far) is that of the matrix realisation; only
correlations of ``ntk`` *between* saved steps differ (``W'`` is redrawn at every observation).
"""

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .. import nn
from ..dynamics import AbstractDynamics, Points, SaveAt
from ..nn import AbstractActivation, AbstractLoss, AbstractReadout, FeatureReadout
from ..param import AbstractBackwardWeights, AbstractBlock, AbstractParameterization, OneLayer
from ._cholesky_factor import (
    Extension,
    NoiseHistory,
    cholesky_info,
    conditional_transpose,
    extend,
    flat,
    mm,
    pivot_rtol,
    unflat,
)
from ._particles import HIGHEST


class CholeskyDraw(eqx.Module):
    """The random initial draw of one Cholesky particle system.

    Attributes:
        U: input weights ``(M, D)``, standard normal.
        v: readout ``v(0)`` ``(M, C)``, ``N(0, σ_out²)``.
        z_xi, z_rho: the whitened ``N(0, 1)`` noises of every slot, ``(K, M, N)`` and
            ``(K, M, N·C)``; a slot's draw enters once the slot is revealed, and not at zero pivots.
        key: the key of the true-sensitivity draws of ``Θ̃`` (folded with the step).
    """

    U: Float[Array, "M D"]
    v: Float[Array, "M C"]
    z_xi: Float[Array, "K M N"]
    z_rho: Float[Array, "K M NC"]
    key: PRNGKeyArray


class CholeskyState(eqx.Module):
    """The evolving state of one Cholesky particle system.

    Pairs: ``N = (T+1)·Pts`` (point, step) slots per layer step for ``ξ``; ``N·C`` (point, step,
    output) slots for ``ρ``, ordered ``(step, output, point)``. Step ``count`` fills the slots
    ``[count·Pts, (count+1)·Pts)`` (``·C`` for ``ρ``).

    Attributes:
        v: readout ``v(t)`` ``(M, C)``.
        A_in: input accumulator ``(M, D)`` (as §4.1; it carries ``η0``).
        f_ntk: P1 predictions ``(Pts, C)``.
        F0: ``φ(h_K(0))ᵀ v(0)`` at every point (P2's control variate), set by step 0.
        H0: the ``t = 0`` features ``(K+1, M, Pts)`` (origin of ``h_movement``), set by step 0.
        gc: history ``η0 g_{k+1}·c`` ``(K, M, N)`` (zero off the batch): the drift's left factor.
        xi: history of ``ξ_k`` (fields ``φ(h_k)``).
        rho: history of ``ρ_k`` (fields ``g_{k+1}``).
        count: completed steps (filled pair blocks).
        clipped: summed clipped negative Schur eigenvalues ``(2,)`` (ξ, ρ).
        dropped: summed dropped round-off pivots ``(2,)`` (ξ, ρ).
    """

    v: Float[Array, "M C"]
    A_in: Float[Array, "M D"]
    f_ntk: Float[Array, "Pts C"]
    F0: Float[Array, "Pts C"]
    H0: Float[Array, "Kp1 M Pts"]
    gc: Float[Array, "K M N"]
    xi: NoiseHistory
    rho: NoiseHistory
    count: Int[Array, ""]
    clipped: Float[Array, "2"]
    dropped: Float[Array, "2"]


class _Sweep(eqx.Module):
    """One forward-backward sweep with this step's noise (not yet written to the histories)."""

    H: Float[Array, "Kp1 M Pts"]
    G: Float[Array, "Kp1 C M Pts"]
    moved: Float[Array, "K M Pts"]  # the drift m_W b² η0γ0 A_k φ(h_k) of every layer step
    xi: Extension
    rho: Extension
    F0: Float[Array, "Pts C"]  # the control variate and the origin of h_movement in effect
    H0: Float[Array, "Kp1 M Pts"]

    def clipped(self) -> Float[Array, "2"]:
        return jnp.stack([jnp.sum(self.xi.clipped), jnp.sum(self.rho.clipped)])

    def dropped(self) -> Float[Array, "2"]:
        return jnp.stack([jnp.sum(self.xi.dropped), jnp.sum(self.rho.dropped)])


def _normal(key, shape, dtype):
    """``jr.normal`` drawn flat and reshaped: the same law, but XLA:CPU compiles the flat threefry
    several times faster than a multi-axis one."""
    return jr.normal(key, (int(np.prod(shape)),), dtype).reshape(shape)


class CholeskyParticles(AbstractDynamics):
    """``M`` particles, ``K`` layer steps, noise from Cholesky extensions of the revealed
    histories (§4.2): mode B, one-layer blocks, P1 and P2.

    Attributes:
        num_particles, num_layer_steps: ``M`` (`limit.particles`), ``K`` (`limit.layer_steps`).
        num_steps: ``T`` (`optim.steps`), the run's length: the histories hold ``(T+1)·Pts`` pairs
            (``(T+1)·(P+Q) <= M`` is required); a longer run is an error.
        param, activation, loss: as the finite network's.
        coupling: must be `DecoupledWeights` (mode B); mode A has no Cholesky realisation.
        readout: `FeatureReadout` (P2) or `NTKReadout` (P1).
        block: must be `OneLayer`.
    """

    num_particles: int = eqx.field(static=True)
    num_layer_steps: int = eqx.field(static=True)
    num_steps: int = eqx.field(static=True)
    param: AbstractParameterization
    activation: AbstractActivation
    loss: AbstractLoss
    coupling: AbstractBackwardWeights
    readout: AbstractReadout = FeatureReadout()
    block: AbstractBlock = OneLayer()

    def __check_init__(self):
        if not self.coupling.decoupled:
            raise ValueError(
                "[limit] noise = 'cholesky' realises mode B only (coupling = 'decoupled'); got "
                f"coupling = {self.coupling.name!r}. Use limit.noise = 'matrix' (or method = "
                "'kernel') for mode A."
            )
        if self.block.two_layer:
            raise ValueError(
                "[limit] noise = 'cholesky' realises one-layer blocks only (model.block = "
                f"'one_layer'); got model.block = {self.block.name!r}. Use limit.noise = 'matrix'."
            )
        for name, value in (
            ("particles", self.num_particles),
            ("layer_steps", self.num_layer_steps),
        ):
            if value < 1:
                raise ValueError(f"[limit] {name} must be >= 1, got {value}.")
        if self.num_steps < 0:
            raise ValueError(f"[optim] steps must be >= 0, got {self.num_steps}.")

    def num_pairs(self, points: Points) -> int:
        """``N = (T+1)·Pts``, the (point, step) pairs per layer step; refuses ``N > M``."""
        T, Pts, M = self.num_steps, points.num_points, self.num_particles
        N = (T + 1) * Pts
        if N > M:
            raise ValueError(
                f"[limit] noise = 'cholesky' needs (T+1)·(P+Q) <= particles, got ({T}+1)·{Pts} = "
                f"{N} > {M}: increase limit.particles or use limit.noise = 'matrix'."
            )
        return N

    # -- the interface ----------------------------------------------------------------------
    def draw(self, points: Points, *, key: PRNGKeyArray) -> CholeskyDraw:
        M, K, D, C = self.num_particles, self.num_layer_steps, points.in_dim, points.out_dim
        N = self.num_pairs(points)
        normal_key, ntk_key = jr.split(key)
        shapes = ((M, D), (M, C), (K, M, N), (K, M, N * C))
        sizes = [int(np.prod(s)) for s in shapes]
        flat_draw = jr.normal(normal_key, (sum(sizes),), points.x.dtype)  # one threefry
        U, v0, z_xi, z_rho = (
            a.reshape(s)
            for a, s in zip(jnp.split(flat_draw, np.cumsum(sizes)[:-1]), shapes, strict=True)
        )
        v = self.param.sigma_out * v0
        return CholeskyDraw(U=U, v=v, z_xi=z_xi, z_rho=z_rho, key=ntk_key)

    def start(self, initial: CholeskyDraw, points: Points) -> CholeskyState:
        M, K, C = self.num_particles, self.num_layer_steps, points.out_dim
        N, Pts, dtype = self.num_pairs(points), points.num_points, points.x.dtype
        zeros = jnp.zeros((Pts, C), dtype)
        return CholeskyState(
            v=initial.v,
            A_in=jnp.zeros((M, points.in_dim), dtype),
            f_ntk=zeros,
            F0=zeros,
            H0=jnp.zeros((K + 1, M, Pts), dtype),
            gc=jnp.zeros((K, M, N), dtype),
            xi=NoiseHistory.empty(K, M, N, dtype),
            rho=NoiseHistory.empty(K, M, N * C, dtype),
            count=jnp.zeros((), jnp.int32),
            clipped=jnp.zeros((2,), dtype),
            dropped=jnp.zeros((2,), dtype),
        )

    def step(self, initial: CholeskyDraw, state: CholeskyState, points, idx, lr, alive):
        D, C, Pts = points.in_dim, points.out_dim, points.num_points
        p, phi = self.param, self.activation
        weights = p.ntk_weights(self.num_layer_steps, self.block)
        sw = self._sweep(initial, state, points)
        f = self._predict(state, sw)
        c = nn.error_signal(self.loss, f, points.y, idx)  # (Pts, C)
        value = nn.batch_loss(self.loss, f, points.y, idx)
        gc = jnp.einsum("kcmn,nc->kmn", sw.G, c, precision=HIGHEST)  # g_k·c, (K+1, M, Pts)
        f_ntk = self.readout.advance(state.f_ntk, lr, lambda: self._theta_c(sw, gc, c, points))
        v = state.v + weights["v"] * lr * p.gamma0 * mm(phi(sw.H[-1]), c)
        ok = jnp.isfinite(value) & jnp.all(jnp.isfinite(sw.H)) & jnp.all(jnp.isfinite(sw.G))
        ok = ok & jnp.all(jnp.isfinite(v)) & jnp.all(jnp.isfinite(f_ntk))
        keep = alive & ok
        n0 = state.count * Pts

        def frozen(new, old):
            return jnp.where(keep, new, old)

        new = CholeskyState(
            v=frozen(v, state.v),
            A_in=frozen(state.A_in + lr * mm(gc[0], points.x) / D, state.A_in),
            f_ntk=frozen(f_ntk, state.f_ntk),
            F0=frozen(sw.F0, state.F0),
            H0=frozen(sw.H0, state.H0),
            gc=lax.dynamic_update_slice_in_dim(state.gc, jnp.where(keep, lr * gc[1:], 0), n0, 2),
            xi=state.xi.write(phi(sw.H[:-1]), sw.xi, n0, keep),
            rho=state.rho.write(jax.vmap(flat)(sw.G[1:]), sw.rho, n0 * C, keep),
            count=state.count + keep.astype(state.count.dtype),
            clipped=frozen(state.clipped + sw.clipped(), state.clipped),
            dropped=frozen(state.dropped + sw.dropped(), state.dropped),
        )
        return new, ok, value

    def observe(self, initial: CholeskyDraw, state: CholeskyState, points: Points, saveat: SaveAt):
        M, C = self.num_particles, points.out_dim
        sw = self._sweep(initial, state, points)
        revealed = self._reveal(state, sw, points)
        filled = revealed.count * points.num_points
        out = {
            "f": self._predict(state, sw),
            "h_rms": jnp.sqrt(jnp.mean(sw.H**2, axis=(1, 2))),
            "h_movement": jnp.sqrt(jnp.mean((sw.H - sw.H0) ** 2, axis=(1, 2))),
            "block_movement": jnp.sqrt(jnp.mean(sw.moved**2, axis=(1, 2))),
            "clipped": revealed.clipped,
            "dropped": revealed.dropped,
            "zero_pivots": jnp.stack(
                [revealed.xi.zero_pivots(filled), revealed.rho.zero_pivots(filled * C)]
            ),
        }
        if saveat.ntk:
            # Θ̃ (true-sensitivity rows, mode-B columns) for P2, whose f moves with the true
            # sensitivity; W_k is conditioned on every revealed ξ_k, this step's included
            left = sw.G
            if self.readout.true_sensitivity:
                left = self._true_sensitivity(initial, state, revealed.xi, sw.H, points)
            out["ntk"] = self._ntk(sw.H, left, sw.G, points)
        if saveat.kernels:
            sel = jnp.asarray(saveat.layer_indices(self.num_layer_steps))
            H, G = sw.H[sel], sw.G[sel]
            out["h_kernel"] = jnp.einsum("rmp,rmq->rpq", H, H, precision=HIGHEST) / M
            out["g_kernel"] = jnp.einsum("rcmp,rcmq->rpq", G, G, precision=HIGHEST) / (M * C)
        return out

    def reveal(
        self, initial: CholeskyDraw, state: CholeskyState, points: Points
    ) -> tuple[CholeskyState, Float[Array, "K M Pts"], Float[Array, "K M CPts"]]:
        """The noise histories with the current step's pairs revealed (what the next `step`
        writes: ``count`` advanced, the diagnostics included) and that step's noises ``ξ``
        ``(K, M, Pts)`` and ``ρ`` ``(K, M, C·Pts)`` (columns ``c·Pts + μ``). Side-effect free."""
        sw = self._sweep(initial, state, points)
        return self._reveal(state, sw, points), sw.xi.noise, sw.rho.noise

    # -- memory and diagnostics --------------------------------------------------------------
    def estimate_memory(self, points: Points, members: int) -> int:
        """Estimated peak bytes of ``members`` systems: the whitened draws ``Z``, the state's
        histories and factors (with the observation's revealed copy) and the stored sweeps."""
        M, K, C, Pts = self.num_particles, self.num_layer_steps, points.out_dim, points.num_points
        N = (self.num_steps + 1) * Pts
        histories = K * M * N * (2 + C) + 2 * K * N * N * (1 + C * C)
        sweeps = 4 * (K + 1) * M * Pts * (1 + C)
        per = K * M * N * (1 + C) + 2 * histories + sweeps + M * (points.in_dim + 2 * C)
        return int(members * per * points.x.dtype.itemsize)

    def describe(self, traj) -> str:
        """One line: the pairs, the largest clipped mass and the zero pivots."""
        info = cholesky_info(traj)
        clipped = max(float(jnp.max(info.clipped_xi)), float(jnp.max(info.clipped_rho)))
        pivots = np.asarray(info.num_zero_pivots)
        return (
            f"cholesky: {info.num_pairs} pairs per layer step; clipped Schur mass <= "
            f"{clipped:.2g}; zero pivots (xi, rho) <= ({pivots[:, 0].max()}, {pivots[:, 1].max()})"
        )

    # -- pieces ------------------------------------------------------------------------------
    def _drift(self) -> tuple[Float[Array, ""], Float[Array, ""]]:
        """The branch multiplier ``b`` and the drift weight ``m_W b² γ0`` (the histories carry η0)."""
        K, p = self.num_layer_steps, self.param
        weights = p.ntk_weights(K, self.block)
        return p.branch_multiplier(K), weights[self.block.branch] * p.gamma0

    def _sweep(self, initial: CholeskyDraw, state: CholeskyState, points: Points) -> _Sweep:
        """Forward then backward over the K layer steps for every tracked point, with the noise of
        the slots of step ``count`` (deterministic given the state: `observe` and `step` agree)."""
        p, phi = self.param, self.activation
        C, Pts, x = points.out_dim, points.num_points, points.x
        count = eqx.error_if(
            state.count,
            state.count > self.num_steps,
            "CholeskyParticles keeps noise histories for num_steps + 1 steps, and the run is "
            "longer: set num_steps to the schedule's length (optim.steps).",
        )
        n0 = count * Pts
        rtol = pivot_rtol(x.dtype)
        b, drift = self._drift()
        w_U = p.ntk_weights(self.num_layer_steps, self.block)["U"]
        h0 = (p.sigma_in / points.in_dim**0.5) * mm(initial.U, x.T)
        h0 = h0 + (w_U * p.gamma0) * mm(state.A_in, x.T)

        def forward(h, xs):
            hist, L_inv, z, gc = xs
            ext = extend(L_inv, hist, z, phi(h), n0, rtol)
            moved = drift * mm(gc, ext.cross)  # m_W b² η0γ0 A_k φ(h_k): the sum over s < t
            return h + b * ext.noise + moved, (h, moved, ext)

        xs = (state.xi.hist, state.xi.L_inv, initial.z_xi, state.gc)
        hK, (hs, moved, xi) = lax.scan(forward, h0, xs)
        H = jnp.concatenate([hs, hK[None]])  # (K+1, M, Pts)

        def rho_noise(g, phi_hist, xs):
            hist, L_inv, z = xs
            ext = extend(L_inv, hist, z, g, n0 * C, rtol)
            return ext.noise, ext

        xs = (state.rho.hist, state.rho.L_inv, initial.z_rho)
        G, rho = self._backprop(H, state, state.xi.hist, rho_noise, xs)
        first = state.count == 0
        F0 = jnp.where(first, mm(phi(H[-1]).T, state.v), state.F0)
        return _Sweep(
            H=H, G=G, moved=moved, xi=xi, rho=rho, F0=F0, H0=jnp.where(first, H, state.H0)
        )

    def _backprop(self, H, state: CholeskyState, phi_hist, noise, xs):
        """``g_K = φ'(h_K) ⊙ v``, ``g_k = g_{k+1} + φ'(h_k) ⊙ (b ρ_k + m_W b² η0γ0 A_kᵀ g_{k+1})``.

        ``ρ_k, out_k = noise(g_{k+1}, phi_hist_k, xs_k)`` (fields flat over (output, point));
        ``A_kᵀ g = (1/M) Σ_pairs φ_pair ((η0 g·c)_pair · g)`` sums the history ``phi_hist`` (the
        ``gc`` slots of the current step are still empty). Returns ``G`` and the stacked ``out``.
        """
        phi = self.activation
        M, C = state.v.shape
        b, drift = self._drift()

        def body(g, inp):
            h_k, phi_h, gc, x = inp
            gf = flat(g)
            rho, out = noise(gf, phi_h, x)
            adrift = mm(phi_h, mm(gc.T, gf) / M)
            return g + phi.deriv(h_k)[None] * unflat(b * rho + drift * adrift, C), (g, out)

        gK = phi.deriv(H[-1])[None] * state.v.T[:, :, None]  # (C, M, Pts)
        g0, (gs, outs) = lax.scan(body, gK, (H[:-1], phi_hist, state.gc, xs), reverse=True)
        return jnp.concatenate([g0[None], gs]), outs

    def _true_sensitivity(self, initial, state, xi: NoiseHistory, H, points: Points):
        """Row fields ``ĝ_k = γ0 M ∂f/∂h_k``: backprop through ``W_k`` drawn from its conditional
        law given the revealed ``ξ_k`` (`conditional_transpose`), ``W'`` from the draw's key folded
        with the step."""
        M, K, C = self.num_particles, self.num_layer_steps, points.out_dim
        key = jr.fold_in(initial.key, state.count)
        z_fresh = _normal(key, (K, M, C * points.num_points), H.dtype)

        def noise(g, phi_hist, xs):
            L_inv, z, z_o = xs
            return conditional_transpose(g, phi_hist, z, L_inv, z_o), None

        G, _ = self._backprop(H, state, xi.hist, noise, (xi.L_inv, initial.z_xi, z_fresh))
        return G

    def _reveal(self, state: CholeskyState, sw: _Sweep, points: Points) -> CholeskyState:
        """The state's histories with the sweep's pairs written (the step's updates aside)."""
        n0, true = state.count * points.num_points, jnp.asarray(True)
        xi = state.xi.write(self.activation(sw.H[:-1]), sw.xi, n0, true)
        rho = state.rho.write(jax.vmap(flat)(sw.G[1:]), sw.rho, n0 * points.out_dim, true)
        return eqx.tree_at(
            lambda s: (s.xi, s.rho, s.count, s.clipped, s.dropped),
            state,
            (xi, rho, state.count + 1, state.clipped + sw.clipped(), state.dropped + sw.dropped()),
        )

    def _predict(self, state: CholeskyState, sw: _Sweep):
        M = self.num_particles
        features = (mm(self.activation(sw.H[-1]).T, state.v) - sw.F0) / (self.param.gamma0 * M)
        return self.readout.predict(features, state.f_ntk)

    def _phi_kernels(self, H):
        """``Φ_k = φ(h_k)ᵀφ(h_k)/M`` for k = 0..K."""
        phis = self.activation(H)
        return jnp.einsum("kmp,kmq->kpq", phis, phis, precision=HIGHEST) / self.num_particles

    def _theta_c(self, sw: _Sweep, gc, c, points: Points):
        """``Σ_ν Θ_μν c_ν`` (§3.4 step 5) by the one NTK assembly, once per output ``a`` with
        every kernel contracted with ``c`` on its column: ``G_k`` becomes ``g^a_k(μ)·(g_k·c)(ν)/M``
        and the readout's ``Φ_K ⊗ I_C`` becomes ``Φ_K(μ, ν) c^a_ν``."""
        K, C, Pts = self.num_layer_steps, points.out_dim, points.num_points
        Phi = self._phi_kernels(sw.H)
        G_c = jnp.einsum("kamp,kmq->akpq", sw.G, gc, precision=HIGHEST) / self.num_particles
        Phi_c = jnp.concatenate(
            [
                jnp.broadcast_to(Phi[None, :-1], (C, K, Pts, Pts)),
                (Phi[-1][None] * c.T[:, None, :])[:, None],
            ],
            axis=1,
        )  # (C, K+1, Pts, Pts)
        weights = self.param.ntk_weights(K, self.block)

        def per_output(G, Phi):
            return nn.ntk(weights, self.block, kx=points.kx, G=G, Phi=Phi)

        return jnp.sum(jax.vmap(per_output)(G_c, Phi_c), axis=-1).T

    def _ntk(self, H, left, right, points: Points):
        """The NTK (`nfd.nn.ntk`, class-averaged ``G``) with ``left`` fields on the rows."""
        M, C = self.num_particles, points.out_dim
        G = jnp.einsum("kcmp,kcmq->kpq", left, right, precision=HIGHEST) / (M * C)
        weights = self.param.ntk_weights(self.num_layer_steps, self.block)
        return nn.ntk(weights, self.block, kx=points.kx, G=G, Phi=self._phi_kernels(H))
