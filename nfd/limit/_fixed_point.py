"""The kernel fixed-point method as a path dynamics (docs/math §4.3, `limit.method = "kernel"`):
modes A and B, P1 and P2.

The limit of a one-layer depth-muP ResNet trained for ``T`` steps is a single-site process driven
by Gaussian processes whose covariances are the kernels ``Φ_k`` and ``G_k`` themselves; in mode A
(`exact`, `ReusedWeights`: the limit of the standard network) it also carries the response terms
``R_k``, ``D_k`` of the reused weights, which mode B (`decoupled`, NFD/GIA) sets to zero. Over the
``N = Pts (T+1)`` (step, point) pairs (flat index ``n = t Pts + μ``; ``G`` has ``C × C`` blocks,
index ``(t Pts + μ) C + a``) one member (one draw set) finds those kernels (and in mode A the
responses' whitened coefficients) as the fixed point of the map

    iterate → S samples of the single-site process → iterate.

With ``b = param.branch_multiplier(K)``, ``m = param.sgd_multipliers(K)``, ``ε = η0 γ0`` and
``κ_A = 1`` in mode A, ``0`` in mode B, one *sweep* (§3.4; `nfd.limit._fixed_point_sweep`)
draws ``u^in``, ``v(0)``, ``ξ_k ~ N(0, Φ_k)`` and ``ρ_k ~ N(0, G_{k+1})`` (independent of each other)
and, for ``t = 0..T``, runs on every sample

    h_0(t)     = u^in + m_U ε σ_in² Σ_{s<t, ν} K^x_{νμ} g_{0,ν}(s)·c_ν(s)
    h_{k+1}(t) = h_k(t) + b [ξ_k(t) + κ_A Σ_{s<t} R_k(t,s) g_{k+1}(s)]
                        + m_W b² ε Σ_{s<t, ν} Φ_k(s,t)_{νμ} g_{k+1,ν}(s)·c_ν(s)
    f(t), c(t) (readout below; c = 1[ν ∈ B_t] Δ_ν/|B_t|, zero at t = T)
    g_K(t)     = φ'(h_K(t)) v(t)
    g_k(t)     = g_{k+1}(t) + φ'(h_k(t)) ⊙ [b ρ_k(t) + κ_A b Σ_{s≤t} D_k(t,s) φ(h_k(s))
                        + m_W b² ε Σ_{s<t, ν} φ(h_{k,ν}(s)) c_ν(s)ᵀ G_{k+1}(s,t)_{ν·}]
    v(t+1)     = v(t) + m_v ε Σ_ν φ(h_{K,ν}(t)) c_ν(t)ᵀ

with ``R_k(t,s) = E[∂φ(h_k(t))/∂ρ_k(s)]`` and ``D_k(t,s) = E[∂g_{k+1}(t)/∂ξ_k(s)]`` (§3.1), and the
previous iterate in the noises, drifts and responses. The responses are whitened Stein sums
(`nfd.limit._fixed_point_response`): with ``ρ_k = L^G_k z^ρ_k`` and ``ξ_k = L^Φ_k z^ξ_k``,

    Σ_{s<t} R_k(t,s) g_{k+1}(s) = Σ_{j: steps < t} E[φ(h_k(t)) z^ρ_{k,j}] e^ρ_{k,j},  L^G_k e^ρ_k = g_{k+1}
    Σ_{s≤t} D_k(t,s) φ(h_k(s))  = Σ_{j: steps ≤ t} E[g_{k+1}(t) z^ξ_{k,j}] e^ξ_{k,j},  L^Φ_k e^ξ_k = φ(h_k)

over the columns ``j`` whose pivot satisfies ``L_jj² ≥ stein_tol · X_jj`` (``X`` the kernel). The
expectations are sample moments of the previous sweep (as the drift kernels are), so no increment
depends on the current ``h_k(t)`` or ``g_{k+1}(t)``: the ``R`` term needs ``g_{k+1}`` of earlier
steps, the ``D`` term the forward fields of step ``t``, which the forward pass has already made.
The depth recursions are therefore a (reverse) cumulative sum over the layer axis in both modes,
and the sweep is one ``lax.scan`` over training steps. The new iterate is the sample moments
``Φ_k = E[φ(h_k) φ(h_k)ᵀ]``, ``G_k = E[g_k g_kᵀ]`` over all pairs (and in mode A the Stein
coefficients ``E[φ(h_k(t)) z^ρ_{k,j}]``, ``E[g_{k+1}(t) z^ξ_{k,j}]``); it is damped,
``X ← (1 − λ) X + λ X_new``, until the residual ``max_k max|X_new − X|/max|X|`` (over ``Φ`` and ``G``,
in mode A also both coefficient arrays, and every layer step ``k``) is below ``tol``.

Readouts (§3.3; `readout.predict`/`readout.advance`), evaluated inside the sweep from the
current samples (at the fixed point this is docs/math's "from the current kernels"/"from the previous
samples": the samples' moments *are* the kernels there):

* P1 (`NTKReadout`): ``f(0) = 0``, ``f(t+1) = f(t) + η0 Θ(t) c(t)`` with ``Θ(t)`` the fields' own NTK
  (§3.4 step 5) from the step-``t`` samples, formed as the first-order change (no ``Θ``).
* P2 (`FeatureReadout`): ``f(t) = (E_S[v(t) φ(h_K(t))] − E_S[v(0) φ(h_K(0))])/γ0``, the centred
  limit of the standard network (mode A) or of the *decoupled* network (mode B).

**Random numbers.** All normal draws of a member are made once from its key (common random
numbers), so the map is deterministic and the iteration converges geometrically to the fixed point
of the *sampled* map, whose distance from the true limit is the Monte Carlo floor ``O(S^{-1/2})``.
That floor is measured over the ensemble: members with different keys are independent draw sets
(``deterministic = False``), and `fixed_point_se` gives the standard errors of ``f`` and the losses
from their spread. By default (``orthogonalize=True``) the standard normals of ``u^in``, ``v(0)``,
``ξ`` and ``ρ`` are jointly orthonormalised over the samples (``ZᵀZ = S I``, moment matching), so the
input kernel ``H_0 = σ_in² K^x``, ``E[v vᵀ] = σ_out² I`` and the Gaussian parts of every other kernel
are reproduced exactly; this needs ``S ≥ D + C + K N (1 + C)``.

**PSD.** ``ξ_k = L_k z`` with ``L_k`` the Cholesky factor of ``Φ_k + jitter · mean(diag Φ_k) · I``
(likewise ``G``). Every iterate is a convex combination of sample Gram matrices and of the tiled
``t = 0`` kernels, hence PSD, but it is rank-deficient across steps (the tiled start has rank
``Pts``; lazy runs stay close to it), which the relative jitter (default ``1e-10`` in float64,
``1e-5`` in float32) regularises; its effect on the kernels is ``O(jitter)``. The factor is
time-causal (the step-major ordering), so samples at steps ``≤ t`` depend only on kernel entries at
steps ``≤ t``, and the fixed-point map is triangular in time and depth.

**NTK observable** (as `MatrixParticles.observe`): the fields' own kernel ``Θ(t)`` for P1, and for
P2 in mode A (whose ``g`` is the true sensitivity); for P2 in mode B the kernel ``Θ̃(t)`` by which
the decoupled network's ``f`` moves, with true-sensitivity rows. The
true sensitivity ``ĝ = γ0 ∂f/∂h`` backpropagates through the *forward* matrices ``W_k``, whose
transpose is conditioned on the forward fields, so (§3.1) ``W_kᵀ ĝ_{k+1}(t) → ρ̂_k(t) +
Σ_{s≤t} D_k(t,s) φ(h_k(s))`` with ``D_k(t,s) = E[∂ĝ_{k+1}(t)/∂ξ_k(s)]``. The Gaussian part ``ρ̂`` is
independent of everything the decoupled dynamics see, so it drops out of every cross-kernel
``E[ĝ g̃]`` and is omitted; the response term is estimated by whitened Stein (§3.4) on the
forward draws, ``Σ_s D_k(t,s) φ(h_k(s)) = Σ_j E[ĝ_{k+1}(t) z^ξ_{k,j}] e^ξ_{k,j}`` over the pairs ``j``
of steps ``≤ t`` with the same pivot rule as mode A's responses (default ``stein_tol = 1e-6``:
directions that the jitter alone keeps alive are dropped). The drift of ``ĝ`` uses the cross kernel
``E[g̃_{k+1}(s) ĝ_{k+1}(t)ᵀ]``, since ``ΔW`` accumulates the decoupled fields. At ``t = 0``, ``D = 0``
and ``Θ̃(0)`` is §2's. ``Θ̃`` is a post-processing pass on the converged samples.

**The iteration** is a ``lax.while_loop``, not `optimistix.fixed_point`: `optx.FixedPointIteration`
stops on the change of the *damped* iterate entry by entry, ``|y − y_new| ≤ atol + rtol |y_new|``,
not on the per-layer relative change ``max|X_new − X| / max|X|`` of the map, and keeps no residual
history. On the same draws it stopped after 16 and 25 map evaluations instead of 11 and 12
(``rtol = tol``, ``atol = 0``; ``f`` moved by 1e-6), or with ``atol = rtol = tol`` at a state whose
residual is 1.8e-4 > ``tol`` (C = 3). It starts from the tiled ``t = 0`` kernels (``start =
"tiled"``, the reference: 30–40 map evaluations at K = 64, T = 10, the error front moving through the
steps) or from the causal pass's fixed point (``"causal"``, `nfd.limit._fixed_point_causal`, the
config's choice: about one map evaluation's cost, then usually one evaluation to confirm it).

Not supported: two-layer blocks, Adam.
Cost per iteration ``O(K N³ (1 + C³) + S K N² (1 + C²))`` (factors and moments) plus
``O(S K Pts² T² C²)`` (drifts); mode A adds ``O(S K N² C)`` (Stein coefficients and response
terms) and ``O(K N³ C²)`` (their triangular solves); memory ``O(S K N (1 + C) + K N² C²)``.
"""

