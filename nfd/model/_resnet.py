"""The finite pre-activation ResNet of docs/math §1.1, written for one example.

    h_0 = σ_in U x / sqrt(D)
    one_layer:  h_{ℓ+1} = h_ℓ + b W_ℓ φ(h_ℓ) / sqrt(N)
    two_layer:  z_ℓ = W1_ℓ φ(h_ℓ) / sqrt(N),   h_{ℓ+1} = h_ℓ + b W2_ℓ φ(z_ℓ) / sqrt(N)
    f(x) = vᵀ φ(h_L) / (γ0 N)

with ``b = param.branch_multiplier(L)`` (``β/sqrt(L)`` under depth-muP). With ``residual=False``
the skip connection is dropped and the branch carries the variance-preserving gain ``c_φ``
(`variance_gain`): the plain network ``h_{ℓ+1} = c_φ b W_ℓ φ(h_ℓ)/sqrt(N)`` (two-layer:
``h_{ℓ+1} = c_φ b W2_ℓ φ(z_ℓ)/sqrt(N)``), docs/math §1.7. Raw parameters are standard
normal except ``v ~ N(0, σ_out²)``; there are no biases. Block weights are stacked ``(L, N, N)`` and
iterated with `lax.scan`, so compile time does not grow with ``L``. Batches and ensembles are `vmap`.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..nn import AbstractActivation
from ..param import (
    AbstractBackwardWeights,
    AbstractBlock,
    AbstractParameterization,
    OneLayer,
    ReusedWeights,
    TensorRates,
)


def block_matvec(
    w: Float[Array, "N N"], offset: Float[Array, "N N"] | None, a: Float[Array, " N"]
) -> Float[Array, " N"]:
    """``W a`` whose cotangent to ``a`` is taken through ``(W + E)ᵀ`` when ``offset`` is ``E``.

    The gradient with respect to ``W`` is the ordinary ``ct aᵀ`` in both modes (§1.6). Written
    with `stop_gradient` rather than a `custom_vjp` so that under `vmap` over examples the weight
    cotangent is a single batched matmul, as in ordinary autodiff.
    """
    if offset is None:
        return w @ a
    e = jax.lax.stop_gradient(offset)
    return (w + e) @ a - e @ jax.lax.stop_gradient(a)


def variance_gain(activation: AbstractActivation) -> Float[Array, ""]:
    """``c_φ = E_{z~N(0,1)}[φ(z)²]^{-1/2}``: the gain that keeps ``E h²`` fixed through a plain layer.

    Read from the activation's Gaussian expectation ``V(1, 1, 1) = E[φ(z)²]`` (its dual kernel at
    unit variance; closed form for linear, ReLU and erf, Gauss–Hermite for tanh and GELU):
    ``sqrt 2`` for ReLU, 1 for the identity.
    """
    one = jnp.ones((), jnp.result_type(float))
    return activation.dual(one, one, one) ** -0.5


class ResNetFields(eqx.Module):
    """Forward and backward fields of one example (§1.2).

    Attributes:
        h: preactivations ``h_ℓ``, ℓ = 0..L, shape ``(L+1, N)``.
        g: backward fields ``g_ℓ = γ0 N ∂f/∂h_ℓ`` as propagated by the network's backward mode
            (``g̃`` for decoupled weights), shape ``(C, L+1, N)``.
        z: internal preactivations of two-layer blocks ``(L, N)``, else ``None``.
        gz: ``g^z_ℓ = γ0 N ∂f/∂z_ℓ`` of two-layer blocks ``(C, L, N)``, else ``None``.
        f: the raw (uncentred) output ``(C,)``.
    """

    h: Float[Array, "Lp1 N"]
    g: Float[Array, "C Lp1 N"]
    z: Float[Array, "L N"] | None
    gz: Float[Array, "C L N"] | None
    f: Float[Array, " C"]


class ResNet(eqx.Module):
    """Depth-scaled pre-activation ResNet (§1.1) with reused or decoupled backward weights.

    Attributes:
        U: input weights ``(N, D)``.
        blocks: stacked block weights: ``(W,)`` for one-layer blocks, ``(W1, W2)`` for two-layer
            blocks, each ``(L, N, N)``.
        v: readout ``(N, C)``.
        offsets: decoupled backward offsets ``E = W̃(0) − W(0)`` matching ``blocks``, or ``None``.
        param: the parameterization (branch multiplier, γ0, σ's, learning-rate rules).
        activation: φ.
        backward: `ReusedWeights` or `DecoupledWeights`.
        block: `OneLayer` or `TwoLayer`.
        post_activation: the T10 control ``h ← φ(h + b W h/sqrt(N))`` (one-layer blocks only).
        residual: ``False`` drops the skip connection (the plain network, ``h_{ℓ+1} = c_φ b
            W_ℓ φ(h_ℓ)/sqrt(N)``, `variance_gain`).
    """

    U: Float[Array, "N D"]
    blocks: tuple[Float[Array, "L N N"], ...]
    v: Float[Array, "N C"]
    offsets: tuple[Float[Array, "L N N"], ...] | None
    param: AbstractParameterization
    activation: AbstractActivation
    backward: AbstractBackwardWeights
    block: AbstractBlock
    post_activation: bool = eqx.field(static=True)
    residual: bool = eqx.field(static=True)

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        width: int,
        depth: int,
        *,
        param: AbstractParameterization,
        activation: AbstractActivation,
        block: AbstractBlock = OneLayer(),
        backward: AbstractBackwardWeights = ReusedWeights(),
        post_activation: bool = False,
        residual: bool = True,
        dtype=None,
        key: PRNGKeyArray,
    ):
        for name, value, low in (
            ("in_dim", in_dim, 1),
            ("out_dim", out_dim, 1),
            ("width", width, 1),
            ("depth", depth, 1),
        ):
            if int(value) != value or value < low:
                raise ValueError(f"ResNet needs {name} >= {low} (an integer), got {name}={value}.")
        if post_activation and block.two_layer:
            raise ValueError("post_activation=True is only defined for one_layer blocks (T10).")
        if post_activation and not residual:
            raise ValueError("post_activation=True needs residual=True (a residual stream).")
        param.check_block(block)
        dtype = jnp.result_type(float) if dtype is None else dtype
        u_key, w_key, v_key, e_key = jr.split(key, 4)
        self.U = jr.normal(u_key, (width, in_dim), dtype)
        nb = len(block.matrices)
        self.blocks = tuple(jr.normal(k, (depth, width, width), dtype) for k in jr.split(w_key, nb))
        self.v = param.sigma_out * jr.normal(v_key, (width, out_dim), dtype)
        offs = [
            backward.offset(w, key=k)
            for w, k in zip(self.blocks, jr.split(e_key, nb), strict=False)
        ]
        self.offsets = None if offs[0] is None else tuple(o for o in offs if o is not None)
        self.param = param
        self.activation = activation
        self.backward = backward
        self.block = block
        self.post_activation = post_activation
        self.residual = residual

    # -- sizes --------------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.U.shape[-2]

    @property
    def in_dim(self) -> int:
        return self.U.shape[-1]

    @property
    def depth(self) -> int:
        return self.blocks[0].shape[-3]

    @property
    def out_dim(self) -> int:
        return self.v.shape[-1]

    def branch_factor(self) -> Float[Array, ""]:
        """The factor in front of ``W φ/sqrt(N)`` (``W2 φ(z)/sqrt(N)``) that writes the stream:
        ``b`` (residual) or ``c_φ b`` (plain)."""
        b = self.param.branch_multiplier(self.depth)
        return b if self.residual else variance_gain(self.activation) * b

    def ntk_weights(self) -> TensorRates:
        """`AbstractParameterization.ntk_weights` of this network (§1.4), the branch matrix's
        weight times ``c_φ²`` for the plain network (its gradient carries ``c_φ b``)."""
        weights = self.param.ntk_weights(self.depth, self.block)
        if not self.residual:
            branch = self.block.branch
            weights[branch] = weights[branch] * variance_gain(self.activation) ** 2
        return weights

    @property
    def tensor_names(self) -> tuple[str, ...]:
        """Names of the block tensors: ``("W",)`` or ``("W1", "W2")``."""
        return self.block.matrices

    # -- forward ------------------------------------------------------------------------------
    def _forward(self, x, eps_h, eps_z):
        n = self.width
        phi = self.activation
        b = self.branch_factor()
        dtype = self.U.dtype
        h0 = (self.param.sigma_in / self.in_dim**0.5) * (self.U @ x) + eps_h[0]
        offsets = self.offsets if self.offsets is not None else (None,) * len(self.blocks)

        def skip(h):  # the residual stream, or nothing in the plain network
            return h if self.residual else jnp.zeros_like(h)

        def body(h, xs):
            ws, es, e_h, e_z = xs
            if not self.block.two_layer:
                pre = skip(h) + (b / n**0.5) * block_matvec(
                    ws[0], es[0], h if self.post_activation else phi(h)
                )
                h_new = (phi(pre) if self.post_activation else pre) + e_h
                z = jnp.zeros((0,), dtype)
            else:
                z = block_matvec(ws[0], es[0], phi(h)) / n**0.5 + e_z
                h_new = skip(h) + (b / n**0.5) * block_matvec(ws[1], es[1], phi(z)) + e_h
            return h_new, (h_new, z)

        hL, (hs, zs) = jax.lax.scan(body, h0, (self.blocks, offsets, eps_h[1:], eps_z))
        f = self.v.T @ phi(hL) / (self.param.gamma0 * n)
        return f, jnp.concatenate([h0[None], hs]), zs

    def _zeros(self):
        dtype = self.U.dtype
        L, n = self.depth, self.width
        eps_z = jnp.zeros((L, n if self.block.two_layer else 0), dtype)
        return jnp.zeros((L + 1, n), dtype), eps_z

    def __call__(self, x: Float[Array, " D"]) -> Float[Array, " C"]:
        """The raw network output ``f(x) = vᵀφ(h_L)/(γ0 N)`` for one input."""
        eps_h, eps_z = self._zeros()
        return self._forward(x, eps_h, eps_z)[0]

    def fields(self, x: Float[Array, " D"]) -> ResNetFields:
        """All preactivations and backward fields of one input (§1.2).

        The backward fields are those of the network's own backward mode: for `DecoupledWeights`
        they are the decoupled ``g̃``; use ``model.as_reused().fields(x)`` for the true sensitivity.
        """
        eps_h, eps_z = self._zeros()

        def out(eps):
            f, hs, zs = self._forward(x, *eps)
            return f, (f, hs, zs)

        jac, (f, hs, zs) = jax.jacrev(out, has_aux=True)((eps_h, eps_z))
        scale = self.param.gamma0 * self.width
        two = self.block.two_layer
        return ResNetFields(
            h=hs,
            g=scale * jac[0],
            z=zs if two else None,
            gz=scale * jac[1] if two else None,
            f=f,
        )

    def as_reused(self) -> "ResNet":
        """The same network with ordinary (reused-weight) backpropagation."""
        if self.offsets is None:
            return self
        model = eqx.tree_at(lambda m: m.offsets, self, None, is_leaf=lambda x: x is None)
        return eqx.tree_at(lambda m: m.backward, model, ReusedWeights())
