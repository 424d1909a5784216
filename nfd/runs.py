"""Saved runs: ``DIR/config.toml`` (resolved), ``DIR/meta.json`` (provenance), ``DIR/result.npz``.

Writing is atomic: everything goes to a sibling temporary directory that is renamed into place, so
a crash never leaves a half-written run. `load_run` reads a run back without recomputation.
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
from collections.abc import Mapping
from typing import Any

import numpy as np

from .config import Config, dumps, load


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


def save_run(
    out_dir: str | os.PathLike,
    cfg: Config,
    arrays: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
) -> pathlib.Path:
    """Write a run atomically and return its directory.

    Args:
        out_dir: the run directory to create (must not exist, or be an empty directory).
        cfg: the resolved config (written in full, defaults included).
        arrays: the result arrays (``None`` entries are skipped).
        meta: extra metadata (timings, member status, ...) merged over `provenance`.
    """
    out = pathlib.Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"run directory {str(out)!r} exists and is not empty.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "config.toml").write_text(dumps(cfg))
        payload: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
        np.savez(tmp / "result.npz", **payload)
        full_meta = {**provenance(), **(dict(meta) if meta else {})}
        (tmp / "meta.json").write_text(json.dumps(_jsonable(full_meta), indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@dataclasses.dataclass(frozen=True)
class Run:
    """A saved run: its directory, resolved config, metadata and result arrays."""

    path: pathlib.Path
    config: Config
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]


def load_run(run_dir: str | os.PathLike) -> Run:
    """Read a saved run (config, meta, arrays); no recomputation."""
    path = pathlib.Path(run_dir)
    with np.load(path / "result.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return Run(
        path=path,
        config=load(path / "config.toml"),
        meta=json.loads((path / "meta.json").read_text()),
        arrays=arrays,
    )
