"""Limit runs from a config: the NFD solver on the task and batch sequence of the finite runs."""

import sys
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr

from ..config import (
    Config,
    ConfigError,
    build_activation,
    build_loss,
    build_param,
    build_task,
    run_keys,
)
from ..limit import (
    READOUTS,
    available_memory,
    estimate_memory,
    sample_particles,
    simulate_limit,
    step_flops,
)
from ..model import BACKWARD
from ..tasks import Task
from ..train import TrainResult, batch_schedule
from ._finite import member_grid

COUPLING_TO_BACKWARD = {"exact": "reused", "decoupled": "decoupled"}


def layer_steps(cfg: Config, depth: int | None = None) -> int:
    """``K``: `limit.layer_steps`, or the network depth when it is 0 (K = L, spec §3.4)."""
    return cfg.limit.layer_steps or (cfg.model.depth if depth is None else depth)


def check_limit_memory(
    cfg: Config,
    task: Task,
    K: int,
    *,
    repeats: int | None = None,
    coupling: str | None = None,
    quiet: bool = False,
) -> int:
    """Print the estimated memory and cost of a particle run; refuse (exit 2) if it cannot fit."""
    M = cfg.limit.particles
    E = cfg.seeds if repeats is None else repeats
    pts = task.n_train + task.n_test
    itemsize = 8 if task.x_train.dtype == jnp.float64 else 4
    decoupled = (cfg.limit.coupling if coupling is None else coupling) == "decoupled"
    blocks = 2 if cfg.model.block == "two_layer" else 1
    need = estimate_memory(
        M,
        K,
        pts,
        task.out_dim,
        task.in_dim,
        E,
        itemsize=itemsize,
        decoupled=decoupled,
        blocks=blocks,
    )
    batch = cfg.optim.batch_size or task.n_train
    flops = E * step_flops(M, K, pts, batch, task.out_dim, decoupled=decoupled, blocks=blocks)
    have = available_memory()
    if not quiet:
        have_txt = f"{have / 2**30:.1f} GiB available" if have else "available memory unknown"
        print(
            f"limit: M={M} K={K} E={E} points={pts}: estimated memory {need / 2**30:.2f} GiB "
            f"({have_txt}), ~{flops / 1e9:.1f} GFLOP per training step",
            file=sys.stderr,
        )
    if have is not None and need > have:
        raise ConfigError(
            "limit.particles",
            f"the run needs an estimated {need / 2**30:.1f} GiB but "
            f"{have / 2**30:.1f} GiB is available",
            "reduce limit.particles, limit.layer_steps, seeds or task.n_test",
        )
    return need


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
) -> TrainResult:
    """The NFD limit of `[model]` on `[task]` (``cfg.seeds`` × ``len(lrs)`` repetitions).

    Replays the finite runs' batch sequence (same `seed`); ``K = limit.layer_steps`` (0: the
    depth); ``coupling`` overrides `limit.coupling`. Repetition ``(s, lr)`` draws its particles from
    ``fold_in(limit_key, s)``: the same particles for every learning rate. ``save_also``: steps
    saved besides those of `output.every` (random-matrix particles only).
    """
    keys = run_keys(cfg)
    task = build_task(cfg, key=keys["task"]) if task is None else task
    K = layer_steps(cfg, depth)
    lim = cfg.limit
    if lim.method == "linear_exact":
        return _run_linear_exact(cfg, task, K, lrs, coupling, keys)
    if lim.method == "kernel":
        return _run_fixed_point(cfg, task, K, lrs, coupling, keys)
    if lim.method == "particles" and lim.noise == "cholesky":
        return _run_cholesky(cfg, task, K, lrs, keys, progress=progress, desc=desc)
    if lim.method != "particles" or lim.noise != "matrix":
        raise ConfigError(
            "limit.method",
            f"method {lim.method!r} with noise {lim.noise!r} is not available in this version",
            "method = 'particles', noise = 'matrix'",
        )
    seeds, member_lrs = member_grid(cfg, lrs)
    mode = lim.coupling if coupling is None else coupling
    check_limit_memory(cfg, task, K, repeats=len(seeds), coupling=mode, quiet=quiet)
    param = build_param(cfg)
    backward = BACKWARD[COUPLING_TO_BACKWARD[mode]]()
    rep_keys = jnp.stack([jr.fold_in(keys["limit"], s) for s in seeds])
    dtype = task.x_train.dtype
    particles = eqx.filter_vmap(
        lambda k: sample_particles(
            lim.particles,
            K,
            task.in_dim,
            task.out_dim,
            sigma_out=param.sigma_out,
            coupling=backward,
            block=cfg.model.block,
            dtype=dtype,
            key=k,
        )
    )(rep_keys)
    lr = jnp.asarray(member_lrs, dtype)
    return simulate_config(
        cfg, task, particles, lr, progress=progress, desc=desc, save_also=save_also
    )


