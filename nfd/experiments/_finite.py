"""Finite-network runs from a config (pure: config in, result out; no files, no plots)."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr

from ..config import Config, build_loss, build_model, build_task, run_keys
from ..tasks import Task
from ..train import TrainResult, train


def run_finite(
    cfg: Config,
    *,
    width: int | None = None,
    depth: int | None = None,
    task: Task | None = None,
    progress: bool | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train ``cfg.seeds`` independent networks of `[model]` on `[task]` with `[optim]`.

    Member ``e`` is initialised from ``fold_in(init_key, e)``; all members share the batch
    sequence of ``seed`` (the sequence a limit run of the same config replays).
    """
    keys = run_keys(cfg)
    task = build_task(cfg, key=keys["task"]) if task is None else task
    member_keys = jnp.stack([jr.fold_in(keys["init"], e) for e in range(cfg.seeds)])
    models = eqx.filter_vmap(lambda k: build_model(cfg, task, width=width, depth=depth, key=k))(
        member_keys
    )
    lr = jnp.full((cfg.seeds,), cfg.optim.lr, dtype=task.x_train.dtype)
    return train(
        models,
        task,
        optimizer=cfg.optim.name,
        loss=build_loss(cfg),
        lr=lr,
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
