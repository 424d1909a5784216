"""The finite network as a dynamics (docs/math §1): one `ResNet` per ensemble member.

Every member has its own initialisation and base learning rate ``η0`` and all see the batch
sequence of the run (`nfd.dynamics.batch_schedule`), which the limit methods replay. Predictions
are centred, ``f − f(θ(0))`` (§1.1), and read out as the limit is: by the network's own
output (`FeatureReadout`, P2) or, as the finite analogue of the limit's P1 readout
(`NTKReadout`), advanced by ``f(t+1) = f(t) + η0 Θ_own(t) c(t)`` with the NTK of the network's own
fields while the weights train on that ``f``'s error signal (§5.3).
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..dynamics import AbstractDynamics, Points, SaveAt
from ..model import ResNet, class_gram, gram, point_fields
from ..model._kernels import ntk_apply, ntk_from_fields
from ..nn import AbstractActivation, AbstractLoss, AbstractReadout, FeatureReadout
from ..param import (
    AbstractBackwardWeights,
    AbstractBlock,
    AbstractParameterization,
    OneLayer,
    ReusedWeights,
)
from ._optim import AbstractOptimizer


class FiniteState(eqx.Module):
    """The evolving state of one network: weights, optimizer state, centring, P1 prediction."""

    model: ResNet
    opt_state: Any
    f0: Float[Array, "Pts C"]
    f_ntk: Float[Array, "Pts C"]


def tensors(model: ResNet) -> tuple[Array, ...]:
    """The trainable tensors ``(U, *block matrices, v)`` (names ``model.block.tensors``)."""
    return (model.U, *model.blocks, model.v)


def with_tensors(model: ResNet, values: tuple[Array, ...]) -> ResNet:
    """``model`` with its trainable tensors replaced (the backward offsets are kept)."""
    return eqx.tree_at(lambda m: (m.U, *m.blocks, m.v), model, values)


def _all_finite(tree) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


class FiniteNetwork(AbstractDynamics):
    """A width-``N``, depth-``L`` ResNet trained by an optax optimizer (§1.1–1.3).

    Attributes:
        width, depth: ``N`` and ``L``.
        param: the parameterization (shared with the limit methods).
        activation: ``φ``.
        optimizer: `SGD` or `Adam` (an optax transform at rate 1 and its per-tensor rates).
        loss: `MSE` or `CrossEntropy`.
        block: `OneLayer` or `TwoLayer`.
        backward: `ReusedWeights` or `DecoupledWeights` (§1.6).
        readout: `FeatureReadout` (the network's output) or `NTKReadout` (P1 analogue).
        post_activation: the T10 control (one-layer blocks).
        residual: ``False``: the plain network without skip connections (`nfd.model.ResNet`).
        center: train and report ``f − f(θ(0))`` (§1.1).
    """

    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    param: AbstractParameterization
    activation: AbstractActivation
    optimizer: AbstractOptimizer
    loss: AbstractLoss
    block: AbstractBlock = OneLayer()
    backward: AbstractBackwardWeights = ReusedWeights()
    readout: AbstractReadout = FeatureReadout()
    post_activation: bool = eqx.field(default=False, static=True)
    residual: bool = eqx.field(default=True, static=True)
    center: bool = eqx.field(default=True, static=True)

    def draw(self, points: Points, *, key: PRNGKeyArray) -> ResNet:
        return ResNet(
            points.in_dim,
            points.out_dim,
            self.width,
            self.depth,
            param=self.param,
            activation=self.activation,
            block=self.block,
            backward=self.backward,
            post_activation=self.post_activation,
            residual=self.residual,
            dtype=points.x.dtype,
            key=key,
        )

    def start(self, initial: ResNet, points: Points) -> FiniteState:
        model = with_tensors(initial, tuple(jnp.copy(x) for x in tensors(initial)))  # donated
        zeros = jnp.zeros((points.num_points, points.out_dim), points.x.dtype)
        f0 = jax.vmap(initial)(points.x) if self.center else zeros
        opt_state = self.optimizer.transform.init(tensors(model))
        return FiniteState(model=model, opt_state=opt_state, f0=f0, f_ntk=zeros)

    def step(self, initial, state: FiniteState, points, idx, lr, alive):
        del initial
        model = state.model
        f_batch, pull = jax.vjp(
            lambda ts: jax.vmap(with_tensors(model, ts))(points.x[idx]), tensors(model)
        )
        pred = self.readout.predict(f_batch - state.f0[idx], state.f_ntk[idx])
        y = points.y[idx]
        value = jnp.mean(jax.vmap(self.loss)(pred, y))
        c = jax.vmap(self.loss.error_signal)(pred, y) / idx.shape[0]
        (grads,) = pull(-c)  # the gradient of the mean batch loss
        # optax's Adam bias correction raises a Python float to an int32 count, which strict
        # dtype promotion (our test setting) rejects; promote normally inside optax only.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = self.optimizer.transform.update(
                grads, state.opt_state, tensors(model)
            )
        rates = self.optimizer.rates(model.param, self.width, points.in_dim, self.depth, self.block)
        new = tuple(
            t + lr * rates[n] * u
            for n, t, u in zip(self.block.tensors, tensors(model), tuple(updates), strict=True)  # type: ignore[arg-type]
        )

        def theta_c():  # Θ_own c over all tracked points, at the weights before the update
            fields = point_fields(model, points.x)
            c_all = jnp.zeros_like(state.f_ntk).at[idx].add(c)
            return ntk_apply(model, points.x, fields, fields, c_all)

        f_ntk = self.readout.advance(state.f_ntk, lr, theta_c)
        ok = jnp.isfinite(value) & _all_finite(new) & _all_finite(f_ntk)
        keep = alive & ok
        new_state = FiniteState(
            model=with_tensors(model, new), opt_state=opt_state, f0=state.f0, f_ntk=f_ntk
        )
        return jax.tree.map(lambda a, b: jnp.where(keep, a, b), new_state, state), ok, value

    def observe(self, initial: ResNet, state: FiniteState, points: Points, saveat: SaveAt):
        model, x = state.model, points.x
        need_g = saveat.ntk or saveat.kernels
        if need_g:
            right = point_fields(model, x)
            true = point_fields(model.as_reused(), x) if model.offsets is not None else right
            left = true if self.readout.true_sensitivity else right
            f_raw, h, z = right.f, right.h, right.z
        else:
            f_raw, h, z = jax.vmap(lambda xi: model._forward(xi, *model._zeros()))(x)
        _, h0, _ = jax.vmap(lambda xi: initial._forward(xi, *initial._zeros()))(x)
        out = {
            "f": self.readout.predict(f_raw - state.f0, state.f_ntk),
            "h_rms": jnp.sqrt(jnp.mean(h**2, axis=(0, 2))),
            "h_movement": jnp.sqrt(jnp.mean((h - h0) ** 2, axis=(0, 2))),
            **_own_movements(model, initial, h, z),
        }
        if saveat.ntk:
            out["ntk"] = ntk_from_fields(model, x, left, right)
        if saveat.kernels:
            sel = jnp.asarray(saveat.layer_indices(self.depth))
            out["h_kernel"] = gram(h[:, sel], h[:, sel])
            out["g_kernel"] = class_gram(right.g[:, :, sel], right.g[:, :, sel])
        return out

    def estimate_memory(self, points: Points, members: int) -> int:
        """Weights at ``t = 0`` and now, optimizer moments, fields of the tracked points."""
        itemsize = points.x.dtype.itemsize
        N, L, Pts = self.width, self.depth, points.num_points
        mats = len(self.block.matrices) * L * N * N
        per = 4 * mats + 4 * (L + 1) * N * Pts * (1 + points.out_dim)
        return int(members * per * itemsize)

    def step_flops(self, points: Points, batch: int) -> float:
        """Matmul FLOPs of one training step: the forward pass of the batch and its backward
        pass (twice the forward's), ``6 b N (L m N + D + C)`` for ``m`` matrices per block."""
        N, L = self.width, self.depth
        mats = len(self.block.matrices)
        return 6.0 * batch * N * (L * mats * N + points.in_dim + points.out_dim)


def _own_movements(model: ResNet, model0: ResNet, h, z) -> dict[str, Array]:
    """Each block's own update ``b ΔW_ℓ φ(h_ℓ)/sqrt(N)`` (``b`` times ``c_φ`` without skips) (two-layer: ``b ΔW2_ℓ φ(z_ℓ)/sqrt(N)``,
    and W1's own ``δz^own = ΔW1_ℓ φ(h_ℓ)/sqrt(N)``), RMS per block: Θ(1/L) under depth-muP."""
    b = model.branch_factor()
    root_n = model.width**0.5
    phih = model.activation(h[:, :-1])  # (P, L, N)

    def rms(dw, features, scale):
        moved = scale * jnp.einsum("lij,plj->pli", dw, features) / root_n
        return jnp.sqrt(jnp.mean(moved**2, axis=(0, 2)))

    dws = [w - w0 for w, w0 in zip(model.blocks, model0.blocks, strict=True)]
    if not model.block.two_layer:
        return {"block_movement": rms(dws[0], phih, b)}
    return {
        "block_movement": rms(dws[1], model.activation(z), b),
        "dz_own": rms(dws[0], phih, 1.0),
    }
