"""Memory plans: how many ensemble members one vmapped computation holds, decided before any
computing from the dynamics' own estimate (`AbstractDynamics.estimate_memory`)."""

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax

from ..config import Config, ConfigError
from ..dynamics import (
    AbstractDynamics,
    Points,
    Trajectory,
    available_memory,
    max_devices,
    mesh_shape,
)
from ..limit import MatrixParticles
from ..tasks import Task

# one chunk may use this fraction of the available memory (the estimates include XLA's temporaries;
# the particle estimate is checked against its buffer assignment to 20 %, mostly from above)
MEMORY_FRACTION = 0.9

# on one CPU device, members whose training step costs more than this many FLOPs run one at a
# time: one such member already keeps every core busy, and a vmapped ensemble of them costs more
# than its members alone (scripts/bench_ensemble.py on 2 cores, tanh L = 8, 48 points: 16 members
# in one batch cost 0.55× sixteen singles at n = 128, 38 MFLOP per member step, but 1.4–1.5× at
# n = 256 and 512, 0.15–0.6 GFLOP, where one at a time costs 1.0×)
CPU_ALONE_FLOPS = 1e8

# the config keys that set the size of one member, per kind of dynamics (named in a refusal)
FINITE_SIZE_KEYS = ("model.width", "model.depth", "task.n_train", "task.n_test")
LIMIT_SIZE_KEYS = ("limit.particles", "limit.layer_steps", "model.depth", "task.n_train")


def plan_members(
    dynamics: Any,
    points: Points,
    members: int,
    *,
    batch: int,
    size_keys: Sequence[str],
    quiet: bool = False,
    memory: int | None = None,
) -> int:
    """The number of members per vmapped chunk: all of them when their estimated memory fits
    `MEMORY_FRACTION` of the available memory (of each accelerator, the members being sharded
    over them: `nfd.dynamics.member_mesh`), else as many as fit (chunks give the same result as
    one batch: members never interact). Prints the estimate and the plan to stderr; refuses
    (`ConfigError` naming ``size_keys``) only when one member cannot fit. ``memory``: plan for
    this many bytes instead of what is available now (`nfd run --dry-run --memory`)."""
    if not isinstance(dynamics, AbstractDynamics):
        return members  # path dynamics solve one member at a time
    per = dynamics.estimate_memory(points, 1)
    if per is None:
        return members
    have = available_memory() if memory is None else memory
    devices = accelerators()  # members shard over accelerators, each with its own memory
    per_device = 0 if have is None else int(MEMORY_FRACTION * have) // max(per, 1)
    chunk = members if have is None else min(members, per_device * devices)
    if devices > 1 and devices <= chunk < members:
        chunk -= chunk % devices  # equal shards
    M = getattr(dynamics, "num_particles", None)
    if chunk < 1 and have is not None and M and devices > 1:  # one member over several devices
        chunk = _particle_split_chunk(members, M, devices, per, MEMORY_FRACTION * have)
    flops = dynamics.step_flops(points, batch) or 0.0
    alone = chunk > 1 and _runs_alone(flops)
    chunk = 1 if alone else chunk
    if not quiet or chunk < members:
        have_txt = f"{have / 2**30:.1f} GiB available" if have else "available memory unknown"
        cost = f", ~{members * flops / 1e9:.1f} GFLOP per training step" if flops else ""
        plan = "" if chunk >= members else f"; runs in chunks of {max(chunk, 1)} members"
        if alone:
            plan = (
                f"; runs its members one at a time (one member's step, {flops / 1e9:.2f} GFLOP, "
                f"keeps this CPU busy: a vmapped batch of them would cost more)"
            )
        print(
            f"{type(dynamics).__name__}: members={members} points={points.num_points}: estimated "
            f"memory {members * per / 2**30:.2f} GiB ({have_txt}){cost}{plan}",
            file=sys.stderr,
        )
    if chunk < 1:
        assert have is not None
        raise ConfigError(
            size_keys[0],
            f"the run needs an estimated {per / 2**30:.1f} GiB for one member but "
            f"{have / 2**30:.1f} GiB is available",
            "reduce " + ", ".join(size_keys),
        )
    return chunk


