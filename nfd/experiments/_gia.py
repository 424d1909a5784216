"""Is the gradient-independence assumption right? (docs/math §5, §7.2; acceptance tests T6, T7)

Standard (reused-weight) and decoupled finite networks that share ``U, W(0), v(0)`` (§1.6)
are trained side by side over a grid of widths × depths and compared with each other and with the
two ``n = ∞`` limits at ``K = L``: mode A (`exact`, the limit of the standard network) and mode B
(`decoupled`, NFD/GIA). Nothing here presumes which limit the standard network approaches: every
observable is measured and the fits of `nfd.analysis` (`summarise`) say which decay in ``L`` the
data prefer.

**Initialisation (T6).** The seed means of the backward kernels of the two networks differ at
O(1/n): ``n·(E G_0^std − E G_0^dec)`` is a constant in n (`init_coupling`).

**Training (T7).** Per network, one full step ``t = 0 → 1`` (every system shares ``c(0)``, because
centred outputs vanish at ``t = 0``) gives the readout-free kernel changes ``δΦ_k = Φ_k(1) − Φ_k(0)``
(``Φ`` the feature kernel of ``φ(h)``), ``δG_k`` (the network's own backward fields: ``g̃`` for the
decoupled one) and ``δΘ`` (the own-field NTK), and the χ diagnostic of §7.2. Trajectories of
``T`` steps give the function and loss gaps (readout P2: the networks' own outputs) and the P1
observables (each network advances ``f`` with its own fields' NTK and is trained with the error
signal of that ``f``: the finite analogue of the limit's P1 readout, §5.3).

**Antithetic pairs.** The law of ``(U, W, W̃, v)`` is invariant under ``v(0) → −v(0)``, so
averaging every observable over the pair ``(v, −v)`` at fixed ``U, W, W̃`` is unbiased. At fixed
other weights ``g(0)``, ``f(0)`` and the first update of ``U`` and ``W`` are odd in ``v(0)`` while
``c(0) = y`` (centred), ``Δv`` and every kernel are even, so the pair average cancels exactly the odd
terms, among them the leading O(n^-1/2) fluctuation of ``δΦ``, ``δG`` and χ
(``φ(h)·g(0)/n``-type terms whose limit is 0). The even part still fluctuates at O(n^-1/2) while
the seed-mean bias is O(1/n), so resolving ``d_A ∝ 1/n`` takes ~10³ pairs at n = 64 (the report
marks each slope as resolved or not). Even quantities such as ``G_0(0)`` gain nothing from the
pairs; for them `init_coupling` offers the exact average over ``v(0)`` instead.
"""

import dataclasses
import math
import sys

import numpy as np

from ..config import ConfigError, build_loss, build_param, build_task, run_keys
from ..dynamics import batch_schedule
from ._gia_measure import measure_depth


