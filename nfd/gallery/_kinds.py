"""The experiment kinds: what `nfd run` runs for each config kind (`KINDS`)."""

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .. import analysis, plots, reports
from ..config import (
    Config,
    ConfigError,
    layer_steps,
)
from ..dynamics import MEMBER_FIELDS
from ..experiments import (
    SweepResult,
    limit_method,
    run_decoupling,
    run_demo,
    run_feature_norms,
    run_finite,
    run_gia,
    run_gia_limit,
    run_limit,
    run_nondegeneracy,
    run_sweep,
    run_transfer,
    sweep_arrays,
)
from ..runs import Run


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
TRAJECTORY_ARRAYS = ("steps", *MEMBER_FIELDS)  # what a finite or limit run saves


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
    arrays |= {k: v for k, v in res.extras.items() if k.startswith("acc_")}  # classification
    if res.f_test.shape[2] == 0:  # no test points: no test loss (not an all-NaN one)
        arrays["f_test"] = arrays["loss_test"] = arrays["acc_test"] = None
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
    meta["mesh"] = res.mesh  # the devices the members ran on (nfd.dynamics.describe_mesh)
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
    summary["scaling"] = analysis.scaling_summary(
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
    if not (isinstance(summary, dict) and "depth_scaling" in summary):
        summary = analysis.convergence_summary(run.arrays)
    # no bootstrap: redone from the arrays, so runs saved by an older analysis get the current one
    summary["scaling"] = analysis.scaling_summary(run.arrays)
    return summary


def _sweep_figures(run: Run, summary: dict) -> dict[str, Any]:
    figs = {
        "sweep": plots.sweep_figure(run, summary),
        "depth_scaling": plots.depth_scaling_figure(run, summary),
    }
    if run.arrays.get("limit_ntk_mean") is not None:
        figs["kernels"] = plots.kernel_figure(run, summary)
    if summary["scaling"]["drawable"]:  # two widths and two depths or more
        figs["scaling"] = plots.scaling_figure(run, summary)
    return figs


def _sweep_report(run: Run, summary: dict) -> str:
    counts = analysis.member_counts(run.arrays["status"])
    return reports.sweep_report(summary, **counts) + reports.scaling_report(summary["scaling"])


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


# -- kind = "decoupling" -----------------------------------------------------------------------
def _decoupling_run(cfg: Config, *, progress: bool | None = None) -> Outcome:
    t0 = time.perf_counter()
    arrays = run_decoupling(cfg, progress=progress)
    status = np.asarray(arrays["status"])
    meta = {
        "timings": {"wall_s": time.perf_counter() - t0},
        "diverged_members": int(np.sum(status != 0)),
    }
    return Outcome(arrays=arrays, meta=meta, all_failed=bool(np.all(status != 0)))


# -- kind = "nondegeneracy" ---------------------------------------------------------------------
def _nondegeneracy_run(cfg: Config, *, progress: bool | None = None) -> Outcome:
    t0 = time.perf_counter()
    arrays = run_nondegeneracy(cfg, progress=progress)
    diverged = np.asarray(arrays["diverged"], bool)
    meta = {
        "timings": {"wall_s": time.perf_counter() - t0},
        "diverged_members": int(np.sum(diverged)),
    }
    return Outcome(arrays=arrays, meta=meta, all_failed=bool(np.all(diverged)))


# -- kind = "feature_norms" --------------------------------------------------------------------
def _feature_norms_run(cfg: Config, *, progress: bool | None = None) -> Outcome:
    t0 = time.perf_counter()
    arrays = run_feature_norms(cfg, progress=progress)
    finite = np.isfinite(arrays["norm2_pre"][:, :, -1, 0])
    meta = {
        "timings": {"wall_s": time.perf_counter() - t0},
        "limit_skipped": str(arrays["limit_skipped"][0]),
    }
    return Outcome(arrays=arrays, meta=meta, all_failed=bool(not np.any(finite)))


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
    "decoupling": Experiment(
        run=_decoupling_run,
        analyse=lambda run: analysis.decoupling_summary(run.arrays),
        figures=plots.decoupling_figures,
        report=reports.decoupling_report,
    ),
    "nondegeneracy": Experiment(
        run=_nondegeneracy_run,
        analyse=lambda run: analysis.nondegeneracy_summary(run.arrays),
        figures=plots.nondegeneracy_figures,
        report=lambda run, summary: reports.nondegeneracy_report(summary),
    ),
    "feature_norms": Experiment(
        run=_feature_norms_run,
        analyse=lambda run: analysis.feature_norms_analysis(run.arrays),
        figures=plots.feature_norms_figures,
        report=reports.feature_norms_report,
    ),
}


def experiment(kind: str) -> Experiment:
    """The `Experiment` of a config kind (`KINDS`)."""
    if kind not in KINDS:
        raise ConfigError("kind", f"{kind!r} is not an experiment kind", ", ".join(KINDS))
    return KINDS[kind]
