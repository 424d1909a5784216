"""Config → objects: the one place where config names become classes (STYLE.md §8)."""

import jax.random as jr
from jaxtyping import PRNGKeyArray

from ..model import BACKWARD, ResNet
from ..nn import ACTIVATIONS, AbstractActivation
from ..param import AbstractParameterization
from ..param._param import PARAMETERIZATIONS
from ..tasks import Task
from ..tasks import build_task as _build_task
from ..train import LOSSES, AbstractLoss
from ._schema import Config, ConfigError


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


def build_task(cfg: Config, *, key: PRNGKeyArray) -> Task:
    """The task of `[task]`; every task error is reported against its config key."""
    t = cfg.task
    try:
        task = _build_task(
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
            raise ConfigError(key_, rest, "see README, Tasks") from None
        raise ConfigError("task", msg, "see README, Tasks") from None
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
    m = cfg.model
    return ResNet(
        task.in_dim,
        task.out_dim,
        m.width if width is None else width,
        m.depth if depth is None else depth,
        param=build_param(cfg),
        activation=build_activation(cfg),
        block=m.block,
        backward=BACKWARD[m.backward](),
        post_activation=m.post_activation,
        key=key,
    )


def run_keys(cfg: Config) -> dict[str, PRNGKeyArray]:
    """The keys of a run, split by purpose from the top-level `seed`.

    ``task``: the data; ``batch``: the batch sequence (shared by finite and limit runs of the same
    config); ``init``: folded with the member index to initialise finite member ``e``; ``limit``:
    folded with the repetition index to draw the particles of limit repetition ``e``.
    """
    root = jr.key(cfg.seed)
    task_key, batch_key, init_key, limit_key = jr.split(root, 4)
    return {"task": task_key, "batch": batch_key, "init": init_key, "limit": limit_key}