def _limit_path(cfg, task, depth: int, coupling: str, taus) -> dict:
    """Mode A or B at ``K = L``, readout P1, by a path method: `linear_exact` (one exact
    repetition) or the kernel fixed point (`limit.method = "kernel"`: ``seeds`` independent draw
    sets of ``limit.particles`` samples at ``n = ∞``; χ is not formed, and the smallest relative
    eigenvalues of ``Φ_k``, ``G_k`` over all (step, point) pairs at the saved layers are kept)."""
    from ..limit import first_step_response, init_kernels
    from ..nn import Linear
    from ._limit import run_limit

    method = limit_method(cfg)
    lim = dataclasses.replace(cfg.limit, method=method, readout="ntk", layer_steps=0)
    out_cfg = dataclasses.replace(
        cfg.output, every=1, layer_times=tuple(taus), ntk=True, kernels=True
    )
    optim = dataclasses.replace(cfg.optim, steps=cfg.gia.steps)
    seeds = 1 if method == "linear_exact" else cfg.seeds
    c = dataclasses.replace(cfg, limit=lim, output=out_cfg, optim=optim, seeds=seeds)
    res = run_limit(c, depth=depth, coupling=coupling, task=task, quiet=True, progress=False)
    hk, gk, ntk = (np.asarray(a) for a in (res.h_kernel, res.g_kernel, res.ntk))
    f = np.concatenate([np.asarray(res.f_train), np.asarray(res.f_test)], axis=2)
    out = {}
    if method == "kernel":
        hk = np.asarray(res.extras["phi_kernel"])  # the feature kernel Φ (of φ(h))
        layers = [int(round(t * depth)) for t in taus]
        out = {
            "phi_min_eig": np.asarray(res.info.phi_min_eig)[:, layers],
            "g_min_eig": np.asarray(res.info.g_min_eig)[:, layers],
        }
    chi = np.full((depth,), np.nan)  # χ_ℓ(t = 1) needs a full first batch (§5.2)
    if (
        method == "linear_exact"
        and coupling == "exact"
        and cfg.optim.batch_size in (0, task.n_train)
    ):
        param = build_param(cfg)
        R = np.asarray(
            first_step_response(
                task.x_train,
                task.y_train,
                param=param,
                num_layer_steps=depth,
                loss=build_loss(cfg),
                lr=cfg.optim.lr,
            )
        )  # (L, P, C): Ż_ℓ(1) on the fields g_{ℓ+1}(0)
        kx = task.x_train @ task.x_train.T / task.in_dim
        G = np.asarray(init_kernels(param, Linear(), kx, depth).G[1:, 0, 0])
        chi = param.branch_multiplier(depth) * R.mean(axis=(1, 2)) * G
    return out | {
        "phi": hk,  # (E, S, R, P, P)
        "g": gk,
        "theta": ntk,
        "chi": np.broadcast_to(chi, (hk.shape[0], hk.shape[1], depth)).copy(),  # χ(t = 1), every t
        "f_p1": f,
        "loss_p1": np.asarray(res.loss_train),
    }


def check_sgd_one_layer(cfg, kind: str) -> None:
    """What every GIA kind needs: SGD (the limit theory's optimizer), ``seeds ≥ 2`` (standard
    errors) and one-layer pre-activation blocks (the blocks the limits solve)."""
    if cfg.optim.name != "sgd":
        raise ConfigError(
            "optim.name", f"{cfg.optim.name!r} has no limit theory", f"'sgd' for kind = '{kind}'"
        )
    if cfg.seeds < 2:
        raise ConfigError(
            "seeds", f"kind = '{kind}' needs standard errors, got seeds = {cfg.seeds}", "seeds >= 2"
        )
    if cfg.model.block != "one_layer" or cfg.model.post_activation:
        raise ConfigError(
            "model.block",
            f"kind = '{kind}' studies one-layer pre-activation blocks",
            "block = 'one_layer', post_activation = false",
        )
    if not cfg.model.residual:
        raise ConfigError(
            "model.residual", f"kind = '{kind}' studies residual networks (a limit)", "true"
        )


def _check_cfg(cfg, task=None) -> None:
    """Reject what `run_gia` does not support (``task``: also check the built task)."""
    check_sgd_one_layer(cfg, "gia")
    if task is not None and task.out_dim != 1:
        raise ConfigError(
            "task.out_dim",
            f"kind = 'gia' needs one output, got {task.out_dim}",
            "a task with C = 1 (e.g. teacher_student with out_dim = 1)",
        )


def limit_method(cfg) -> str:
    """The limit used at ``K = L``: ``"kernel"`` when `limit.method` asks for it (the n = ∞ kernel
    fixed point, any activation), else ``"linear_exact"`` for linear networks and ``"particles"``
    (width ``limit.particles``) otherwise."""
    if cfg.limit.method == "kernel":
        return "kernel"
    return "linear_exact" if cfg.model.activation == "linear" else "particles"


def _reduce(part: dict, depth: int, max_depth: int) -> dict:
    """One-step changes of the kernels, χ at ``t = 1`` padded with NaN to ``max_depth``."""
    chi = np.full((part["chi"].shape[0], max_depth), np.nan)
    chi[:, :depth] = part["chi"][:, 1]
    return {
        "dphi": part["phi"][:, 1] - part["phi"][:, 0],
        "dg": part["g"][:, 1] - part["g"][:, 0],
        "dtheta": part["theta"][:, 1] - part["theta"][:, 0],
        "chi": chi,
        **{k: part[k] for k in ("g0", "f_p1", "f_p2", "loss_p1", "loss_p2") if k in part},
        **{k: part[k] for k in ("phi_min_eig", "g_min_eig") if k in part},
    }


