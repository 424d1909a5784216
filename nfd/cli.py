"""The `nfd` command line: ``nfd run``, ``nfd demo``, ``nfd plot``, ``nfd figures``, ``nfd merge``.

Exit codes (`EXIT`): 0 the run finished; 1 a crash (a bug: the traceback is printed); 2 bad input
(one line ``error: <key>: <what is wrong> (<what is allowed>)``, checked before any computing);
3 every ensemble member diverged (the results are still written); 4 interrupted (SIGINT/SIGTERM):
the run saved a checkpoint and ``nfd run --resume DIR`` continues it.

A run writes ``DIR/config.toml``, ``DIR/meta.json``, ``DIR/result.npz``, its figures and (experiment
kinds) ``DIR/report.md``, and prints ``DIR`` as its last line. While it runs, ``DIR`` holds its
config and a ``checkpoint/`` folder, saved every ``--checkpoint-every`` seconds.

A sweep too large for one machine runs as ``N`` tasks (a scheduler array): ``nfd run SWEEP --out
DIR --cell i/N`` computes task ``i``'s units (`nfd.experiments.cell_units`) into its own part
``DIR/cells/i-of-N/`` (a run directory of kind ``sweep_cell``; a killed part continues when the
same command runs again), and ``nfd merge DIR`` checks that all ``N`` parts exist and share one
config, then saves the sweep run at ``DIR`` (the one-machine run's arrays, figures and report).
"""

import argparse
import datetime
import importlib.metadata
import os
import pathlib
import re
import sys
import time
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
    _add_format(p)


def _add_format(p: argparse.ArgumentParser) -> None:
    help_ = "figure format (repeat for several; default png)"
    formats = ("png", "pdf", "svg")
    p.add_argument("--format", dest="formats", action="append", choices=formats, help=help_)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=pathlib.Path, default=None, help="run directory to create")
    p.add_argument("--dry-run", action="store_true", help="print memory and cost; run nothing")
    p.add_argument("--memory", default=None, help="--dry-run for a machine of this size (80GiB)")
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
    p.add_argument(
        "--distributed",
        nargs="?",
        const="env",
        default=None,
        metavar="HOST:PORT,N,I",
        help="one run over several processes/hosts (jax.distributed): from the scheduler's "
        "environment, or coordinator address, process count and this process's index",
    )


def _join(spec: str | None) -> None:
    """`--distributed`: join the multi-process run before any JAX computation."""
    if spec is None:
        return
    from .dynamics import initialize_distributed

    if spec == "env":
        initialize_distributed()
        return
    parts = spec.split(",")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ConfigError("--distributed", f"malformed {spec!r}", "HOST:PORT,N,I or nothing")
    num, pid = int(parts[1]), int(parts[2])
    if not 0 <= pid < num:
        raise ConfigError("--distributed", f"process {pid} of {num}", "0 <= I < N")
    initialize_distributed(parts[0], num, pid)


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
    run.add_argument(
        "--cell",
        default=None,
        metavar="i/N",
        help="sweeps: run only task i of N (0 <= i < N) into DIR/cells/i-of-N; then nfd merge DIR",
    )
    for p in (run, demo):
        _add_common(p)
        _add_run_options(p)
    merge = sub.add_parser("merge", help="assemble a sweep run as --cell tasks into its DIR")
    merge.add_argument("run_dir", type=pathlib.Path)
    _add_format(merge)
    plot = sub.add_parser("plot", help="re-plot a saved run (no recomputation)")
    plot.add_argument("run_dir", type=pathlib.Path)
    _add_format(plot)
    figures = sub.add_parser(
        "figures", help="regenerate every figure of the project (configs/figures; smoke size)"
    )
    size = figures.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="CPU full size (docs/figures)")
    size.add_argument("--gpu", action="store_true", help="the paper's sizes, for one GPU")
    figures.add_argument("--out", type=pathlib.Path, default=pathlib.Path("figures"))
    figures.add_argument("--only", action="append", default=[], metavar="NAME")
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

    if getattr(args, "cell", None) is not None or _part_cell(args.resume) is not None:
        return _run_cell(args)
    cfg, out, resume = _load(args)
    if args.dry_run or args.memory is not None:  # --memory implies --dry-run
        from .experiments import dry_run

        print("\n".join(dry_run(cfg, memory=args.memory)))
        return EXIT["ok"]
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
    code = EXIT["all_diverged"] if all_failed else EXIT["ok"]
    if (run_dir / "result.npz").exists():  # not: a non-writing process of a multi-process run
        _print_run(run_dir)
    return code


