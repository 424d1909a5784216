"""The one result type of every dynamics: saved observables of an ensemble, member axis first."""

import dataclasses
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

MEMBER_FIELDS = (
    "f_train",
    "f_test",
    "loss_train",
    "loss_test",
    "ntk",
    "h_kernel",
    "g_kernel",
    "h_rms",
    "h_movement",
    "block_movement",
    "dz_own",
    "status",
    "failed_step",
)


class Trajectory(eqx.Module):
    """Saved observables of an ensemble run (leading axis E = members, then S saved steps).

    After a member diverges (``failed_step = t``: the update ``t → t + 1`` was non-finite) its
    observables at saved steps ``> t`` are NaN, as Diffrax fills a solution after a terminating
    event; the member's state stays frozen at step ``t``.

    Attributes:
        steps: saved training steps ``(S,)``.
        f_train, f_test: centred predictions ``(E, S, P, C)`` / ``(E, S, Q, C)``.
        loss_train, loss_test: mean losses ``(E, S)`` (``loss_test`` NaN without test points).
        ntk: ``(E, S, P+Q, P+Q)`` (train rows first; class-averaged diagonal block) or ``None``.
        h_kernel, g_kernel: ``(E, S, R, P+Q, P+Q)`` at the saved layer times, or ``None``.
        h_rms: RMS preactivation per layer ``(E, S, L+1)`` over all tracked points.
        h_movement: RMS change of each preactivation since step 0 ``(E, S, L+1)``.
        block_movement: RMS of each block's own update ``b ΔW_ℓ φ(h_ℓ)/sqrt(N)`` (two-layer: the
            W2 update ``b ΔW2_ℓ φ(z_ℓ)/sqrt(N)``), ``(E, S, L)``; Θ(1/L) under depth-muP.
        dz_own: RMS of W1's own feature update ``ΔW1_ℓ φ(h_ℓ)/sqrt(N)`` (two-layer) or ``None``.
        status: `RESULTS` code per member ``(E,)`` (0 = successful).
        failed_step: step at which a member diverged, −1 if it did not ``(E,)``.
        step_times: host wall time of each training step ``(T,)`` in seconds.
        extras: the observables of `SaveAt.fn`, each ``(E, S, ...)``.
        info: diagnostics of a path dynamics' solves (e.g. `nfd.limit.FixedPointInfo`, one entry
            per member), or ``None``; time-marching dynamics report theirs in ``extras``.
        mesh: the devices the members ran on (`nfd.dynamics.describe_mesh`; empty: one).
    """

    steps: Int[Array, " S"]
    f_train: Float[Array, "E S P C"]
    f_test: Float[Array, "E S Q C"]
    loss_train: Float[Array, "E S"]
    loss_test: Float[Array, "E S"]
    ntk: Float[Array, "E S PQ PQ"] | None
    h_kernel: Float[Array, "E S R PQ PQ"] | None
    g_kernel: Float[Array, "E S R PQ PQ"] | None
    h_rms: Float[Array, "E S Lp1"]
    h_movement: Float[Array, "E S Lp1"]
    block_movement: Float[Array, "E S L"]
    dz_own: Float[Array, "E S L"] | None
    status: Int[Array, " E"]
    failed_step: Int[Array, " E"]
    step_times: Float[Array, " T"]
    extras: dict[str, Array] = eqx.field(default_factory=dict)
    info: Any = None
    mesh: dict[str, Any] = eqx.field(default_factory=dict, static=True)

    @property
    def num_members(self) -> int:
        return self.status.shape[0]

    def take(self, members: Sequence[int] | slice) -> "Trajectory":
        """The trajectory of a subset of the members."""
        idx = np.arange(self.num_members)[members]

        def pick(x):
            return None if x is None else x[idx]

        fields = {k: pick(getattr(self, k)) for k in MEMBER_FIELDS}
        extras = {k: v[idx] for k, v in self.extras.items()}
        info = None if self.info is None else jax.tree.map(lambda x: x[idx], self.info)
        return dataclasses.replace(self, extras=extras, info=info, **fields)

    def split(self, parts: int) -> list["Trajectory"]:
        """``parts`` equal consecutive member blocks (e.g. one per coupling mode)."""
        size = self.num_members // parts
        return [self.take(slice(i * size, (i + 1) * size)) for i in range(parts)]

    @staticmethod
    def concat(parts: Sequence["Trajectory"]) -> "Trajectory":
        """The members of ``parts`` in order (same saved steps); ``step_times`` are summed."""
        first = parts[0]

        def cat(name) -> Any:
            values = [getattr(p, name) for p in parts]
            return None if values[0] is None else jnp.concatenate(values)

        return Trajectory(
            steps=first.steps,
            step_times=sum((p.step_times for p in parts[1:]), first.step_times),
            extras={k: jnp.concatenate([p.extras[k] for p in parts]) for k in first.extras},
            info=None
            if first.info is None
            else jax.tree.map(lambda *x: jnp.concatenate(x), *[p.info for p in parts]),
            mesh=first.mesh,
            **{k: cat(k) for k in MEMBER_FIELDS},
        )
