"""Reused against decoupled backward weights across depth (arXiv 2512.21075 Fig. 2; §1.6, §1.7).

For every architecture (`decoupling.archs`: the plain muP network, the muP ResNet, the depth-muP
ResNet) and depth (`decoupling.depths`) the same ``seeds`` networks are trained twice on the
config's task and optimizer: with standard backpropagation (`ReusedWeights`) and with
independently initialised backward weights (`DecoupledWeights`). Member ``s`` of both modes has
the same forward initialisation (both draw from ``fold_in(init_key, s)``; the decoupled offsets
come from a key of their own), so the two curves of a seed form a paired comparison. Each
(arch, depth, mode) cell is one `run_finite` ensemble.

Everything here is a pure function of the config; `nfd.analysis.decoupling_summary` turns the
arrays into gaps and fits, `nfd.reports.decoupling_report` and `nfd.plots.decoupling_figures`
read that.
"""

import dataclasses

import numpy as np

from ..config import ARCHS, Config, ConfigError, build_task, run_keys
from ._finite import run_finite

BACKWARDS = ("reused", "decoupled")


def cell_config(cfg: Config, arch: str, depth: int, backward: str) -> Config:
    """The finite config of one (arch, depth, backward) cell: `model.residual`, `model.param`
    from `ARCHS`, the depth and the backward mode; everything else is ``cfg``'s."""
    residual, param = ARCHS[arch]
    model = dataclasses.replace(
        cfg.model, residual=residual, param=param, depth=depth, backward=backward
    )
    return dataclasses.replace(cfg, kind="finite", model=model)  # type: ignore[arg-type]


def _check(cfg: Config) -> None:
    if cfg.model.post_activation:
        raise ConfigError(
            "model.post_activation",
            "kind = 'decoupling' compares pre-activation networks",
            "false",
        )
    if cfg.seeds < 2:
        raise ConfigError(
            "seeds", f"kind = 'decoupling' needs standard errors, got {cfg.seeds}", "seeds >= 2"
        )


def run_decoupling(cfg: Config, *, progress: bool | None = None) -> dict[str, np.ndarray]:
    """Train every (arch, depth, backward) cell; return the arrays for `save_run`.

    Axes A = archs, J = depths, B = backward modes (``reused``, ``decoupled``), E = seeds,
    S = saved steps: ``loss_train``, ``loss_test`` (and ``acc_train``, ``acc_test`` with the
    cross-entropy loss) ``(A, J, B, E, S)``, NaN after a member diverged; ``status``,
    ``failed_step`` ``(A, J, B, E)``; ``steps`` ``(S,)``; ``archs``, ``depths``, ``backwards``.
    """
    _check(cfg)
    task = build_task(cfg, key=run_keys(cfg)["task"])
    dc = cfg.decoupling
    keys = ["loss_train", "loss_test"]
    if cfg.optim.loss == "cross_entropy":
        keys += ["acc_train", "acc_test"]
    out: dict[str, list] = {k: [] for k in (*keys, "status", "failed_step")}
    steps = None
    for arch in dc.archs:
        rows: dict[str, list] = {k: [] for k in out}
        for L in dc.depths:
            cells: dict[str, list] = {k: [] for k in out}
            for bw in BACKWARDS:
                res = run_finite(
                    cell_config(cfg, arch, L, bw),
                    task=task,
                    progress=progress,
                    desc=f"{arch} L={L} {bw}",
                )
                steps = np.asarray(res.steps)
                for k in keys:
                    src = res.extras[k] if k.startswith("acc_") else getattr(res, k)
                    cells[k].append(np.asarray(src, float))
                cells["status"].append(np.asarray(res.status))
                cells["failed_step"].append(np.asarray(res.failed_step))
            for k in out:
                rows[k].append(np.stack(cells[k]))
        for k in out:
            out[k].append(np.stack(rows[k]))
    arrays = {k: np.stack(v) for k, v in out.items()}
    arrays |= {
        "steps": np.asarray(steps),
        "archs": np.asarray(dc.archs),
        "depths": np.asarray(dc.depths),
        "backwards": np.asarray(BACKWARDS),
    }
    return arrays
