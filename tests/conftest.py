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
# On a cold cache (CI's clean clone) most of the suite's time is XLA compiling smoke-size programs
# that then run for milliseconds: LLVM's backend optimizations cost more than they save there
# (the transfer smoke notebook: 85 s -> 53 s). Without fast-math they keep IEEE arithmetic; they
# may differ only in where a multiply and an add fuse into one rounding (an FMA), below every
# tolerance here; comparisons of two runs are made under one setting. Users' runs keep XLA's level.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # `import helpers`
