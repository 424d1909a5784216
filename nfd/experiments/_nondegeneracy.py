"""Non-degeneracy of the feature kernels of finite networks against width and depth.

The paper's convergence theorem (arXiv 2512.21075, Fig. 3) assumes that the limit kernels stay
non-degenerate: the smallest eigenvalue of the feature covariance bounded away from 0. For every
width ``N`` × depth ``L`` of `[nondegeneracy]`, ``seeds`` networks are trained with `[optim]` on
`[task]` (`run_finite`); at every saved step `GramObservables` (`SaveAt.fn`) records over the ``P``
training points, at the blocks ``ℓ = round(τ L)``, the feature Gram ``Φ_ℓ = φ(h_ℓ) φ(h_ℓ)ᵀ/N``
and the backward Gram ``G_ℓ = (1/C) Σ_a g^a_ℓ g^{aᵀ}_ℓ/N`` (the network's own fields).

The n = ∞ references at ``K = L`` (exact for the depth-``L`` network at infinite width): at
``t = 0`` the init-kernel recursion (`nfd.limit.init_kernels`, §2) gives ``Φ_ℓ(0)`` and
``G_ℓ(0)`` exactly; over training (``limit``), the kernel fixed point of §4.3 in mode A (the limit
of the standard network, readout P2 as the finite network's own output) gives ``Φ_k(t, t)`` and
``G_k(t, t)`` with Monte Carlo error from ``limit.particles`` samples per draw set, over
``limit_seeds`` independent draw sets (as `nfd.experiments.run_gia_limit` uses it). The analysis
(`nfd.analysis.nondegeneracy_summary`) takes the eigenvalues.
"""

import dataclasses

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ..config import (
    Config,
    ConfigError,
    build_activation,
    build_limit,
    build_param,
    build_schedule,
    build_task,
    run_keys,
)
from ..dynamics import Points, SaveAt, evolve, save_steps
from ..limit import KernelFixedPoint, init_kernels
from ..model import ResNet, class_gram, gram, point_fields
from ._finite import run_finite
from ._limit import limit_keys


class GramObservables(eqx.Module):
    """``Φ_ℓ`` and ``G_ℓ`` over the training points at ``blocks`` (`SaveAt.fn`), ``(R, P, P)``."""

    blocks: tuple[int, ...] = eqx.field(static=True)

    def __call__(self, dynamics, initial: ResNet, state, points: Points) -> dict[str, Array]:
        del dynamics, initial
        return gram_matrices(state.model, points.x[: points.num_train], self.blocks)


def gram_matrices(model: ResNet, x, blocks: tuple[int, ...]) -> dict[str, Array]:
    """``phi_gram`` ``Φ_ℓ = φ(h_ℓ) φ(h_ℓ)ᵀ/N`` and ``g_gram`` (class-averaged ``G_ℓ``) of the
    rows of ``x`` at the blocks ``blocks``, each ``(R, P, P)``, from `ResNet.fields`."""
    fields = point_fields(model, x)
    sel = jnp.asarray(blocks)
    phi_h = model.activation(fields.h[:, sel])  # (P, R, N)
    return {
        "phi_gram": gram(phi_h, phi_h),
        "g_gram": class_gram(fields.g[:, :, sel], fields.g[:, :, sel]),
    }


def layers_of(taus, depth: int) -> tuple[int, ...]:
    """Block ``round(τ L)`` of every depth-time (as `SaveAt.layer_indices`)."""
    return tuple(int(round(t * depth)) for t in taus)


def _finite_cfg(cfg: Config) -> Config:
    out = dataclasses.replace(cfg.output, ntk=False, kernels=False)
    return dataclasses.replace(cfg, kind="finite", output=out)


def _reference(cfg: Config, task, L: int) -> dict[str, np.ndarray]:
    """``Φ_ℓ(0)``, ``G_ℓ(0)`` of the n = ∞ recursion at ``K = L`` over the training points."""
    kx = jnp.asarray(task.x_train @ task.x_train.T) / task.in_dim
    kern = init_kernels(build_param(cfg), build_activation(cfg), kx, L)
    sel = np.asarray(layers_of(cfg.nondegeneracy.taus, L))
    return {"ref_phi": np.asarray(kern.Phi)[sel], "ref_g": np.asarray(kern.G)[sel]}


