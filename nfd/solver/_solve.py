"""`solve_depth`: march a state over depth-time ``τ ∈ [0, 1]`` in ``K`` steps (docs/math §3.4).

The loop is a ``lax.scan`` over layer steps with a ``jax.checkpoint``-ed body, so compile time is
independent of ``K`` and reverse-mode memory stores one state per step (STYLE.md §4). Like
Diffrax's ``diffeqsolve`` it takes the term, the solver and the Brownian path separately; unlike it,
the path is given as stacked increments on the uniform grid ``τ_k = k / K`` (STYLE.md §5).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Bool, PyTree, Shaped

from .._results import RESULTS
from .._typing import Array, Float
from ._solvers import AbstractItoSolver
from ._terms import AbstractTerm, _ReversedTimeTerm


class DepthSolution(eqx.Module):
    """The output of `solve_depth` (as Diffrax's ``Solution``: ``ts``/``ys`` become ``taus``/``ys``).

    Attributes:
        taus: the depth-times of the saved states, increasing: the grid ``τ_k = k / K`` (shape
            ``(K+1,)``) with ``save_all=True``, else the one final time (``[1.]`` forward, ``[0.]``
            in reverse).
        ys: the saved states, a pytree like ``y0`` whose leaves gain a leading axis matching
            ``taus``: ``ys[k]`` is the state at ``τ_k`` (ordered by increasing ``τ`` in both
            directions).
        result: `RESULTS.successful`, or `RESULTS.nonfinite` if any state (``y0`` included) had a
            non-finite entry.
    """

    taus: Float[Array, " T"]
    ys: PyTree[Float[Array, "T ..."]]
    result: RESULTS


def _render(tree: PyTree) -> str:
    """Leaf dtypes and shapes of ``tree``, e.g. ``float64(4,)`` or ``(float64(4,), float32(2, 2))``."""
    return str(jax.tree.map(lambda a: f"{jnp.dtype(a.dtype).name}{tuple(a.shape)}", tree))


def _leading_axes(tree: PyTree, name: str) -> dict[str, int]:
    """The leading-axis size of every leaf of ``tree``, keyed by the leaf's name (``dWs[0]``)."""
    sizes = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        leaf_name = name + jax.tree_util.keystr(path)
        if not eqx.is_array(leaf):
            raise ValueError(
                f"every leaf of `{name}` must be an array with a leading step axis K; "
                f"`{leaf_name}` is {type(leaf).__name__} {leaf!r}."
            )
        if leaf.ndim == 0:
            raise ValueError(
                f"every leaf of `{name}` needs a leading step axis K (one slice per layer step); "
                f"`{leaf_name}` is a scalar."
            )
        sizes[leaf_name] = leaf.shape[0]
    return sizes


def _check_like_state(out: PyTree, y0_struct: PyTree, what: str) -> None:
    """Raises unless ``out`` has the structure, shapes and dtypes of the state ``y0``."""
    same_tree = jax.tree.structure(out) == jax.tree.structure(y0_struct)
    if not same_tree or _render(out) != _render(y0_struct):
        raise ValueError(
            f"{what} must return a pytree with the structure, shapes and dtypes of the state y0, "
            f"{_render(y0_struct)}; got {_render(out)}."
        )


def _all_finite(tree: PyTree) -> Bool[Array, ""]:
    finite = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(finite))


