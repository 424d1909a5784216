"""Test-wide JAX settings (STYLE.md §6): float64 and strict dtype/rank promotion."""

import os
import pathlib
import sys

# Compiled programs are cached on disk (keyed by the program, jax version and backend), so a
# program that several tests compile (the same smoke config through the CLI, the gallery and a
# notebook; the two xdist workers) compiles once per run. The suite is compile-bound: a second
# compile of the transfer smoke run costs a fifth of the first.
_ROOT = pathlib.Path(__file__).resolve().parent.parent
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_ROOT / ".pytest_cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # `import helpers`
