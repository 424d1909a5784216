"""Finite-network runs from a config (pure: config in, result out; no files, no plots)."""

from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr

from ..config import Config, build_loss, build_model, build_task, run_keys
from ..tasks import Task
from ..train import TrainResult, train


def member_grid(cfg: Config, lrs: Sequence[float] | None = None) -> tuple[list[int], list[float]]:
    """Seed index and learning rate of every ensemble member: seed-major, ``seeds × len(lrs)``."""
    grid = [cfg.optim.lr] if not lrs else list(lrs)
    seeds = [s for s in range(cfg.seeds) for _ in grid]
    return seeds, [lr for _ in range(cfg.seeds) for lr in grid]


def run_finite(
    cfg: Config,
    *,
    width: int | None = None,
    depth: int | None = None,
    lrs: Sequence[float] | None = None,
    task: Task | None = None,
    progress: bool | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train ``cfg.seeds`` (× ``len(lrs)``) networks of `[model]` on `[task]` with `[optim]`.

    Member ``(s, lr)`` is initialised from ``fold_in(init_key, s)`` (the same network for every
    learning rate); all members share the batch sequence of ``seed`` (the sequence a limit run of
    the same config replays). The ensemble is one vmapped, once-compiled computation.
    """
    keys = run_keys(cfg)
    task = build_task(cfg, key=keys["task"]) if task is None else task
    seeds, member_lrs = member_grid(cfg, lrs)
    member_keys = jnp.stack([jr.fold_in(keys["init"], s) for s in seeds])
    models = eqx.filter_vmap(lambda k: build_model(cfg, task, width=width, depth=depth, key=k))(
        member_keys
    )
    return train(
        models,
        task,
        optimizer=cfg.optim.name,
        loss=build_loss(cfg),
        lr=jnp.asarray(member_lrs, dtype=task.x_train.dtype),
        num_steps=cfg.optim.steps,
        batch_size=cfg.optim.batch_size,
        every=cfg.output.every,
        layer_times=cfg.output.layer_times,
        ntk=cfg.output.ntk,
        kernels=cfg.output.kernels,
        center=cfg.model.center_output,
        batch_key=keys["batch"],
        progress=progress,
        desc=desc,
    )
