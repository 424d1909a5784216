"""The demo: finite networks at a few widths and depths on one task (config `[demo]`)."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..config import Config, build_task, run_keys
from ._finite import run_finite
from ._limit import run_limit


class DemoResult(eqx.Module):
    """Loss curves of every (width, depth) of `[demo]`, ensemble axis E kept.

    Attributes:
        widths, depths: the grid ``(W,)``, ``(Ld,)``.
        steps: saved steps ``(S,)``.
        loss_train, loss_test: ``(W, Ld, E, S)``.
        status: member status codes ``(W, Ld, E)``.
    """

    widths: Int[Array, " W"]
    depths: Int[Array, " Ld"]
    steps: Int[Array, " S"]
    loss_train: Float[Array, "W Ld E S"]
    loss_test: Float[Array, "W Ld E S"]
    status: Int[Array, "W Ld E"]
    limit_loss_train: Float[Array, "Ld E S"] | None
    limit_loss_test: Float[Array, "Ld E S"] | None


def run_demo(cfg: Config, *, progress: bool | None = None) -> DemoResult:
    """Train `[model]` at every width × depth of `[demo]` on the same task and batch sequence,
    and (``demo.limit``) run the NFD limit at ``K = L`` for every depth on the same sequence."""
    task = build_task(cfg, key=run_keys(cfg)["task"])
    rows_train, rows_test, rows_status = [], [], []
    steps = None
    for n in cfg.demo.widths:
        tr, te, st = [], [], []
        for L in cfg.demo.depths:
            res = run_finite(
                cfg, width=n, depth=L, task=task, progress=progress, desc=f"n={n} L={L}"
            )
            tr.append(res.loss_train)
            te.append(res.loss_test)
            st.append(res.status)
            steps = res.steps
        rows_train.append(tr)
        rows_test.append(te)
        rows_status.append(st)
    assert steps is not None
    lim_train, lim_test = [], []
    if cfg.demo.limit:
        for L in cfg.demo.depths:
            res = run_limit(cfg, depth=L, task=task, progress=progress, desc=f"limit L={L}")
            lim_train.append(res.loss_train)
            lim_test.append(res.loss_test)

    return DemoResult(
        widths=jnp.asarray(cfg.demo.widths),
        depths=jnp.asarray(cfg.demo.depths),
        steps=steps,
        loss_train=jnp.stack([jnp.stack(r) for r in rows_train]),
        loss_test=jnp.stack([jnp.stack(r) for r in rows_test]),
        status=jnp.stack([jnp.stack(r) for r in rows_status]),
        limit_loss_train=jnp.stack(lim_train) if lim_train else None,
        limit_loss_test=jnp.stack(lim_test) if lim_test else None,
    )