def _runs_alone(flops: float) -> bool:
    """Whether members of ``flops`` per training step run one at a time (`CPU_ALONE_FLOPS`):
    on a single CPU device only (accelerators and meshes keep their batches)."""
    cpu = jax.devices()[0].platform == "cpu"
    return cpu and max_devices() == 1 and flops > CPU_ALONE_FLOPS


def _particle_split_chunk(members: int, M: int, devices: int, per: int, budget: float) -> int:
    """The most members per chunk when a particle method's members split their particles over
    devices (the mesh of `nfd.dynamics.member_mesh`, `mesh_shape`) and every device holds its
    share within ``budget`` bytes; 0 if not even one member fits that way."""
    for chunk in range(members, 0, -1):
        d, split = mesh_shape(chunk, M, devices)
        if -(-chunk // d) * per / split <= budget:
            return chunk
    return 0


def batch_size(cfg: Config, task: Task) -> int:
    """``|B_t|``: `optim.batch_size`, or every training point (full batch)."""
    return cfg.optim.batch_size or task.n_train


def choose_storage(
    storage: str,
    dynamics: Any,
    points: Points,
    members: int,
    *,
    steps: int,
    batch: int,
    memory: int | None = None,
) -> tuple[Any, str | None]:
    """The storage form of random-matrix particles (`limit.storage`) and, when ``"auto"`` chose
    a form other than stored, the reason (one line). The drift's history form has ``steps ×
    batch`` columns (one per point of every training step's batch).

    ``"history"`` is the lean form with its drift as the history (`nfd.limit.DriftHistory`).
    ``"auto"`` takes the first of stored, lean (the ``M × M`` drift) and history whose whole
    ensemble fits `MEMORY_FRACTION` of the memory in one batch; when none does, the smaller of
    lean and history (the plan then runs it in chunks or refuses it). All forms give the same
    numbers to rounding."""
    if not isinstance(dynamics, MatrixParticles) or storage in ("stored", "lean"):
        return dynamics, None
    rank = steps * batch
    lean = dataclasses.replace(dynamics, store_noise=False)
    history = dataclasses.replace(lean, drift_rank=rank)
    if storage == "history":
        return history, None
    have = available_memory() if memory is None else memory
    budget = None if have is None else MEMORY_FRACTION * have * accelerators()
    forms = {"stored": dynamics, "lean": lean, "history": history}
    sizes = {form: d.estimate_memory(points, members) for form, d in forms.items()}
    if budget is None or sizes["stored"] <= budget:
        return dynamics, None
    form = "lean" if sizes["lean"] <= budget or sizes["lean"] <= sizes["history"] else "history"
    gib = 2**30
    fits = "fits" if sizes[form] <= budget else "does not fit in one batch either"
    reason = (
        f"limit.storage = 'auto' chose the {form} form: the stored one needs "
        f"{sizes['stored'] / gib:.1f} GiB for {members} members, over {budget / gib:.1f} GiB "
        f"({MEMORY_FRACTION:.0%} of the memory); lean needs {sizes['lean'] / gib:.1f} GiB, "
        f"history (rank {rank} = steps × batch) {sizes['history'] / gib:.1f} GiB: {form} {fits}"
    )
    if form == "history":
        reason += "; the history form costs every step what the last step costs"
    return forms[form], reason


def accelerators() -> int:
    """How many devices with memory of their own an ensemble may use (1 on a CPU, whose
    forced host devices share one memory)."""
    if jax.devices()[0].platform == "cpu":
        return 1
    return max_devices()


def in_chunks(members: int, chunk: int, run: Callable[[slice], Trajectory]) -> Trajectory:
    """``run(part)`` for consecutive member slices of at most ``chunk`` members, concatenated."""
    parts = [run(slice(lo, min(lo + chunk, members))) for lo in range(0, members, chunk)]
    return parts[0] if len(parts) == 1 else Trajectory.concat(parts)