def _validate(terms, solver, y0, dWs, args) -> tuple[int, Float[Array, " Kp1"]]:
    """Trace-time checks of `solve_depth`'s arguments; returns ``K`` and the grid ``τ_k = k/K``."""
    if not isinstance(terms, AbstractTerm):
        raise ValueError(f"solve_depth needs `terms` to be an AbstractTerm, got {type(terms)}.")
    if not isinstance(solver, AbstractItoSolver):
        raise ValueError(
            f"solve_depth needs `solver` to be an AbstractItoSolver (e.g. EulerMaruyama()), got "
            f"{type(solver)}."
        )

    y0_leaves = jax.tree.leaves(y0)
    if not y0_leaves:
        raise ValueError("solve_depth needs a state `y0` with at least one array leaf.")
    for path, leaf in jax.tree_util.tree_leaves_with_path(y0):
        if not eqx.is_array(leaf) or not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise ValueError(
                f"every leaf of `y0` must be a floating array; `y0{jax.tree_util.keystr(path)}` is "
                f"{leaf!r}."
            )
    dW_axes = _leading_axes(dWs, "dWs")
    if not dW_axes:
        raise ValueError("solve_depth needs increments `dWs` with at least one array leaf.")
    if len(set(dW_axes.values())) > 1:
        raise ValueError(
            "all leaves of `dWs` must share the leading step axis K (one increment per layer "
            f"step); got leading axes {dW_axes}."
        )
    num_steps = next(iter(dW_axes.values()))
    if num_steps < 1:
        raise ValueError(f"solve_depth needs K >= 1 steps; `dWs` has leading axis {num_steps}.")
    args_axes = _leading_axes(args, "args")
    bad = {name: size for name, size in args_axes.items() if size != num_steps}
    if bad:
        raise ValueError(
            f"every leaf of `args` must have leading axis K = {num_steps} (that of `dWs`: one "
            f"slice per layer step); got {bad}."
        )

    dtype = np.result_type(*[leaf.dtype for leaf in y0_leaves])
    taus = jnp.arange(num_steps + 1, dtype=dtype) / num_steps  # τ_k = k / K, shape (K+1,)
    first = jax.tree.map(lambda a: a[0], (dWs, args))
    y0_struct = jax.eval_shape(lambda: y0)
    _check_like_state(
        eqx.filter_eval_shape(terms.drift, taus[0], y0, first[1]), y0_struct, "`terms.drift`"
    )
    _check_like_state(
        eqx.filter_eval_shape(terms.noise, taus[0], y0, first[1], first[0]),
        y0_struct,
        "`terms.noise`",
    )
    _check_like_state(
        eqx.filter_eval_shape(solver.step, terms, taus[0], taus[1], y0, first[0], first[1]),
        y0_struct,
        "`solver.step`",
    )
    return num_steps, taus


