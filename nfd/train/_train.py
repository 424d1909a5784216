"""The finite-network trainer: ensembles of ResNets trained in one vmapped, jitted step.

Every ensemble member ``e`` has its own initialisation and its own base learning rate ``η0[e]`` (a
learning-rate grid is an ensemble), and all members see the same batch sequence, which is determined
by ``batch_key`` alone, so the limit solver can replay it (spec NFD.md §1.1). A member whose loss or
parameters become non-finite is frozen at its last finite state and recorded (``status``,
``failed_step``); the others go on.
"""

import math
import sys
import time
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._results import RESULTS
from ..model import ResNet
from ..model._kernels import class_gram, gram, ntk_from_fields, point_fields
from ..tasks import Task
from ._losses import AbstractLoss
from ._optim import OptimizerName, make_optimizer


def batch_schedule(
    num_train: int, batch_size: int, num_steps: int, *, key: PRNGKeyArray
) -> Int[Array, "T B"]:
    """The minibatch index sequence of a run: row ``t`` holds the indices of ``B_t``.

    ``batch_size = 0`` (or ``>= num_train``) is full-batch GD: every row is ``0..P-1``. Otherwise each
    epoch is a fresh permutation (``jr.fold_in(key, epoch)``) cut into ``P // batch_size`` batches
    (the remainder is dropped). The limit solver replays this same sequence.
    """
    if batch_size <= 0 or batch_size >= num_train:
        return jnp.broadcast_to(jnp.arange(num_train), (num_steps, num_train))
    per_epoch = num_train // batch_size
    epochs = math.ceil(num_steps / per_epoch) if num_steps else 0
    perms = [
        jr.permutation(jr.fold_in(key, e), num_train)[: per_epoch * batch_size]
        for e in range(epochs)
    ]
    if not perms:
        return jnp.zeros((0, batch_size), jnp.int32)
    return jnp.concatenate(perms).reshape(-1, batch_size)[:num_steps]


def save_steps(num_steps: int, every: int, also: Sequence[int] = ()) -> np.ndarray:
    """Steps at which observables are saved: 0, every, 2·every, ..., the last step, and the
    steps ``also`` (those within ``0..num_steps``)."""
    steps = set(range(0, num_steps + 1, every)) if every > 0 else {0}
    steps.add(num_steps)
    steps.update(int(t) for t in also if 0 <= t <= num_steps)
    return np.array(sorted(steps), dtype=np.int64)


def block_indices(layer_times: Sequence[float], depth: int) -> tuple[int, ...]:
    """Block index ``round(τ·L)`` of each layer time (spec: τ ∈ [0, 1])."""
    return tuple(int(round(t * depth)) for t in layer_times)


class TrainResult(eqx.Module):
    """Saved observables of an ensemble run (leading axis E, then S saved steps).

    Attributes:
        steps: saved training steps ``(S,)``.
        f_train, f_test: centred predictions ``(E, S, P, C)`` / ``(E, S, Q, C)``.
        loss_train, loss_test: mean losses ``(E, S)``.
        ntk: ``(E, S, P+Q, P+Q)`` (train rows first; class-averaged diagonal block) or ``None``.
        h_kernel, g_kernel: ``(E, S, R, P+Q, P+Q)`` at the requested layer times, or ``None``.
        h_rms: RMS preactivation per layer ``(E, S, L+1)`` over all tracked points.
        h_movement: RMS change of each preactivation since step 0 ``(E, S, L+1)``.
        block_movement: RMS of each block's own update ``b ΔW_ℓ φ(h_ℓ)/sqrt(N)`` (two-layer: the
            W2 update ``b ΔW2_ℓ φ(z_ℓ)/sqrt(N)``), ``(E, S, L)``; Θ(1/L) under depth-muP.
        dz_own: RMS of W1's own feature update ``ΔW1_ℓ φ(h_ℓ)/sqrt(N)`` (two-layer) or ``None``.
        status: `RESULTS` code per member ``(E,)`` (0 = successful).
        failed_step: step at which a member diverged, −1 if it did not ``(E,)``.
        step_times: host wall time of each training step ``(T,)`` in seconds.
    """

    steps: Int[Array, " S"]
    f_train: Float[Array, "E S P C"]
    f_test: Float[Array, "E S Q C"]
    loss_train: Float[Array, "E S"]
    loss_test: Float[Array, "E S"]
    ntk: Float[Array, "E S PQ PQ"] | None
    h_kernel: Float[Array, "E S R PQ PQ"] | None
    g_kernel: Float[Array, "E S R PQ PQ"] | None
    h_rms: Float[Array, "E S Lp1"]
    h_movement: Float[Array, "E S Lp1"]
    block_movement: Float[Array, "E S L"]
    dz_own: Float[Array, "E S L"] | None
    status: Int[Array, " E"]
    failed_step: Int[Array, " E"]
    step_times: Float[Array, " T"]


def _mean_loss(loss: AbstractLoss, f, y):
    return jnp.mean(jax.vmap(loss)(f, y))


def _tree_where(cond, new, old):
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


def _all_finite(tree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves))


