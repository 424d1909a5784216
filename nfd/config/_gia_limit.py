"""`[gia_limit]`: the gradient-independence verdict at n = ∞ (docs/math §5.3 with the kernel method).

Read by ``kind = "gia_limit"`` runs (`nfd.experiments.run_gia_limit`). No finite network is trained:
modes A (`exact`, the limit of the standard network) and B (`decoupled`, NFD under the GIA) are
solved by the kernel fixed point (readout P1) at ``K = L`` for every depth and activation, with
``seeds`` independent draw sets of `limit.particles` samples, and (``extrapolate_layers``) at
``K → ∞`` by Richardson over coupled ``K = L`` and ``2L`` runs. Training uses `[optim]` (SGD,
`optim.lr`, `optim.batch_size`) for ``gia_limit.steps`` steps; `[model]` gives ``β``, ``γ0``, the
σ's; its ``activation`` is replaced by each of ``gia_limit.activations``.
"""

import dataclasses
import math

from ._schema_base import ConfigError, positive

ACTIVATIONS = ("linear", "tanh", "relu", "gelu", "erf")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GiaLimitConfig:
    """`[gia_limit]`: depths, activations and observables of the n = ∞ verdict.

    Attributes:
        depths: depths ``L`` (the limits run at ``K = L``; at least two for the fits).
        activations: the activations compared (each a whole set of runs).
        layer_times: ``τ`` of the one-step feature-kernel changes and the kernels' smallest
            eigenvalues (layer ``round(τL)``).
        steps: training steps ``T`` of the P1 trajectories (at least 1).
        extrapolate_layers: also ``K → ∞`` per depth, ``2 O(2L) − O(L)`` of coupled runs (×3 cost).
        gammas: ``γ0`` values of a scan of the mode A − mode B gaps at ``gamma_depth``; empty: none.
        gamma_depth: the depth of the γ0 scan (0: the smallest of `depths` that is at least 16,
            else the largest).
    """

    depths: tuple[int, ...] = (2, 4, 8, 16, 32)
    activations: tuple[str, ...] = ("linear", "tanh", "relu")
    layer_times: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    steps: int = 3
    extrapolate_layers: bool = True
    gammas: tuple[float, ...] = ()
    gamma_depth: int = 0

    def __post_init__(self):
        if len(self.depths) < 2:
            raise ConfigError("gia_limit.depths", "needs at least two depths", "e.g. [2, 4, 8]")
        for L in self.depths:
            positive("gia_limit.depths", L, integer=True)
        if len(set(self.depths)) != len(self.depths):
            raise ConfigError(
                "gia_limit.depths", f"lists a value twice: {list(self.depths)}", "distinct values"
            )
        if not self.activations or not set(self.activations) <= set(ACTIVATIONS):
            raise ConfigError(
                "gia_limit.activations",
                f"got {list(self.activations)}",
                f"a non-empty list of {ACTIVATIONS}",
            )
        if len(set(self.activations)) != len(self.activations):
            raise ConfigError("gia_limit.activations", "lists a value twice", "distinct values")
        if not self.layer_times:
            raise ConfigError("gia_limit.layer_times", "must not be empty", "a list of τ in (0, 1]")
        for tau in self.layer_times:
            if not (math.isfinite(tau) and 0.0 < tau <= 1.0):
                raise ConfigError(
                    "gia_limit.layer_times", f"contains {tau!r}", "values τ in (0, 1]"
                )
        positive("gia_limit.steps", self.steps, integer=True)
        for g in self.gammas:
            positive("gia_limit.gammas", g)
        positive("gia_limit.gamma_depth", self.gamma_depth, strict=False, integer=True)
        if self.gamma_depth and self.gamma_depth not in self.depths:
            raise ConfigError(
                "gia_limit.gamma_depth",
                f"{self.gamma_depth} is not in gia_limit.depths",
                "0 or one of depths",
            )

    def scan_depth(self) -> int:
        """The depth of the γ0 scan."""
        if self.gamma_depth:
            return self.gamma_depth
        deep = [L for L in sorted(self.depths) if L >= 16]
        return deep[0] if deep else max(self.depths)