import dataclasses
from typing import ClassVar

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray
from threadpoolctl import threadpool_limits

from .. import nn
from ..dynamics import AbstractPathDynamics, Observables, PathSolution, Points, SaveAt, Trajectory
from ..nn import AbstractActivation, AbstractLoss, AbstractReadout, FeatureReadout
from ..param import AbstractBackwardWeights, AbstractBlock, AbstractParameterization, OneLayer
from ._checks import check_layer_steps, check_one_layer
from ._fixed_point_causal import causal_init
from ._fixed_point_sweep import (
    HIGHEST,
    Draws,
    Kernels,
    Sweep,
    draw,
    kernel_diagnostics,
    moments,
    num_columns,
    residual,
    sweep,
    theta_tilde_fields,
    tiled_init,
)


class FixedPointInfo(eqx.Module):
    """Convergence of one member's iteration (`evolve` stacks them: leading axis E).

    Attributes:
        iterations: map evaluations before the stopping rule fired.
        residual: the residual ``max_k max|X_new − X| / max|X|`` (``X`` over ``Φ_k`` and ``G_k``,
            in mode A also the response coefficients) of the state whose observables are reported.
        residual_history: the residual of each iteration ``(max_iter,)``; NaN after stopping.
        converged: ``residual < tol`` and every reported value finite; a member that did not
            converge is recorded here (its observables are those of its last iterate), never
            silently.
        phi_min_eig, g_min_eig: per layer step ``k = 0..K``, the smallest eigenvalue of ``Φ_k``
            and ``G_k`` over all (step, point[, output]) pairs of the reported iterate, relative to
            the mean of its diagonal (the "nondegeneracy" of the paper's convergence theorem;
            sample kernels have rank ``≤ S``, so with more pairs than samples it is 0).
        stein_dropped: the fraction of whitened-Stein columns dropped by the pivot rule
            (``L_jj² < stein_tol · X_jj``) over all layer steps, for the ``Φ`` and ``G`` factors.
    """

    iterations: Int[Array, ""]
    residual: Float[Array, ""]
    residual_history: Float[Array, " I"]
    converged: Bool[Array, ""]
    phi_min_eig: Float[Array, " Kp1"]
    g_min_eig: Float[Array, " Kp1"]
    stein_dropped: Float[Array, " 2"]