@eqx.filter_jit
def make_step(
    models, opt_states, alive, failed, lrs, idx, t, f0_train, x_train, y_train, optimizer, loss
):
    """One optimizer step of every ensemble member (vmapped); the public jitted entry point."""

    def one(model, opt_state, alive, failed, lr, f0):
        xb, yb, f0b = x_train[idx], y_train[idx], f0[idx]

        def loss_fn(m):
            return _mean_loss(loss, jax.vmap(m)(xb) - f0b, yb)

        value, grads = eqx.filter_value_and_grad(loss_fn)(model)
        params = eqx.filter(model, eqx.is_array)
        # optax's Adam bias correction raises a Python float to an int32 count, which strict
        # dtype promotion (our test setting) rejects; promote normally inside optax only.
        with jax.numpy_dtype_promotion("standard"):
            updates, new_state = optimizer.update(grads, opt_state, params)
        updates = jax.tree.map(lambda u: lr * u, updates)
        new_model = eqx.apply_updates(model, updates)
        ok = jnp.isfinite(value) & _all_finite(eqx.filter(new_model, eqx.is_array))
        keep = alive & ok
        new_arrays = _tree_where(keep, eqx.filter(new_model, eqx.is_array), params)
        model = eqx.combine(new_arrays, eqx.filter(model, eqx.is_array, inverse=True))
        opt_state = _tree_where(keep, new_state, opt_state)
        failed = jnp.where(alive & ~ok, t, failed)
        return model, opt_state, keep, failed, value

    return eqx.filter_vmap(one)(models, opt_states, alive, failed, lrs, f0_train)


