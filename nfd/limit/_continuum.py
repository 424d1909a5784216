"""The t = 0 kernels of the depth continuum (L → ∞ after n → ∞), solved by Diffrax (docs/math §2).

Under depth-muP the depth-``K`` recursion of `init_kernels` is the Euler scheme (``dτ = 1/K``) of

    dH/dτ = β² V[H],   H(0) = σ_in² K^x,
    G(τ) = σ_out² V'[H(1)] ⊙ exp(β² ∫_τ^1 V'[H(τ')] dτ')           (elementwise),
    Θ = m_U σ_in² K^x ⊙ G(0) + β² ∫_0^1 G ⊙ V[H] dτ + m_v V[H(1)],
    Θ̃ = [m_U σ_in² K^x + β² ∫_0^1 V[H] dτ] ⊙ σ_out² V'[H(1)] + m_v V[H(1)]   (decoupled).

With ``A(τ) = ∫_0^τ V'[H]``, ``G(τ) = G(1) ⊙ exp(β² (A(1) − A(τ)))``, so every integral is carried
forward in one ODE for ``(H, A, B, C)``: ``dA = V'[H]``, ``dB = exp(−β² A) ⊙ V[H]``, ``dC = V[H]``,
and ``∫ G ⊙ V[H] = G(1) ⊙ exp(β² A(1)) ⊙ B(1)``. An adaptive Runge–Kutta solve to a tight tolerance
gives the ``K → ∞`` reference that the K-step scheme approaches at rate ``O(1/K)`` (T1, T2a).
"""

import diffrax
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..nn import AbstractActivation, kernel_map, kernel_map_deriv
from ..param import AbstractParameterization


class ContinuumKernels(eqx.Module):
    """The continuum's t = 0 kernels on ``P`` points (one-layer blocks, per output).

    Attributes:
        H1: ``H(1)``, the last residual stream's kernel ``(P, P)``.
        G0: ``G(0)``, the input layer's backward kernel ``(P, P)``.
        Theta: the NTK ``Θ(0)`` ``(P, P)``.
        Theta_decoupled: ``Θ̃(0)`` of decoupled backward weights ``(P, P)``.
    """

    H1: Float[Array, "P P"]
    G0: Float[Array, "P P"]
    Theta: Float[Array, "P P"]
    Theta_decoupled: Float[Array, "P P"]


@eqx.filter_jit
def continuum_kernels(
    param: AbstractParameterization,
    activation: AbstractActivation,
    kx: Float[Array, "P P"],
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> ContinuumKernels:
    """The L → ∞ limit of `init_kernels` (depth-muP one-layer blocks), by `diffrax.diffeqsolve`.

    Args:
        param: a depth-muP parameterization (branch ``β/sqrt(L)``, flat SGD block rate): the only
            one whose depth continuum has this form (§2; CompleteP has no diffusion term).
        activation: ``φ``.
        kx: the input Gram matrix ``K^x_μν = x_μ · x_ν / D``.
        rtol, atol: the adaptive step-size controller's tolerances (Tsit5).

    Raises:
        ValueError: for a parameterization without the depth-muP exponents.
    """
    if param.branch_exponent != 0.5 or param.sgd_block_exponent != 0.0:
        raise ValueError(
            f"continuum_kernels needs depth-muP scaling (model.param = 'depth_mup'), got {param.name!r}."
        )
    beta2 = param.beta**2
    zeros = jnp.zeros_like(kx)

    def field(tau, y, args):
        H, A, _, _ = y
        v, vp = kernel_map(activation, H), kernel_map_deriv(activation, H)
        return beta2 * v, vp, jnp.exp(-beta2 * A) * v, v

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        diffrax.Tsit5(),
        t0=0.0,
        t1=1.0,
        dt0=1.0 / 64,
        y0=(param.sigma_in**2 * kx, zeros, zeros, zeros),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=100_000,
    )
    H1, A1, B1, C1 = (y[-1] for y in sol.ys)  # type: ignore[union-attr]
    w = param.ntk_weights(1)  # the U and v weights do not depend on depth
    g1 = param.sigma_out**2 * kernel_map_deriv(activation, H1)
    grow = jnp.exp(beta2 * A1)
    v1 = kernel_map(activation, H1)
    return ContinuumKernels(
        H1=H1,
        G0=g1 * grow,
        Theta=w["U"] * kx * g1 * grow + beta2 * g1 * grow * B1 + w["v"] * v1,
        Theta_decoupled=(w["U"] * kx + beta2 * C1) * g1 + w["v"] * v1,
    )