def _limits(cfg, task, depth: int, blocks, schedule, progress: bool) -> tuple[dict, dict]:
    """Modes A and B at ``K = L`` (readout P1), reduced: `linear_exact` for linear networks, else
    standard / decoupled networks of width ``M = limit.particles`` (T5(d))."""
    max_depth = max(cfg.gia.depths)
    if limit_method(cfg) in ("linear_exact", "kernel"):
        taus = tuple(cfg.gia.layer_times)
        return (
            _reduce(_limit_path(cfg, task, depth, "exact", taus), depth, max_depth),
            _reduce(_limit_path(cfg, task, depth, "decoupled", taus), depth, max_depth),
        )
    M = cfg.limit.particles
    res = measure_depth(
        cfg,
        task,
        depth,
        [M],
        cfg.seeds,
        key=run_keys(cfg)["limit"],
        schedule=schedule,
        blocks=blocks,
        p2=False,  # the limits are read out by P1
        progress=progress,
    )[M]
    return _reduce(res["std"], depth, max_depth), _reduce(res["dec"], depth, max_depth)


def _empty(cfg, task, num_limit: int) -> dict[str, np.ndarray]:
    """The result arrays, NaN-filled (names and shapes as `run_gia` documents)."""
    g = cfg.gia
    Pa, S, C = task.n_train + task.n_test, g.steps + 1, task.out_dim
    R, Lmax = len(g.layer_times), max(g.depths)
    shapes = {
        "dphi": (R, Pa, Pa),
        "dg": (R, Pa, Pa),
        "dtheta": (Pa, Pa),
        "chi": (Lmax,),
        "g0": (),
        "f_p1": (S, Pa, C),
        "f_p2": (S, Pa, C),
        "loss_p1": (S,),
        "loss_p2": (S,),
    }
    lead = (len(g.widths), len(g.depths), cfg.seeds)
    arrays: dict[str, np.ndarray] = {
        f"{x}_{k}": np.full((*lead, *s), np.nan) for x in ("std", "dec") for k, s in shapes.items()
    }
    for x in ("limA", "limB"):
        for k, shp in shapes.items():
            if k != "g0" and not k.endswith("_p2"):
                arrays[f"{x}_{k}"] = np.full((len(g.depths), num_limit, *shp), np.nan)
        if limit_method(cfg) == "kernel":  # nondegeneracy of Φ_k, G_k at the layer times, t = 1
            for k in ("phi_min_eig", "g_min_eig"):
                arrays[f"{x}_{k}"] = np.full((len(g.depths), num_limit, R), np.nan)
    arrays["init_gap"] = np.full(lead, np.nan)
    return arrays


def _gamma_scan(cfg, task, blocks, schedule, progress: bool) -> dict[str, np.ndarray]:
    """The limit gaps (mode A − mode B) at the largest depth for every ``γ0`` of `gia.gammas`."""
    gammas = np.asarray(cfg.gia.gammas, float)
    out = {
        "gammas": gammas,
        "gamma_dphi_gap": np.full((len(gammas),), np.nan),
        "gamma_f_gap": np.full((len(gammas), cfg.gia.steps + 1), np.nan),
    }
    for q, gamma in enumerate(gammas):
        c = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, gamma0=float(gamma)))
        a, b = _limits(c, task, max(cfg.gia.depths), blocks, schedule, progress)
        out["gamma_dphi_gap"][q] = np.linalg.norm(
            a["dphi"][:, -1].mean(0) - b["dphi"][:, -1].mean(0)
        )
        diff = a["f_p1"].mean(0) - b["f_p1"].mean(0)  # (S, P, C)
        out["gamma_f_gap"][q] = np.sqrt(np.mean(diff**2, axis=(1, 2)))
    return out


