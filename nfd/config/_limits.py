"""Limit method names (`limit.method`, with `limit.noise` for particles) to the limit dynamics.

The registry of `nfd.limit`'s methods: a new method is one new file in `nfd/limit` and one line in
`LIMITS`; the schema accepts exactly the names registered here.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..dynamics import AbstractDynamics, AbstractPathDynamics
from ..limit import CholeskyParticles, KernelFixedPoint, LinearExact, MatrixParticles

if TYPE_CHECKING:
    from ._schema import Config


def _matrix_particles(cfg: "Config", **common: Any) -> AbstractDynamics:
    # "auto" starts stored; `nfd.experiments.choose_storage` switches to lean or history when the
    # ensemble does not fit, and sizes the history ("history": steps × batch size columns)
    store = cfg.limit.storage not in ("lean", "history")
    return MatrixParticles(num_particles=cfg.limit.particles, store_noise=store, **common)


def _cholesky_particles(cfg: "Config", **common: Any) -> AbstractDynamics:
    return CholeskyParticles(num_particles=cfg.limit.particles, num_steps=cfg.optim.steps, **common)


def _kernel_fixed_point(cfg: "Config", **common: Any) -> AbstractPathDynamics:
    # moment-matched draws where limit.particles allows them, plain normals otherwise; the
    # iteration starts at limit.start: the causal pass's fixed point (one map evaluation instead
    # of 30-40) or the tiled reference (`KernelFixedPoint.start`)
    lim = cfg.limit
    return KernelFixedPoint(
        num_samples=lim.particles,
        orthogonalize=None,
        start=lim.start,
        damping=lim.damping,
        tol=lim.tol,
        max_iter=lim.max_iter,
        stein_tol=lim.stein_tol,
        **common,
    )


def _linear_exact(cfg: "Config", **common: Any) -> AbstractPathDynamics:
    return LinearExact(**common)


# `limit.method` (with `limit.noise` for particles) -> the limit dynamics
LIMITS: dict[str, Callable[..., AbstractDynamics | AbstractPathDynamics]] = {
    "particles/matrix": _matrix_particles,
    "particles/cholesky": _cholesky_particles,
    "kernel": _kernel_fixed_point,
    "linear_exact": _linear_exact,
}


def limit_key(method: str, noise: str) -> str:
    """The `LIMITS` key of a method and noise: ``method`` (``particles/noise`` for particles)."""
    return f"particles/{noise}" if method == "particles" else method


def limit_name(cfg: "Config") -> str:
    """The `LIMITS` key of ``cfg``'s `[limit]`."""
    return limit_key(cfg.limit.method, cfg.limit.noise)


def limit_methods() -> list[str]:
    """The allowed values of `limit.method`."""
    return list(dict.fromkeys(k.split("/")[0] for k in LIMITS))
