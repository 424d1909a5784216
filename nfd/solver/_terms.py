"""Terms of an Itô SDE in depth-time: a drift and the diffusion applied to an increment.

A term describes ``dy = a(τ, y, args) dτ + [b(τ, y, args) dW]``, where the bracket is *any* map that
is linear in the increment ``dW``. Unlike Diffrax, which splits a term into a vector field and a
control and combines them with ``prod``, a term here applies its diffusion to the increment itself
(`AbstractTerm.noise`), so an increment can be shaped like the state (diagonal noise, `SDETerm`) or
be a random matrix acting on a function of the state (docs/math §4.1:
``noise = β dB_k φ(h) / sqrt(M)`` with ``dB_k`` an ``M×M`` increment). The solver never looks
inside: it only adds ``drift · dτ`` and ``noise``.

``args`` is one layer step's slice of the stacked per-step arguments of `solve_depth` (e.g. the
drift matrix ``A_k`` of step ``k``), so layer-dependent coefficients need no closures.
"""

import abc
from collections.abc import Callable
from typing import Any, TypeAlias

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import PyTree

from .._typing import Array, Float, RealScalarLike

State: TypeAlias = PyTree[Float[Array, "..."]]  # the state y: any pytree of floating arrays
Increment: TypeAlias = PyTree[Float[Array, "..."]]  # one step's Brownian increment dW_k
Args: TypeAlias = Any  # one step's slice of the stacked per-step arguments (or None)


class AbstractTerm(eqx.Module):
    """The drift and (increment-applied) diffusion of an Itô SDE ``dy = a dτ + b dW``.

    Subclasses implement `drift` and `noise`; both return a pytree with the structure, shapes and
    dtypes of ``y`` (`solve_depth` checks this at trace time). ``noise`` must be linear in ``dW``
    and must not depend on ``dW`` otherwise; it is evaluated at the left end of a step (Itô).
    """

    @abc.abstractmethod
    def drift(self, tau: RealScalarLike, y: State, args: Args) -> State:
        """The drift ``a(τ, y, args)``; the solver multiplies it by the step size ``dτ``.

        Args:
            tau: depth-time ``τ`` at which the coefficients are evaluated.
            y: the state.
            args: this step's slice of the per-step arguments (or `None`).

        Returns:
            A pytree like ``y``.
        """

    @abc.abstractmethod
    def noise(self, tau: RealScalarLike, y: State, args: Args, dW: Increment) -> State:
        """The diffusion applied to one increment, ``b(τ, y, args) dW`` (linear in ``dW``).

        Args:
            tau: depth-time ``τ`` at which the coefficients are evaluated.
            y: the state.
            args: this step's slice of the per-step arguments (or `None`).
            dW: this step's Brownian increment (any pytree: a vector, a matrix ...).

        Returns:
            A pytree like ``y``.
        """

    def increment(self, tau: RealScalarLike, y: State, args: Args, dtau, dW: Increment) -> State:
        """The Euler increment ``a(τ, y, args) dτ + b(τ, y, args) dW`` over one step.

        Solvers call this rather than `drift` and `noise` separately, so a term whose drift and
        diffusion share work (e.g. both act through one intermediate field, as a two-layer
        residual block's ``z``) can override it to compute that work once. The default combines
        `drift` and `noise`; an override must equal it.
        """
        drift = self.drift(tau, y, args)
        noise = self.noise(tau, y, args, dW)
        return jax.tree.map(
            lambda a, g: a * jnp.asarray(dtau, dtype=jnp.result_type(a)) + g, drift, noise
        )


class SDETerm(AbstractTerm):
    """``dy = drift_fn(τ, y, args) dτ + diffusion_fn(τ, y, args) ⊙ dW``: diagonal noise.

    The increment has the state's structure and shapes, and the diffusion multiplies it leaf by
    leaf and elementwise (as Diffrax's ``ControlTerm`` with a ``lineax.DiagonalLinearOperator``
    vector field). ``diffusion_fn`` may return leaves that broadcast against the state's leaves,
    e.g. a scalar for additive noise.

    Example:
        Geometric Brownian motion ``dh = μ h dτ + σ h dW``::

            term = SDETerm(lambda tau, h, args: mu * h, lambda tau, h, args: sigma * h)
    """

    drift_fn: Callable[[RealScalarLike, State, Args], State]
    diffusion_fn: Callable[[RealScalarLike, State, Args], State]

    def drift(self, tau: RealScalarLike, y: State, args: Args) -> State:
        return self.drift_fn(tau, y, args)

    def noise(self, tau: RealScalarLike, y: State, args: Args, dW: Increment) -> State:
        y_shapes = jax.tree.map(lambda a: f"{a.dtype}{tuple(a.shape)}", y)
        dW_shapes = jax.tree.map(lambda a: f"{a.dtype}{tuple(a.shape)}", dW)
        if jax.tree.structure(y) != jax.tree.structure(dW) or y_shapes != dW_shapes:
            raise ValueError(
                "SDETerm has diagonal noise, so each increment dWs[k] must have the structure, "
                f"shapes and dtypes of the state y0: y0 is {y_shapes}, so `dWs` needs leading axis "
                f"K followed by those; got increments {dW_shapes}."
            )
        diffusion = self.diffusion_fn(tau, y, args)
        return jax.tree.map(lambda b, dw: b * dw, diffusion, dW)


class _ReversedTimeTerm(AbstractTerm):
    """``term`` written in reversed depth-time ``s = 1 - τ`` (for `solve_depth(reverse=True)`).

    The solver marches ``s`` forward (``s: 0 -> 1``) with a positive step ``ds = dτ``; the wrapped
    term sees ``τ = 1 - s``. Hence ``d_s y = a(1 - s, y) ds + b dW``, i.e. the backward equation
    ``-d_τ y = a(τ, y) dτ + b dW`` solved from ``τ = 1`` down to ``τ = 0``.
    """

    term: AbstractTerm

    def drift(self, tau: RealScalarLike, y: State, args: Args) -> State:
        return self.term.drift(1 - tau, y, args)

    def noise(self, tau: RealScalarLike, y: State, args: Args, dW: Increment) -> State:
        return self.term.noise(1 - tau, y, args, dW)

    def increment(self, tau: RealScalarLike, y: State, args: Args, dtau, dW: Increment) -> State:
        return self.term.increment(1 - tau, y, args, dtau, dW)
