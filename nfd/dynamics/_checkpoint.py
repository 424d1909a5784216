"""Checkpoints: what `evolve` saves so that a killed run resumes where it stopped.

A run under ``with checkpointing(folder):`` numbers its `evolve` calls in order (a run's calls
are deterministic given its config). A finished call saves its `Trajectory`; a call in progress
saves its members' state, the observables recorded so far and the step it reached, at most every
``every`` seconds and whenever a stop was requested (SIGINT/SIGTERM, see `stop_on_signals`). On
resume, finished calls return their saved result and the interrupted one continues from its saved
step with the same compiled step function, so the result equals the uninterrupted run bitwise on
one machine. Work outside `evolve` (drawing initial weights, analysis) is recomputed: it is
deterministic and cheap next to training.

Files are pickles of host (NumPy) values written atomically (a temporary file renamed into
place); each records a fingerprint of its call (dynamics structure, points, learning rates,
schedule, saved steps), so a checkpoint of another run is refused rather than silently reused.
"""

import contextlib
import contextvars
import hashlib
import importlib.metadata
import os
import pathlib
import pickle
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class Interrupted(Exception):
    """A run stopped on request (SIGINT/SIGTERM) after saving its checkpoint."""


class CheckpointMismatch(Exception):
    """A saved checkpoint belongs to a different run than the one resuming it."""


