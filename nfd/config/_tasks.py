"""Task names (`task.name`) to the builders of `nfd.tasks`: one of the registries of `nfd.config`."""

import hashlib
import os
import pathlib
from collections.abc import Callable
from typing import Any

from jaxtyping import PRNGKeyArray

from ..tasks import Task, digits, mnist1d, npz, teacher_student
from ..tasks._npz import LOSSES as _LOSSES


def _build_digits(*, n_train, n_test, key, **_) -> Task:
    return digits(n_train=n_train, n_test=n_test, key=key)


def _build_mnist1d(*, n_train, n_test, key, **_) -> Task:
    return mnist1d(n_train=n_train, n_test=n_test, key=key)


def _build_npz(*, path, loss, **_) -> Task:
    return npz(path=path, loss=loss)


def _build_teacher_student(
    *, n_train, n_test, in_dim, out_dim, teacher_width, noise, key, **_
) -> Task:
    return teacher_student(
        n_train=n_train,
        n_test=n_test,
        in_dim=in_dim,
        out_dim=out_dim,
        teacher_width=teacher_width,
        noise=noise,
        key=key,
    )


TASKS: dict[str, Callable[..., Task]] = {
    "digits": _build_digits,
    "mnist1d": _build_mnist1d,
    "npz": _build_npz,
    "teacher_student": _build_teacher_student,
}


# the `task.*` keys each task reads (a saved config.toml writes only these)
TASK_KEYS: dict[str, tuple[str, ...]] = {
    "digits": ("n_train", "n_test"),
    "mnist1d": ("n_train", "n_test"),
    "npz": ("path",),
    "teacher_student": ("n_train", "n_test", "in_dim", "out_dim", "teacher_width", "noise"),
}


def data_provenance(name: str, path: str, task: Task) -> dict[str, Any]:
    """What a run's ``meta.json`` records of its data: the task, its real sizes and, for a
    ``.npz`` file, its absolute path and SHA-256."""
    out: dict[str, Any] = {
        "task": name,
        "n_train": int(task.x_train.shape[0]),
        "n_test": int(task.x_test.shape[0]),
        "in_dim": int(task.x_train.shape[1]),
        "out_dim": int(task.y_train.shape[1]),
        "num_classes": task.num_classes,
    }
    if name == "npz":
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        out |= {"path": str(pathlib.Path(path).resolve()), "sha256": digest.hexdigest()}
    return out


def make_task(
    name: str,
    *,
    n_train: int,
    n_test: int,
    in_dim: int,
    out_dim: int,
    noise: float,
    path: str | os.PathLike | None,
    loss: str,
    teacher_width: int = 16,
    key: PRNGKeyArray,
) -> Task:
    """The task named by `task.name`, from the `task.*` config values.

    Each task reads only its own arguments: ``teacher_student`` reads ``n_train, n_test, in_dim,
    out_dim, teacher_width, noise, key``; ``digits`` and ``mnist1d`` read ``n_train, n_test,
    key``; ``npz`` reads ``path, loss``. ``teacher_student`` is regression, so it cannot take
    ``loss="cross_entropy"``.

    Args:
        name: ``"digits"``, ``"mnist1d"``, ``"npz"`` or ``"teacher_student"`` (`task.name`).
        n_train: ``P`` (`task.n_train`).
        n_test: ``Q`` (`task.n_test`).
        in_dim: ``D`` (`task.in_dim`, teacher_student only).
        out_dim: ``C`` (`task.out_dim`, teacher_student only).
        noise: label-noise std (`task.noise`, teacher_student only).
        path: the ``.npz`` file (`task.path`, npz only).
        loss: ``"mse"`` or ``"cross_entropy"`` (`optim.loss`).
        teacher_width: the teacher's hidden units (`task.teacher_width`, teacher_student only).
        key: the random key.

    Returns:
        The `Task`.

    Raises:
        ValueError: with a message that starts with the config key at fault (``task.name: ...``).
        ImportError: for ``mnist1d`` without the `mnist1d` package.
    """
    if name not in TASKS:
        allowed = ", ".join(sorted(TASKS))
        raise ValueError(f"task.name: unknown task {name!r} (allowed: {allowed}).")
    if loss not in _LOSSES:
        raise ValueError(f"optim.loss: unknown loss {loss!r} (allowed: {', '.join(_LOSSES)}).")
    if name == "npz" and path is None:
        raise ValueError("task.path: required for task.name='npz' (a .npz file), got None.")
    if name == "teacher_student" and loss == "cross_entropy":
        raise ValueError(
            "optim.loss: 'cross_entropy' needs a classification task, but "
            "task.name='teacher_student' is regression; use loss='mse'."
        )
    return TASKS[name](
        n_train=n_train,
        n_test=n_test,
        in_dim=in_dim,
        out_dim=out_dim,
        noise=noise,
        path=path,
        loss=loss,
        teacher_width=teacher_width,
        key=key,
    )
