"""`nfd figures`: the gallery runs every config of its folder and collects figures and reports."""

import pathlib

import numpy as np
import pytest
from helpers import tiny_sweep

from nfd import gallery
from nfd.cli import main

TINY_SWEEP = tiny_sweep()


@pytest.fixture
def root(tmp_path) -> pathlib.Path:
    for size in ("smoke", "full"):
        (tmp_path / "configs" / size).mkdir(parents=True)
    (tmp_path / "configs" / "smoke" / "tiny.toml").write_text(TINY_SWEEP)
    return tmp_path / "configs"


def test_make_figures_collects_every_figure_and_report(root, tmp_path):
    out = tmp_path / "figs"
    index = gallery.make_figures(out, root=root, progress=False)
    text = index.read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["tiny-depth_scaling.png", "tiny-sweep.png"]
    assert (out / "tiny-sweep.png").stat().st_size > 10_000  # a drawn figure, not an empty canvas
    assert "## tiny" in text and "![tiny sweep](tiny-sweep.png)" in text
    run_dir = out / "runs" / "tiny"
    assert (run_dir / "report.md").read_text() in text
    # a second call replaces the run (no FileExistsError) and gives the same arrays
    first = dict(np.load(run_dir / "result.npz"))
    gallery.make_figures(out, root=root, progress=False)
    second = dict(np.load(run_dir / "result.npz"))
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


def test_figures_cli_errors_exit_2(root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gallery, "CONFIGS", root)
    rc = main(["figures", "--only", "nope", "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --only: unknown figure 'nope'"), err
    (root / "full").rmdir()
    rc = main(["figures", "--full", "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2
    assert "error: figures: no config folder" in capsys.readouterr().err


def test_gpu_configs_load_and_size_errors_exit_2(tmp_path, capsys):
    """Every GPU config is a valid config (checked as `nfd figures --gpu` checks them, before
    computing); an unknown size is a one-line error."""
    from nfd import config

    paths = gallery.gallery_configs(size="gpu")
    assert {p.stem for p in paths} >= {"decoupling", "nondegeneracy", "scaling"}
    for path in paths:
        config.load(path)
    with pytest.raises(config.ConfigError, match="unknown size 'huge'"):
        gallery.gallery_configs(size="huge")


def test_gallery_folders_hold_the_same_figures():
    """Every smoke config has its full-size twin (the README gallery shows the full ones)."""
    smoke = {p.name for p in gallery.gallery_configs(full=False)}
    full = {p.name for p in gallery.gallery_configs(full=True)}
    assert smoke and smoke <= full


def test_experiment_scripts_forward_to_figures_and_plot(tmp_path, capsys):
    """scripts/<name>.py: `--replot DIR` is `nfd plot DIR` (a folder without a run: exit 2 and
    the one-line error), anything else is `nfd figures --only <name> ...` (an unknown name: the
    gallery's exit-2 error), and every script names a gallery config."""
    from nfd.cli import experiment_script

    assert experiment_script("gia", ["--replot"]) == 2
    assert experiment_script("gia", ["--replot", str(tmp_path)]) == 2
    assert "run_dir: " in capsys.readouterr().err
    assert experiment_script("nope", ["--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "--only: unknown figure 'nope'" in capsys.readouterr().err
    scripts = pathlib.Path(__file__).resolve().parents[2] / "scripts"
    names = {p.stem for p in gallery.gallery_configs(full=False)}
    for name in ("convergence", "gia", "transfer"):
        text = (scripts / f"{name}.py").read_text()
        assert f'experiment_script("{name}")' in text and name in names
