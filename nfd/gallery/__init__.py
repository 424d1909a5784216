"""Experiment kinds and the figure gallery: what `nfd run` runs and `nfd figures` draws.

The registry: each config kind is an `Experiment` of four pure pieces. ``run(cfg, progress=...)``
computes an `Outcome` (the arrays of `nfd.experiments` and the metadata, with the analysis
recorded in it; written atomically as a run directory by `nfd.runs.save_run`); ``analyse(run)``
summarises the *saved* run (`nfd.analysis`); ``figures(run, summary)`` draws named figures
(`nfd.plots`) and ``report(run, summary)`` writes the plain-language summary (`nfd.reports`,
``DIR/report.md``), so ``nfd plot DIR`` re-draws them without re-running the experiment. Nothing
imports this module back but the command line, the scripts and the notebooks.

The gallery is the set of configs under ``configs/figures/smoke`` (minutes on 2 CPU cores; run by
the test suite), ``configs/figures/full`` (the CPU size of docs/figures: minutes each on 2 cores)
and ``configs/figures/gpu`` (the paper's sizes, ≤ 10 minutes each on one H100):
``nfd figures [--full | --gpu]`` runs each config and collects its figures and report into one
folder with an ``index.md``.
"""

import pathlib
import shutil
import time
from collections.abc import Sequence

from .. import reports
from ..config import ConfigError, load, packaged_configs
from ..runs import check_out
from ._kinds import KINDS as KINDS
from ._kinds import Experiment as Experiment
from ._kinds import Outcome as Outcome
from ._kinds import experiment as experiment
from ._kinds import sweep_outcome as sweep_outcome
from ._run import FORMATS as FORMATS
from ._run import draw as draw
from ._run import run_experiment as run_experiment

CONFIGS = packaged_configs() / "figures"


SIZES = ("smoke", "full", "gpu")


def gallery_configs(
    full: bool = False, root: pathlib.Path | None = None, *, size: str | None = None
) -> list[pathlib.Path]:
    """The gallery's config files of one size (`SIZES`; ``full=True`` is ``size="full"``),
    sorted by name."""
    size = size or ("full" if full else "smoke")
    if size not in SIZES:
        raise ConfigError("figures", f"unknown size {size!r}", ", ".join(SIZES))
    folder = (CONFIGS if root is None else root) / size
    if not folder.is_dir():
        raise ConfigError("figures", f"no config folder {str(folder)!r}", "configs/figures/...")
    return sorted(folder.glob("*.toml"))


def make_figures(
    out: pathlib.Path,
    *,
    full: bool = False,
    size: str | None = None,
    only: Sequence[str] = (),
    overrides: Sequence[str] = (),
    progress: bool | None = None,
    root: pathlib.Path | None = None,
    formats: Sequence[str] = ("png",),
    checkpoint_every: float = 300.0,
) -> pathlib.Path:
    """Run every gallery config and collect figures and reports in ``out`` (with ``index.md``).

    Each config's run directory is ``out/runs/<name>``: a previous run there is replaced only once
    the new one is complete. A run checkpoints into ``out/runs/.<name>.partial`` and, if killed,
    continues from there the next time (same config). Its figures are copied to
    ``out/<name>-<figure>.<format>``. Returns the index file.
    """
    size = size or ("full" if full else "smoke")
    paths = gallery_configs(root=root, size=size)
    if only:
        names = {p.stem for p in paths}
        unknown = sorted(set(only) - names)
        if unknown:
            raise ConfigError("--only", f"unknown figure {unknown[0]!r}", ", ".join(sorted(names)))
        paths = [p for p in paths if p.stem in only]
    configs = {path.stem: load(path, overrides) for path in paths}  # every config checked first
    check_out(out, replace=True, key="--out")
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# nfd figures ({size} size)\n"]
    if size == "smoke":
        lines.append(reports.SMOKE_BANNER + "\n")
    for name, cfg in configs.items():
        t0 = time.perf_counter()
        run_dir, _ = run_experiment(
            cfg,
            out / "runs" / name,
            progress=progress,
            formats=formats,
            work=out / "runs" / f".{name}.partial",
            checkpoint_every=checkpoint_every,
            size=size,
        )
        wall = time.perf_counter() - t0
        flag = "" if size == "smoke" else f"--{size} "
        lines.append(f"## {name}\n\n`nfd figures {flag}--only {name}` ({wall:.0f} s)\n")
        for fig in sorted(f for fmt in formats for f in run_dir.glob(f"*.{fmt}")):
            target = out / f"{name}-{fig.name}"
            shutil.copyfile(fig, target)
            if fig.suffix == f".{formats[0]}":
                lines.append(f"![{name} {fig.stem}]({target.name})\n")
        if (run_dir / "report.md").exists():
            lines.append((run_dir / "report.md").read_text() + "\n")
        print(f"{name}: {run_dir} ({wall:.0f} s)", flush=True)
    index = out / "index.md"
    index.write_text("\n".join(lines))
    return index
