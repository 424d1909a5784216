"""`evolve`: THE training loop of every dynamics (finite network and limit methods alike).

It owns what the dynamics share: the vmap over ensemble members (seeds × learning rates), jit
with buffer donation (the evolving state is updated in place), the batch schedule, the saved
steps, divergence bookkeeping (`RESULTS` codes, ``failed_step``, NaN after a member diverges,
``throw``), step timing and the progress bar. A dynamics only says how one member is drawn,
stepped and observed (`AbstractDynamics`), or solves a member's whole path (`AbstractPathDynamics`).
"""

import dataclasses
import sys
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, Key

from .._results import RESULTS
from ..nn import split_accuracy, split_losses
from ._base import AbstractDynamics, AbstractPathDynamics, Observables
from ._checkpoint import CheckpointCall, checkpoint_call
from ._points import Points
from ._saveat import SaveAt
from ._sharding import describe_mesh, fetch, member_mesh, shard_members
from ._trajectory import Trajectory

BLOWUP = 1e6  # a loss above BLOWUP × max(loss(0), 1) has diverged (`optim.blowup`)


def evolve(
    dynamics: AbstractDynamics | AbstractPathDynamics,
    points: Points,
    *,
    lr: Float[Array, " E"],
    schedule: Int[Array, "T B"],
    saveat: SaveAt,
    initial: Any = None,
    keys: Key[Array, " E"] | None = None,
    progress: bool | None = None,
    desc: str = "",
    throw: bool = False,
    blowup: float = BLOWUP,
) -> Trajectory:
    """Train an ensemble of members of ``dynamics`` for ``T = len(schedule)`` steps.

    Args:
        dynamics: the finite network or a limit method.
        points: the tracked points (training points first).
        lr: base learning rate ``η0`` of each member ``(E,)``.
        schedule: the batch index sequence ``(T, B)`` (`batch_schedule`), shared by all members.
        saveat: the saved steps (its last step must be ``T``) and optional observables.
        initial: the members' initial draws (leading axis E), e.g. `draw_members` with a readout
            flipped, or the particles of a finite network; time-marching dynamics only.
        keys: one key per member, to draw ``initial`` (time-marching) or each path (path
            dynamics).
        progress: show a progress bar (default: when stderr is a TTY).
        desc: the progress bar's label.
        throw: raise if any member diverged (default: record it; STYLE.md §7).
        blowup: a member whose training loss (of a step's batch, or at a saved step, the last
            included) is non-finite or exceeds ``blowup × max(loss(0), 1)`` has diverged at the
            update before it (`Trajectory.failed_step`).

    Returns:
        The `Trajectory` of every member.
    """
    num_steps = int(schedule.shape[0])
    if saveat.num_steps != num_steps:
        raise ValueError(f"saveat ends at step {saveat.num_steps}, the schedule has {num_steps}.")
    steps = (saveat.steps, saveat.ntk, saveat.kernels, saveat.layer_times)
    call = checkpoint_call(type(dynamics).__name__, dynamics, points, lr, schedule, steps, keys)
    done = None if call is None else call.load("done")
    if done is not None:
        traj = done
    elif isinstance(dynamics, AbstractPathDynamics):
        run = (call, blowup, progress, desc)
        traj = _solve_paths(dynamics, points, lr, schedule, saveat, keys, *run)
    else:
        if initial is None:
            if keys is None:
                raise ValueError("evolve needs `initial` or `keys` for a time-marching dynamics.")
            initial = draw_members(dynamics, points, keys)
        run = (progress, desc, call, blowup)
        traj = _march(dynamics, points, lr, schedule, saveat, initial, *run)
    if call is not None and done is None:
        call.finish(traj)
    failed = int(jnp.sum(traj.status != RESULTS.successful._value))
    if throw and failed:
        raise RuntimeError(f"{failed} member(s) diverged. {RESULTS[RESULTS.nonfinite]}")
    return traj


def draw_members(dynamics: AbstractDynamics, points: Points, keys: Key[Array, " E"]) -> Any:
    """``dynamics.draw`` for every key, stacked on a leading member axis (`map_members`)."""
    return map_members(_draw_one, keys, context=(dynamics, points))


def _draw_one(dynamics: AbstractDynamics, points: Points, key) -> Any:
    return dynamics.draw(points, key=key)


