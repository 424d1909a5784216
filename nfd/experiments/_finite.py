"""Finite-network runs from a config (pure: config in, result out; no files, no plots)."""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from ..config import Config, ConfigError, build_loss, build_model, build_task, run_keys
from ..tasks import Task
from ..train import TrainResult, train


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


def draw_ensemble(make, *args):
    """``make(*a)`` for every ``a`` along the leading axis of ``args``, stacked like
    ``eqx.filter_vmap(make)(*args)`` (array leaves stacked, the rest shared), as one compiled
    sequential map: an un-jitted vmap compiles every small op separately, and a jitted vmap of
    the samplers compiles about twice as slowly."""
    shapes = eqx.filter_eval_shape(make, *(x[0] for x in args))
    _, static = eqx.partition(shapes, lambda x: isinstance(x, jax.ShapeDtypeStruct))

    @eqx.filter_jit
    def stacked(xs):
        return jax.lax.map(lambda a: eqx.filter(make(*a), eqx.is_array), xs)

    return eqx.combine(stacked(args), static)


def finite_ensemble(
    cfg: Config,
    task: Task,
    *,
    width: int | None = None,
    depth: int | None = None,
    lrs: Sequence[float] | None = None,
    antithetic: bool = False,
):
    """The initial networks of `run_finite` and each member's learning rate: ``(models, lrs)``.

    Member ``(s, lr)`` is initialised from ``fold_in(init_key, s)`` (the same network for every
    learning rate); with ``antithetic`` (``cfg.seeds`` even), seeds ``2p, 2p + 1`` are the pair
    ``v(0), −v(0)`` of draw ``p`` (see `antithetic_seeds`).
    """
    if antithetic and cfg.seeds % 2:
        raise ConfigError(
            "seeds", f"must be even for antithetic pairs, got {cfg.seeds}", "2, 4, ..."
        )
    seeds, member_lrs = member_grid(cfg, lrs)
    draws, signs = antithetic_seeds(seeds, antithetic)
    member_keys = jax.vmap(lambda s: jr.fold_in(run_keys(cfg)["init"], s))(jnp.asarray(draws))
    dtype = task.x_train.dtype

    def make(k, sign):
        model = build_model(cfg, task, width=width, depth=depth, key=k)
        return eqx.tree_at(lambda m: m.v, model, sign * model.v)

    models = draw_ensemble(make, member_keys, jnp.asarray(signs, dtype))
    return models, jnp.asarray(member_lrs, dtype=dtype)


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
) -> TrainResult:
    """Train ``cfg.seeds`` (× ``len(lrs)``) networks of `[model]` on `[task]` with `[optim]`.

    The members are `finite_ensemble`'s; all share the batch sequence of ``seed`` (the sequence
    a limit run of the same config replays). The ensemble is one vmapped, once-compiled
    computation. ``save_also``: steps saved besides those of `output.every`.
    """
    keys = run_keys(cfg)
    task = build_task(cfg, key=keys["task"]) if task is None else task
    models, member_lrs = finite_ensemble(
        cfg, task, width=width, depth=depth, lrs=lrs, antithetic=antithetic
    )
    return train(
        models,
        task,
        optimizer=cfg.optim.name,
        loss=build_loss(cfg),
        lr=member_lrs,
        num_steps=cfg.optim.steps,
        batch_size=cfg.optim.batch_size,
        every=cfg.output.every,
        save_also=save_also,
        layer_times=cfg.output.layer_times,
        ntk=cfg.output.ntk,
        kernels=cfg.output.kernels,
        center=cfg.model.center_output,
        batch_key=keys["batch"],
        progress=progress,
        desc=desc,
    )
