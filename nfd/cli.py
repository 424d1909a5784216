"""The `nfd` command line: ``nfd run``, ``nfd demo``, ``nfd plot``, ``nfd figures``.

Config mistakes exit with code 2 and one line ``error: <key>: <what is wrong> (<what is allowed>)``.
A run writes ``DIR/config.toml``, ``DIR/meta.json`` and ``DIR/result.npz`` and prints ``DIR`` as its
last line. It exits 1 only when every ensemble member diverged (the results are still written).
"""

import argparse
import datetime
import pathlib
import sys
import time
from collections.abc import Sequence

from .config import Config, ConfigError

DEMO_CONFIG = pathlib.Path(__file__).resolve().parent.parent / "configs" / "demo.toml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nfd", description="nfd: neural feature dynamics, finite and limit."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a TOML config (finite networks or the limit)")
    run.add_argument("config", type=pathlib.Path)
    demo = sub.add_parser("demo", help="the demo: finite nets at a few widths and depths")
    demo.add_argument(
        "--config", type=pathlib.Path, default=None, help="demo config (default: configs/demo.toml)"
    )
    for p in (run, demo):
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config key, e.g. model.width=512",
        )
        p.add_argument("--out", type=pathlib.Path, default=None, help="run directory to create")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
    plot = sub.add_parser("plot", help="re-plot a saved run (no recomputation)")
    plot.add_argument("run_dir", type=pathlib.Path)
    figures = sub.add_parser(
        "figures", help="regenerate every figure of the project (configs/figures; smoke size)"
    )
    figures.add_argument("--full", action="store_true", help="full size (long CPU run or a GPU)")
    figures.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("figures"), help="output folder"
    )
    figures.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="one config's figures"
    )
    figures.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key in every config",
    )
    figures.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _default_out(cfg_path: pathlib.Path) -> pathlib.Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return pathlib.Path("results") / f"{cfg_path.stem}-{stamp}"


def _setup_precision(cfg: Config) -> None:
    import jax

    if cfg.precision == "float64":  # float32 is JAX's default; never switch x64 off in-process
        jax.config.update("jax_enable_x64", True)


def _status_meta(status, failed) -> dict:
    import numpy as np

    status, failed = np.asarray(status).ravel(), np.asarray(failed).ravel()
    return {
        "members": [
            {
                "member": i,
                "status": "diverged" if s else "ok",
                "failed_step": int(f) if f >= 0 else None,
            }
            for i, (s, f) in enumerate(zip(status, failed, strict=False))
        ],
        "all_failed": bool(np.all(status != 0)),
    }


def _decile(st, *, first: bool) -> float | None:
    import numpy as np

    if st.size < 10:
        return None
    n = st.size // 10
    return float(np.median(st[:n] if first else st[-n:]))


def _run(cfg: Config, cfg_path: pathlib.Path, out: pathlib.Path | None, quiet: bool) -> int:
    import numpy as np

    from .analysis import curves_summary
    from .config import layer_steps
    from .experiments import run_finite, run_limit
    from .plots import loss_figure
    from .runs import load_run, save_run

    _setup_precision(cfg)
    t0 = time.perf_counter()
    progress = None if not quiet else False
    extra: dict = {"kind": cfg.kind}
    if cfg.kind == "limit":
        res = run_limit(cfg, progress=progress)
        extra["limit"] = {
            "coupling": cfg.limit.coupling,
            "readout": cfg.limit.readout,
            "method": cfg.limit.method,
            "noise": cfg.limit.noise,
            "particles": cfg.limit.particles,
            "layer_steps": layer_steps(cfg),
        }
    else:
        res = run_finite(cfg, progress=progress)
    wall = time.perf_counter() - t0
    arrays = {
        "steps": res.steps,
        "layer_times": np.asarray(cfg.output.layer_times),
        "f_train": res.f_train,
        "f_test": res.f_test,
        "loss_train": res.loss_train,
        "loss_test": res.loss_test,
        "ntk": res.ntk,
        "h_kernel": res.h_kernel,
        "g_kernel": res.g_kernel,
        "h_rms": res.h_rms,
        "h_movement": res.h_movement,
        "block_movement": res.block_movement,
        "dz_own": res.dz_own,
        "status": res.status,
        "failed_step": res.failed_step,
    }
    st = np.asarray(res.step_times)
    meta = {
        "timings": {
            "wall_s": wall,
            "steps": int(st.size),
            "step_s_median": float(np.median(st)) if st.size else None,
            "step_s_first_decile": _decile(st, first=True),
            "step_s_last_decile": _decile(st, first=False),
        },
        **extra,
        **_status_meta(res.status, res.failed_step),
    }
    out = _default_out(cfg_path) if out is None else out
    run_dir = save_run(out, cfg, arrays, meta)
    run = load_run(run_dir)
    loss_figure(run, curves_summary(run.arrays)).savefig(run_dir / "loss.png")
    print(run_dir)
    return 1 if meta["all_failed"] else 0