def map_members(make, *args, context: tuple = ()) -> Any:
    """``make(*context, *a)`` for every ``a`` along the leading axis of ``args``, stacked like
    ``eqx.filter_vmap`` would (array leaves stacked, the rest shared), as one jitted ``lax.map``.

    An un-jitted vmap compiles every small op separately, and a jitted vmap of the samplers
    compiles about twice as slowly. The compiled map is cached on ``make`` (pass a module-level
    function and the objects it reads as ``context``, whose arrays are traced): repeated draws of
    the same structure compile once.
    """
    shapes = eqx.filter_eval_shape(make, *context, *(x[0] for x in args))
    _, static = eqx.partition(shapes, lambda x: isinstance(x, jax.ShapeDtypeStruct))
    return eqx.combine(_map(make, context, args), static)


@eqx.filter_jit
def _map(make, context: tuple, args: tuple):
    return jax.lax.map(lambda a: eqx.filter(make(*context, *a), eqx.is_array), args)


# -- time-marching ---------------------------------------------------------------------------------
@eqx.filter_jit
def _start(dynamics: AbstractDynamics, initial, points: Points):
    return eqx.filter_vmap(lambda i: dynamics.start(i, points))(initial)


@eqx.filter_jit(donate="all-except-first")
def _step(static, state, alive, failed):
    """One step of every member; ``state``, ``alive`` and ``failed`` are donated. A member whose
    step failed diverged at ``t``; one whose batch loss at ``t`` is above its ``limit`` (or NaN)
    diverged at the update into ``t`` (the blow-up rule of `evolve`)."""
    dynamics, initial, points, lr, limit, idx, t = static

    def one(initial, state, alive, failed, lr, limit):
        state, ok, value = dynamics.step(initial, state, points, idx, lr, alive)
        failed = jnp.where(alive & ~ok, t, failed)
        alive = alive & ok
        bad = alive & ~(value <= limit)
        failed = jnp.where(bad & (failed < 0), jnp.maximum(t - 1, 0), failed)
        return state, alive & ~bad, failed, value

    args = (initial, state, alive, failed, lr, limit)
    if lr.shape[0] == 1:  # one member (a run of one seed, or the CPU plan's one at a time):
        # unbatched, since vmap's rule for the layer scan copies every weight to move the
        # member axis (bench_finite: the step 0.8× at N = 512, L = 32)
        out = one(*jax.tree.map(lambda a: a[0] if eqx.is_array(a) else a, args))
        return jax.tree.map(lambda a: a[None] if eqx.is_array(a) else a, out)
    return eqx.filter_vmap(one)(*args)


@eqx.filter_jit
def _observe(dynamics: AbstractDynamics, initial, state, points: Points, saveat: SaveAt):
    def one(initial, state) -> Observables:
        obs = dynamics.observe(initial, state, points, saveat)
        obs = {**obs, **_scores(dynamics.loss, obs["f"], points)}
        if saveat.fn is not None:
            obs = {**obs, **saveat.fn(dynamics, initial, state, points)}
        return obs

    return eqx.filter_vmap(one)(initial, state)


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


class _Log:
    """Without a terminal (a batch job's log file), one progress line a minute instead of a bar."""

    EVERY = 60.0

    def __init__(self, desc: str, total: int, *, enabled: bool):
        self.desc, self.total, self.enabled = desc or "evolve", total, enabled
        self.last = time.monotonic()

    def due(self) -> bool:
        if not self.enabled or time.monotonic() - self.last < self.EVERY:
            return False
        self.last = time.monotonic()
        return True

    def __call__(self, t: int, values, alive) -> None:
        if self.due():
            loss, live = float(jnp.nanmean(values)), int(jnp.sum(alive))
            self.line(
                f"step {t}/{self.total}, batch loss {loss:.4g}, "
                f"{live}/{alive.shape[0]} members alive"
            )

    def line(self, text: str) -> None:
        print(f"{self.desc}: {text}", file=sys.stderr, flush=True)


