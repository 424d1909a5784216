"""Experiment kinds and the figure gallery: what `nfd run` runs and `nfd figures` draws.

An `Experiment` is a config kind with three pure pieces: ``run(cfg, progress=...)`` computes an
`Outcome` (arrays + metadata, written atomically as a run directory by `nfd.runs.save_run`),
``figures(run)`` draws named figures from the *saved* run only (so ``nfd plot DIR`` re-draws them
without recomputation) and ``report(run)`` writes the plain-language summary (``DIR/report.md``).

The gallery is the set of configs under ``configs/figures/smoke`` (minutes on 2 CPU cores; run by
the test suite) and ``configs/figures/full`` (a long CPU run or a GPU): ``nfd figures [--full]``
runs each config and collects its figures and report into one folder with an ``index.md``.
"""

import dataclasses
import pathlib
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .config import Config, ConfigError
from .runs import Run, load_run, save_run

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs" / "figures"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What an experiment's ``run`` returns: the arrays to save and the metadata to merge."""

    arrays: Mapping[str, Any]
    meta: Mapping[str, Any]
    all_failed: bool = False


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A config kind: how to run it, draw it (from the saved run) and report it in words."""

    run: Callable[..., Outcome]  # run(cfg, *, progress) -> Outcome
    figures: Callable[[Run], dict[str, Any]]  # name -> matplotlib Figure
    report: Callable[[Run], str]  # markdown


def _sweep_experiment() -> Experiment:
    from .experiments import convergence_summary, run_sweep, sweep_arrays
    from .experiments._sweep import sweep_report
    from .plots import sweep_figure
    from .plots._plots import depth_scaling_figure, kernel_figure

    def run(cfg: Config, *, progress: bool | None = None) -> Outcome:
        t0 = time.perf_counter()
        res = run_sweep(cfg, progress=progress)
        wall = time.perf_counter() - t0
        arrays = sweep_arrays(res)
        t1 = time.perf_counter()
        summary = convergence_summary(
            {k: np.asarray(v) for k, v in arrays.items() if v is not None}
        )
        status = np.asarray(res.status)
        members = [
            {
                "width": int(n),
                "depth": int(L),
                "lr": float(lr),
                "seed": e,
                "status": "diverged" if status[i, j, r, e] else "ok",
            }
            for i, n in enumerate(res.widths)
            for j, L in enumerate(res.depths)
            for r, lr in enumerate(res.lrs)
            for e in range(status.shape[-1])
            if status[i, j, r, e]  # thousands of members: list only the diverged ones
        ]
        all_failed = bool(np.all(status != 0))
        meta = {
            "timings": {"wall_s": wall, "analysis_s": time.perf_counter() - t1},
            "summary": summary,
            "diverged_members": members,
            "all_failed": all_failed,
        }
        return Outcome(arrays=arrays, meta=meta, all_failed=all_failed)

    def report(run: Run) -> str:
        status = run.arrays["status"]
        summary = run.meta.get("summary")
        if not (isinstance(summary, dict) and "depth_scaling" in summary):
            summary = convergence_summary(run.arrays)  # a run saved before this analysis
        return sweep_report(summary, diverged=int(np.sum(status != 0)), members=status.size)

    def figures(run: Run) -> dict[str, Any]:
        figs = {"sweep": sweep_figure(run), "depth_scaling": depth_scaling_figure(run)}
        if run.arrays.get("limit_ntk_mean") is not None:
            figs["kernels"] = kernel_figure(run)
        return figs

    return Experiment(run=run, figures=figures, report=report)


def _gia() -> Experiment:
    from .experiments import gia_experiment

    return gia_experiment()


def _transfer() -> Experiment:
    from .experiments import transfer_experiment

    return transfer_experiment()


# config kind -> factory (built on demand: JAX and matplotlib load only when needed)
KINDS: dict[str, Callable[[], Experiment]] = {
    "sweep": _sweep_experiment,
    "gia": _gia,
    "transfer": _transfer,
}


def experiment(kind: str) -> Experiment:
    """The `Experiment` of a config kind (`KINDS`)."""
    if kind not in KINDS:
        raise ConfigError("kind", f"{kind!r} is not an experiment kind", ", ".join(KINDS))
    return KINDS[kind]()


def draw(run: Run, exp: Experiment) -> list[pathlib.Path]:
    """Draw and save every figure of a saved run, and its report; returns the files written."""
    import matplotlib.pyplot as plt

    written = []
    for name, fig in exp.figures(run).items():
        path = run.path / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    report = run.path / "report.md"
    report.write_text(exp.report(run))
    written.append(report)
    return written


def run_experiment(
    cfg: Config, out: pathlib.Path, *, progress: bool | None = None
) -> tuple[pathlib.Path, bool]:
    """Run ``cfg`` (a gallery kind), save it atomically at ``out``, draw it; (run dir, all failed)."""
    exp = experiment(cfg.kind)
    if cfg.precision == "float64":  # JAX's default is float32; x64 is never switched off again
        import jax

        jax.config.update("jax_enable_x64", True)
    outcome = exp.run(cfg, progress=progress)
    meta = {"kind": cfg.kind, "all_failed": outcome.all_failed, **outcome.meta}
    run_dir = save_run(out, cfg, outcome.arrays, meta)
    draw(load_run(run_dir), exp)
    return run_dir, outcome.all_failed


def gallery_configs(full: bool = False, root: pathlib.Path | None = None) -> list[pathlib.Path]:
    """The gallery's config files, sorted by name (smoke size unless ``full``)."""
    folder = (CONFIGS if root is None else root) / ("full" if full else "smoke")
    if not folder.is_dir():
        raise ConfigError("figures", f"no config folder {str(folder)!r}", "configs/figures/...")
    return sorted(folder.glob("*.toml"))


def make_figures(
    out: pathlib.Path,
    *,
    full: bool = False,
    only: Sequence[str] = (),
    overrides: Sequence[str] = (),
    progress: bool | None = None,
    root: pathlib.Path | None = None,
) -> pathlib.Path:
    """Run every gallery config and collect figures and reports in ``out`` (with ``index.md``).

    Each config's run directory is ``out/runs/<name>`` (replaced if present); its figures are
    copied to ``out/<name>-<figure>.png``. Returns the index file.
    """
    from . import config as config_mod

    paths = gallery_configs(full, root)
    if only:
        names = {p.stem for p in paths}
        unknown = sorted(set(only) - names)
        if unknown:
            raise ConfigError("--only", f"unknown figure {unknown[0]!r}", ", ".join(sorted(names)))
        paths = [p for p in paths if p.stem in only]
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# nfd figures ({'full' if full else 'smoke'} size)\n"]
    for path in paths:
        cfg = config_mod.load(path, overrides)
        run_dir = out / "runs" / path.stem
        if run_dir.exists():
            shutil.rmtree(run_dir)
        t0 = time.perf_counter()
        run_dir, _ = run_experiment(cfg, run_dir, progress=progress)
        wall = time.perf_counter() - t0
        size = "--full " if full else ""
        lines.append(f"## {path.stem}\n\n`nfd figures {size}--only {path.stem}` ({wall:.0f} s)\n")
        for png in sorted(run_dir.glob("*.png")):
            target = out / f"{path.stem}-{png.name}"
            shutil.copyfile(png, target)
            lines.append(f"![{path.stem} {png.stem}]({target.name})\n")
        lines.append((run_dir / "report.md").read_text() + "\n")
        print(f"{path.stem}: {run_dir} ({wall:.0f} s)", flush=True)
    index = out / "index.md"
    index.write_text("\n".join(lines))
    return index