def run_gia(cfg, *, task=None, progress: bool | None = None) -> dict[str, np.ndarray]:
    """Measure the standard-vs-decoupled comparison of `[gia]` (§5.3, §7.2, T6, T7).

    For every depth ``L`` and width ``n``, ``seeds`` pairs of standard and decoupled networks
    (sharing ``U, W(0), v(0)``; antithetic pairs averaged) and the two limits at ``K = L`` (mode A
    `exact` and mode B `decoupled`, readout P1): `linear_exact` for linear activations (one exact
    repetition), else the particle method of §4.1 with ``M = limit.particles`` (which is a
    width-``M`` standard / decoupled network, T5(d); ``seeds`` pair-averaged repetitions).

    Args:
        cfg: a `Config` with ``kind = "gia"`` (SGD, one-layer blocks, one output).
        task: the data (default: `[task]` built from the config's ``seed``).
        progress: show the training loop's progress bars (default: when stderr is a TTY).

    Returns:
        A dict of numpy arrays. Grid: ``widths (W,)``, ``depths (Ld,)``, ``layer_times (R,)``,
        ``blocks (Ld, R)``, ``chi_blocks (Ld, R)``, ``steps (S,)``. Finite, for ``X`` in
        ``std``, ``dec`` (leading axes ``(W, Ld, E)``, E pairs): ``X_dphi``, ``X_dg``
        ``(…, R, P, P)``; ``X_dtheta (…, P, P)``; ``X_chi (…, Lmax)`` (NaN beyond ``L``);
        ``X_g0``; ``X_f_p1``, ``X_f_p2 (…, S, P, C)``; ``X_loss_p1``, ``X_loss_p2 (…, S)``;
        ``init_gap (W, Ld, E)``. Limits, for ``X`` in ``limA``, ``limB`` (leading axes
        ``(Ld, Rl)``, Rl repetitions): the same names except ``g0``/``*_p2``. γ0 scan:
        ``gammas (G,)``, ``gamma_dphi_gap (G,)``, ``gamma_f_gap (G, S)``.
    """
    show = sys.stderr.isatty() if progress is None else progress
    _check_cfg(cfg)
    keys = run_keys(cfg)
    task = build_task(cfg, key=keys["task"]) if task is None else task
    _check_cfg(cfg, task)
    g = cfg.gia
    taus, widths, depths = tuple(g.layer_times), sorted(g.widths), sorted(g.depths)
    schedule = batch_schedule(task.n_train, cfg.optim.batch_size, g.steps, key=keys["batch"])
    arrays = _empty(cfg, task, 1 if limit_method(cfg) == "linear_exact" else cfg.seeds)
    blocks_all = np.asarray([[int(round(t * L)) for t in taus] for L in depths], np.int64)
    rb = g.init_estimator == "readout_average"
    for j, L in enumerate(depths):
        blocks = tuple(int(b) for b in blocks_all[j])
        res = measure_depth(
            cfg,
            task,
            L,
            widths,
            cfg.seeds,
            key=keys["init"],
            schedule=schedule,
            blocks=blocks,
            init_gap=rb,
            progress=show,
        )
        for i, n in enumerate(widths):
            for kind in ("std", "dec"):
                for k, v in _reduce(res[n][kind], L, max(depths)).items():
                    arrays[f"{kind}_{k}"][i, j] = v
            std, dec = res[n]["std"], res[n]["dec"]
            arrays["init_gap"][i, j] = res[n]["init_gap"] if rb else std["g0"] - dec["g0"]
        for kind, part in zip(
            ("limA", "limB"), _limits(cfg, task, L, blocks, schedule, show), strict=True
        ):
            for k, v in part.items():
                if f"{kind}_{k}" in arrays:
                    arrays[f"{kind}_{k}"][j] = v
    arrays |= _gamma_scan(cfg, task, tuple(int(b) for b in blocks_all[-1]), schedule, show)
    arrays.update(
        widths=np.asarray(widths),
        depths=np.asarray(depths),
        layer_times=np.asarray(taus),
        blocks=blocks_all,
        chi_blocks=np.asarray(
            [[min(int(math.floor(t * L)), L - 1) for t in taus] for L in depths], np.int64
        ),
        steps=np.arange(g.steps + 1),
    )
    return arrays