def _march(
    dynamics,
    points,
    lr,
    schedule,
    saveat,
    initial,
    progress,
    desc,
    call: CheckpointCall | None,
    blowup: float,
) -> Trajectory:
    """The host loop of a time-marching ensemble (continued from ``call``'s saved state)."""
    num_members, num_steps = lr.shape[0], int(schedule.shape[0])
    M = getattr(dynamics, "num_particles", None)  # particle methods: a particle mesh axis too
    mesh = member_mesh(num_members, M)  # the members split over the local devices (`_sharding`)
    initial, lr = shard_members((initial, lr), num_members, mesh, M)
    state = _start(dynamics, initial, points)
    alive = jnp.ones((num_members,), bool)
    failed = jnp.full((num_members,), -1, jnp.int32)
    records: dict[int, dict[str, Any]] = {}
    step_times = np.zeros((num_steps,))
    first = 0
    partial = None if call is None else call.load("partial")
    if partial is not None:
        first, leaves, alive, failed, records, step_times = partial
        state = jax.tree.unflatten(jax.tree.structure(state), leaves)
        step_times = np.array(step_times)
    state, alive, failed = shard_members((state, alive, failed), num_members, mesh, M)
    saved = set(saveat.steps)
    limit = None  # the blow-up loss of each member, once loss(0) is recorded
    show = sys.stderr.isatty() if progress is None else progress
    log = _Log(desc, num_steps, enabled=progress is None and not show)
    with _progress(num_steps, show, desc) as bar:
        bar.update(first)
        for t in range(first, num_steps + 1):
            if call is not None:
                snapshot = (t, jax.tree.leaves(state), alive, failed, records, step_times)
                call.progress(lambda s=snapshot: fetch(s), f"step {t} of {num_steps}")
            if t in saved:
                records[t] = fetch(_observe(dynamics, initial, state, points, saveat))
            if t == num_steps:
                break
            t0 = time.perf_counter()
            if limit is None:  # blowup × max(loss(0), 1) per member, on the members' devices
                loss0 = np.maximum(np.asarray(records[0]["loss_train"]), 1.0)
                limit = shard_members(jnp.asarray(blowup * loss0, lr.dtype), num_members, mesh)
            static = (dynamics, initial, points, lr, limit, schedule[t], jnp.asarray(t, jnp.int32))
            state, alive, failed, values = _step(static, state, alive, failed)
            values.block_until_ready()
            step_times[t] = time.perf_counter() - t0
            bar.update(1)
            if show:
                bar.set_postfix(loss=f"{float(jnp.nanmean(values)):.4g}", alive=int(jnp.sum(alive)))
            log(t + 1, values, alive)
            if not bool(jnp.any(alive)):
                break  # every member diverged: the remaining saves are NaN
    traj = assemble(records, saveat, fetch(failed), step_times, points.num_train, blowup)
    return dataclasses.replace(traj, mesh=describe_mesh(mesh))


# -- whole paths -------------------------------------------------------------------------------
def _solve_paths(
    dynamics, points, lr, schedule, saveat, keys, call, blowup, progress, desc
) -> Trajectory:
    """Each member's path; deterministic dynamics solve each learning rate once."""
    lrs = np.asarray(lr)
    num_members = lrs.shape[0]
    if keys is None and not dynamics.deterministic:
        raise ValueError(f"evolve needs `keys` for {type(dynamics).__name__}.")
    partial = None if call is None else call.load("partial")
    solved: dict[Any, Any] = {} if partial is None else partial
    sols = []
    t0 = time.perf_counter()
    show = sys.stderr.isatty() if progress is None else progress
    log = _Log(desc, num_members, enabled=progress is None and not show)
    with _progress(num_members, show, desc) as bar:
        for e in range(num_members):
            key = None if keys is None else keys[e]
            tag = float(lrs[e]) if dynamics.deterministic else e
            if tag not in solved:
                if call is not None:
                    call.progress(lambda: solved, f"member {e} of {num_members}")
                solved[tag] = dynamics.solve(points, jnp.asarray(lr[e]), schedule, saveat, key=key)
            sols.append(solved[tag])
            bar.update(1)
            if log.due():
                log.line(f"member {e + 1}/{num_members} solved")
    elapsed = time.perf_counter() - t0
    obs = jax.device_get([s.observables for s in sols])
    stacked = {k: np.stack([o[k] for o in obs], axis=1) for k in obs[0]}  # (S, E, ...)
    scores = _losses(dynamics.loss, jnp.asarray(stacked["f"]), points)
    stacked |= {k: np.asarray(v) for k, v in scores.items()}
    records = {t: {k: v[i] for k, v in stacked.items()} for i, t in enumerate(saveat.steps)}
    failed = np.asarray([int(s.failed_step) for s in sols], np.int32)
    num_steps = int(schedule.shape[0])
    step_times = np.full((num_steps,), elapsed / max(num_steps, 1))
    infos = [s.info for s in sols]
    info = None if infos[0] is None else jax.tree.map(lambda *x: jnp.stack(x), *infos)
    return assemble(records, saveat, failed, step_times, points.num_train, blowup, info=info)