def simulate_config(
    cfg: Config,
    task: Task,
    particles,
    lr,
    *,
    progress: bool | None = None,
    desc: str = "limit",
    save_also: Sequence[int] = (),
) -> TrainResult:
    """`simulate_limit` of batched ``particles`` with the config's parameterization, activation,
    readout, loss, batch sequence and outputs, on ``task``; ``lr`` per repetition."""
    return simulate_limit(
        particles,
        task.x_train,
        task.y_train,
        task.x_test,
        task.y_test,
        param=build_param(cfg),
        activation=build_activation(cfg),
        readout=READOUTS[cfg.limit.readout](),
        loss=build_loss(cfg),
        lr=lr,
        schedule=batch_schedule(
            task.n_train, cfg.optim.batch_size, cfg.optim.steps, key=run_keys(cfg)["batch"]
        ),
        every=cfg.output.every,
        save_also=save_also,
        layer_times=cfg.output.layer_times,
        ntk=cfg.output.ntk,
        kernels=cfg.output.kernels,
        progress=progress,
        desc=desc,
    )


def _run_linear_exact(cfg: Config, task: Task, K: int, lrs, coupling, keys) -> TrainResult:
    """`method = "linear_exact"` (spec §4.4): deterministic, so each learning rate is solved once
    and repeated over the ``seeds`` axis (the members then have zero spread)."""
    from ..limit import linear_exact

    lim = cfg.limit
    _, member_lrs = member_grid(cfg, lrs)
    mode = lim.coupling if coupling is None else coupling
    schedule = batch_schedule(
        task.n_train, cfg.optim.batch_size, cfg.optim.steps, key=keys["batch"]
    )
    solved = {}
    for lr in dict.fromkeys(member_lrs):
        solved[lr] = linear_exact(
            task.x_train,
            task.y_train,
            task.x_test,
            task.y_test,
            param=build_param(cfg),
            num_layer_steps=K,
            coupling=BACKWARD[COUPLING_TO_BACKWARD[mode]](),
            readout=READOUTS[lim.readout](),
            loss=build_loss(cfg),
            lr=lr,
            schedule=schedule,
            every=cfg.output.every,
            layer_times=cfg.output.layer_times,
            ntk=cfg.output.ntk,
            kernels=cfg.output.kernels,
            activation=build_activation(cfg),
        )
    members = [solved[lr] for lr in member_lrs]
    first = members[0]
    shared = ("steps", "step_times")  # the only fields without the leading member axis
    stacked: dict[str, Any] = {
        k: None if v is None else jnp.concatenate([getattr(m, k) for m in members])
        for k, v in vars(first).items()
        if k not in shared
    }
    return TrainResult(steps=first.steps, step_times=first.step_times, **stacked)


