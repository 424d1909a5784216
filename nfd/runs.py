"""Saved runs: ``DIR/config.toml`` (resolved), ``DIR/meta.json`` (provenance), ``DIR/result.npz``.

A run in progress is a directory with its ``config.toml`` and a ``checkpoint/`` folder (`open_run`),
from which a killed run resumes (`nfd.dynamics.checkpointing`). The finished run is written
atomically: everything (results, metadata, figures, report) goes to a sibling temporary directory
that then takes the place of the run directory, whose previous content is deleted only after the
swap; a crash never leaves a half-written run. `load_run` reads a run back without recomputation.
"""

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .config import Config, ConfigError, dumps, load


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=pathlib.Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance() -> dict[str, Any]:
    """Versions, git commit (and dirty flag), device, precision, host: what made a result."""
    import importlib.metadata as md

    import jax

    versions = {}
    for pkg in ("nfd", "jax", "jaxlib", "equinox", "optax", "diffrax", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    versions["python"] = platform.python_version()
    status = _git("status", "--porcelain")
    dev = jax.devices()[0]
    return {
        "versions": versions,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "device": {
            "platform": dev.platform,
            "kind": getattr(dev, "device_kind", str(dev)),
            "count": jax.device_count(),
        },
        "x64": bool(jax.config.read("jax_enable_x64")),
        "matmul_precision": getattr(jax.config, "jax_default_matmul_precision", None) or "default",
        "host": platform.node(),
        "argv": sys.argv,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _jsonable(x):
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


MIN_FREE_BYTES = 64 * 2**20  # refuse an output disk with less free space than this


def _nearest_existing(path: pathlib.Path) -> pathlib.Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def is_open_run(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a run in progress or killed (`open_run`: a checkpoint, no result)."""
    path = pathlib.Path(path)
    return (path / "checkpoint").is_dir() and not (path / "result.npz").exists()


def check_out(
    out: str | os.PathLike,
    *,
    resume: bool = False,
    replace: bool = False,
    need_bytes: int = MIN_FREE_BYTES,
    key: str = "--out",
) -> None:
    """Refuse (`ConfigError`, before any computing) an output directory a run could not finish in.

    ``out`` must be new or an empty directory (``resume``: a killed run's directory, `open_run`;
    ``replace``: an existing run, swapped out only once its replacement is complete), in a
    directory this process can write, on a disk with ``need_bytes`` free.
    """
    out = pathlib.Path(out)
    allowed = "a new or empty directory"
    if out.exists() and not out.is_dir():
        raise ConfigError(key, f"{str(out)!r} is a file", allowed)
    if resume:
        if not is_open_run(out):
            what = (
                "holds a finished run" if (out / "result.npz").exists() else "holds no checkpoint"
            )
            raise ConfigError(key, f"{str(out)!r} {what}", "the directory of a killed run")
    elif out.is_dir() and any(out.iterdir()) and not replace:
        if is_open_run(out):
            raise ConfigError(key, f"{str(out)!r} holds a killed run", "--resume it, or " + allowed)
        raise ConfigError(key, f"{str(out)!r} exists and is not empty", allowed)
    base = _nearest_existing(out if out.exists() else out.parent)
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(key, f"cannot write in {str(base)!r}", "a directory you can write to")
    free = shutil.disk_usage(base).free
    if free < need_bytes:
        raise ConfigError(
            key,
            f"{free / 2**20:.0f} MiB free on the disk of {str(base)!r}, the run needs "
            f"~{need_bytes / 2**20:.0f} MiB",
            "a disk with more free space",
        )


def open_run(out: str | os.PathLike, cfg: Config) -> pathlib.Path:
    """Start a run directory: ``out/config.toml`` and ``out/checkpoint/`` (returned), so a killed
    run can be resumed (`nfd run --resume out`); `save_run` later swaps in the finished run."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint"
    ckpt.mkdir(exist_ok=True)
    _write_atomic(out / "config.toml", dumps(cfg))
    return ckpt


def discard_open_run(out: str | os.PathLike, *, created: bool) -> None:
    """Undo `open_run` when the run stopped before saving anything (a bad input found late):
    its config and empty checkpoint folder go, and the directory too if `open_run` made it."""
    out = pathlib.Path(out)
    ckpt = out / "checkpoint"
    if ckpt.is_dir() and not any(ckpt.iterdir()):
        ckpt.rmdir()
        (out / "config.toml").unlink(missing_ok=True)
        if created and not any(out.iterdir()):
            out.rmdir()


def _write_atomic(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_run(
    out_dir: str | os.PathLike,
    cfg: Config,
    arrays: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
    *,
    draw: Callable[["Run"], Any] | None = None,
    replace: bool = False,
) -> pathlib.Path:
    """Write a run atomically and return its directory.

    Everything (config, arrays, metadata, then the figures and report of ``draw``) is written to a
    sibling temporary directory that then takes the place of ``out_dir``; what was there before (a
    killed run's checkpoint, or with ``replace`` a previous run) is deleted only after the swap.
    A ``draw`` that fails does not lose the results: the run is swapped in without its figures and
    the error is raised after.

    Args:
        out_dir: the run directory: new, empty, a run in progress (`open_run`), or any run
            directory with ``replace``.
        cfg: the resolved config (written in full, defaults included).
        arrays: the result arrays (``None`` entries are skipped).
        meta: extra metadata (timings, member status, ...) merged over `provenance`.
        draw: draws the figures and report of the saved run (`Run.path` is the temporary
            directory).
        replace: allow replacing a finished run at ``out_dir``.
    """
    out = pathlib.Path(out_dir)
    check_out(out, resume=is_open_run(out), replace=replace, need_bytes=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it owner-only; a run is as readable as any dir
    failure: Exception | None = None
    try:
        (tmp / "config.toml").write_text(dumps(cfg))
        payload: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
        np.savez(tmp / "result.npz", **payload)
        full_meta = {**provenance(), **(dict(meta) if meta else {})}
        (tmp / "meta.json").write_text(json.dumps(_jsonable(full_meta), indent=2) + "\n")
        if draw is not None:
            try:
                draw(load_run(tmp))
            except Exception as err:  # the results are kept; the error is raised after the swap
                failure = err
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if failure is not None:
        raise failure
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _swap_in(new: pathlib.Path, out: pathlib.Path) -> None:
    """Rename ``new`` to ``out``; an existing ``out`` is moved aside first, deleted last."""
    if not out.exists():
        os.replace(new, out)
        return
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
        os.replace(new, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class Run:
    """A saved run: its directory, resolved config, metadata and result arrays."""

    path: pathlib.Path
    config: Config
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]


def load_run(run_dir: str | os.PathLike) -> Run:
    """Read a saved run (config, meta, arrays); no recomputation. A directory that is not a
    complete run raises `ConfigError` naming the missing or unreadable file."""
    path = pathlib.Path(run_dir)
    allowed = "a run directory written by nfd (config.toml, meta.json, result.npz)"
    for name in ("result.npz", "meta.json", "config.toml"):
        if not (path / name).is_file():
            what = "is a killed run (resume it with nfd run --resume)" if is_open_run(path) else ""
            raise ConfigError("run_dir", what or f"{str(path)!r} holds no {name}", allowed)
    try:
        with open(path / "result.npz", "rb") as fh, np.load(fh) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ConfigError(
            "run_dir", f"{str(path / 'result.npz')!r} is unreadable ({err})", allowed
        ) from None
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(
            "run_dir", f"{str(path / 'meta.json')!r} is unreadable ({err})", allowed
        ) from None
    return Run(path=path, config=load(path / "config.toml"), meta=meta, arrays=arrays)
