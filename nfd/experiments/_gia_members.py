"""Members of the gradient-independence experiment: standard and decoupled networks that share
``U, W(0), v(0)`` (§1.6), several widths zero-padded to one size so that they compile as one
ensemble (`padded_param`), and the initial coupling of their backward kernels (T6,
`init_coupling`)."""

import math
from collections.abc import Sequence
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..dynamics import Points, map_members
from ..model import ResNet, point_fields
from ..nn import AbstractActivation
from ..param import AbstractParameterization, DecoupledWeights
from ..train import FiniteNetwork


def draw_decoupled(template: ResNet, param: AbstractParameterization, key: PRNGKeyArray) -> ResNet:
    """A decoupled `ResNet` of ``template``'s structure (`jax.eval_shape` of one) with
    ``U, W, W̃ ~ N(0, 1)`` and ``v ~ N(0, σ_out²)``, `ResNet`'s law (§1.1, §1.6), cut from one
    standard normal draw of ``key`` (one random-number kernel compiles several times faster than
    `ResNet`'s four); its backward offsets are ``E = W̃ − W``, and ``.as_reused()`` is the standard
    network with the same ``U, W(0), v(0)``."""
    shapes = [template.U.shape, *[w.shape for w in template.blocks] * 2, template.v.shape]
    sizes = [math.prod(s) for s in shapes]
    z = jr.normal(key, (sum(sizes),), template.U.dtype)
    cut = [z[a - m : a].reshape(s) for a, m, s in zip(np.cumsum(sizes), sizes, shapes, strict=True)]
    nb = len(template.blocks)
    U, ws, w_tilde, v = cut[0], tuple(cut[1 : 1 + nb]), cut[1 + nb : -1], cut[-1]
    offsets = tuple(wt - w for w, wt in zip(ws, w_tilde, strict=True))
    return eqx.tree_at(
        lambda m: (m.U, m.blocks, m.v, m.offsets, m.param),
        template,
        (U, ws, param.sigma_out * v, offsets, param),
    )


def padded_param(param: AbstractParameterization, width, size: int) -> AbstractParameterization:
    """The parameterization under which a width-``n`` network zero-padded to ``N = size`` units
    *is* the width-``n`` network: ``β√(N/n)`` and ``γ0 n/N``.

    Then ``b/√N`` and ``γ0 N`` (the only places ``N`` enters the forward pass and the fields) take
    their width-``n`` values, so ``h``, ``f`` and ``g = γ0 N ∂f/∂h`` are the width-``n`` ones on the
    leading ``n`` coordinates and exactly zero on the others (``φ(0) = 0``: padded rows and columns
    get no gradient and stay zero). Every kernel ``a·b/N`` (``Φ``, ``G``, the NTK) is ``n/N`` times
    the width-``n`` one, and so is the SGD rate ``η0 γ0² N m_θ``: training at base rate
    ``η0 N/n`` (`evolve`'s per-member learning rate) makes the same updates and the same P1 step
    ``η0 Θ c`` as the width-``n`` network. A test checks this against the unpadded `ResNet`.
    """
    ratio = size / width
    return eqx.tree_at(
        lambda p: (p.beta, p.gamma0), param, (param.beta * ratio**0.5, param.gamma0 / ratio)
    )


