"""The `nfd` command line: ``nfd run``, ``nfd demo``, ``nfd plot``, ``nfd figures``.

Exit codes (`EXIT`): 0 the run finished; 1 a crash (a bug: the traceback is printed); 2 bad input
(one line ``error: <key>: <what is wrong> (<what is allowed>)``, checked before any computing);
3 every ensemble member diverged (the results are still written); 4 interrupted (SIGINT/SIGTERM):
the run saved a checkpoint and ``nfd run --resume DIR`` continues it.

A run writes ``DIR/config.toml``, ``DIR/meta.json``, ``DIR/result.npz``, its figures and (experiment
kinds) ``DIR/report.md``, and prints ``DIR`` as its last line. While it runs, ``DIR`` holds its
config and a ``checkpoint/`` folder, saved every ``--checkpoint-every`` seconds.
"""

import argparse
import datetime
import importlib.metadata
import pathlib
import sys
from collections.abc import Sequence

from .config import Config, ConfigError

EXIT = {"ok": 0, "crash": 1, "bad_input": 2, "all_diverged": 3, "interrupted": 4}


def _version() -> str:
    try:
        return importlib.metadata.version("nfd")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. model.width=512",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=("png", "pdf", "svg"),
        default=None,
        help="figure format (repeat for several; default png)",
    )


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=pathlib.Path, default=None, help="run directory to create")
    p.add_argument(
        "--resume",
        type=pathlib.Path,
        default=None,
        metavar="DIR",
        help="continue the killed run in DIR (its saved config; no --set)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="save a checkpoint this often (default 300; 0: every step)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nfd", description="nfd: neural feature dynamics, finite and limit."
    )
    parser.add_argument("--version", action="version", version=f"nfd {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a TOML config (any kind), or --resume a killed run")
    run.add_argument("config", type=pathlib.Path, nargs="?", default=None)
    demo = sub.add_parser("demo", help="the demo: finite nets at a few widths and depths")
    demo.add_argument(
        "--config", type=pathlib.Path, default=None, help="demo config (default: the packaged one)"
    )
    for p in (run, demo):
        _add_common(p)
        _add_run_options(p)
    plot = sub.add_parser("plot", help="re-plot a saved run (no recomputation)")
    plot.add_argument("run_dir", type=pathlib.Path)
    plot.add_argument(
        "--format", dest="formats", action="append", choices=("png", "pdf", "svg"), default=None
    )
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
    _add_common(figures)
    return parser


def _default_out(cfg_path: pathlib.Path) -> pathlib.Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return pathlib.Path("results") / f"{cfg_path.stem}-{stamp}"


def _load(args) -> tuple[Config, pathlib.Path, bool]:
    """The config of ``nfd run``/``nfd demo``, its run directory, and whether it resumes."""
    from . import config

    if args.resume is not None:
        if args.overrides or args.out is not None:
            raise ConfigError(
                "--resume", "takes the run's saved config", "no --set or --out with --resume"
            )
        saved = args.resume / "config.toml"
        if not saved.is_file():
            raise ConfigError(
                "--resume", f"{str(args.resume)!r} holds no config.toml", "a killed run's directory"
            )
        cfg = config.load(saved)
        if args.config is not None and config.load(args.config) != cfg:
            raise ConfigError(
                "--resume",
                f"{str(args.config)!r} differs from the run's saved config",
                "the config the run started with, or none",
            )
        return cfg, args.resume, True
    if args.command == "demo":
        path = args.config or config.packaged_configs() / "demo.toml"
        cfg = config.load(path, [*args.overrides, "kind='demo'"])
    else:
        if args.config is None:
            raise ConfigError("config", "is required", "a TOML config file, or --resume DIR")
        path = args.config
        cfg = config.load(path, args.overrides)
    return cfg, (args.out or _default_out(path)), False


def _run(args) -> int:
    from .gallery import run_experiment

    cfg, out, resume = _load(args)
    if args.checkpoint_every < 0:
        raise ConfigError("--checkpoint-every", "must be >= 0", "seconds, 0 for every step")
    run_dir, all_failed = run_experiment(
        cfg,
        out,
        progress=None if not args.quiet else False,
        formats=args.formats or ("png",),
        checkpoint_every=args.checkpoint_every,
        resume=resume,
    )
    report = run_dir / "report.md"
    if report.exists():
        print(report.read_text())
    for fig in sorted(run_dir.glob("*.png")):
        print(f"figure: {fig}")
    print(run_dir)
    return EXIT["all_diverged"] if all_failed else EXIT["ok"]


def _figures(args) -> int:
    from .gallery import make_figures

    index = make_figures(
        args.out,
        full=args.full,
        only=args.only,
        overrides=args.overrides,
        progress=None if not args.quiet else False,
        formats=args.formats or ("png",),
    )
    print(index)
    return EXIT["ok"]


def _plot(args) -> int:
    from .gallery import draw, experiment
    from .runs import load_run

    run = load_run(args.run_dir)
    for path in draw(run, experiment(run.meta.get("kind", "finite")), args.formats or ("png",)):
        print(path)
    return EXIT["ok"]


def _interrupted(err: BaseException, args) -> int:
    where = getattr(args, "resume", None) or getattr(args, "out", None)
    saved = f" ({err})" if str(err) else ""
    hint = f"; continue with: nfd run --resume {where}" if args.command in ("run", "demo") else ""
    print(f"interrupted: the last checkpoint is kept{saved}{hint}", file=sys.stderr)
    return EXIT["interrupted"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `nfd` command (returns the exit code, `EXIT`)."""
    from .dynamics import CheckpointMismatch, Interrupted

    args = _parser().parse_args(argv)
    try:
        if args.command == "plot":
            return _plot(args)
        if args.command == "figures":
            return _figures(args)
        return _run(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT["bad_input"]
    except CheckpointMismatch as err:
        print(f"error: --resume: {err} (a killed run of this config)", file=sys.stderr)
        return EXIT["bad_input"]
    except (Interrupted, KeyboardInterrupt) as err:
        return _interrupted(err, args)


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