def _print_run(run_dir: pathlib.Path) -> None:
    """A finished run on stdout: its report, its figures, and its directory last."""
    report = run_dir / "report.md"
    if report.exists():
        print(report.read_text())
    for fig in sorted(run_dir.glob("*.png")):
        print(f"figure: {fig}")
    print(run_dir)


def _figures(args) -> int:
    from .gallery import make_figures

    index = make_figures(
        args.out,
        size="gpu" if args.gpu else "full" if args.full else "smoke",
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


CELLS = "cells"  # DIR/cells/i-of-N: the part of task i of N of a sweep
PART = re.compile(r"(\d+)-of-(\d+)")


def _part_cell(path: pathlib.Path | None) -> tuple[tuple[int, int], pathlib.Path] | None:
    """``((i, N), DIR)`` when ``path`` is a part ``DIR/cells/i-of-N``, else ``None``."""
    m = None if path is None else PART.fullmatch(path.name)
    if m is None or path is None or path.parent.name != CELLS:
        return None
    return (int(m[1]), int(m[2])), path.parent.parent


def _check_cells_out(out: pathlib.Path) -> None:
    """The shared ``DIR`` of a sweep's tasks: new, or holding only ``cells/`` (and dot files)."""
    allowed = "a new directory, or the DIR of this sweep's --cell tasks"
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", f"{str(out)!r} is a file", allowed)
    if (out / "result.npz").exists():
        raise ConfigError("--out", f"{str(out)!r} holds a finished run", allowed)
    other = sorted(p.name for p in out.iterdir() if p.name != CELLS and p.name[0] != ".")
    if other:
        raise ConfigError("--out", f"{str(out)!r} holds {other[0]!r}, not only {CELLS}/", allowed)


def _run_cell(args) -> int:
    """``nfd run SWEEP --out DIR --cell i/N`` (or ``nfd run --resume DIR/cells/i-of-N``): task
    ``i`` of ``N`` into its part ``DIR/cells/i-of-N``; a killed part of the same config goes on.
    Exits 0 once the part is written (divergence is the merged run's verdict, and a scheduler's
    ``afterok`` needs 0)."""
    from . import config
    from .experiments import cell_units, parse_cell, run_cell, sweep_units
    from .gallery import Experiment, Outcome, run_experiment
    from .runs import is_open_run

    resumed = _part_cell(args.resume)
    if getattr(args, "cell", None) is not None and args.resume is not None:
        raise ConfigError("--cell", "not with --resume", "--resume DIR/cells/i-of-N alone")
    if resumed is not None:
        cell, out = resumed
        cfg = _load(args)[0]
    else:
        cell = parse_cell(args.cell)
        if args.out is None:
            raise ConfigError("--cell", "needs --out DIR", "the DIR every task of the sweep shares")
        cfg, out, _ = _load(args)
    units = cell_units(cfg, cell)
    if args.checkpoint_every < 0:
        raise ConfigError("--checkpoint-every", "must be >= 0", "seconds, 0 for every step")
    if out.exists():
        _check_cells_out(out)
    part = out / CELLS / f"{cell[0]}-of-{cell[1]}"
    if (part / "result.npz").exists():
        raise ConfigError("--cell", f"{str(part)!r} is finished", "delete it to compute it again")
    resume = is_open_run(part)
    if resume and (part / "config.toml").read_text() != config.dumps(cfg):
        raise ConfigError(
            "--cell", f"{str(part)!r} holds a killed task of another config", "the sweep's config"
        )
    args.resume = part  # an interrupted task: `nfd run --resume PART` (or the same command)
    names = [str(u) for u in sweep_units(cfg)]

    def run(cfg, *, progress=None) -> Outcome:
        t0 = time.perf_counter()
        arrays = run_cell(cfg, cell, progress=progress)
        record = {"index": cell[0], "count": cell[1], "units": [names[u] for u in units]}
        meta = {
            "kind": "sweep_cell",
            "cell": record,
            "timings": {"wall_s": time.perf_counter() - t0},
        }
        return Outcome(arrays=arrays, meta=meta)

    exp = Experiment(run=run, analyse=lambda run: None, figures=lambda run, summary: {})
    run_dir, _ = run_experiment(
        cfg,
        part,
        progress=None if not args.quiet else False,
        formats=(),
        checkpoint_every=args.checkpoint_every,
        resume=resume,
        exp=exp,
    )
    print(run_dir)
    return EXIT["ok"]


def _cell_parts(out: pathlib.Path) -> dict[str, pathlib.Path]:
    """The finished parts ``i-of-N`` of ``out/cells``, all ``N`` of one split (else a
    `ConfigError` naming what is missing)."""
    cells = out / CELLS
    found: dict[int, dict[int, pathlib.Path]] = {}
    for p in sorted(cells.iterdir()) if cells.is_dir() else []:
        if (m := PART.fullmatch(p.name)) and p.is_dir():
            found.setdefault(int(m[2]), {})[int(m[1])] = p
    if not found:
        raise ConfigError(
            "merge", f"{str(out)!r} holds no {CELLS}/i-of-N parts", "nfd run --cell i/N first"
        )
    if len(found) > 1:
        splits = ", ".join(f"N = {n}" for n in sorted(found))
        raise ConfigError("merge", f"{str(cells)!r} holds splits {splits}", "one --cell i/N split")
    ((n, have),) = found.items()
    if extra := sorted(i for i in have if i >= n):
        raise ConfigError("merge", f"{str(cells)!r} holds part {extra[0]}-of-{n}", f"i < {n}")
    missing = [
        f"{i}-of-{n}" + (" (unfinished)" if i in have else "")
        for i in range(n)
        if not (i in have and (have[i] / "result.npz").is_file())
    ]
    if missing:
        raise ConfigError(
            "merge",
            f"{str(out)!r} misses part{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
            f"every task i/{n}, i = 0 … {n - 1}, finished",
        )
    return {f"{i}-of-{n}": have[i] for i in range(n)}


def _differing_keys(a: str, b: str) -> str:
    """The dotted keys whose values differ between two config.toml texts."""
    import tomllib

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out

    fa, fb = flat(tomllib.loads(a)), flat(tomllib.loads(b))
    return ", ".join(sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)))