def draw_members(
    net: FiniteNetwork,
    points: Points,
    key: PRNGKeyArray,
    widths: Sequence[int],
    pairs: int,
    antithetic: bool,
) -> tuple[ResNet, np.ndarray]:
    """The standard and decoupled ensembles of several widths, padded to ``N = net.width`` units
    (`padded_param`) so that they compile as one, stacked on one member axis.

    Member ``s`` of width ``n`` is `draw_decoupled` of ``fold_in(fold_in(key, n), s)`` in ``net``'s
    structure (decoupled weights), zero outside its leading ``n`` units; the standard members have
    zero backward offsets (`block_matvec` then backpropagates exactly through ``W``), so the two
    kinds share ``U, W(0), v(0)``. Layout, per width: ``[standard, decoupled]``, each
    ``[+v(0)] × pairs`` then, with ``antithetic``, the partners ``[−v(0)] × pairs`` (same
    ``U, W, W̃``).

    Returns:
        The members and each member's width ``n``.
    """
    signs = [1.0, -1.0] if antithetic else [1.0]
    per = 2 * len(signs) * pairs  # members of one width
    n = np.repeat(np.asarray(widths, np.int32), per)
    seeds = np.tile(np.arange(pairs, dtype=np.int32), len(n) // pairs)
    sign = np.tile(np.repeat(np.asarray(signs), pairs), len(n) // (len(signs) * pairs))
    decoupled = np.tile(np.arange(per) >= per // 2, len(widths))
    template = eqx.filter_eval_shape(net.draw, points, key=key)  # the structure, no draw

    def make(n, s, sg, dec):
        param = padded_param(net.param, n.astype(sg.dtype), net.width)
        model = draw_decoupled(template, param, jr.fold_in(jr.fold_in(key, n), s))
        live = (jnp.arange(net.width, dtype=n.dtype) < n).astype(sg.dtype)
        mask = (live[:, None] * live[None, :])[None]  # every block
        offsets = tuple(jnp.where(dec, e * mask, jnp.zeros_like(e)) for e in model.offsets or ())
        return eqx.tree_at(
            lambda m: (m.U, m.blocks, m.v, m.offsets),
            model,
            (
                model.U * live[:, None],
                tuple(w * mask for w in model.blocks),
                sg * model.v * live[:, None],
                offsets,
            ),
        )

    cols = (n, seeds, sign.astype(points.x.dtype), decoupled)
    return map_members(make, *(jnp.asarray(c) for c in cols)), n


# -- T6: the initial coupling ---------------------------------------------------------------------


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


def sample_gap(std: ResNet, dec: ResNet, xs: Float[Array, "P D"]) -> Float[Array, ""]:
    """``mean_{μν}(G_0^std − G_0^dec)`` of the drawn networks (first output, own fields)."""
    g_std = point_fields(std, xs).g[:, 0, 0]  # (P, N)
    g_dec = point_fields(dec, xs).g[:, 0, 0]
    return jnp.mean(g_std @ g_std.T - g_dec @ g_dec.T) / std.width


def readout_average_gap(std: ResNet, dec: ResNet, xs: Float[Array, "P D"]) -> Float[Array, ""]:
    """``E_v[mean_{μν}(G_0^std − G_0^dec)]`` at fixed ``U, W, W̃``, exactly (first output).

    ``g_{0,μ}`` is linear in the readout, ``g_{0,μ} = A_μ v``, so with ``v ~ N(0, σ_out² I)``,
    ``E_v[g_{0,μ}·g_{0,ν}/n] = σ_out² tr(A_μ A_νᵀ)/n`` and the mean over ``μ, ν`` is
    ``σ_out² ‖Ā‖_F²/n`` with ``Ā = mean_μ A_μ``. Column ``a`` of ``A_μ`` is ``g_{0,μ}`` of output
    ``a`` of the same network read out by ``v = I`` (``n`` outputs, `ResNet.fields`).
    """

    def abar(model: ResNet):
        eye = jnp.eye(model.width, dtype=model.v.dtype)
        return jnp.mean(point_fields(eqx.tree_at(lambda m: m.v, model, eye), xs).g[:, :, 0], 0)

    sigma2 = std.param.sigma_out**2
    return sigma2 * (jnp.sum(abar(std) ** 2) - jnp.sum(abar(dec) ** 2)) / std.width


ESTIMATORS = {"sample": sample_gap, "readout_average": readout_average_gap}


@eqx.filter_jit
def _gap_chunk(param, activation, depth: int, width: int, xs, keys, gap):
    """``gap`` of the standard/decoupled pair drawn from each key (one compiled computation)."""

    kw = dict(param=param, activation=activation, backward=DecoupledWeights(), dtype=xs.dtype)
    template = eqx.filter_eval_shape(ResNet, xs.shape[1], 1, width, depth, **kw, key=keys[0])

    def one(k):
        dec = draw_decoupled(template, param, k)
        return gap(dec.as_reused(), dec, xs)

    return jax.vmap(one)(keys)


def init_coupling(
    param: AbstractParameterization,
    activation: AbstractActivation,
    xs: Float[Array, "P D"],
    *,
    depth: int,
    widths: Sequence[int],
    num_seeds: int,
    chunk: int = 250,
    estimator: Literal["sample", "readout_average"] = "sample",
    key: PRNGKeyArray,
) -> InitCouplingResult:
    """Seed-averaged initial backward-kernel gap between standard and decoupled networks (T6).

    Args:
        param, activation: the networks' parameterization and ``φ``.
        xs: probe points ``(P, D)``.
        depth: ``L``.
        widths: the widths ``n``.
        num_seeds: networks per width (a multiple of ``chunk``).
        chunk: networks per vmapped batch.
        estimator: ``"sample"`` uses the drawn readout (`sample_gap`); ``"readout_average"`` the
            exact average over ``v(0)`` at fixed ``U, W, W̃`` (`readout_average_gap`: same mean,
            but a per-seed spread of O(1/n) instead of O(n^-1/2), because the readout's
            chi-square noise is integrated out; cost O(n³ L P) per network instead of O(n² L P)).
        key: the initialisation key.

    Returns:
        An `InitCouplingResult`.
    """
    if num_seeds % chunk:
        raise ValueError(f"num_seeds ({num_seeds}) must be a multiple of chunk ({chunk}).")
    gaps, ses = [], []
    for i, n in enumerate(widths):
        keys = jr.split(jr.fold_in(key, i), num_seeds // chunk)
        vals = np.concatenate(
            [
                np.asarray(
                    _gap_chunk(
                        param, activation, depth, n, xs, jr.split(k, chunk), ESTIMATORS[estimator]
                    )
                )
                for k in keys
            ]
        )
        gaps.append(vals.mean())
        ses.append(vals.std(ddof=1) / np.sqrt(len(vals)))
    return InitCouplingResult(
        widths=jnp.asarray(widths, float),
        gap=jnp.asarray(gaps),
        gap_se=jnp.asarray(ses),
        num_seeds=num_seeds,
    )
