"""One-step Itô solvers for `solve_depth` (Diffrax's solver/term split, STYLE.md §1, §3)."""

import abc
from typing import ClassVar

import equinox as eqx
import jax

from .._typing import RealScalarLike
from ._terms import AbstractTerm, Args, Increment, State


class AbstractItoSolver(eqx.Module):
    """A one-step scheme converging to the *Itô* solution of ``dy = a dτ + b dW``.

    The calculus is in the type (as Diffrax's ``AbstractItoSolver``): a forward ResNet discretises an
    Itô equation, so the limit solver accepts only these. Subclasses set the class variables
    ``strong_order`` (of ``E|y_K - y(1)|``) and ``weak_order`` (of ``|E f(y_K) - E f(y(1))|``),
    the rates in ``dτ`` for smooth coefficients, and implement `step`.
    """

    strong_order: eqx.AbstractClassVar[float]
    weak_order: eqx.AbstractClassVar[float]

    @abc.abstractmethod
    def step(
        self,
        terms: AbstractTerm,
        tau0: RealScalarLike,
        tau1: RealScalarLike,
        y: State,
        dW: Increment,
        args: Args,
    ) -> State:
        """Advances ``y`` from ``tau0`` to ``tau1 > tau0`` driven by the increment ``dW``.

        Args:
            terms: the SDE.
            tau0: the start of the step.
            tau1: the end of the step.
            y: the state at ``tau0``.
            dW: the Brownian increment over ``[tau0, tau1]`` (variance ``tau1 - tau0``).
            args: this step's per-step arguments (or `None`).

        Returns:
            The state at ``tau1``, a pytree like ``y``.
        """


class EulerMaruyama(AbstractItoSolver):
    """Euler–Maruyama: ``y1 = y0 + a(τ0, y0) (τ1 - τ0) + b(τ0, y0) dW`` (Diffrax's ``Euler``).

    Strong order 1/2 and weak order 1 (Kloeden & Platen 1992, chapters 10 and 14); strong order 1
    for additive noise. With ``K = L`` steps it is exactly the depth-``L`` residual stream at
    ``n = ∞`` (docs/math §3.4), which is why the limit solver uses it.
    """

    strong_order: ClassVar[float] = 0.5
    weak_order: ClassVar[float] = 1.0

    def step(
        self,
        terms: AbstractTerm,
        tau0: RealScalarLike,
        tau1: RealScalarLike,
        y: State,
        dW: Increment,
        args: Args,
    ) -> State:
        increment = terms.increment(tau0, y, args, tau1 - tau0, dW)
        return jax.tree.map(lambda y_, d: y_ + d, y, increment)