def _demo(cfg: Config, cfg_path: pathlib.Path, out: pathlib.Path | None, quiet: bool) -> int:
    import numpy as np

    from .analysis import curves_summary
    from .experiments import run_demo
    from .plots import demo_figure
    from .runs import load_run, save_run

    _setup_precision(cfg)
    t0 = time.perf_counter()
    res = run_demo(cfg, progress=None if not quiet else False)
    wall = time.perf_counter() - t0
    arrays = {
        k: getattr(res, k)
        for k in (
            "widths",
            "depths",
            "steps",
            "loss_train",
            "loss_test",
            "status",
            "limit_loss_train",
            "limit_loss_test",
        )
    }
    status = np.asarray(res.status)
    meta = {"timings": {"wall_s": wall}, "kind": "demo", "all_failed": bool(np.all(status != 0))}
    out = _default_out(cfg_path) if out is None else out
    run_dir = save_run(out, cfg, arrays, meta)
    run = load_run(run_dir)
    fig = demo_figure(run, curves_summary(run.arrays))
    fig.savefig(run_dir / "demo.png")
    print(f"figure: {run_dir / 'demo.png'}")
    print(run_dir)
    return 1 if meta["all_failed"] else 0


def _experiment(cfg: Config, cfg_path: pathlib.Path, out: pathlib.Path | None, quiet: bool) -> int:
    from .gallery import run_experiment

    out = _default_out(cfg_path) if out is None else out
    run_dir, all_failed = run_experiment(cfg, out, progress=None if not quiet else False)
    print((run_dir / "report.md").read_text())
    print(run_dir)
    return 1 if all_failed else 0


def _figures(args) -> int:
    from .gallery import make_figures

    index = make_figures(
        args.out,
        full=args.full,
        only=args.only,
        overrides=args.overrides,
        progress=None if not args.quiet else False,
    )
    print(index)
    return 0


def _plot(run_dir: pathlib.Path) -> int:
    from .analysis import curves_summary
    from .gallery import KINDS, draw, experiment
    from .plots import demo_figure, loss_figure
    from .runs import load_run

    if not (run_dir / "result.npz").exists():
        raise ConfigError(
            "run_dir", f"{str(run_dir)!r} holds no result.npz", "a saved run directory"
        )
    run = load_run(run_dir)
    kind = run.meta.get("kind", "finite")
    if kind in KINDS:
        for path in draw(run, experiment(kind)):
            print(path)
        return 0
    name, figure = ("demo.png", demo_figure) if kind == "demo" else ("loss.png", loss_figure)
    figure(run, curves_summary(run.arrays)).savefig(run_dir / name)
    print(run_dir / name)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `nfd` command."""
    args = _parser().parse_args(argv)
    try:
        from . import config

        if args.command == "plot":
            return _plot(args.run_dir)
        if args.command == "figures":
            return _figures(args)
        path = args.config if args.command == "run" else (args.config or DEMO_CONFIG)
        cfg = config.load(path, args.overrides)
        if args.command == "run" and cfg.kind not in ("finite", "limit"):
            return _experiment(cfg, path, args.out, args.quiet)
        if args.command == "run":
            return _run(cfg, path, args.out, args.quiet)
        return _demo(cfg, path, args.out, args.quiet)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FileExistsError as err:
        print(f"error: --out: {err} (a new or empty directory)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


def experiment_script(name: str, argv: Sequence[str] | None = None) -> int:
    """The thin ``scripts/<name>.py`` entry of a gallery experiment: ``nfd figures --only name``
    with the script's arguments (``--full``, ``--out DIR``, ``--set KEY=VALUE``, ``--quiet``), or
    ``--replot RUN_DIR`` to redraw a saved run without recomputation (``nfd plot RUN_DIR``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--replot"]:
        if len(args) != 2:
            print("error: --replot: needs exactly one run directory", file=sys.stderr)
            return 2
        return main(["plot", args[1]])
    return main(["figures", "--only", name, *args])
