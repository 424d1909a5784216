"""Config → objects: the one place where config names become classes (STYLE.md §8).

Each registry below (and `LIMITS` in `_limits.py`, `TASKS` in `_tasks.py`) maps the names a config
may use to the classes they stand for; nothing else in the package compares these names. A new
limit method is one new file in `nfd.limit` and one line in `LIMITS`.
"""

from collections.abc import Callable

import jax
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray

from ..dynamics import (
    AbstractDynamics,
    AbstractPathDynamics,
    Points,
    SaveAt,
    batch_schedule,
    save_steps,
)
from ..model import ResNet
from ..nn import (
    MSE,
    AbstractActivation,
    AbstractLoss,
    AbstractReadout,
    CrossEntropy,
    Erf,
    FeatureReadout,
    Gelu,
    Linear,
    NTKReadout,
    Relu,
    Tanh,
)
from ..param import (
    AbstractBackwardWeights,
    AbstractBlock,
    AbstractParameterization,
    CompleteP,
    DecoupledWeights,
    DepthMuP,
    MuP,
    OneLayer,
    ReusedWeights,
    TwoLayer,
)
from ..tasks import Task
from ..train import SGD, AbstractOptimizer, Adam, FiniteNetwork, adam_eps
from ._limits import LIMITS, limit_name
from ._schema import Config, ConfigError
from ._tasks import make_task

PARAMETERIZATIONS: dict[str, type[AbstractParameterization]] = {
    "depth_mup": DepthMuP,
    "mup": MuP,
    "completep": CompleteP,
}
ACTIVATIONS: dict[str, type[AbstractActivation]] = {
    "linear": Linear,
    "relu": Relu,
    "erf": Erf,
    "tanh": Tanh,
    "gelu": Gelu,
}
LOSSES: dict[str, type[AbstractLoss]] = {"mse": MSE, "cross_entropy": CrossEntropy}
BLOCKS: dict[str, type[AbstractBlock]] = {"one_layer": OneLayer, "two_layer": TwoLayer}
# one concept, two config vocabularies: `model.backward` (finite) and `limit.coupling` (limit)
BACKWARD: dict[str, type[AbstractBackwardWeights]] = {
    "reused": ReusedWeights,
    "decoupled": DecoupledWeights,
}
COUPLINGS: dict[str, type[AbstractBackwardWeights]] = {
    "exact": ReusedWeights,  # mode A
    "decoupled": DecoupledWeights,  # mode B (NFD/GIA)
}
READOUTS: dict[str, type[AbstractReadout]] = {"ntk": NTKReadout, "features": FeatureReadout}
OPTIMIZERS: dict[str, Callable[[int], AbstractOptimizer]] = {
    "sgd": lambda width: SGD(),
    "adam": lambda width: Adam(eps=adam_eps(width)),
}


def build_param(cfg: Config) -> AbstractParameterization:
    """The parameterization named by `model.param`, with the model's and optimizer's scalars."""
    m, o = cfg.model, cfg.optim
    return PARAMETERIZATIONS[m.param](
        beta=m.branch_scale,
        gamma0=m.gamma0,
        sigma_in=m.sigma_in,
        sigma_out=m.sigma_out,
        first_layer_lr_exponent=o.first_layer_lr_exponent,
        train_input=o.train_input,
        train_readout=o.train_readout,
    )


def build_activation(cfg: Config) -> AbstractActivation:
    """The activation named by `model.activation`."""
    return ACTIVATIONS[cfg.model.activation]()


def build_loss(cfg: Config) -> AbstractLoss:
    """The loss named by `optim.loss`."""
    return LOSSES[cfg.optim.loss]()


def build_block(cfg: Config) -> AbstractBlock:
    """The block kind named by `model.block`."""
    return BLOCKS[cfg.model.block]()


def build_coupling(cfg: Config, coupling: str | None = None) -> AbstractBackwardWeights:
    """The backward weights of the limit's mode (`limit.coupling`, or ``coupling``)."""
    return COUPLINGS[cfg.limit.coupling if coupling is None else coupling]()


def build_optimizer(cfg: Config, width: int) -> AbstractOptimizer:
    """The optimizer named by `optim.name` for a width-``width`` network."""
    return OPTIMIZERS[cfg.optim.name](width)


def build_network(
    cfg: Config,
    *,
    width: int | None = None,
    depth: int | None = None,
    readout: AbstractReadout | None = None,
    backward: str | None = None,
) -> FiniteNetwork:
    """The finite network of `[model]` and `[optim]` (width/depth may be overridden)."""
    m = cfg.model
    width = m.width if width is None else width
    return FiniteNetwork(
        width=width,
        depth=m.depth if depth is None else depth,
        param=build_param(cfg),
        activation=build_activation(cfg),
        optimizer=build_optimizer(cfg, width),
        loss=build_loss(cfg),
        block=build_block(cfg),
        backward=BACKWARD[m.backward if backward is None else backward](),
        readout=FeatureReadout() if readout is None else readout,
        post_activation=m.post_activation,
        residual=m.residual,
        center=m.center_output,
    )