class KernelFixedPoint(AbstractPathDynamics):
    """The mode-A or mode-B limit by the kernel fixed-point method (§4.3; module docstring).

    Each member is one independent draw set of ``S`` samples from its key (``deterministic =
    False``); the spread over members is the Monte Carlo error (`fixed_point_se`).

    Attributes:
        num_samples: ``S``, samples per draw set (`limit.particles`).
        num_layer_steps: ``K`` (`limit.layer_steps`; ``= L`` for the depth-``L`` network).
        param, activation, loss: as the finite network's (SGD).
        coupling: `ReusedWeights` (mode A, `limit.coupling = "exact"`: the response terms by
            whitened Stein) or `DecoupledWeights` (mode B, `"decoupled"`).
        readout: `FeatureReadout` (P2) or `NTKReadout` (P1).
        block: `OneLayer` (the only block kind solved here).
        damping: ``λ`` in ``X ← (1 − λ) X + λ X_new``; docs/math's range is ``[0.3, 1]``. The map is
            triangular in time and depth, so ``λ = 1`` usually converges fastest.
        tol: stop when the residual (max relative change of the kernels and, in mode A, of the
            Stein coefficients) is below this.
        max_iter: at most this many map evaluations.
        jitter: relative diagonal jitter of the Cholesky factors (``None``: ``1e-10`` in float64,
            ``1e-5`` in float32).
        stein_tol: relative pivot tolerance of the whitened Stein sums: mode A's response terms
            and mode B's ``Θ̃`` (P2 ``ntk``).
        orthogonalize: orthonormalise the normal draws over samples (moment matching; needs
            ``S ≥ D + C + K N (1 + C)``); ``None``: do so exactly when ``S`` is that large, else
            draw plain normals (the config's choice: deep runs at moderate ``S`` stay possible).
        start: the first iterate: ``"tiled"`` (the ``t = 0`` kernels at every pair of steps, from
            which the damped iteration needs some 30–40 map evaluations; the reference) or
            ``"causal"`` (`nfd.limit._fixed_point_causal`: the fixed point of the sampled map built
            in one causal pass, up to the jitter's scale; the first map evaluation checks it, and
            the iteration goes on from it while the residual is above ``tol``).
        draw_refinement: ``r``: draw the normals of ``r K`` layer steps and give step ``k`` the
            normalised sum ``(z_{rk} + … + z_{rk+r−1})/√r`` (same law). Runs at ``K`` with
            ``r = 2`` and at ``2K`` with ``r = 1`` from the same key share one Brownian path in
            depth, so ``2 f(2K) − f(K)`` (Richardson, `layer_refinement_pair`) carries the Monte Carlo
            error of a difference of coupled runs, not of two independent ones.

    ``η0`` and the parameterization's scalars (``γ0``, ``β``, ...) are traced, so a sweep over them
    compiles once; the sizes and numerical settings are static.
    """

    num_samples: int = eqx.field(static=True)
    num_layer_steps: int = eqx.field(static=True)
    param: AbstractParameterization
    activation: AbstractActivation
    loss: AbstractLoss
    coupling: AbstractBackwardWeights
    readout: AbstractReadout = FeatureReadout()
    block: AbstractBlock = OneLayer()
    damping: float = eqx.field(default=0.7, static=True)
    tol: float = eqx.field(default=1e-4, static=True)
    max_iter: int = eqx.field(default=50, static=True)
    jitter: float | None = eqx.field(default=None, static=True)
    stein_tol: float = eqx.field(default=1e-6, static=True)
    orthogonalize: bool | None = eqx.field(default=True, static=True)
    draw_refinement: int = eqx.field(default=1, static=True)
    start: str = eqx.field(default="tiled", static=True)

    deterministic: ClassVar[bool] = False

    def __check_init__(self):
        check_one_layer(self.block, "kernel")
        check_layer_steps(self.num_layer_steps)
        if self.num_samples < 2:
            raise ValueError(f"[limit] particles (samples) must be >= 2, got {self.num_samples}.")
        if not 0 < self.damping <= 1:
            raise ValueError(f"damping must lie in (0, 1] (spec: [0.3, 1]), got {self.damping}.")
        if not (isinstance(self.draw_refinement, int) and self.draw_refinement >= 1):
            raise ValueError(
                f"draw_refinement must be an integer >= 1, got {self.draw_refinement}."
            )
        if self.start not in ("tiled", "causal"):
            raise ValueError(f"start must be 'tiled' or 'causal', got {self.start!r}.")
        if self.max_iter < 1 or not self.tol > 0:
            raise ValueError(f"need max_iter >= 1 and tol > 0, got {self.max_iter}, {self.tol}.")
        self.param.check_block(self.block)

    def solve(
        self,
        points: Points,
        lr: Float[Array, ""],
        schedule: Int[Array, "T B"],
        saveat: SaveAt,
        *,
        key: PRNGKeyArray,
    ) -> PathSolution:
        """One draw set from ``key``: its fixed point and the observables of the reported sweep.

        ``h_movement`` (RMS of ``h_k(t) − h_k(0)``) and ``block_movement`` (RMS of the block's own
        drift ``m_W b² ε Σ Φ_k g c``, i.e. ``b ΔW_k φ(h_k)/sqrt(n)``) are single-site quantities of
        the sampled process. ``failed_step`` is the first step with non-finite values in the
        reported sweep; non-convergence is ``info.converged``, not a failure.
        """
        if schedule.ndim != 2:
            raise ValueError(f"schedule must have shape (T, B), got {schedule.shape}.")
        T = int(schedule.shape[0])
        K_drawn = self.draw_refinement * self.num_layer_steps
        cols = self.draw_columns(points, T)
        dyn = self
        if self.orthogonalize is None:  # "auto": moment matching where the samples allow it
            dyn = dataclasses.replace(self, orthogonalize=self.num_samples >= cols)
        elif self.orthogonalize and self.num_samples < cols:
            raise ValueError(
                f"orthogonalize=True needs [limit] particles >= D + C + K N (1 + C) = {cols} "
                f"(K = {K_drawn} layer steps drawn) "
                f"samples, got {self.num_samples}: raise limit.particles or pass "
                "orthogonalize=False."
            )
        dtype = points.x.dtype
        jitter = self.jitter
        if jitter is None:
            jitter = 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-5
        with threadpool_limits(limits=1, user_api="blas"):
            sol = _solve_path(
                dyn, points, jnp.asarray(lr, dtype), schedule, saveat, key, float(jitter)
            )
            return _wait(sol)

    def draw_columns(self, points: Points, num_steps: int) -> int:
        """Standard normals per sample of one member's draw, ``D + C + r K N (1 + C)`` with
        ``N = points × (num_steps + 1)``: moment matching (``orthogonalize``) needs ``S`` at least
        this."""
        K_drawn = self.draw_refinement * self.num_layer_steps
        N = (num_steps + 1) * points.num_points
        return num_columns(points.in_dim, points.out_dim, K_drawn, N)

    def describe(self, traj) -> str | None:
        """Iterations per member and the largest residual (and how many did not converge)."""
        info = traj.info
        if info is None:
            return None
        iterations = np.atleast_1d(np.asarray(info.iterations)).tolist()
        line = (
            f"kernel fixed point: iterations {iterations}, max residual "
            f"{float(jnp.max(info.residual)):.1e}"
        )
        if not self.coupling.decoupled:
            dropped = np.max(np.asarray(info.stein_dropped).reshape(-1, 2), axis=0)
            line += (
                f"; Stein pivots (stein_tol {self.stein_tol:g}) dropped: {dropped[0]:.1%} of "
                f"Φ columns, {dropped[1]:.1%} of G columns"
            )
        missed = int(np.sum(~np.asarray(info.converged)))
        if missed:
            line += (
                f"; {missed} of {len(iterations)} member(s) not converged (tol {self.tol:g} after "
                f"max_iter {self.max_iter})"
            )
        return line


