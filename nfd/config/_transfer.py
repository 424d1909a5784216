"""`[transfer]`: learning-rate transfer across depth (docs/math §6, T8–T10).

Read by ``kind = "transfer"`` runs (`nfd.experiments.run_transfer`, registered in
`nfd.gallery`). The grid is ``optimizers × variants × widths × depths × lrs``, with the ensemble
of the top-level ``seeds``; a variant is the one-layer block (under `model.param`) or a
two-layer block under each parameterization of ``params``: with W1's rate multiplied by
``L^a`` for every ``a`` of ``exponents`` (``depth_mup``, ``mup``), or once with CompleteP's
``1/L`` branch (``completep``, arXiv 2505.01618 with α = 1; Zheng et al. arXiv 2603.00541).
CompleteP takes ``a = 0`` only: its ``×L`` block rate already gives W1 an O(1) own update
(δz^own ∝ L^0), and an extra ``L^a`` would make it grow like ``L^a``.
"""

import dataclasses
from typing import Literal

from ._schema_base import ConfigError, positive

PARAMS = "'depth_mup', 'completep' and/or 'mup'"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransferConfig:
    """`[transfer]`: the grid of the depth-transfer experiment (§6)."""

    widths: tuple[int, ...] = (128,)
    depths: tuple[int, ...] = (2, 4, 8, 16)
    lrs: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)  # η0 grid (log2 spacing advised)
    adam_lrs: tuple[float, ...] = ()  # η0 grid for Adam (empty: `lrs`)
    one_layer: bool = True  # include the one-layer block
    exponents: tuple[float, ...] = (0.0, 0.5)  # two-layer variants: W1 rate × L^a
    # parameterizations of the two-layer variants (completep: one variant, a = 0)
    params: tuple[Literal["depth_mup", "completep", "mup"], ...] = ("depth_mup",)
    optimizers: tuple[Literal["sgd", "adam"], ...] = ("sgd", "adam")
    limit: bool = True  # overlay the limit's loss-vs-η0 curve (SGD variants, K = L)
    collapse: bool = True  # one-step δz^own vs L (finite at the largest width, and the limit)
    post_activation: bool = True  # the T10 control: feature norms, pre- vs post-activation
    # networks drawn for the measurements at initialisation (finite K_W1, T10): no training, so
    # many more than `seeds` are cheap (per-seed spreads are O(n^-1/2): tens of % at n ≈ 100)
    init_seeds: int = 32

    def __post_init__(self):
        for key, values in (("transfer.widths", self.widths), ("transfer.depths", self.depths)):
            if not values:
                raise ConfigError(key, "must not be empty", "a list of positive integers")
            for v in values:
                positive(key, v, integer=True)
        positive("transfer.init_seeds", self.init_seeds, integer=True)
        if self.init_seeds < 2:
            raise ConfigError(
                "transfer.init_seeds",
                f"needs >= 2 (an SE), got {self.init_seeds}",
                "an integer >= 2",
            )
        if len(self.lrs) < 2:
            raise ConfigError("transfer.lrs", f"needs >= 2 values, got {self.lrs!r}", "numbers > 0")
        for key, values in (("transfer.lrs", self.lrs), ("transfer.adam_lrs", self.adam_lrs)):
            for v in values:
                positive(key, v)
            if list(values) != sorted(set(values)):
                raise ConfigError(key, "must be strictly increasing", "e.g. [0.125, 0.25, 0.5]")
        if not self.optimizers:
            raise ConfigError("transfer.optimizers", "must not be empty", "'sgd' and/or 'adam'")
        if len(set(self.optimizers)) != len(self.optimizers):
            raise ConfigError("transfer.optimizers", "lists one twice", "'sgd' and/or 'adam'")
        if not self.params:
            raise ConfigError("transfer.params", "must not be empty", PARAMS)
        if len(set(self.params)) != len(self.params):
            raise ConfigError("transfer.params", "lists one twice", PARAMS)
        if not self.one_layer and not self.exponents and "completep" not in self.params:
            raise ConfigError(
                "transfer.exponents",
                "is empty and transfer.one_layer = false: no variant to run",
                "one_layer = true or a list of exponents a",
            )
        for a in self.exponents:
            if not -2.0 <= a <= 2.0:
                raise ConfigError("transfer.exponents", f"contains {a!r}", "values in [-2, 2]")
