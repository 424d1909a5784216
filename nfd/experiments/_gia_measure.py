"""The measurement of the gradient-independence experiment (§1.4, §5.3, §7.2): standard and
decoupled `FiniteNetwork` ensembles trained by `nfd.dynamics.evolve`, readout P1 (each network
advances ``f`` with its own fields' NTK and trains on that ``f``'s error signal) and P2 (its own
output), with the kernels and the χ diagnostic saved by `GiaObservables` (`SaveAt.fn`)."""

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Bool, Int, PRNGKeyArray

from ..config import build_activation, build_network
from ..dynamics import Points, SaveAt, Trajectory, chunk_size, evolve
from ..model import ResNet, class_gram, gram, ntk_from_fields, point_fields
from ..nn import AbstractReadout, FeatureReadout, NTKReadout
from ..train import FiniteNetwork
from ._gia_members import draw_members, readout_average_gap

# Members per evolved chunk are limited so that one chunk's estimated memory stays below this.
CHUNK_BYTES = 2**30


class SwitchReadout(AbstractReadout):
    """`NTKReadout` (P1) where ``p1`` is true, else `FeatureReadout` (P2).

    The choice is a traced flag, not a type, so that the P1 and P2 runs of a grid point share one
    compilation of the training step (compiling, not arithmetic, dominates at small sizes); the
    kernel update ``η0 Θ c`` is computed only in the P1 run (`jax.lax.cond`).

    Attributes:
        p1: whether the kernel output drives the error signal and is reported.
    """

    p1: Bool[Array, ""]
    true_sensitivity: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return "switch"

    def predict(self, features, kernel):
        p1, p2 = NTKReadout().predict(features, kernel), FeatureReadout().predict(features, kernel)
        return jnp.where(self.p1, p1, p2)

    def advance(self, kernel, lr, theta_c):
        return jax.lax.cond(
            self.p1,
            lambda: NTKReadout().advance(kernel, lr, theta_c),
            lambda: FeatureReadout().advance(kernel, lr, theta_c),
        )


class GiaObservables(eqx.Module):
    """The observables of one member at a saved step (`SaveAt.fn`), all over the tracked points
    (train rows first) and in the network's own backward mode (``g̃`` for decoupled weights).

    Returns ``phi`` (the feature kernels ``Φ`` of ``φ(h)`` at ``blocks``, ``(R, P, P)``), ``g``
    (the own backward kernels there, class-averaged), ``theta`` (the own-field NTK, ``g̃`` on both
    sides), ``chi`` (``χ_ℓ(t) = b g_{ℓ+1}(0)ᵀ W_ℓ(0)[φ(h_ℓ(t)) − φ(h_ℓ(0))]/(n√n)`` averaged over
    the training points and outputs, ``(L,)``, §7.2) and ``g0`` (``mean_{μν} G_0(0)``).
    Widths are the arrays' ``N``: `measure_depth` rescales those of padded members by ``N/n``.

    Attributes:
        blocks: the blocks ``ℓ`` of the saved kernels.
    """

    blocks: tuple[int, ...] = eqx.field(static=True)

    def __call__(self, dynamics, initial: ResNet, state, points: Points) -> dict[str, Array]:
        del dynamics
        model, x, p = state.model, points.x, points.num_train
        fields, fields0 = point_fields(model, x), point_fields(initial, x)
        phi = model.activation
        phi_h = phi(fields.h)
        sel = jnp.asarray(self.blocks)
        dphi = phi_h[:p, :-1] - phi(fields0.h[:p, :-1])  # (P, L, N)
        w_dphi = jnp.einsum("lij,plj->pli", initial.blocks[0], dphi, precision="highest")
        g_next0 = fields0.g[:p, :, 1:]  # g_{ℓ+1}(0), (P, C, L, N)
        chi = jnp.einsum("pcli,pli->l", g_next0, w_dphi, precision="highest")
        scale = model.param.branch_multiplier(model.depth) / model.width**1.5
        g0 = fields0.g[:, :, 0]
        return {
            "phi": gram(phi_h[:, sel], phi_h[:, sel]),
            "g": class_gram(fields.g[:, :, sel], fields.g[:, :, sel]),
            "theta": ntk_from_fields(model, x, fields, fields),
            "chi": scale * chi / (p * g_next0.shape[1]),
            "g0": jnp.mean(class_gram(g0, g0)),
        }


