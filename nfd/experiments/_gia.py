"""The gradient-independence check at initialisation (spec §5.1, §7.2; acceptance test T6).

At t = 0 the W/Wᵀ coupling of the standard network is a finite-width effect: the seed means of the
backward kernels of the standard (reused) and the decoupled network differ at O(1/n), so
``n·(E G_0^std − E G_0^dec)`` is a constant in n. Both networks share ``U, W(0), v(0)``; the
decoupled one backpropagates through an independent ``W̃(0)``.
"""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..model import DecoupledWeights, ResNet, ReusedWeights
from ..nn import AbstractActivation
from ..param import AbstractParameterization


class InitCouplingResult(eqx.Module):
    """``ΔG_0 = E G_0^std − E G_0^dec`` per width: mean over probe-point pairs, with its SE.

    Attributes:
        widths: ``(W,)``.
        gap: seed mean of ``ΔG_0`` averaged over the P×P probe pairs ``(W,)``.
        gap_se: its standard error over seeds ``(W,)``.
        num_seeds: seeds per width.
    """

    widths: Float[Array, " W"]
    gap: Float[Array, " W"]
    gap_se: Float[Array, " W"]
    num_seeds: int = eqx.field(static=True)


def _g0_gap(param, activation, depth, width, xs, chunk, key):
    """Per-seed ``mean_{μν}(G_0^std − G_0^dec)`` for a chunk of seeds (vmapped)."""
    D = xs.shape[1]

    def one(k):
        kw = dict(param=param, activation=activation, key=k)
        std = ResNet(D, 1, width, depth, backward=ReusedWeights(), **kw)
        dec = ResNet(D, 1, width, depth, backward=DecoupledWeights(), **kw)
        g_std = jax.vmap(std.fields)(xs).g[:, 0, 0]  # (P, N)
        g_dec = jax.vmap(dec.fields)(xs).g[:, 0, 0]
        return jnp.mean(g_std @ g_std.T - g_dec @ g_dec.T) / width

    return jax.vmap(one)(jr.split(key, chunk))


def init_coupling(
    param: AbstractParameterization,
    activation: AbstractActivation,
    xs: Float[Array, "P D"],
    *,
    depth: int,
    widths: Sequence[int],
    num_seeds: int,
    chunk: int = 250,
    key: PRNGKeyArray,
) -> InitCouplingResult:
    """Seed-averaged initial backward-kernel gap between standard and decoupled networks (T6)."""
    if num_seeds % chunk:
        raise ValueError(f"num_seeds ({num_seeds}) must be a multiple of chunk ({chunk}).")
    run = eqx.filter_jit(_g0_gap)
    gaps, ses = [], []
    for i, n in enumerate(widths):
        keys = jr.split(jr.fold_in(key, i), num_seeds // chunk)
        vals = np.concatenate(
            [np.asarray(run(param, activation, depth, n, xs, chunk, k)) for k in keys]
        )
        gaps.append(vals.mean())
        ses.append(vals.std(ddof=1) / np.sqrt(len(vals)))
    return InitCouplingResult(
        widths=jnp.asarray(widths, float),
        gap=jnp.asarray(gaps),
        gap_se=jnp.asarray(ses),
        num_seeds=num_seeds,
    )


def constant_fit(values: np.ndarray, se: np.ndarray) -> dict[str, float]:
    """Weighted constant fit ``c`` to ``values ± se`` with its χ² and p-value (T6: n·ΔG flat in n)."""
    from math import erf, sqrt

    w = 1.0 / np.asarray(se) ** 2
    c = float(np.sum(w * values) / np.sum(w))
    chi2 = float(np.sum(w * (values - c) ** 2))
    dof = len(values) - 1
    # Wilson–Hilferty approximation of the χ² upper tail (no scipy dependency)
    z = ((chi2 / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / sqrt(2 / (9 * dof)) if dof > 0 else 0.0
    p = 0.5 * (1 - erf(z / sqrt(2)))
    return {"c": c, "c_se": float(1 / np.sqrt(np.sum(w))), "chi2": chi2, "dof": dof, "p": p}