def _wait(sol: PathSolution) -> PathSolution:
    """``sol`` once computed (under a trace, as is): the BLAS limit of `KernelFixedPoint.solve`
    must cover the computation, which JAX dispatches asynchronously.

    The LAPACK calls of an iteration (Cholesky factors, the Stein weights' triangular solves) are
    small; with OpenBLAS's own threads beside XLA's on a loaded 2-core machine they spin-waited and
    made one draw set 2–4× slower (median 10 s instead of 2.4 s for 10 iterations at K = 64,
    N = 88, S = 256); one BLAS thread per call costs nothing when the machine is idle."""
    if any(isinstance(x, Tracer) for x in jax.tree.leaves(sol)):
        return sol
    return jax.block_until_ready(sol)


def fixed_point_se(traj: Trajectory) -> dict[str, Array]:
    """Monte Carlo standard errors of a kernel fixed-point run, ``std(ddof=1)/sqrt(E)`` over the
    members (independent draw sets of one configuration: pick one learning rate with
    `Trajectory.take` first); NaN for ``E = 1``.

    Returns:
        ``f_train_se`` ``(S, P, C)``, ``f_test_se`` ``(S, Q, C)``, ``loss_train_se`` and
        ``loss_test_se`` ``(S,)``.
    """
    E = traj.num_members

    def se(x):
        if E < 2:
            return jnp.full(x.shape[1:], jnp.nan, x.dtype)
        return jnp.std(x, axis=0, ddof=1) / E**0.5

    names = ("f_train", "f_test", "loss_train", "loss_test")
    return {f"{name}_se": se(getattr(traj, name)) for name in names}