def evolve_chunked(
    net: FiniteNetwork,
    points: Points,
    models: ResNet,
    lr: np.ndarray,
    schedule: Int[Array, "T B"],
    saveat: SaveAt,
    progress: bool,
    desc: str,
) -> Trajectory:
    """`evolve` (learning rate ``lr[e]`` for member ``e``) over equal member chunks whose estimated
    memory fits `CHUNK_BYTES` (the last chunk wraps around, so every chunk compiles once)."""
    total = len(lr)
    chunk = chunk_size(net.estimate_memory(points, 1), total, CHUNK_BYTES)
    parts = []
    for start in range(0, total, chunk):
        idx = np.arange(start, start + chunk) % total
        traj = evolve(
            net,
            points,
            lr=jnp.asarray(lr[idx], points.x.dtype),
            schedule=schedule,
            saveat=saveat,
            initial=models if chunk == total else _take(models, idx),
            progress=progress,
            desc=desc,
        )
        parts.append(traj if chunk == total else traj.take(slice(0, min(chunk, total - start))))
    return parts[0] if len(parts) == 1 else Trajectory.concat(parts)


def _take(tree, idx):
    """The members ``idx`` of a stacked pytree (array leaves only)."""
    return jax.tree.map(lambda a: a[idx] if eqx.is_array(a) else a, tree)


def measure_mode(
    net: FiniteNetwork,
    points: Points,
    models: ResNet,
    lr: np.ndarray,
    schedule: Int[Array, "T B"],
    blocks: tuple[int, ...],
    *,
    p2: bool,
    progress: bool,
    desc: str,
) -> dict[str, np.ndarray]:
    """The P1 run (with `GiaObservables`) and, with ``p2``, the P2 run of an ensemble (the two
    share the compiled training step, `SwitchReadout`).

    Returns per member: ``phi``, ``g``, ``theta``, ``chi`` (``(E, S, ...)``), ``g0`` ``(E,)``,
    ``f_p1``, ``f_p2`` ``(E, S, P, C)``, ``loss_p1``, ``loss_p2`` ``(E, S)`` (``*_p2`` NaN
    without ``p2``).
    """
    steps = tuple(range(int(schedule.shape[0]) + 1))
    out: dict[str, np.ndarray] = {}
    for run, p1 in (("p1", True), ("p2", False))[: 1 + p2]:
        dyn = dataclasses.replace(net, readout=SwitchReadout(jnp.asarray(p1)))
        saveat = SaveAt(steps=steps, fn=GiaObservables(blocks) if p1 else None)
        traj = evolve_chunked(dyn, points, models, lr, schedule, saveat, progress, f"{desc} {run}")
        f = jnp.concatenate([traj.f_train, traj.f_test], axis=2)
        out |= {f"f_{run}": np.asarray(f), f"loss_{run}": np.asarray(traj.loss_train)}
        if p1:  # the kernels and χ of the P1 run (at t ≤ 1 the two runs coincide)
            out |= {k: np.asarray(v) for k, v in traj.extras.items()}
            out["g0"] = out["g0"][:, 0]
    if not p2:
        out |= {"f_p2": np.full_like(out["f_p1"], np.nan)}
        out |= {"loss_p2": np.full_like(out["loss_p1"], np.nan)}
    return out


# Widths up to this share one compiled computation per depth (zero-padded to the largest of them,
# `padded_param`): on CPU, compiling (seconds per shape), not arithmetic, dominates at these sizes.
PAD_MAX_WIDTH = 128


