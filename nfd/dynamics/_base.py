"""The dynamics interface: what the finite network and every limit method share (docs/math §3.4).

A *dynamics* describes one ensemble member (one network, one particle system, one draw set); the
loop that trains an ensemble of them, `nfd.dynamics.evolve`, is written once. As in Diffrax (a
solver object behind `diffeqsolve`) and Optimistix (``init/step/terminate`` behind
`iterative_solve`), the strategy objects are small and carry no loop.

Time-marching dynamics (`AbstractDynamics`: the finite network, the particle methods) split their
state in two: the ``initial`` draw, fixed for the whole run (a network at ``t = 0``, the particles'
random matrices), and the evolving ``state`` (weights, accumulators, optimizer state), which the
loop donates at every step so large buffers are updated in place. Methods that solve a whole
trajectory at once (the kernel fixed point, the exact linear oracle) are `AbstractPathDynamics`:
they return the saved observables of every step in one call.

Both produce the same observables (`Observables`: a dict with ``f`` on every tracked point and the
optional kernels), from which `evolve` builds one `nfd.dynamics.Trajectory`.
"""

import abc
from typing import Any

import equinox as eqx
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ..nn import AbstractLoss
from ._points import Points
from ._saveat import SaveAt

Observables = dict[str, Array]
"""Per-member observables of one saved step: ``f`` ``(Pts, C)`` (required), ``h_rms``,
``h_movement`` ``(L+1,)``, ``block_movement`` ``(L,)``, and when asked ``ntk`` ``(Pts, Pts)``,
``h_kernel``/``g_kernel`` ``(R, Pts, Pts)``, ``dz_own`` ``(L,)``. `evolve` adds the losses."""


class AbstractDynamics(eqx.Module):
    """A time-marching dynamics of one ensemble member.

    Attributes:
        loss: the per-example loss (its error signal drives training; `evolve` reports it).
    """

    loss: eqx.AbstractVar[AbstractLoss]

    @abc.abstractmethod
    def draw(self, points: Points, *, key: PRNGKeyArray) -> Any:
        """The random initial draw of one member (fixed for the whole run)."""

    @abc.abstractmethod
    def start(self, initial: Any, points: Points) -> Any:
        """The evolving state at ``t = 0`` (deterministic given ``initial``)."""

    @abc.abstractmethod
    def step(
        self,
        initial: Any,
        state: Any,
        points: Points,
        idx: Int[Array, " B"],
        lr: Float[Array, ""],
        alive: Bool[Array, ""],
    ) -> tuple[Any, Bool[Array, ""], Float[Array, ""]]:
        """One training step on the batch ``idx`` at base learning rate ``lr``.

        Returns ``(state, ok, loss)``: ``ok`` is false when the step produced non-finite values;
        where ``alive & ok`` is false the returned state must equal the given one (a member that
        diverged is frozen; the loop records the step). ``loss`` is the batch loss before the step.
        """

    @abc.abstractmethod
    def observe(self, initial: Any, state: Any, points: Points, saveat: SaveAt) -> Observables:
        """The observables of the current state (`Observables`)."""

    def estimate_memory(self, points: Points, members: int) -> int | None:
        """Estimated peak bytes of an ensemble of ``members`` (``None``: no estimate)."""
        del points, members
        return None

    def step_flops(self, points: Points, batch: int) -> float | None:
        """Floating-point operations of one member's training step (``None``: not counted)."""
        del points, batch
        return None

    def describe(self, traj: Any) -> str | None:
        """A one-line account of a run's diagnostics (of its `Trajectory`), or ``None``."""
        del traj
        return None


class PathSolution(eqx.Module):
    """What an `AbstractPathDynamics` returns for one member.

    Attributes:
        observables: the `Observables` of every saved step, stacked (leading axis ``S``).
        failed_step: the first step whose values are non-finite, −1 if none.
        info: method-specific diagnostics (convergence, Monte Carlo errors), or ``None``.
    """

    observables: Observables
    failed_step: Int[Array, ""]
    info: Any = None


class AbstractPathDynamics(eqx.Module):
    """A dynamics solved as a whole trajectory (not time-marching), one member per call.

    Attributes:
        loss: the per-example loss.
        deterministic: whether members that differ only in their key give the same solution
            (then `evolve` solves each learning rate once).
    """

    loss: eqx.AbstractVar[AbstractLoss]
    deterministic: eqx.AbstractClassVar[bool]

    def describe(self, traj: Any) -> str | None:
        """A one-line account of a run's diagnostics (of its `Trajectory`), or ``None``."""
        del traj
        return None

    @abc.abstractmethod
    def solve(
        self,
        points: Points,
        lr: Float[Array, ""],
        schedule: Int[Array, "T B"],
        saveat: SaveAt,
        *,
        key: PRNGKeyArray,
    ) -> PathSolution:
        """The saved observables of the whole run of one member."""