# -- one member -------------------------------------------------------------------------------
@eqx.filter_jit
def _solve_path(
    dyn: KernelFixedPoint,
    points: Points,
    lr: Float[Array, ""],
    schedule: Int[Array, "T B"],
    saveat: SaveAt,
    key: PRNGKeyArray,
    jitter: float,
) -> PathSolution:
    """Draws, the damped iteration and the observables of one member."""
    T = schedule.shape[0]
    pad = schedule[-1:] if T > 0 else jnp.zeros((1, schedule.shape[1]), schedule.dtype)
    rows = jnp.concatenate([schedule, pad]).astype(jnp.int32)  # the batch of t = 0..T
    draws = draw(dyn, points, T, key=key)
    init = tiled_init(dyn, points, T)
    if dyn.start == "causal":  # the tiled start where the pass is not finite (a diverging member)
        causal = causal_init(dyn, points, lr, rows, draws, jitter)
        ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(causal)]))
        init = jax.tree.map(lambda a, b: jnp.where(ok, a, b), causal, init)
    loop = _iterate(dyn, points, lr, rows, draws, init, jitter)
    sw = loop.sweep
    obs = _observables(dyn, points, lr, saveat, draws, loop.used, sw, jitter)
    finite = jnp.all(jnp.isfinite(sw.f), axis=(1, 2)) & jnp.all(jnp.isfinite(sw.h), axis=(1, 2, 3))
    finite = finite & jnp.all(jnp.isfinite(sw.g), axis=(1, 2, 3, 4))
    failed = jnp.where(
        jnp.all(finite),
        jnp.asarray(-1, jnp.int32),
        jnp.argmin(finite.astype(jnp.int32)).astype(jnp.int32),
    )
    info = FixedPointInfo(
        iterations=loop.n,
        residual=loop.residual,
        residual_history=loop.history,
        converged=(loop.residual < dyn.tol) & (failed < 0),  # non-finite values never converged
        **kernel_diagnostics(dyn, loop.used, jitter),
    )
    return PathSolution(observables=obs, failed_step=failed, info=info)


