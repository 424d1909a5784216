"""The gradient-independence verdict at n = ∞ (docs/math §5.3 with the kernel method, §4.3).

No finite network is trained. For every activation of `[gia_limit]` and depth ``L``, modes A
(`exact`: the limit of the standard network, with the reused-weight response terms) and B
(`decoupled`: NFD under the gradient-independence assumption) are solved by the kernel fixed point,
readout P1 (each mode advances ``f`` with its own fields' NTK, §5.3 (2)), at ``K = L`` and,
with ``extrapolate_layers``, at ``2L`` as well: ``2 O(2L) − O(L)`` is the ``K → ∞`` value (the depth
scheme is weak order 1). Both modes and both depths of one member use one draw set (common random
numbers; `KernelFixedPoint.draw_refinement` couples ``K`` and ``2K``), so every A − B gap and every
Richardson combination is a paired difference and its standard error comes from the spread over
the ``seeds`` independent draw sets.

Recorded per (activation, depth, draw set): the one-step feature-kernel changes ``δΦ_k =
Φ_k(1) − Φ_k(0)`` at the layer times (readout-free; every system shares ``c(0)``), the P1 outputs
``f(t)``, train losses and NTKs ``Θ(t)``, convergence, and at ``K = L`` the smallest eigenvalue of
``Φ_k`` and ``G_k`` over all (step, point) pairs relative to their mean diagonal (the paper's
"nondegeneracy"). A γ0 scan (``gammas``) records the A − B gaps at one depth. The analysis
(`nfd.analysis.gia_limit_summary`) fits every gap against ``L``.
"""

import dataclasses
import sys

import jax.numpy as jnp
import numpy as np

from ..config import build_limit, build_schedule, build_task, run_keys
from ..dynamics import Points, SaveAt, evolve
from ..limit import KernelFixedPoint
from ._gia import check_sgd_one_layer
from ._limit import limit_keys

MODES = {"A": "exact", "B": "decoupled"}


def _moment_matched(cfg, task, L: int, K: int) -> bool:
    """Whether `limit.particles` allow moment-matched draws of ``K`` layer steps (one choice for
    every run that shares the draws)."""
    dyn = _dynamics(cfg, L, K, "A", 1, False)
    return cfg.limit.particles >= dyn.draw_columns(Points.from_task(task), cfg.gia_limit.steps)


def _dynamics(cfg, L: int, K: int, mode: str, refinement: int, orthogonal: bool):
    lim = dataclasses.replace(cfg.limit, method="kernel", readout="ntk", layer_steps=0)
    dyn = build_limit(
        dataclasses.replace(cfg, limit=lim), depth=L, coupling=MODES[mode], layer_steps_override=K
    )
    assert isinstance(dyn, KernelFixedPoint)
    return dataclasses.replace(dyn, draw_refinement=refinement, orthogonalize=orthogonal)


def _solve(cfg, task, L: int, K: int, mode: str, refinement: int, orthogonal: bool) -> dict:
    """One mode at ``K`` layer steps for every member: the raw observables as numpy."""
    g = cfg.gia_limit
    dyn = _dynamics(cfg, L, K, mode, refinement, orthogonal)
    points = Points.from_task(task)
    E = cfg.seeds
    keys = limit_keys(cfg, range(E))
    saveat = SaveAt(
        steps=tuple(range(g.steps + 1)), ntk=True, kernels=True, layer_times=g.layer_times
    )
    traj = evolve(
        dyn,
        points,
        lr=jnp.full((E,), cfg.optim.lr, task.x_train.dtype),
        schedule=build_schedule(cfg, task),
        saveat=saveat,
        keys=keys,
    )
    phi = np.asarray(traj.extras["phi_kernel"])  # (E, S, R, P, P)
    layers = list(saveat.layer_indices(K))
    last = phi[:, -1]  # Φ_k(T, T) over points only (E, R, P, P)
    diag = np.mean(np.diagonal(last, axis1=-2, axis2=-1), axis=-1)
    return {
        "dphi": phi[:, 1] - phi[:, 0],
        "f": np.concatenate([np.asarray(traj.f_train), np.asarray(traj.f_test)], axis=2),
        "loss": np.asarray(traj.loss_train),
        "theta": np.asarray(traj.ntk),
        "converged": np.asarray(traj.info.converged) & (np.asarray(traj.status) == 0),
        "phi_min_eig": np.asarray(traj.info.phi_min_eig)[:, layers],
        "g_min_eig": np.asarray(traj.info.g_min_eig)[:, layers],
        "phi_point_min_eig": np.linalg.eigvalsh(last)[..., 0] / diag,
    }


FIELDS = ("dphi", "f", "loss", "theta")


