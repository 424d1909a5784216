"""`[decoupling]`: reused against decoupled backward weights across depth (arXiv 2512.21075
Fig. 2; docs/math §1.6, §1.7).

Read by ``kind = "decoupling"`` runs (`nfd.experiments.run_decoupling`, registered in
`nfd.gallery`). The grid is ``archs × depths × {reused, decoupled}`` at `model.width`, each cell
one vmapped ensemble of the top-level ``seeds`` members; the task and optimizer are the config's.
"""

import dataclasses
from typing import Literal

from ._schema_base import ConfigError, positive

# an architecture: (model.residual, model.param)
ARCHS: dict[str, tuple[bool, str]] = {
    "plain": (False, "mup"),  # no skip connections, muP (docs/math §1.7)
    "mup": (True, "mup"),  # muP ResNet, branch 1
    "depth_mup": (True, "depth_mup"),  # depth-muP ResNet, branch β/√L
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecouplingConfig:
    """`[decoupling]`: the architectures and depths of the decoupling experiment."""

    archs: tuple[Literal["plain", "mup", "depth_mup"], ...] = ("plain", "mup", "depth_mup")
    depths: tuple[int, ...] = (2, 4, 8, 16)

    def __post_init__(self):
        if not self.archs:
            raise ConfigError("decoupling.archs", "must not be empty", ", ".join(ARCHS))
        if len(set(self.archs)) != len(self.archs):
            raise ConfigError("decoupling.archs", "lists one twice", ", ".join(ARCHS))
        if not self.depths:
            raise ConfigError("decoupling.depths", "must not be empty", "positive integers")
        for v in self.depths:
            positive("decoupling.depths", v, integer=True)
        if list(self.depths) != sorted(set(self.depths)):
            raise ConfigError(
                "decoupling.depths", "must be strictly increasing", "e.g. [2, 4, 8, 16]"
            )