class _Loop(eqx.Module):
    kern: Kernels  # the next iterate
    used: Kernels  # the iterate that produced `sweep`
    sweep: Sweep
    n: Int[Array, ""]
    residual: Float[Array, ""]
    history: Float[Array, " I"]


def _iterate(dyn: KernelFixedPoint, points, lr, rows, draws: Draws, init: Kernels, jitter) -> _Loop:
    """Damped fixed-point iteration of one member.

    Each iteration evaluates the map once: sweep with the iterate ``X``, moments ``X_new``, residual
    ``r(X) = max rel |X_new − X|``, then ``X ← (1 − λ) X + λ X_new``. It stops when ``r < tol`` or after
    ``max_iter`` evaluations; the reported state is the last sweep (whose residual is ``r``).
    """
    lam = dyn.damping

    def cond(state: _Loop):
        return (state.n < dyn.max_iter) & (state.residual >= dyn.tol)

    def body(state: _Loop):
        sw = sweep(dyn, points, lr, rows, draws, state.kern, jitter)
        new = moments(dyn, sw, draws)
        r = residual(new, state.kern)
        r = jnp.where(jnp.isfinite(r), r, jnp.asarray(jnp.inf, r.dtype))
        kern = jax.tree.map(lambda x, y: (1 - lam) * x + lam * y, state.kern, new)
        return _Loop(
            kern=kern,
            used=state.kern,
            sweep=sw,
            n=state.n + 1,
            residual=r,
            history=state.history.at[state.n].set(r),
        )

    dtype = points.y.dtype
    shapes = jax.eval_shape(lambda: sweep(dyn, points, lr, rows, draws, init, jitter))
    state = _Loop(
        kern=init,
        used=init,
        sweep=jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes),
        n=jnp.asarray(0, jnp.int32),
        residual=jnp.asarray(jnp.inf, dtype),
        history=jnp.full((dyn.max_iter,), jnp.nan, dtype),
    )
    return lax.while_loop(cond, body, state)