class Checkpoint:
    """A folder of `evolve` checkpoints (see the module docstring).

    Attributes:
        folder: where the files live.
        every: seconds between two saves of a call in progress (``0``: every step).
        stop_requested: set by `stop_on_signals`; `evolve` saves and raises `Interrupted`.
        resumed: descriptions of the calls that were continued or reused from disk.
    """

    def __init__(self, folder: str | os.PathLike, *, every: float = 300.0):
        self.folder = pathlib.Path(folder)
        if jax.process_index() == 0:  # the only writer of a multi-process run
            self.folder.mkdir(parents=True, exist_ok=True)
        self.every = float(every)
        self.stop_requested = False
        self.resumed: list[str] = []
        self._calls = 0
        self._last_save = time.monotonic()

    def next_call(self) -> str:
        """The tag of the next `evolve` call of this run."""
        self._calls += 1
        return f"evolve-{self._calls:04d}"

    def _file(self, tag: str, part: str) -> pathlib.Path:
        return self.folder / f"{tag}.{part}.pkl"

    def load(self, tag: str, part: str, fingerprint: str) -> Any:
        """The saved value of ``tag`` (``part`` = "done" or "partial"), or ``None``."""
        path = self._file(tag, part)
        if not path.exists():
            return None
        with open(path, "rb") as fh:
            saved_fp, value = pickle.load(fh)
        if saved_fp != fingerprint:
            raise CheckpointMismatch(
                f"{path} was saved by a different run (its config, data or code differ)"
            )
        self.resumed.append(f"{tag} ({part})")
        return jax.tree.map(lambda x: jnp.asarray(x) if isinstance(x, np.ndarray) else x, value)

    def save(self, tag: str, part: str, fingerprint: str, value: Any) -> None:
        """Write ``value`` (device arrays are fetched to the host) atomically; in a
        multi-process run only the first process writes (every process can read)."""
        if jax.process_index() != 0:
            self._last_save = time.monotonic()
            return
        payload = pickle.dumps((fingerprint, jax.device_get(value)), pickle.HIGHEST_PROTOCOL)
        fd, tmp = tempfile.mkstemp(prefix=f".{tag}.", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
            os.replace(tmp, self._file(tag, part))
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise
        self._last_save = time.monotonic()

    def finish(self, tag: str, fingerprint: str, value: Any) -> None:
        """Save a finished call and drop its partial state."""
        self.save(tag, "done", fingerprint, value)
        self._file(tag, "partial").unlink(missing_ok=True)

    def due(self) -> bool:
        """Whether a call in progress should save now (interval elapsed or a stop requested)."""
        return self.stop_requested or time.monotonic() - self._last_save >= self.every


_ACTIVE: contextvars.ContextVar[Checkpoint | None] = contextvars.ContextVar(
    "nfd_checkpoint", default=None
)


def active_checkpoint() -> Checkpoint | None:
    """The checkpoint of the run in progress (`checkpointing`), or ``None``."""
    return _ACTIVE.get()


@contextlib.contextmanager
def checkpointing(folder: str | os.PathLike, *, every: float = 300.0) -> Iterator[Checkpoint]:
    """Every `evolve` call inside the block saves to (and resumes from) ``folder``."""
    ckpt = Checkpoint(folder, every=every)
    token = _ACTIVE.set(ckpt)
    try:
        yield ckpt
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def stop_on_signals(ckpt: Checkpoint) -> Iterator[None]:
    """The first SIGINT/SIGTERM asks the run to save and stop at its next step; a second SIGINT
    stops at once (``KeyboardInterrupt``)."""

    def request(signum, frame):
        del frame
        ckpt.stop_requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        name = signal.Signals(signum).name
        print(
            f"\n{name}: saving a checkpoint at the next step (Ctrl-C again to quit without it)",
            file=sys.stderr,
            flush=True,
        )

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = {s: signal.signal(s, request) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def fingerprint(*parts: Any) -> str:
    """A hash of a call's inputs and of the nfd version: array leaves by their bytes, numbers and
    strings by value, other leaves (functions, ...) by their type, and the pytree structures (with
    static fields) with memory addresses removed (they differ between processes)."""
    digest = hashlib.sha256()
    try:
        digest.update(importlib.metadata.version("nfd").encode())
    except importlib.metadata.PackageNotFoundError:
        pass
    for part in parts:
        digest.update(re.sub(r" at 0x[0-9a-fA-F]+", "", str(jax.tree.structure(part))).encode())
    for leaf in jax.tree.leaves(parts):
        if isinstance(leaf, jax.Array | np.ndarray):
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            arr = np.asarray(leaf)
            digest.update(f"{arr.dtype}{arr.shape}".encode())
            digest.update(np.ascontiguousarray(arr).tobytes())
        elif isinstance(leaf, bool | int | float | str | np.generic):
            digest.update(repr(leaf).encode())
        else:
            digest.update(type(leaf).__qualname__.encode())
    return digest.hexdigest()


class CheckpointCall:
    """One `evolve` call's view of the active `Checkpoint`: its tag and fingerprint."""

    def __init__(self, ckpt: Checkpoint, *inputs: Any):
        if ckpt.stop_requested:
            raise Interrupted("stopped before the next computation; its checkpoint is saved")
        self.ckpt = ckpt
        self.tag = ckpt.next_call()
        self.fingerprint = fingerprint(*inputs)

    def load(self, part: str) -> Any:
        """The call's saved result ("done") or state in progress ("partial"), or ``None``."""
        return self.ckpt.load(self.tag, part, self.fingerprint)

    def progress(self, state: Callable[[], Any], where: str) -> None:
        """Save ``state()`` (built only then) when due; after a stop request, raise
        `Interrupted`."""
        if not self.ckpt.due():
            return
        self.ckpt.save(self.tag, "partial", self.fingerprint, state())
        if self.ckpt.stop_requested:
            raise Interrupted(f"{self.tag} saved at {where}")

    def finish(self, value: Any) -> None:
        """Save the call's result (a later resume returns it without computing)."""
        self.ckpt.finish(self.tag, self.fingerprint, value)


def checkpoint_call(*inputs: Any) -> CheckpointCall | None:
    """The `CheckpointCall` of an `evolve` call with these inputs, or ``None`` outside
    `checkpointing`."""
    ckpt = active_checkpoint()
    return None if ckpt is None else CheckpointCall(ckpt, *inputs)
