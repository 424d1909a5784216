"""Limit runs from a config: a limit method on the task and batch sequence of the finite runs."""

import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Key

from ..config import (
    Config,
    build_limit,
    build_saveat,
    build_schedule,
    build_task,
    run_keys,
)
from ..dynamics import Points, Trajectory, evolve
from ..tasks import Task
from ._finite import member_grid
from ._plan import LIMIT_SIZE_KEYS, batch_size, choose_storage, in_chunks, plan_members


def run_limit(
    cfg: Config,
    *,
    depth: int | None = None,
    lrs: Sequence[float] | None = None,
    coupling: str | None = None,
    task: Task | None = None,
    progress: bool | None = None,
    quiet: bool = False,
    desc: str = "limit",
    save_also: Sequence[int] = (),
) -> Trajectory:
    """The limit of `[model]` by `[limit]` on `[task]` (``cfg.seeds`` × ``len(lrs)`` members).

    Replays the finite runs' batch sequence (same `seed`); ``K = limit.layer_steps`` (0: the
    depth); ``coupling`` overrides `limit.coupling`. Member ``(s, lr)`` draws from
    ``fold_in(limit_key, s)``: the same draw for every learning rate (deterministic methods solve
    each learning rate once). ``save_also``: steps saved besides those of `output.every`.
    """
    task = build_task(cfg, key=run_keys(cfg)["task"]) if task is None else task
    dynamics = build_limit(cfg, depth=depth, coupling=coupling)
    seeds, member_lrs = member_grid(cfg, lrs)
    points = Points.from_task(task)
    members = len(seeds)
    batch = batch_size(cfg, task)
    dynamics, why = choose_storage(
        cfg.limit.storage, dynamics, points, members, steps=cfg.optim.steps, batch=batch
    )
    if why and not quiet:
        print(why, file=sys.stderr)
    chunk = plan_members(
        dynamics,
        points,
        members,
        batch=batch,
        size_keys=LIMIT_SIZE_KEYS,
        quiet=quiet,
    )
    keys = limit_keys(cfg, seeds)
    member_lrs = jnp.asarray(member_lrs, task.x_train.dtype)
    schedule = build_schedule(cfg, task)
    saveat = build_saveat(cfg, tuple(save_also))

    def run(part: slice) -> Trajectory:
        return evolve(
            dynamics,
            points,
            lr=member_lrs[part],
            schedule=schedule,
            saveat=saveat,
            keys=keys[part],
            progress=progress,
            desc=desc,
            blowup=cfg.optim.blowup,
        )

    traj = in_chunks(members, chunk, run)
    line = dynamics.describe(traj)
    if line and not quiet:
        print(f"{desc}: {line}", file=sys.stderr)
    return traj


def evolve_limit(
    cfg: Config,
    task: Task,
    initial: Any,
    lr,
    *,
    dynamics: Any = None,
    progress: bool | None = None,
    desc: str = "limit",
    save_also: Sequence[int] = (),
) -> Trajectory:
    """The limit of ``cfg`` from given initial draws (e.g. coupled particles, or the particles of
    finite networks), ``lr`` per member, with the config's batch sequence and outputs."""
    dynamics = build_limit(cfg) if dynamics is None else dynamics
    return evolve(
        dynamics,
        Points.from_task(task),
        lr=lr,
        schedule=build_schedule(cfg, task),
        saveat=build_saveat(cfg, tuple(save_also)),
        initial=initial,
        progress=progress,
        desc=desc,
        blowup=cfg.optim.blowup,
    )


def limit_keys(cfg: Config, draws: Sequence[int]) -> Key[Array, " E"]:
    """The limit key of each draw index ``s``: ``fold_in(limit_key, s)``, the draw of `run_limit`'s
    members of seed ``s`` (so the sweep's, GIA's and nondegeneracy's draws are its draws)."""
    return jax.vmap(lambda s: jr.fold_in(run_keys(cfg)["limit"], s))(jnp.asarray(draws))