def _run_cholesky(cfg: Config, task: Task, K: int, lrs, keys, *, progress, desc) -> TrainResult:
    """`noise = "cholesky"` (spec §4.2, mode B only): no M² memory; the clipped Schur-complement
    mass is reported on stderr."""
    from ..limit import simulate_limit_cholesky

    lim = cfg.limit
    _, member_lrs = member_grid(cfg, lrs)
    dtype = task.x_train.dtype
    schedule = batch_schedule(
        task.n_train, cfg.optim.batch_size, cfg.optim.steps, key=keys["batch"]
    )
    pairs = (cfg.optim.steps + 1) * (task.n_train + task.n_test)
    if pairs > lim.particles:
        raise ConfigError(
            "limit.particles",
            f"noise = 'cholesky' needs (T+1)·(P+Q) = {pairs} <= particles, got {lim.particles}",
            "more particles, or limit.noise = 'matrix'",
        )
    res, info = simulate_limit_cholesky(
        task.x_train,
        task.y_train,
        task.x_test,
        task.y_test,
        param=build_param(cfg),
        activation=build_activation(cfg),
        num_particles=lim.particles,
        num_layer_steps=K,
        readout=READOUTS[lim.readout](),
        loss=build_loss(cfg),
        lr=jnp.asarray(member_lrs, dtype),
        schedule=schedule,
        every=cfg.output.every,
        layer_times=cfg.output.layer_times,
        ntk=cfg.output.ntk,
        kernels=cfg.output.kernels,
        key=keys["limit"],
        progress=progress,
        desc=desc,
    )
    print(
        f"limit[cholesky]: clipped Schur-complement mass ξ {float(jnp.max(info.clipped_xi)):.2e}"
        f", ρ {float(jnp.max(info.clipped_rho)):.2e}",
        file=sys.stderr,
    )
    return res


def _run_fixed_point(cfg: Config, task: Task, K: int, lrs, coupling, keys) -> TrainResult:
    """`method = "kernel"` (spec §4.3, mode B): the kernel fixed point with ``limit.particles``
    samples per draw set and ``seeds`` independent draw sets (the ensemble axis), per learning
    rate; convergence is reported on stderr."""
    from ..limit import fixed_point

    lim = cfg.limit
    mode = lim.coupling if coupling is None else coupling
    if mode != "decoupled":
        raise ConfigError(
            "limit.coupling",
            "method = 'kernel' is implemented for mode B only",
            "'decoupled', or method = 'particles' for mode A",
        )
    grid = list(lrs) if lrs else [cfg.optim.lr]
    schedule = batch_schedule(
        task.n_train, cfg.optim.batch_size, cfg.optim.steps, key=keys["batch"]
    )
    results = []
    for lr in grid:
        res, info = fixed_point(
            task.x_train,
            task.y_train,
            task.x_test,
            task.y_test,
            param=build_param(cfg),
            activation=build_activation(cfg),
            num_layer_steps=K,
            coupling=BACKWARD["decoupled"](),
            readout=READOUTS[lim.readout](),
            loss=build_loss(cfg),
            lr=lr,
            schedule=schedule,
            num_samples=lim.particles,
            num_draw_sets=cfg.seeds,
            every=cfg.output.every,
            layer_times=cfg.output.layer_times,
            ntk=cfg.output.ntk,
            kernels=cfg.output.kernels,
            key=keys["limit"],
        )
        print(
            f"limit[kernel] lr={lr:g}: iterations {jnp.asarray(info.iterations).tolist()}, "
            f"residual {float(jnp.max(info.residual)):.1e}",
            file=sys.stderr,
        )
        results.append(res)
    if len(results) == 1:
        return results[0]
    # seed-major members (seed s, lr r) -> index s * len(grid) + r, as member_grid orders them
    shared = ("steps", "step_times")
    first = results[0]
    stacked: dict[str, Any] = {}
    for k, v in vars(first).items():
        if k in shared:
            continue
        if v is None:
            stacked[k] = None
            continue
        per = jnp.stack([getattr(r, k) for r in results], axis=1)  # (E, Lr, ...)
        stacked[k] = per.reshape(-1, *per.shape[2:])
    return TrainResult(steps=first.steps, step_times=first.step_times, **stacked)