def _observables(
    dyn: KernelFixedPoint,
    points: Points,
    lr,
    saveat: SaveAt,
    draws: Draws,
    kern: Kernels,
    sw: Sweep,
    jitter: float,
) -> Observables:
    """The observables of the reported sweep at the saved steps (as `MatrixParticles.observe`)."""
    S, K = dyn.num_samples, dyn.num_layer_steps
    phi = dyn.activation
    C = sw.g.shape[-1]
    steps = jnp.asarray(saveat.steps)
    h, g = sw.h[steps], sw.g[steps]
    out = {
        "f": sw.f[steps],
        "h_rms": jnp.sqrt(jnp.mean(h**2, axis=(1, 3))),
        "h_movement": jnp.sqrt(jnp.mean((h - sw.h[:1]) ** 2, axis=(1, 3))),
        "block_movement": jnp.sqrt(jnp.mean(sw.drift[steps] ** 2, axis=(1, 3))),
    }
    if saveat.kernels:
        sel = jnp.asarray(saveat.layer_indices(K))
        H, G = h[:, :, sel], g[:, :, sel]
        out["h_kernel"] = jnp.einsum("tirp,tirq->trpq", H, H, precision=HIGHEST) / S
        out["g_kernel"] = jnp.einsum("tirpa,tirqa->trpq", G, G, precision=HIGHEST) / (S * C)
        Ph = phi(H)  # the feature kernel Φ_k(t, t) of the saved layers (in `Trajectory.extras`)
        out["phi_kernel"] = jnp.einsum("tirp,tirq->trpq", Ph, Ph, precision=HIGHEST) / S
    if saveat.ntk:
        # the kernel by which the reported f moves: Θ̃ (true-sensitivity rows) for mode B read
        # out by P2 (the decoupled network); the fields' own kernel otherwise
        if dyn.coupling.decoupled and dyn.readout.true_sensitivity:
            G_t, Phi_t = theta_tilde_fields(dyn, lr, draws, kern, sw, jitter)
            G_t, Phi_t = G_t[steps], Phi_t[steps]
        else:
            ph = phi(h)
            Phi_t = jnp.einsum("tikp,tikq->tkpq", ph, ph, precision=HIGHEST) / S
            G_t = jnp.einsum("tikpa,tikqa->tkpq", g, g, precision=HIGHEST) / (S * C)
        weights = dyn.param.ntk_weights(K, dyn.block)
        out["ntk"] = jax.vmap(
            lambda G_, Phi_: nn.ntk(weights, dyn.block, kx=points.kx, G=G_, Phi=Phi_)
        )(G_t, Phi_t)
    return out


def layer_refinement_pair(dyn: KernelFixedPoint) -> tuple[KernelFixedPoint, KernelFixedPoint]:
    """The coupled runs of the ``K → ∞`` Richardson extrapolation ``2 f(2K) − f(K)`` (weak order 1
    in ``1/K``, so its bias is ``O(1/K²)``): ``dyn`` at ``K`` drawing ``2K`` steps
    (``draw_refinement = 2``) and at ``2K`` drawing its own. Run both with the same member keys."""
    K, r = dyn.num_layer_steps, dyn.draw_refinement
    if r != 1:
        raise ValueError(f"layer_refinement_pair needs draw_refinement = 1, got {r}.")
    coarse = dataclasses.replace(dyn, draw_refinement=2)
    return coarse, dataclasses.replace(dyn, num_layer_steps=2 * K)