def _depth(cfg, task, L: int) -> dict:
    """Modes A and B at ``K = L`` (and ``K → ∞``) for one activation and depth."""
    g = cfg.gia_limit
    extrapolate = g.extrapolate_layers
    finest = 2 * L if extrapolate else L
    orthogonal = _moment_matched(cfg, task, L, finest)
    out: dict[str, np.ndarray] = {"moment_matched": np.asarray(orthogonal)}
    for mode in MODES:
        coarse = _solve(cfg, task, L, L, mode, 2 if extrapolate else 1, orthogonal)
        for k in (*FIELDS, "phi_min_eig", "g_min_eig", "phi_point_min_eig"):
            out[f"{mode}_L_{k}"] = coarse[k]
        out[f"{mode}_L_converged"] = coarse["converged"]
        if extrapolate:
            fine = _solve(cfg, task, L, 2 * L, mode, 1, orthogonal)
            for k in FIELDS:
                out[f"{mode}_inf_{k}"] = 2.0 * fine[k] - coarse[k]
            out[f"{mode}_inf_converged"] = coarse["converged"] & fine["converged"]
    return out


def _gamma_scan(cfg, task) -> dict[str, np.ndarray]:
    """Per γ0 and member at `scan_depth` (``K = L``): the rms over points of ``f_A − f_B`` at every
    step and the Frobenius norm of ``δΦ_A − δΦ_B`` at the last layer time."""
    g = cfg.gia_limit
    L = g.scan_depth()
    f_gap, dphi_gap = [], []
    orthogonal = _moment_matched(cfg, task, L, L)
    for gamma in g.gammas:
        c = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, gamma0=float(gamma)))
        a, b = (_solve(c, task, L, L, mode, 1, orthogonal) for mode in MODES)
        f_gap.append(np.sqrt(np.mean((a["f"] - b["f"]) ** 2, axis=(2, 3))))
        dphi_gap.append(np.linalg.norm(a["dphi"][:, -1] - b["dphi"][:, -1], axis=(-2, -1)))
    E, S = cfg.seeds, g.steps + 1
    return {
        "gammas": np.asarray(g.gammas, float),
        "gamma_depth": np.asarray(L),
        "gamma_f_gap": np.asarray(f_gap).reshape(len(g.gammas), E, S),
        "gamma_dphi_gap": np.asarray(dphi_gap).reshape(len(g.gammas), E),
    }


def run_gia_limit(cfg, *, task=None, progress: bool | None = None) -> dict[str, np.ndarray]:
    """Modes A and B at n = ∞ over `[gia_limit]` (module docstring).

    Args:
        cfg: a `Config` with ``kind = "gia_limit"`` (SGD, one-layer pre-activation blocks).
        task: the data (default: `[task]` built from the config's ``seed``).
        progress: a progress bar over (activation, depth) (default: when stderr is a TTY).

    Returns:
        numpy arrays. Grid: ``depths (Ld,)``, ``layer_times (R,)``, ``steps (S,)``; the activations
        are `gia_limit.activations` in order (axis ``A``). Per mode ``X`` in ``A``, ``B`` and
        scheme ``k`` in ``L`` (``K = L``), ``inf`` (``K → ∞``, with ``extrapolate_layers``), with
        leading axes ``(A, Ld, E)`` (E draw sets): ``X_k_dphi (…, R, P, P)``, ``X_k_f (…, S, P,
        C)``, ``X_k_loss (…, S)``, ``X_k_theta (…, S, P, P)``, ``X_k_converged (…)``; at ``K = L``
        ``X_L_phi_min_eig``, ``X_L_g_min_eig (…, R)`` (over (step, point) pairs) and
        ``X_L_phi_point_min_eig (…, R)`` (``Φ_k(T, T)`` over points); ``moment_matched (A, Ld)``. γ0 scan:
        ``gammas (G,)``, ``gamma_depth ()``, ``gamma_f_gap (A, G, E, S)``,
        ``gamma_dphi_gap (A, G, E)``.
    """
    from tqdm.auto import tqdm

    check_sgd_one_layer(cfg, "gia_limit")
    g = cfg.gia_limit
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, steps=g.steps))
    task = build_task(cfg, key=run_keys(cfg)["task"]) if task is None else task
    depths = sorted(g.depths)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=len(g.activations) * len(depths), desc="gia_limit", disable=not show)
    per_act: list[dict] = []
    for act in g.activations:
        c = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, activation=act))
        rows = []
        for L in depths:
            bar.set_postfix_str(f"{act} L={L}")
            rows.append(_depth(c, task, L))
            bar.update()
        arrays = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
        if g.gammas:
            arrays |= _gamma_scan(c, task)
        per_act.append(arrays)
    bar.close()
    out = {k: np.stack([a[k] for a in per_act]) for k in per_act[0] if not k.startswith("gamma")}
    if g.gammas:
        out |= {k: np.stack([a[k] for a in per_act]) for k in ("gamma_f_gap", "gamma_dphi_gap")}
        out |= {"gammas": per_act[0]["gammas"], "gamma_depth": per_act[0]["gamma_depth"]}
    out.update(
        depths=np.asarray(depths),
        layer_times=np.asarray(g.layer_times, float),
        steps=np.arange(g.steps + 1),
    )
    return out
