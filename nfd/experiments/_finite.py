"""Finite-network runs from a config (pure: config in, result out; no files, no plots)."""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from ..config import (
    Config,
    ConfigError,
    build_network,
    build_saveat,
    build_schedule,
    build_task,
    run_keys,
)
from ..dynamics import Points, Trajectory, draw_members, evolve
from ..nn import AbstractReadout
from ..tasks import Task
from ..train import FiniteNetwork
from ._plan import FINITE_SIZE_KEYS, batch_size, in_chunks, plan_members


def member_grid(cfg: Config, lrs: Sequence[float] | None = None) -> tuple[list[int], list[float]]:
    """Seed index and learning rate of every ensemble member: seed-major, ``seeds × len(lrs)``."""
    grid = [cfg.optim.lr] if not lrs else list(lrs)
    seeds = [s for s in range(cfg.seeds) for _ in grid]
    return seeds, [lr for _ in range(cfg.seeds) for lr in grid]


def antithetic_seeds(seeds: Sequence[int], antithetic: bool) -> tuple[list[int], list[float]]:
    """Initialisation index and readout sign of each member seed.

    With ``antithetic``, seeds ``2p`` and ``2p + 1`` form a pair: both initialise from draw ``p``
    and the second negates the readout, ``v(0) → −v(0)`` (same ``U``, ``W``). A pair mean cancels
    every part of the noise that is odd in ``v(0)``: all of the uncentred ``f(0)``, and the odd
    ``O(1/√n)`` part of centred trajectories; their even part (kernel fluctuations) remains.
    """
    if not antithetic:
        return list(seeds), [1.0] * len(seeds)
    return [s // 2 for s in seeds], [1.0 - 2.0 * (s % 2) for s in seeds]


def finite_ensemble(
    cfg: Config,
    task: Task,
    *,
    width: int | None = None,
    depth: int | None = None,
    lrs: Sequence[float] | None = None,
    antithetic: bool = False,
    readout: AbstractReadout | None = None,
    backward: str | None = None,
    members: slice = slice(None),
) -> tuple[FiniteNetwork, eqx.Module, jax.Array]:
    """The network of `run_finite`, its members' initial draws and learning rates.

    Member ``(s, lr)`` is initialised from ``fold_in(init_key, s)`` (the same network for every
    learning rate); with ``antithetic`` (``cfg.seeds`` even), seeds ``2p, 2p + 1`` are the pair
    ``v(0), −v(0)`` of draw ``p`` (see `antithetic_seeds`). ``members``: draw only these.
    """
    if antithetic and cfg.seeds % 2:
        raise ConfigError(
            "seeds", f"must be even for antithetic pairs, got {cfg.seeds}", "2, 4, ..."
        )
    net = build_network(cfg, width=width, depth=depth, readout=readout, backward=backward)
    seeds, member_lrs = member_grid(cfg, lrs)
    draws, signs = antithetic_seeds(seeds, antithetic)
    draws, signs, member_lrs = draws[members], signs[members], member_lrs[members]
    member_keys = jax.vmap(lambda s: jr.fold_in(run_keys(cfg)["init"], s))(jnp.asarray(draws))
    dtype = task.x_train.dtype
    models = draw_members(net, Points.from_task(task), member_keys)
    signs_ = jnp.asarray(signs, dtype)[:, None, None]
    models = eqx.tree_at(lambda m: m.v, models, signs_ * models.v)
    return net, models, jnp.asarray(member_lrs, dtype=dtype)


def run_finite(
    cfg: Config,
    *,
    width: int | None = None,
    depth: int | None = None,
    lrs: Sequence[float] | None = None,
    task: Task | None = None,
    progress: bool | None = None,
    desc: str = "train",
    antithetic: bool = False,
    save_also: Sequence[int] = (),
    readout: AbstractReadout | None = None,
    backward: str | None = None,
    saveat_fn=None,
) -> Trajectory:
    """Train ``cfg.seeds`` (× ``len(lrs)``) networks of `[model]` on `[task]` with `[optim]`.

    The members are `finite_ensemble`'s; all share the batch sequence of ``seed`` (the sequence
    a limit run of the same config replays). The ensemble is one vmapped, once-compiled
    computation, or consecutive chunks of it when it does not fit in memory (`plan_members`). ``save_also``: steps saved besides those of `output.every`; ``readout``,
    ``backward`` override the network's; ``saveat_fn``: extra observables (`SaveAt.fn`).
    """
    task = build_task(cfg, key=run_keys(cfg)["task"]) if task is None else task
    points = Points.from_task(task)
    net = build_network(cfg, width=width, depth=depth, readout=readout, backward=backward)
    members = len(member_grid(cfg, lrs)[0])
    batch = batch_size(cfg, task)
    chunk = plan_members(net, points, members, batch=batch, size_keys=FINITE_SIZE_KEYS, quiet=True)
    schedule = build_schedule(cfg, task)
    saveat = build_saveat(cfg, tuple(save_also), saveat_fn)

    def run(part: slice) -> Trajectory:
        net, models, member_lrs = finite_ensemble(
            cfg,
            task,
            width=width,
            depth=depth,
            lrs=lrs,
            antithetic=antithetic,
            readout=readout,
            backward=backward,
            members=part,
        )
        return evolve(
            net,
            points,
            lr=member_lrs,
            schedule=schedule,
            saveat=saveat,
            initial=models,
            progress=progress,
            desc=desc,
            blowup=cfg.optim.blowup,
        )

    return in_chunks(members, chunk, run)