def width_groups(widths: Sequence[int], activation) -> list[list[int]]:
    """The widths measured as one padded ensemble: those up to `PAD_MAX_WIDTH` together when
    ``φ(0) = 0`` (padded units then stay zero), every other width alone."""
    pad = float(activation(jnp.zeros(()))) == 0.0
    small = sorted(n for n in widths if n <= PAD_MAX_WIDTH and pad)
    return ([small] if small else []) + [[n] for n in sorted(widths) if n not in small]


def measure_depth(
    cfg,
    task,
    depth: int,
    widths: Sequence[int],
    pairs: int,
    *,
    key: PRNGKeyArray,
    schedule: Int[Array, "T B"],
    blocks: tuple[int, ...],
    init_gap: bool = False,
    p2: bool = True,
    progress: bool = False,
) -> dict[int, dict]:
    """Measure standard and decoupled ensembles of every width at one depth.

    Returns ``{width: {"std": {...}, "dec": {...}}}`` of numpy arrays whose leading axis is the
    pair (antithetic pairs averaged), as `measure_mode`'s; with ``init_gap`` also ``"init_gap"``:
    the readout-averaged ``mean_{μν}(G_0^std − G_0^dec)`` per pair (T6). The members are
    `draw_members` of ``fold_in(key, L)`` (standard and decoupled share ``U, W(0), v(0)``),
    padded per `width_groups`. Without ``p2`` only the P1 run is made.
    """
    points = Points.from_task(task)
    per = 2 * pairs if cfg.gia.antithetic else pairs  # members of each kind and width
    results: dict[int, dict] = {}
    for group in width_groups(widths, build_activation(cfg)):
        size = max(group)
        net = build_network(cfg, width=size, depth=depth, backward="decoupled")
        net = dataclasses.replace(net, center=True)  # the P2 outputs are centred
        models, n = draw_members(
            net, points, jr.fold_in(key, depth), group, pairs, cfg.gia.antithetic
        )
        ratio = size / n  # the padded normalisation (`padded_param`)
        every = measure_mode(
            net,
            points,
            models,
            cfg.optim.lr * ratio,
            schedule,
            blocks,
            p2=p2,
            progress=progress,
            desc=f"gia L={depth} n={group}",
        )
        for k in ("phi", "g", "theta", "chi", "g0"):  # kernels a·b/N → a·b/n
            every[k] = every[k] * ratio.reshape(-1, *[1] * (every[k].ndim - 1))
        gaps = _init_gaps(models, points.x, ratio, pairs, per) if init_gap else None
        for q, width in enumerate(group):
            out: dict[str, Any] = {}
            for j, kind in enumerate(("std", "dec")):
                first = (2 * q + j) * per
                part = {k: v[first : first + per] for k, v in every.items()}
                if per > pairs:  # average each pair (v, −v)
                    part = {k: 0.5 * (v[:pairs] + v[pairs:]) for k, v in part.items()}
                out[kind] = part
            if gaps is not None:
                out["init_gap"] = gaps[q]
            results[width] = out
    return results


def _init_gaps(models: ResNet, x, ratio: np.ndarray, pairs: int, per: int) -> np.ndarray:
    """`readout_average_gap` of the ``+v(0)`` standard/decoupled pairs of every width of a padded
    ensemble (layout of `draw_members`), in the width-``n`` normalisation, ``(widths, pairs)``."""
    num_widths = len(ratio) // (2 * per)
    first = 2 * per * np.arange(num_widths)[:, None] + np.arange(pairs)  # the standard +v(0) ones
    std, dec = (_take(models, (first + j * per).ravel()) for j in (0, 1))
    gaps = np.asarray(_readout_average(std, dec, x)) * ratio[first.ravel()]
    return gaps.reshape(num_widths, pairs)


@eqx.filter_jit
def _readout_average(std: ResNet, dec: ResNet, x) -> Array:
    """`readout_average_gap` of each standard/decoupled member pair, one pair at a time (its
    fields have ``n`` outputs)."""
    arrays, static = eqx.partition((std, dec), eqx.is_array)

    def one(a):
        std_, dec_ = eqx.combine(a, static)
        return readout_average_gap(std_, dec_, x)

    return jax.lax.map(one, arrays)