def _limit(cfg: Config, task, L: int, steps: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Mode A at ``K = L`` by the kernel fixed point (readout P2), ``limit_seeds`` draw sets:
    ``Φ_k(t, t)``, ``G_k(t, t)`` over the training points ``(E, S, R, P, P)`` at the saved steps."""
    nd = cfg.nondegeneracy
    lim = dataclasses.replace(
        cfg.limit, method="kernel", coupling="exact", readout="features", layer_steps=0
    )
    dyn = build_limit(dataclasses.replace(cfg, limit=lim), depth=L)
    assert isinstance(dyn, KernelFixedPoint)
    points = Points.from_task(task)
    orthogonal = cfg.limit.particles >= dyn.draw_columns(points, cfg.optim.steps)
    dyn = dataclasses.replace(dyn, orthogonalize=orthogonal)
    E = nd.limit_seeds or cfg.seeds
    keys = limit_keys(cfg, range(E))
    saveat = SaveAt(steps=steps, kernels=True, layer_times=tuple(nd.taus))
    traj = evolve(
        dyn,
        points,
        lr=jnp.full((E,), cfg.optim.lr, task.x_train.dtype),
        schedule=build_schedule(cfg, task),
        saveat=saveat,
        keys=keys,
    )
    P = task.n_train
    assert traj.info is not None
    return {
        "limit_phi": np.asarray(traj.extras["phi_kernel"])[..., :P, :P],
        "limit_g": np.asarray(traj.g_kernel)[..., :P, :P],
        "limit_converged": np.asarray(traj.info.converged) & (np.asarray(traj.status) == 0),
        "limit_moment_matched": np.asarray(orthogonal),
    }


def _min_eigs(grams: np.ndarray, name: str) -> dict[str, np.ndarray]:
    """``λ_min`` of each Gram and ``λ_min`` over its mean diagonal (NaN for a diverged member)."""
    ok = np.all(np.isfinite(grams), axis=(-2, -1))
    lam = np.full(grams.shape[:-1], np.nan)
    lam[ok] = np.linalg.eigvalsh(grams[ok])
    return {f"{name}_min_eig": lam[..., 0], f"{name}_min_eig_rel": lam[..., 0] / lam.mean(-1)}


def run_nondegeneracy(cfg: Config, *, progress: bool | None = None) -> dict[str, np.ndarray]:
    """The Gram matrices of finite networks and of the n = ∞ references (module docstring).

    Returns numpy arrays, with I = widths, J = depths, E = seeds, S = saved steps, R = depth-times,
    P = training points: ``phi_gram``, ``g_gram`` ``(I, J, E, S, R, P, P)`` (NaN after a member
    diverged), their ``λ_min`` ``phi_min_eig``, ``g_min_eig`` and ``λ_min`` / mean diagonal
    ``phi_min_eig_rel``, ``g_min_eig_rel`` ``(I, J, E, S, R)``, ``diverged`` ``(I, J, E)``;
    ``ref_phi``, ``ref_g`` ``(J, R, P, P)`` (the ``t = 0`` recursion); with ``limit``: ``limit_phi``, ``limit_g`` ``(J, E_l, S, R, P, P)``,
    ``limit_converged`` ``(J, E_l)``, ``limit_moment_matched`` ``(J,)``; the grid ``widths``,
    ``depths``, ``taus``, ``steps`` and ``layers`` ``(J, R)``.
    """
    nd = cfg.nondegeneracy
    task = build_task(cfg, key=run_keys(cfg)["task"])
    if task.n_train > min(nd.widths):  # npz tasks: the file decides P
        raise ConfigError(
            "nondegeneracy.widths",
            f"the smallest width {min(nd.widths)} is below the task's {task.n_train} training "
            "points (rank <= N)",
            "widths >= the number of training points",
        )
    fcfg = _finite_cfg(cfg)
    steps = save_steps(cfg.optim.steps, cfg.output.every)
    per_depth: list[dict[str, np.ndarray]] = []
    for L in nd.depths:
        fn = GramObservables(layers_of(nd.taus, L))
        grams: dict[str, list] = {"phi_gram": [], "g_gram": [], "diverged": []}
        for n in nd.widths:
            res = run_finite(
                fcfg,
                width=n,
                depth=L,
                task=task,
                progress=progress,
                desc=f"n={n} L={L}",
                saveat_fn=fn,
            )
            for k in ("phi_gram", "g_gram"):
                grams[k].append(np.asarray(res.extras[k], float))
            grams["diverged"].append(np.asarray(res.status) != 0)
        row = {k: np.stack(v) for k, v in grams.items()}  # (I, E, ...)
        row |= _reference(cfg, task, L)
        if nd.limit:
            row |= _limit(cfg, task, L, steps)
        per_depth.append(row)
    out = {k: np.stack([r[k] for r in per_depth]) for k in per_depth[0]}
    for k in ("phi_gram", "g_gram", "diverged"):
        out[k] = np.moveaxis(out[k], 0, 1)  # (I, J, ...)
    for k in ("phi", "g"):
        out |= _min_eigs(out[f"{k}_gram"], k)
    out.update(
        widths=np.asarray(nd.widths),
        depths=np.asarray(nd.depths),
        taus=np.asarray(nd.taus, float),
        steps=np.asarray(steps),
        layers=np.asarray([layers_of(nd.taus, L) for L in nd.depths]),
    )
    return out