def _scores(loss, f: Float[Array, "Pts C"], points: Points) -> dict[str, Array]:
    """Training and test losses of one member's predictions (and accuracies, classification)."""
    loss_train, loss_test = split_losses(loss, f, points.y, points.num_train)
    acc = split_accuracy(loss, f, points.y, points.num_train)
    return {"loss_train": loss_train, "loss_test": loss_test, **acc}


@eqx.filter_jit
def _losses(loss, f: Float[Array, "S E Pts C"], points: Points) -> dict[str, Array]:
    """`_scores` of stacked predictions, one compiled call."""
    return jax.vmap(jax.vmap(lambda f_: _scores(loss, f_, points)))(f)


# -- assembly ------------------------------------------------------------------------------------
def _first_blowup(records, steps: np.ndarray, failed: np.ndarray, blowup: float) -> np.ndarray:
    """``failed`` lowered to ``s − 1`` where the first saved loss at ``s`` is non-finite or above
    ``blowup × max(loss(0), 1)`` (saved steps ``s`` before an existing ``failed`` only count)."""
    limit = blowup * np.maximum(np.asarray(records[int(steps[0])]["loss_train"]), 1.0)
    for t in steps:
        if int(t) not in records:
            continue
        loss = np.asarray(records[int(t)]["loss_train"])
        bad = ~(loss <= limit) & ((failed < 0) | (failed >= t))
        failed = np.where(bad, max(int(t) - 1, 0), failed)
    return failed.astype(np.int32)


def assemble(
    records: dict[int, dict[str, Any]],
    saveat: SaveAt,
    failed: np.ndarray,
    step_times: np.ndarray,
    num_train: int,
    blowup: float = BLOWUP,
    *,
    info: Any = None,
) -> Trajectory:
    """The `Trajectory` of recorded observables: steps never recorded (every member had diverged)
    and a member's steps after its divergence are NaN. A member whose training loss at a saved
    step ``s`` is non-finite or above ``blowup × max(loss(0), 1)`` diverged at ``s − 1`` at the
    latest (the rule covers the last step, which no training step's loss sees)."""
    steps = saveat.as_array()
    first = next(iter(records.values()))
    num_members = np.asarray(first["f"]).shape[0]
    failed = _first_blowup(records, steps, np.asarray(failed).copy(), blowup)
    dead = (failed[:, None] >= 0) & (steps[None, :] > failed[:, None])  # (E, S)
    out: dict[str, Any] = {}
    for name, value in first.items():
        value = np.asarray(value)
        fill = np.nan if np.issubdtype(value.dtype, np.floating) else -1
        arr = np.full((num_members, len(steps), *value.shape[1:]), fill, value.dtype)
        for i, t in enumerate(steps):
            if t in records:
                arr[:, i] = np.asarray(records[int(t)][name])
        arr[dead] = fill
        out[name] = jnp.asarray(arr)
    f = out.pop("f")
    status = np.where(failed >= 0, RESULTS.nonfinite._value, RESULTS.successful._value)
    return Trajectory(
        steps=jnp.asarray(steps),
        f_train=f[:, :, :num_train],
        f_test=f[:, :, num_train:],
        loss_train=out.pop("loss_train"),
        loss_test=out.pop("loss_test"),
        ntk=out.pop("ntk", None),
        h_kernel=out.pop("h_kernel", None),
        g_kernel=out.pop("g_kernel", None),
        h_rms=out.pop("h_rms"),
        h_movement=out.pop("h_movement"),
        block_movement=out.pop("block_movement"),
        dz_own=out.pop("dz_own", None),
        status=jnp.asarray(status, jnp.int32),
        failed_step=jnp.asarray(failed, jnp.int32),
        step_times=jnp.asarray(step_times),
        extras=out,
        info=info,
    )
