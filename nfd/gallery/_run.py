"""Running a kind into a run directory (checkpointed, atomic) and drawing a saved run."""

import pathlib
import shutil
from collections.abc import Sequence

import matplotlib.pyplot as plt

from .. import reports
from ..config import (
    Config,
    ConfigError,
    build_task,
    data_provenance,
    run_keys,
    use_precision,
)
from ..dynamics import checkpointing, is_writer, save_steps, stop_on_signals
from ..runs import MIN_FREE_BYTES, Run, check_out, discard_open_run, is_open_run, open_run, save_run
from ._kinds import Experiment, experiment

FORMATS = ("png", "pdf", "svg")


def _disk_need(cfg: Config) -> int:
    """Bytes of disk a run needs: at least `MIN_FREE_BYTES`; for finite and limit runs twice the
    saved arrays (the result and a checkpoint's records), float64 members × saved steps × their
    observables (predictions, NTK and kernels as configured, per-layer sizes)."""
    if cfg.kind not in ("finite", "limit"):
        return MIN_FREE_BYTES
    pts, out = cfg.task.n_train + cfg.task.n_test, cfg.task.out_dim
    layers = cfg.model.depth + 1
    per_step = pts * out + 3 * layers + 2
    per_step += (
        pts * pts * (int(cfg.output.ntk) + 2 * len(cfg.output.layer_times) * cfg.output.kernels)
    )
    steps = len(save_steps(cfg.optim.steps, cfg.output.every))
    return max(MIN_FREE_BYTES, 2 * 8 * cfg.seeds * steps * per_step)


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
    writer = is_writer()  # in a multi-process run only the first process writes files
    if writer and work == out:
        check_out(out, resume=resume, replace=replace, need_bytes=_disk_need(cfg))
    elif writer:
        check_out(out, replace=True)
        check_out(work, resume=is_open_run(work), key="work", need_bytes=_disk_need(cfg))
    use_precision(cfg)
    task = build_task(cfg, key=run_keys(cfg)["task"])  # the data is checked before computing
    data = data_provenance(cfg.task.name, cfg.task.path, task)
    created = not work.exists()
    try:
        folder = open_run(work, cfg) if writer else work / "checkpoint"
        with checkpointing(folder, every=checkpoint_every) as ckpt:
            with stop_on_signals(ckpt):
                outcome = exp.run(cfg, progress=progress)
    except ConfigError:  # found before anything was computed: leave no trace of the run
        if writer:
            discard_open_run(work, created=created)
        raise
    if not writer:
        return out, outcome.all_failed
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