@eqx.filter_jit
def solve_depth(
    terms: AbstractTerm,
    solver: AbstractItoSolver,
    y0: PyTree[Float[Array, "..."]],
    dWs: PyTree[Float[Array, "_K ..."]],
    args: PyTree[Shaped[Array, "_K ..."]] | None = None,
    *,
    reverse: bool = False,
    save_all: bool = True,
    throw: bool = True,
) -> DepthSolution:
    """Solves an Itô SDE over depth-time ``[0, 1]`` with ``K`` steps of ``dτ = 1/K``.

    **Forward** (``reverse=False``): ``y0`` is the state at ``τ = 0`` and step ``k = 0 .. K-1`` goes
    from ``τ_k = k/K`` to ``τ_{k+1}``::

        y_{k+1} = solver.step(terms, τ_k, τ_{k+1}, y_k, dWs[k], args[k])
                = y_k + a(τ_k, y_k, args[k]) dτ + noise(τ_k, y_k, args[k], dWs[k])   (Euler–Maruyama)

    **Reverse** (``reverse=True``): ``y0`` is the state at ``τ = 1`` and steps ``k = K-1 .. 0`` go
    from ``τ_{k+1}`` to ``τ_k``, using ``dWs[k]`` and ``args[k]``. The equation is written in the
    reversed time ``s = 1 - τ`` and solved forward in ``s`` (the solver sees ``s``, the terms see
    ``τ = 1 - s``), so the step size is ``+dτ`` and the coefficients are evaluated at ``τ_{k+1}``,
    the left end in ``s``: the Itô discretisation of the backward equation
    ``-d_τ y = a(τ, y) dτ + b dW`` (backpropagated fields, §3.4 item 4)::

        y_k = y_{k+1} + a(τ_{k+1}, y_{k+1}, args[k]) dτ + noise(τ_{k+1}, y_{k+1}, args[k], dWs[k])

    (Diffrax with ``t0 > t1`` instead solves the *same* equation backwards, ``y_k = y_{k+1} - a dτ
    + ...``; negate the drift for that.) The passed ``τ`` is ``1 - (1 - τ_{k+1})``: exact for ``K``
    a power of two, within one rounding of ``τ_{k+1}`` otherwise.

    Args:
        terms: the SDE, an `AbstractTerm` (e.g. `SDETerm`).
        solver: the scheme, an `AbstractItoSolver` (e.g. `EulerMaruyama`).
        y0: the initial state (at ``τ = 0``, or at ``τ = 1`` if ``reverse``): any pytree of
            floating arrays.
        dWs: the Brownian increments, leading axis ``K`` on every leaf (``dWs[k]``, the leaves'
            slices, drives step ``k``); e.g. from `brownian_increments`. For `SDETerm` every
            increment has the state's shapes.
        args: per-step arguments, a pytree whose every leaf has leading axis ``K``; step ``k`` gets
            the slice ``args[k]`` (e.g. a drift matrix ``A_k`` per layer step). `None` passes `None`.
        reverse: march ``τ`` from 1 to 0 (see above).
        save_all: save the state at every grid point (``ys`` leading axis ``K+1``); else only the
            final state (at ``τ = 1``, or ``τ = 0`` if ``reverse``), with leading axis 1.
        throw: raise (``eqx.error_if``) if a state is non-finite; with ``throw=False`` (vmapped
            sweeps) the code is returned in ``result`` instead, as Diffrax's ``throw``.

    Returns:
        A `DepthSolution` with ``taus``, ``ys`` and ``result``.

    Raises:
        ValueError: at trace time, for leaves of ``dWs`` with different (or no) leading axes, ``args``
            leaves whose leading axis is not ``K``, non-floating ``y0`` leaves, or terms whose
            drift/noise do not return the state's structure, shapes and dtypes (for `SDETerm`:
            increments not shaped like the state).
        EquinoxRuntimeError: at run time, with ``throw=True``, if a state is non-finite.
    """
    num_steps, taus = _validate(terms, solver, y0, dWs, args)

    # --- the scan over layer steps ---
    if reverse:
        stepped_terms = _ReversedTimeTerm(terms)
        starts, ends = 1 - taus[1:], 1 - taus[:-1]  # step k: s from 1 - τ_{k+1} to 1 - τ_k
    else:
        stepped_terms = terms
        starts, ends = taus[:-1], taus[1:]

    def body(carry, xs):
        y, finite = carry
        start, end, dW, args_k = xs
        y = solver.step(stepped_terms, start, end, y, dW, args_k)
        return (y, finite & _all_finite(y)), (y if save_all else None)

    body = jax.checkpoint(body, prevent_cse=False)  # under grad, store only the carry per step
    (y_final, finite), ys = jax.lax.scan(
        body, (y0, _all_finite(y0)), (starts, ends, dWs, args), reverse=reverse
    )
    # With reverse=True the scan runs k = K-1 .. 0 but stacks ys[k] = y_k: increasing τ already.
    if save_all:
        if reverse:
            ys = jax.tree.map(lambda a, a_end: jnp.concatenate([a, a_end[None]]), ys, y0)
        else:
            ys = jax.tree.map(lambda a_0, a: jnp.concatenate([a_0[None], a]), y0, ys)
        saved_taus = taus
    else:
        ys = jax.tree.map(lambda a: a[None], y_final)
        saved_taus = taus[:1] if reverse else taus[-1:]

    result = RESULTS.where(finite, RESULTS.successful, RESULTS.nonfinite)
    if throw:  # with throw=False (vmapped sweeps), return `result` and let each member report
        ys = result.error_if(ys, result != RESULTS.successful)
    return DepthSolution(taus=saved_taus, ys=ys, result=result)