def _check_parts(parts: dict[str, pathlib.Path]) -> None:
    """All parts were made from one resolved config (their ``config.toml``) and one data set."""
    import json

    texts = {label: (path / "config.toml").read_text() for label, path in parts.items()}
    data = {}
    for label, path in parts.items():
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("kind") != "sweep_cell":
            raise ConfigError("merge", f"{str(path)!r} is not a --cell part", "parts of nfd run")
        data[label] = {k: v for k, v in meta.get("data", {}).items() if k != "path"}
    first = next(iter(parts))
    for label in parts:
        if texts[label] != texts[first]:
            keys = _differing_keys(texts[first], texts[label]) or "its text"
            raise ConfigError(
                "merge",
                f"part {label} was made from another config than part {first} (differs in {keys})",
                "every task with the same config",
            )
        if data[label] != data[first]:
            raise ConfigError(
                "merge", f"part {label} saw other data than part {first}", "one data set"
            )


def _merge(args) -> int:
    """``nfd merge DIR``: the sweep of all parts ``DIR/cells/i-of-N``, saved at ``DIR`` (its
    arrays, metadata, figures, report; the parts stay in ``DIR/cells``)."""
    from . import config
    from .experiments import merge_cells
    from .gallery import draw, experiment, sweep_outcome
    from .runs import load_run, save_run

    out = args.run_dir
    if (out / "result.npz").exists():
        raise ConfigError(
            "merge", f"{str(out)!r} holds a merged run", "nfd plot DIR; delete result.npz to merge"
        )
    parts = _cell_parts(out)
    _check_parts(parts)
    runs = {label: load_run(path) for label, path in parts.items()}
    first = runs[next(iter(runs))]
    cfg = first.config
    config.use_precision(cfg)
    res = merge_cells(cfg, {label: run.arrays for label, run in runs.items()})
    outcome = sweep_outcome(res, wall_s=sum(run.meta["timings"]["wall_s"] for run in runs.values()))
    prov = ("host", "device", "git_commit", "git_dirty", "versions", "created")
    record = [
        {"part": label, **run.meta["cell"], "wall_s": run.meta["timings"]["wall_s"]}
        | {k: run.meta.get(k) for k in prov}
        for label, run in runs.items()
    ]
    meta = {"kind": "sweep", "all_failed": outcome.all_failed, "data": first.meta.get("data")}
    meta |= {**outcome.meta, "cells": record}
    mixed = [k for k in prov[1:5] if len({repr(r[k]) for r in record}) > 1]
    if mixed:  # bitwise equality with a one-machine run holds for one device and one software
        meta["cells_differ_in"] = mixed
        print(f"note: the parts differ in {', '.join(mixed)} (see meta.json)", file=sys.stderr)
    exp = experiment("sweep")
    staged = save_run(
        out / ".merge",
        cfg,
        outcome.arrays,
        meta,
        draw=lambda run: draw(run, exp, args.formats or ("png",)),
        replace=True,
    )
    for path in sorted(staged.iterdir(), key=lambda p: p.name == "result.npz"):
        os.replace(path, out / path.name)  # result.npz last: DIR is a run once it is complete
    staged.rmdir()
    _print_run(out)
    return EXIT["all_diverged"] if outcome.all_failed else EXIT["ok"]


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
        if args.command == "merge":
            return _merge(args)
        _join(args.distributed)
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
