"""`[gia]`: the gradient-independence (GIA) experiment of docs/math §5.3, §7.2 and T6/T7.

Read by ``kind = "gia"`` runs (`nfd.experiments.run_gia`, registered in `nfd.gallery`). The grid is
``widths × depths``; the ensemble is the top-level ``seeds`` (antithetic *pairs* when
``antithetic = true``: ``2 × seeds`` networks per grid point). Training uses `[optim]` (SGD,
`optim.lr`, `optim.batch_size`); `optim.steps` is ignored in favour of ``gia.steps``. Both limits
(modes A and B, readout P1, K = L) are always run: with `limit.method = "kernel"` by the n = ∞
kernel fixed point (`limit.particles` samples per draw set, ``seeds`` draw sets; any activation),
otherwise by `linear_exact` for linear activations and by the particle method with
`limit.particles` particles for the others; the other `[limit]` keys are not read.
"""

import dataclasses
import math
from typing import Literal

from ._schema_base import ConfigError, positive


@dataclasses.dataclass(frozen=True, kw_only=True)
class GiaConfig:
    """`[gia]`: grid and observables of the standard-vs-decoupled comparison (§5.3, T6, T7).

    Attributes:
        widths: finite widths ``n`` (at least one; the n-fits need at least three).
        depths: depths ``L`` (the limit runs at ``K = L``).
        layer_times: ``τ`` of the one-step kernel changes (block ``round(τL)``) and of the χ
            diagnostic (block ``min(⌊τL⌋, L − 1)``, for ``τ < 1`` only).
        steps: training steps ``T`` of the trajectories (gaps, P1 observables); at least 1.
        antithetic: pair every network with its ``v(0) → −v(0)`` copy and average each pair.
        gammas: optional ``γ0`` scan of the limit gaps (mode A − mode B) at the largest depth; empty:
            no scan.
        init_estimator: ``"sample"`` (``g·g/n`` of the drawn readout) or ``"readout_average"``
            (the exact average over ``v(0)`` at fixed ``U, W, W̃``: O(n³L) per network, much lower
            variance) for the initial backward-kernel gap of T6.
    """

    widths: tuple[int, ...] = (64, 128, 256)
    depths: tuple[int, ...] = (2, 4, 8)
    layer_times: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    steps: int = 4
    antithetic: bool = True
    gammas: tuple[float, ...] = ()
    init_estimator: Literal["sample", "readout_average"] = "readout_average"

    def __post_init__(self):
        for key, values in (("gia.widths", self.widths), ("gia.depths", self.depths)):
            if not values:
                raise ConfigError(key, "must not be empty", "a list of positive integers")
            for v in values:
                positive(key, v, integer=True)
            if len(set(values)) != len(values):
                raise ConfigError(key, f"lists a value twice: {list(values)}", "distinct values")
        if not self.layer_times:
            raise ConfigError("gia.layer_times", "must not be empty", "a list of τ in (0, 1]")
        for tau in self.layer_times:
            if not (math.isfinite(tau) and 0.0 < tau <= 1.0):
                raise ConfigError("gia.layer_times", f"contains {tau!r}", "values τ in (0, 1]")
        positive("gia.steps", self.steps, integer=True)
        for g in self.gammas:
            positive("gia.gammas", g)
