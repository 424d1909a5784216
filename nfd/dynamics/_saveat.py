"""What a run saves, and when (as Diffrax's `SaveAt`)."""

from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import numpy as np


def save_steps(num_steps: int, every: int, also: Sequence[int] = ()) -> tuple[int, ...]:
    """Steps at which observables are saved: 0, every, 2·every, ..., the last step, and the
    steps ``also`` (those within ``0..num_steps``)."""
    steps = set(range(0, num_steps + 1, every)) if every > 0 else {0}
    steps.add(num_steps)
    steps.update(int(t) for t in also if 0 <= t <= num_steps)
    return tuple(sorted(steps))


class SaveAt(eqx.Module):
    """The saved steps and the optional observables of a run.

    Attributes:
        steps: the saved training steps, increasing (`save_steps`).
        ntk: save the NTK by which the reported ``f`` moves (§1.4).
        kernels: save ``h_kernel`` and ``g_kernel`` at ``layer_times``.
        layer_times: depth-times ``τ`` of the saved kernels; layer ``round(τ L)`` (or step
            ``round(τ K)`` of a limit method).
        fn: extra observables, ``fn(dynamics, initial, state, points) -> dict`` of arrays,
            evaluated with the others at every saved step (time-marching dynamics only), e.g. the
            χ coupling diagnostic of the GIA experiment.
    """

    steps: tuple[int, ...] = eqx.field(static=True)
    ntk: bool = eqx.field(default=False, static=True)
    kernels: bool = eqx.field(default=False, static=True)
    layer_times: tuple[float, ...] = eqx.field(default=(0.0, 0.5, 1.0), static=True)
    fn: Callable[..., dict[str, Any]] | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        if not self.steps or any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError(f"SaveAt.steps must be non-empty and increasing, got {self.steps}.")
        if self.steps[0] < 0:
            raise ValueError(f"SaveAt.steps must be >= 0, got {self.steps}.")

    @property
    def num_steps(self) -> int:
        """The last saved step ``T`` (the run's length)."""
        return self.steps[-1]

    def layer_indices(self, num_layers: int) -> tuple[int, ...]:
        """Layer index ``round(τ · num_layers)`` of each saved layer time."""
        return tuple(int(round(t * num_layers)) for t in self.layer_times)

    def index_of(self) -> dict[int, int]:
        """Position of each saved step in the saved arrays."""
        return {t: i for i, t in enumerate(self.steps)}

    def as_array(self) -> np.ndarray:
        return np.asarray(self.steps, dtype=np.int64)