@eqx.filter_jit
def observe(
    models,
    models0,
    f0_all,
    x_all,
    y_all,
    num_train: int,
    loss,
    layer_blocks,
    want_ntk: bool,
    want_kernels: bool,
):
    """Observables of every ensemble member at the current step (vmapped, jitted)."""

    def one(model: ResNet, model0: ResNet, f0):
        need_g = want_ntk or want_kernels
        if need_g:
            right = point_fields(model, x_all)
            left = right if model.offsets is None else point_fields(model.as_reused(), x_all)
            f_raw, h, z = right.f, right.h, right.z
        else:
            left = right = None
            f_raw, h, z = jax.vmap(lambda x: model._forward(x, *model._zeros()))(x_all)
            z = z if model.block == "two_layer" else None
        _, h0, _ = jax.vmap(lambda x: model0._forward(x, *model0._zeros()))(x_all)
        f = f_raw - f0
        losses = jax.vmap(loss)(f, y_all)
        out = {
            "f": f,
            "loss_train": jnp.mean(losses[:num_train]),
            "loss_test": jnp.mean(losses[num_train:])
            if x_all.shape[0] > num_train
            else jnp.array(jnp.nan, f.dtype),
            "h_rms": jnp.sqrt(jnp.mean(h**2, axis=(0, 2))),
            "h_movement": jnp.sqrt(jnp.mean((h - h0) ** 2, axis=(0, 2))),
        }
        # each block's own update: b ΔW_ℓ φ(h_ℓ)/√N (one-layer) or b ΔW2_ℓ φ(z_ℓ)/√N (two-layer),
        # Θ(1/L) under depth-muP; for two-layer blocks also W1's own ΔW1_ℓ φ(h_ℓ)/√N (spec §6)
        b = model.param.branch_multiplier(model.depth)
        root_n = model.width**0.5
        phih = model.activation(h[:, :-1])  # (P, L, N)
        if model.block == "one_layer":
            dW = model.blocks[0] - model0.blocks[0]
            moved = b * jnp.einsum("lij,plj->pli", dW, phih) / root_n
        else:
            assert z is not None
            dW1 = model.blocks[0] - model0.blocks[0]
            dW2 = model.blocks[1] - model0.blocks[1]
            moved = b * jnp.einsum("lij,plj->pli", dW2, model.activation(z)) / root_n
            dz = jnp.einsum("lij,plj->pli", dW1, phih) / root_n
            out["dz_own"] = jnp.sqrt(jnp.mean(dz**2, axis=(0, 2)))
        out["block_movement"] = jnp.sqrt(jnp.mean(moved**2, axis=(0, 2)))
        if want_ntk:
            assert left is not None and right is not None
            out["ntk"] = ntk_from_fields(model, x_all, left, right)
        if want_kernels:
            assert right is not None
            sel = jnp.asarray(layer_blocks)
            out["h_kernel"] = gram(h[:, sel], h[:, sel])
            out["g_kernel"] = class_gram(right.g[:, :, sel], right.g[:, :, sel])
        return out

    return eqx.filter_vmap(one)(models, models0, f0_all)


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def train(
    models: ResNet,
    task: Task,
    *,
    optimizer: OptimizerName,
    loss: AbstractLoss,
    lr: Float[Array, " E"],
    num_steps: int,
    batch_size: int = 0,
    every: int = 1,
    save_also: Sequence[int] = (),
    layer_times: Sequence[float] = (0.0, 0.5, 1.0),
    ntk: bool = False,
    kernels: bool = False,
    center: bool = True,
    batch_key: PRNGKeyArray,
    progress: bool | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train an ensemble of networks (leading axis E on every array of ``models``).

    Args:
        models: ensemble of `ResNet`s, e.g. ``eqx.filter_vmap(make)(keys)``.
        task: the data; test points are tracked but never trained on.
        optimizer: "sgd" or "adam" (per-tensor rates of the parameterization, spec §1.3).
        loss: `MSE` or `CrossEntropy`.
        lr: base learning rate ``η0`` of each member ``(E,)``.
        num_steps: training steps ``T`` (0 evaluates the observables at initialisation only).
        batch_size: minibatch size (0 = full batch).
        every: save observables every this many steps (and at 0 and T).
        save_also: further steps to save (e.g. ``(1,)`` for one-step diagnostics).
        layer_times: layer times τ of the saved kernels (block index round(τ·L)).
        ntk, kernels: whether to save the NTK and the h/g kernels.
        center: train and report ``f − f(θ(0))`` (spec §1.1).
        batch_key: determines the batch sequence (shared by all members).
        progress: show a progress bar (default: when stderr is a TTY).
    """
    e = lr.shape[0]
    model_arrays = eqx.filter(models, eqx.is_array)
    if any(x.shape[0] != e for x in jax.tree.leaves(model_arrays)):
        raise ValueError(f"lr has {e} entries but the ensemble's arrays disagree in leading size.")
    single = jax.tree.map(lambda x: x[0] if eqx.is_array(x) else x, models)
    opt = make_optimizer(optimizer, single)
    opt_states = eqx.filter_vmap(lambda m: opt.init(eqx.filter(m, eqx.is_array)))(models)
    x_all = jnp.concatenate([task.x_train, task.x_test])
    y_all = jnp.concatenate([task.y_train, task.y_test])
    P = task.n_train
    if center:
        f0_all = eqx.filter_jit(eqx.filter_vmap(lambda m: jax.vmap(m)(x_all)))(models)
    else:
        f0_all = jnp.zeros((e, x_all.shape[0], task.out_dim), x_all.dtype)
    f0_train = f0_all[:, :P]
    schedule = batch_schedule(P, batch_size, num_steps, key=batch_key)
    saves = save_steps(num_steps, every, save_also)
    layer_blocks = block_indices(layer_times, single.depth)
    models0 = models
    alive = jnp.ones((e,), bool)
    failed = jnp.full((e,), -1, jnp.int32)
    records: list[dict] = []
    step_times = np.zeros((num_steps,))
    show = sys.stderr.isatty() if progress is None else progress

    def record():
        obs = observe(models, models0, f0_all, x_all, y_all, P, loss, layer_blocks, ntk, kernels)
        records.append(jax.device_get(obs))

    with _progress(num_steps, show, desc) as bar:
        for t in range(num_steps + 1):
            if t in saves:
                record()
            if t == num_steps:
                break
            t0 = time.perf_counter()
            models, opt_states, alive, failed, values = make_step(
                models,
                opt_states,
                alive,
                failed,
                lr,
                schedule[t],
                jnp.asarray(t, jnp.int32),
                f0_train,
                task.x_train,
                task.y_train,
                opt,
                loss,
            )
            values.block_until_ready()
            step_times[t] = time.perf_counter() - t0
            bar.update(1)
            if show:
                bar.set_postfix(loss=f"{float(jnp.nanmean(values)):.4g}", alive=int(jnp.sum(alive)))
            if not bool(jnp.any(alive)):
                # every member diverged: observe once more at the frozen states and stop early
                saves = np.append(saves[saves <= t], t + 1)
                record()
                break

    return result_from_records(records, saves, failed, step_times, num_train=P)


def result_from_records(
    records: list[dict], saves, failed, step_times, *, num_train: int
) -> "TrainResult":
    """Stack the per-save observable dicts of a run (member axis first) into a `TrainResult`.

    Shared by the finite trainer and the particle limit solvers. Optional observables (``ntk``,
    ``h_kernel``, ``g_kernel``, ``dz_own``) are present exactly when the records hold them.
    """

    def stack(key):
        return jnp.stack([jnp.asarray(r[key]) for r in records], axis=1)

    def optional(key):
        return stack(key) if key in records[0] else None

    f = stack("f")
    status = jnp.where(failed >= 0, RESULTS.nonfinite._value, RESULTS.successful._value)
    return TrainResult(
        steps=jnp.asarray(saves[: len(records)]),
        f_train=f[:, :, :num_train],
        f_test=f[:, :, num_train:],
        loss_train=stack("loss_train"),
        loss_test=stack("loss_test"),
        ntk=optional("ntk"),
        h_kernel=optional("h_kernel"),
        g_kernel=optional("g_kernel"),
        h_rms=stack("h_rms"),
        h_movement=stack("h_movement"),
        block_movement=stack("block_movement"),
        dz_own=optional("dz_own"),
        status=status.astype(jnp.int32),
        failed_step=failed,
        step_times=jnp.asarray(step_times),
    )
