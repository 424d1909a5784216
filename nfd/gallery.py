"""Experiment kinds and the figure gallery: what `nfd run` runs and `nfd figures` draws.

The registry: each config kind is an `Experiment` of four pure pieces. ``run(cfg, progress=...)``
computes an `Outcome` (the arrays of `nfd.experiments` and the metadata, with the analysis
recorded in it; written atomically as a run directory by `nfd.runs.save_run`); ``analyse(run)``
summarises the *saved* run (`nfd.analysis`); ``figures(run, summary)`` draws named figures
(`nfd.plots`) and ``report(run, summary)`` writes the plain-language summary (`nfd.reports`,
``DIR/report.md``), so ``nfd plot DIR`` re-draws them without re-running the experiment. Nothing
imports this module back but the command line, the scripts and the notebooks.

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

import matplotlib.pyplot as plt
import numpy as np

from . import analysis, plots, reports
from .config import (
    Config,
    ConfigError,
    build_task,
    data_provenance,
    layer_steps,
    load,
    packaged_configs,
    run_keys,
    use_precision,
)
from .dynamics import checkpointing, stop_on_signals
from .experiments import (
    SweepResult,
    limit_method,
    run_demo,
    run_finite,
    run_gia,
    run_gia_limit,
    run_limit,
    run_sweep,
    run_transfer,
    sweep_arrays,
)
from .runs import Run, check_out, discard_open_run, is_open_run, open_run, save_run

CONFIGS = packaged_configs() / "figures"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What an experiment's ``run`` returns: the arrays to save and the metadata to merge."""

    arrays: Mapping[str, Any]
    meta: Mapping[str, Any]
    all_failed: bool = False


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A config kind: how to run it, summarise the saved run, draw it and report it in words."""

    run: Callable[..., Outcome]  # run(cfg, *, progress) -> Outcome
    analyse: Callable[[Run], Any]  # the summary of a saved run (nfd.analysis)
    figures: Callable[[Run, Any], dict[str, Any]]  # (run, summary) -> name -> matplotlib Figure
    report: Callable[[Run, Any], str] | None = None  # (run, summary) -> markdown


# -- kind = "finite", "limit" ------------------------------------------------------------------
TRAJECTORY_ARRAYS = (
    "steps",
    "f_train",
    "f_test",
    "loss_train",
    "loss_test",
    "ntk",
    "h_kernel",
    "g_kernel",
    "h_rms",
    "h_movement",
    "block_movement",
    "dz_own",
    "status",
    "failed_step",
)


def _member_status(status, failed) -> dict:
    status, failed = np.asarray(status).ravel(), np.asarray(failed).ravel()
    return {
        "members": [
            {
                "member": i,
                "status": "diverged" if s else "ok",
                "failed_step": int(f) if f >= 0 else None,
            }
            for i, (s, f) in enumerate(zip(status, failed, strict=True))
        ],
        "all_failed": bool(np.all(status != 0)),
    }


def _decile(st: np.ndarray, *, first: bool) -> float | None:
    if st.size < 10:
        return None
    n = st.size // 10
    return float(np.median(st[:n] if first else st[-n:]))


def _trajectory_run(cfg: Config, *, progress: bool | None = None) -> Outcome:
    """One finite ensemble (`run_finite`) or one limit run (`run_limit`)."""
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    if cfg.kind == "limit":
        res = run_limit(cfg, progress=progress)
        lim = cfg.limit
        extra["limit"] = {
            "coupling": lim.coupling,
            "readout": lim.readout,
            "method": lim.method,
            "noise": lim.noise,
            "particles": lim.particles,
            "layer_steps": layer_steps(cfg),
        }
    else:
        res = run_finite(cfg, progress=progress)
    wall = time.perf_counter() - t0
    arrays = {k: getattr(res, k) for k in TRAJECTORY_ARRAYS}
    if res.f_test.shape[2] == 0:  # no test points: no test loss (not an all-NaN one)
        arrays["f_test"] = arrays["loss_test"] = None
    arrays["layer_times"] = np.asarray(cfg.output.layer_times)
    st = np.asarray(res.step_times)
    timings = {
        "wall_s": wall,
        "steps": int(st.size),
        "step_s_median": float(np.median(st)) if st.size else None,
        "step_s_first_decile": _decile(st, first=True),
        "step_s_last_decile": _decile(st, first=False),
    }
    meta = {"timings": timings, **extra, **_member_status(res.status, res.failed_step)}
    return Outcome(arrays=arrays, meta=meta, all_failed=meta["all_failed"])


# -- kind = "demo" -----------------------------------------------------------------------------
DEMO_ARRAYS = (
    "widths",
    "depths",
    "steps",
    "loss_train",
    "loss_test",
    "status",
    "limit_loss_train",
    "limit_loss_test",
)


def _demo_run(cfg: Config, *, progress: bool | None = None) -> Outcome:
    t0 = time.perf_counter()
    res = run_demo(cfg, progress=progress)
    all_failed = bool(np.all(np.asarray(res.status) != 0))
    meta = {"timings": {"wall_s": time.perf_counter() - t0}}
    return Outcome({k: getattr(res, k) for k in DEMO_ARRAYS}, meta, all_failed)


def _curves(run: Run) -> dict:
    return analysis.curves_summary(run.arrays)


# -- kind = "sweep" ----------------------------------------------------------------------------
def _sweep_run(cfg: Config, *, progress: bool | None = None) -> Outcome:
    t0 = time.perf_counter()
    res = run_sweep(cfg, progress=progress)
    return sweep_outcome(res, wall_s=time.perf_counter() - t0)


def sweep_outcome(res: SweepResult, **timings: float) -> Outcome:
    """A sweep's arrays (`sweep_arrays`) and metadata: its analysis, the diverged members and
    ``timings`` (seconds); also what ``nfd merge`` saves for a sweep run as ``--cell`` tasks."""
    arrays = sweep_arrays(res)
    t1 = time.perf_counter()
    summary = analysis.convergence_summary(
        {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    )
    status = np.asarray(res.status)
    members = [  # thousands of members: list only the diverged ones
        {
            "width": int(res.widths[i]),
            "depth": int(res.depths[j]),
            "lr": float(res.lrs[r]),
            "seed": int(e),
            "status": "diverged",
        }
        for i, j, r, e in zip(*np.nonzero(status), strict=True)
    ]
    all_failed = bool(np.all(status != 0))
    meta = {
        "timings": {**timings, "analysis_s": time.perf_counter() - t1},
        "summary": summary,
        "diverged_members": members,
        "all_failed": all_failed,
    }
    return Outcome(arrays=arrays, meta=meta, all_failed=all_failed)


def _sweep_summary(run: Run) -> dict:
    """The analysis saved with the run (``meta.json``: its bootstrap is not redone); a run saved
    before it was recorded in this form is analysed from its saved arrays."""
    summary = run.meta.get("summary")
    if isinstance(summary, dict) and "depth_scaling" in summary:
        return summary
    return analysis.convergence_summary(run.arrays)


def _sweep_figures(run: Run, summary: dict) -> dict[str, Any]:
    figs = {
        "sweep": plots.sweep_figure(run, summary),
        "depth_scaling": plots.depth_scaling_figure(run, summary),
    }
    if run.arrays.get("limit_ntk_mean") is not None:
        figs["kernels"] = plots.kernel_figure(run, summary)
    return figs


def _sweep_report(run: Run, summary: dict) -> str:
    return reports.sweep_report(summary, **analysis.member_counts(run.arrays["status"]))


# -- kind = "gia" ------------------------------------------------------------------------------
def _gia_run(cfg: Config, *, progress: bool | None = None) -> Outcome:
    t0 = time.perf_counter()
    raw = run_gia(cfg, progress=progress)
    summary = analysis.gia_summary(raw)  # the raw arrays with the derived ones, and the fits
    wall = time.perf_counter() - t0
    meta = {
        "timings": {"wall_s": wall},
        "summary": summary["fits"],
        "gia": {
            "pairs": cfg.seeds,
            "antithetic": cfg.gia.antithetic,
            "activation": cfg.model.activation,
            "lr": cfg.optim.lr,
            "gamma0": cfg.model.gamma0,
            "steps": cfg.gia.steps,
            "limit_method": limit_method(cfg),
            "particles": cfg.limit.particles,
            "init_estimator": cfg.gia.init_estimator,
        },
    }
    finite = raw["std_f_p2"]
    return Outcome(
        arrays=summary["arrays"], meta=meta, all_failed=bool(not np.any(np.isfinite(finite)))
    )


# -- kind = "gia_limit" -----------------------------------------------------------------------
def _gia_limit_run(cfg: Config, *, progress: bool | None = None) -> Outcome:
    t0 = time.perf_counter()
    arrays = run_gia_limit(cfg, progress=progress)
    g = cfg.gia_limit
    summary = analysis.gia_limit_summary(arrays, g.activations)
    converged = [arrays[k] for k in arrays if k.endswith("_converged")]
    meta = {
        "timings": {"wall_s": time.perf_counter() - t0},
        "summary": summary,
        "gia_limit": {
            "draw_sets": cfg.seeds,
            "samples": cfg.limit.particles,
            "activations": list(g.activations),
            "lr": cfg.optim.lr,
            "gamma0": cfg.model.gamma0,
            "steps": g.steps,
            "extrapolate_layers": g.extrapolate_layers,
            "unconverged_runs": int(sum(np.sum(~np.asarray(c, bool)) for c in converged)),
        },
    }
    all_failed = not any(np.any(np.asarray(c, bool)) for c in converged)
    return Outcome(arrays=arrays, meta=meta, all_failed=all_failed)


# -- kind = "transfer" -------------------------------------------------------------------------
def _transfer_run(cfg: Config, *, progress: bool | None = None) -> Outcome:
    t0 = time.perf_counter()
    arrays = run_transfer(cfg, progress=progress)
    finite = np.isfinite(arrays["loss_train"])
    meta = {
        "timings": {"wall_s": time.perf_counter() - t0},
        "diverged_members": int(
            np.sum(~finite & ~np.isnan(arrays["lrs"])[:, None, None, None, :, None])
        ),
    }
    return Outcome(arrays=arrays, meta=meta, all_failed=bool(not np.any(finite)))


def _transfer_summary(run: Run) -> dict:
    return analysis.transfer_analysis(run.arrays, run.config.transfer.optimizers)


# config kind -> its experiment
KINDS: dict[str, Experiment] = {
    "finite": Experiment(
        run=_trajectory_run,
        analyse=_curves,
        figures=lambda run, summary: {"loss": plots.loss_figure(run, summary)},
    ),
    "limit": Experiment(
        run=_trajectory_run,
        analyse=_curves,
        figures=lambda run, summary: {"loss": plots.loss_figure(run, summary)},
    ),
    "demo": Experiment(
        run=_demo_run,
        analyse=_curves,
        figures=lambda run, summary: {"demo": plots.demo_figure(run, summary)},
    ),
    "sweep": Experiment(
        run=_sweep_run, analyse=_sweep_summary, figures=_sweep_figures, report=_sweep_report
    ),
    "gia": Experiment(
        run=_gia_run,
        analyse=lambda run: analysis.gia_summary(run.arrays),
        figures=plots.gia_figures,
        report=reports.gia_report,
    ),
    "gia_limit": Experiment(
        run=_gia_limit_run,
        analyse=lambda run: analysis.gia_limit_summary(
            run.arrays, run.config.gia_limit.activations
        ),
        figures=plots.gia_limit_figures,
        report=lambda run, summary: reports.gia_limit_report(summary),
    ),
    "transfer": Experiment(
        run=_transfer_run,
        analyse=_transfer_summary,
        figures=plots.transfer_figures,
        report=reports.transfer_report,
    ),
}


def experiment(kind: str) -> Experiment:
    """The `Experiment` of a config kind (`KINDS`)."""
    if kind not in KINDS:
        raise ConfigError("kind", f"{kind!r} is not an experiment kind", ", ".join(KINDS))
    return KINDS[kind]


FORMATS = ("png", "pdf", "svg")


def draw(run: Run, exp: Experiment, formats: Sequence[str] = ("png",)) -> list[pathlib.Path]:
    """Summarise a saved run, draw and save every figure (in each of ``formats``) and its report;
    returns the files written."""
    summary = exp.analyse(run)
    written = []
    for name, fig in exp.figures(run, summary).items():
        for fmt in formats:
            path = run.path / f"{name}.{fmt}"
            fig.savefig(path)
            written.append(path)
        plt.close(fig)
    if exp.report is not None:
        report = run.path / "report.md"
        text = exp.report(run, summary)
        if run.meta.get("size") == "smoke":
            text = f"{reports.SMOKE_BANNER}\n\n{text}"
        report.write_text(text)
        written.append(report)
    return written


def run_experiment(
    cfg: Config,
    out: pathlib.Path,
    *,
    progress: bool | None = None,
    formats: Sequence[str] = ("png",),
    work: pathlib.Path | None = None,
    checkpoint_every: float = 300.0,
    resume: bool = False,
    replace: bool = False,
    size: str | None = None,
    exp: Experiment | None = None,
) -> tuple[pathlib.Path, bool]:
    """Run ``cfg`` and save it at ``out`` with its figures and report; (run dir, all failed).

    The run checkpoints into ``work`` (default ``out``; `nfd.runs.open_run`), so a killed run
    resumes from it when called again with ``resume`` (a separate ``work`` directory is resumed
    whenever it holds a killed run of the same config); the finished run (arrays,
    metadata, figures, report) is swapped in atomically (`nfd.runs.save_run`), and with
    ``replace`` a previous run at ``out`` is deleted only then. The output is checked before any
    computing (`nfd.runs.check_out`). ``exp``: run this instead of the kind's experiment.
    """
    exp = experiment(cfg.kind) if exp is None else exp
    work = out if work is None else work
    if work == out:
        check_out(out, resume=resume, replace=replace)
    else:
        check_out(out, replace=True)
        check_out(work, resume=is_open_run(work), key="work")
    use_precision(cfg)
    task = build_task(cfg, key=run_keys(cfg)["task"])  # the data is checked before computing
    data = data_provenance(cfg.task.name, cfg.task.path, task)
    created = not work.exists()
    try:
        with checkpointing(open_run(work, cfg), every=checkpoint_every) as ckpt:
            with stop_on_signals(ckpt):
                outcome = exp.run(cfg, progress=progress)
    except ConfigError:  # found before anything was computed: leave no trace of the run
        discard_open_run(work, created=created)
        raise
    meta = {"kind": cfg.kind, "all_failed": outcome.all_failed, "data": data, **outcome.meta}
    if size is not None:
        meta["size"] = size  # "smoke": the report carries a banner (its numbers cannot decide)
    if ckpt.resumed:
        meta["resumed"] = ckpt.resumed
    run_dir = save_run(
        out,
        cfg,
        outcome.arrays,
        meta,
        draw=lambda run: draw(run, exp, formats),
        replace=replace or work != out,
    )
    if work != out:
        shutil.rmtree(work, ignore_errors=True)
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
    formats: Sequence[str] = ("png",),
    checkpoint_every: float = 300.0,
) -> pathlib.Path:
    """Run every gallery config and collect figures and reports in ``out`` (with ``index.md``).

    Each config's run directory is ``out/runs/<name>``: a previous run there is replaced only once
    the new one is complete. A run checkpoints into ``out/runs/.<name>.partial`` and, if killed,
    continues from there the next time (same config). Its figures are copied to
    ``out/<name>-<figure>.<format>``. Returns the index file.
    """
    paths = gallery_configs(full, root)
    if only:
        names = {p.stem for p in paths}
        unknown = sorted(set(only) - names)
        if unknown:
            raise ConfigError("--only", f"unknown figure {unknown[0]!r}", ", ".join(sorted(names)))
        paths = [p for p in paths if p.stem in only]
    configs = {path.stem: load(path, overrides) for path in paths}  # every config checked first
    check_out(out, replace=True, key="--out")
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# nfd figures ({'full' if full else 'smoke'} size)\n"]
    if not full:
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
            size="full" if full else "smoke",
        )
        wall = time.perf_counter() - t0
        size = "--full " if full else ""
        lines.append(f"## {name}\n\n`nfd figures {size}--only {name}` ({wall:.0f} s)\n")
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