def layer_steps(cfg: Config, depth: int | None = None) -> int:
    """``K``: `limit.layer_steps`, or the network depth when it is 0 (K = L, §3.4)."""
    return cfg.limit.layer_steps or (cfg.model.depth if depth is None else depth)


def build_limit(
    cfg: Config,
    *,
    depth: int | None = None,
    coupling: str | None = None,
    layer_steps_override: int | None = None,
) -> AbstractDynamics | AbstractPathDynamics:
    """The limit dynamics of `[limit]` at ``K = layer_steps(cfg, depth)`` (or the override)."""
    name = limit_name(cfg)
    if name not in LIMITS:
        raise ConfigError(
            "limit.method",
            f"{name!r} is not available",
            ", ".join(sorted(LIMITS)),
        )
    K = layer_steps(cfg, depth) if layer_steps_override is None else layer_steps_override
    try:
        return LIMITS[name](
            cfg,
            num_layer_steps=K,
            param=build_param(cfg),
            activation=build_activation(cfg),
            loss=build_loss(cfg),
            coupling=build_coupling(cfg, coupling),
            readout=READOUTS[cfg.limit.readout](),
            block=build_block(cfg),
        )
    except (ValueError, NotImplementedError) as err:  # a method that cannot solve this case
        what = str(err).removeprefix("[limit] ").rstrip(".")
        raise ConfigError("limit.method", what, "see docs/methods.md, The limit solver") from None


def build_task(cfg: Config, *, key: PRNGKeyArray) -> Task:
    """The task of `[task]`; every task error is reported against its config key."""
    use_precision(cfg)
    t = cfg.task
    try:
        task = make_task(
            t.name,
            n_train=t.n_train,
            n_test=t.n_test,
            in_dim=t.in_dim,
            out_dim=t.out_dim,
            noise=t.noise,
            path=t.path or None,
            loss=cfg.optim.loss,
            teacher_width=t.teacher_width,
            key=key,
        )
    except ConfigError:
        raise
    except ImportError as err:
        raise ConfigError(
            "task.name", str(err), "install the missing package or pick another task"
        ) from None
    except ValueError as err:
        msg = str(err)
        key_, _, rest = msg.partition(": ")
        if key_.startswith(("task.", "optim.")):
            raise ConfigError(key_, rest, "see docs/methods.md, Tasks") from None
        raise ConfigError("task", msg, "see docs/methods.md, Tasks") from None
    if cfg.optim.batch_size > task.n_train:
        raise ConfigError(
            "optim.batch_size",
            f"{cfg.optim.batch_size} exceeds the {task.n_train} training points",
            "0 (full batch) or at most the number of training points",
        )
    return task


def build_model(
    cfg: Config,
    task: Task,
    *,
    width: int | None = None,
    depth: int | None = None,
    key: PRNGKeyArray,
) -> ResNet:
    """One `ResNet` from `[model]` (width/depth may be overridden, e.g. by the demo)."""
    net = build_network(cfg, width=width, depth=depth)
    return net.draw(Points.from_task(task), key=key)


def build_saveat(cfg: Config, also: tuple[int, ...] = (), fn=None) -> SaveAt:
    """What a run of ``cfg`` saves (`[output]`), plus the steps ``also`` and observables ``fn``."""
    out = cfg.output
    return SaveAt(
        steps=save_steps(cfg.optim.steps, out.every, also),
        ntk=out.ntk,
        kernels=out.kernels,
        layer_times=tuple(out.layer_times),
        fn=fn,
    )


def build_schedule(cfg: Config, task: Task) -> Array:
    """The batch sequence of ``cfg`` on ``task`` (the same for its finite and limit runs)."""
    return batch_schedule(
        task.n_train, cfg.optim.batch_size, cfg.optim.steps, key=run_keys(cfg)["batch"]
    )


def use_precision(cfg: Config) -> None:
    """Switch JAX to 64-bit floats when ``precision = "float64"``, and set the default matmul
    precision of `matmul_precision` (every run entry calls this before creating arrays:
    `run_keys`, `build_task`). JAX's default is float32; x64 is never switched off again in a
    process, where other arrays may already be float64. Matmuls that state their precision (the
    particle methods' ``HIGHEST`` products) keep it."""
    if cfg.precision == "float64" and not jax.config.read("jax_enable_x64"):
        jax.config.update("jax_enable_x64", True)
    matmul = None if cfg.matmul_precision == "default" else cfg.matmul_precision
    jax.config.update("jax_default_matmul_precision", matmul)


def run_keys(cfg: Config) -> dict[str, PRNGKeyArray]:
    """The keys of a run, split by purpose from the top-level `seed` (and `use_precision`).

    ``task``: the data; ``batch``: the batch sequence (shared by finite and limit runs of the same
    config); ``init``: folded with the member index to initialise finite member ``e``; ``limit``:
    folded with the repetition index to draw the particles of limit repetition ``e``.
    """
    use_precision(cfg)
    root = jr.key(cfg.seed)
    task_key, batch_key, init_key, limit_key = jr.split(root, 4)
    return {"task": task_key, "batch": batch_key, "init": init_key, "limit": limit_key}
