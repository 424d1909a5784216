"""`[nondegeneracy]`: the smallest eigenvalue of the feature kernels of finite networks against
width and depth (the non-degeneracy assumption of the paper's convergence theorem).

Read by ``kind = "nondegeneracy"`` runs (`nfd.experiments.run_nondegeneracy`). For every width ×
depth, ``seeds`` networks are trained with `[optim]` on `[task]`; at the saved steps
(`output.every`) the ``P × P`` Gram matrices ``Φ_ℓ = φ(h_ℓ) φ(h_ℓ)ᵀ/N`` and ``G_ℓ`` over the
training points are recorded at the blocks ``ℓ = round(τ L)``. The n = ∞ reference is the
init-kernel recursion at ``t = 0`` and, with ``limit``, the kernel fixed point (mode A, ``K = L``,
`limit.particles` samples per draw set) over training.
"""

import dataclasses
import math

from ._schema_base import ConfigError, positive


@dataclasses.dataclass(frozen=True, kw_only=True)
class NondegeneracyConfig:
    """`[nondegeneracy]`: the grid of the finite-width non-degeneracy measurement.

    Attributes:
        widths: widths ``N`` (the ``1/N`` fit needs at least 3; each at least `task.n_train`).
        depths: depths ``L`` (the limit runs at ``K = L``).
        taus: depth-times ``τ`` in ``[0, 1]``; block ``round(τ L)``.
        limit: the n = ∞ reference over training by the kernel fixed point (mode A, ``K = L``;
            SGD, one-layer blocks); without it only the ``t = 0`` recursion is the reference.
        limit_seeds: independent draw sets of the kernel fixed point (0: ``seeds``).
    """

    widths: tuple[int, ...] = (32, 64, 128, 256)
    depths: tuple[int, ...] = (4, 16)
    taus: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    limit: bool = True
    limit_seeds: int = 0

    def __post_init__(self):
        for key, values in (
            ("nondegeneracy.widths", self.widths),
            ("nondegeneracy.depths", self.depths),
        ):
            if not values:
                raise ConfigError(key, "must not be empty", "a list of positive integers")
            for v in values:
                positive(key, v, integer=True)
            if list(values) != sorted(set(values)):
                raise ConfigError(key, "must be strictly increasing", "e.g. [32, 64, 128]")
        if not self.taus:
            raise ConfigError("nondegeneracy.taus", "must not be empty", "a list of τ in [0, 1]")
        for tau in self.taus:
            if not (math.isfinite(tau) and 0.0 <= tau <= 1.0):
                raise ConfigError("nondegeneracy.taus", f"contains {tau!r}", "values τ in [0, 1]")
        if list(self.taus) != sorted(set(self.taus)):
            raise ConfigError("nondegeneracy.taus", "must be strictly increasing", "e.g. [0, 1]")
        positive("nondegeneracy.limit_seeds", self.limit_seeds, strict=False, integer=True)
        if self.limit_seeds == 1:
            raise ConfigError(
                "nondegeneracy.limit_seeds", "needs >= 2 draw sets (an SE), got 1", "0 or >= 2"
            )


def check_nondegeneracy(cfg) -> None:
    """The cross-table checks of a ``kind = "nondegeneracy"`` config (`Config.__post_init__`)."""
    nd = cfg.nondegeneracy
    if cfg.seeds < 2:
        raise ConfigError("seeds", f"needs >= 2 for standard errors, got {cfg.seeds}", ">= 2")
    if cfg.task.name != "npz" and cfg.task.n_train > min(nd.widths):
        raise ConfigError(
            "nondegeneracy.widths",
            f"the smallest width {min(nd.widths)} is below task.n_train = {cfg.task.n_train}: "
            "the P × P Gram of N features has rank <= N, so λ_min = 0 there by construction",
            "widths >= task.n_train (P)",
        )
    if not nd.limit:
        return
    if cfg.optim.name != "sgd":
        raise ConfigError(
            "optim.name",
            f"{cfg.optim.name!r} has no limit solver (nondegeneracy.limit = true)",
            "'sgd', or nondegeneracy.limit = false",
        )
    if cfg.model.block != "one_layer" or cfg.model.post_activation:
        raise ConfigError(
            "model.block",
            "the kernel fixed point solves one-layer pre-activation blocks only",
            "'one_layer' with post_activation = false, or nondegeneracy.limit = false",
        )
