"""Sweeps across machines: a sweep split into ``--cell i/N`` tasks and merged with ``nfd merge``
is the one-machine run, bitwise; every unit of work belongs to exactly one task; a missing part,
a part of another config and a bad ``--cell`` are one-line errors with exit code 2."""

import json
import pathlib
import shutil

import numpy as np
import pytest
from helpers import StopAt, tiny_sweep

from nfd import config
from nfd.cli import EXIT, main
from nfd.dynamics import _checkpoint
from nfd.experiments import cell_units, sweep_units

ROOT = pathlib.Path(__file__).resolve().parents[2]

TINY_SWEEP = tiny_sweep(widths=(8, 16), depths=(2, 3), steps=2)  # float64
N = 3  # tasks: 4 finite cells and 2 limit depths, 2 units each


def _arrays(run_dir: pathlib.Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "result.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The one-machine run and the ``N``-task run of `TINY_SWEEP`, merged."""
    root = tmp_path_factory.mktemp("cells")
    cfg = root / "sweep.toml"
    cfg.write_text(TINY_SWEEP)
    one, split = root / "one", root / "split"
    assert main(["run", str(cfg), "--out", str(one), "--quiet"]) == EXIT["ok"]
    for i in range(N):
        rc = main(["run", str(cfg), "--out", str(split), "--cell", f"{i}/{N}", "--quiet"])
        assert rc == EXIT["ok"]
    assert not (split / "result.npz").exists()  # the parts alone are not a run
    assert main(["merge", str(split)]) == EXIT["ok"]
    return cfg, one, split


def test_merged_cells_equal_the_one_machine_run_bitwise(runs, capsys):
    cfg, one, split = runs
    expected, merged = _arrays(one), _arrays(split)
    assert merged.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(merged[key], value, err_msg=key)
    assert (split / "report.md").read_text() == (one / "report.md").read_text()
    assert (split / "config.toml").read_text() == (one / "config.toml").read_text()
    assert main(["plot", str(split)]) == EXIT["ok"]
    assert (split / "sweep.png").is_file() and (split / "depth_scaling.png").is_file()
    assert sorted(p.name for p in (split / "cells").iterdir()) == [f"{i}-of-{N}" for i in range(N)]
    capsys.readouterr()


def test_every_unit_belongs_to_exactly_one_task():
    """Units i, i + N, …: for every N the tasks partition the units (finite cells width-major,
    then the limit of each depth)."""
    cfg = config.load(ROOT / "configs/figures/smoke/convergence.toml")
    units = sweep_units(cfg)
    sw = cfg.sweep
    assert len(units) == len(sw.widths) * len(sw.depths) + len(sw.depths)
    assert [u.kind for u in units[-len(sw.depths) :]] == ["limit"] * len(sw.depths)
    for n in range(1, len(units) + 1):
        held = sorted(u for i in range(n) for u in cell_units(cfg, (i, n)))
        assert held == list(range(len(units))), n


def _merge_error(run_dir: pathlib.Path, capsys) -> str:
    capsys.readouterr()
    assert main(["merge", str(run_dir)]) == EXIT["bad_input"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: merge: "), err
    return err


def _copy_parts(split: pathlib.Path, to: pathlib.Path) -> pathlib.Path:
    shutil.copytree(split / "cells", to / "cells")
    return to


def test_a_missing_part_is_one_line_with_exit_2(runs, tmp_path, capsys):
    d = _copy_parts(runs[2], tmp_path / "d")
    shutil.rmtree(d / "cells" / "1-of-3")
    (d / "cells" / "2-of-3" / "result.npz").unlink()  # a task that did not finish
    err = _merge_error(d, capsys)
    assert "misses parts 1-of-3, 2-of-3 (unfinished)" in err, err
    assert not (d / "result.npz").exists()


def test_a_part_of_another_config_is_one_line_with_exit_2(runs, tmp_path, capsys):
    d = _copy_parts(runs[2], tmp_path / "d")
    saved = d / "cells" / "2-of-3" / "config.toml"
    saved.write_text(saved.read_text().replace("steps = 2", "steps = 3"))
    err = _merge_error(d, capsys)
    assert "part 2-of-3 was made from another config than part 0-of-3" in err, err
    assert "optim.steps" in err and not (d / "result.npz").exists()


@pytest.mark.parametrize(
    ("cell", "finite", "start"),
    [
        ("1", False, "error: --cell: '1' is not of the form i/N"),
        ("3/3", False, "error: --cell: needs 0 <= i < N, got 3/3"),
        ("0/0", False, "error: --cell: needs 0 <= i < N, got 0/0"),
        ("0/7", False, "error: --cell: 7 tasks for the 6 units of this sweep"),
        ("0/2", True, "error: --cell: splits a sweep, got kind = 'finite'"),
    ],
)
def test_a_bad_cell_is_refused_before_computing(tmp_path, capsys, cell, finite, start):
    cfg = ROOT / "configs/smoke/finite.toml"
    if not finite:
        cfg = tmp_path / "sweep.toml"
        cfg.write_text(TINY_SWEEP)
    out = tmp_path / "never"
    rc = main(["run", str(cfg), "--out", str(out), "--cell", cell, "--quiet"])
    err = capsys.readouterr().err
    assert rc == EXIT["bad_input"] and err.count("\n") == 1 and err.startswith(start), err
    assert not out.exists()


def test_a_killed_task_resumes_to_its_uninterrupted_part(runs, tmp_path, capsys, monkeypatch):
    """Task 1 of 3 stopped mid-way (SIGTERM's path): exit 4 naming ``nfd run --resume PART``;
    that command finishes the part with the uninterrupted task's arrays, bitwise."""
    cfg, _, split = runs
    out = tmp_path / "d"
    monkeypatch.setattr(_checkpoint, "Checkpoint", StopAt)
    StopAt.stop_after = 3
    args = ["run", str(cfg), "--out", str(out), "--cell", f"1/{N}", "--checkpoint-every", "0"]
    assert main([*args, "--quiet"]) == EXIT["interrupted"]
    part = out / "cells" / f"1-of-{N}"
    hint = capsys.readouterr().err.strip().splitlines()[-1]
    assert hint.endswith(f"nfd run --resume {part}") and not (part / "result.npz").exists()
    StopAt.stop_after = -1  # never again
    assert main(["run", "--resume", str(part), "--quiet"]) == EXIT["ok"]
    resumed, expected = _arrays(part), _arrays(split / "cells" / f"1-of-{N}")
    assert resumed.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(resumed[key], value, err_msg=key)
    meta = json.loads((part / "meta.json").read_text())
    assert meta["kind"] == "sweep_cell" and meta["resumed"], meta
    capsys.readouterr()
