"""The prepared GPU check (`scripts/gpu_check.py`) at smoke size on the CPU: every section runs
and its numbers are sane, so the script is ready when an accelerator is lent."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_runs_every_section_at_smoke_size(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/gpu_check.py"),
            "--size",
            "smoke",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads((tmp_path / "gpu_check.json").read_text())
    for section in ("cpu_agreement", "particles", "lean", "finite", "ensemble", "precision"):
        assert "error" not in out[section], out[section]
    # on a CPU both sides of the agreement check are the same device: identical numbers
    assert out["cpu_agreement"]["finite_f_rel_diff"] == 0.0
    assert out["kernel"]["converged"] and out["kernel"]["finite"]
    assert (tmp_path / "gpu_check.png").stat().st_size > 5_000
    # float32 against float64 from the same data and weights: round-off of a few steps
    # (float32 eps 6e-8, amplified by at most a few hundred over 5 steps)
    assert out["precision"]["dtypes"] == ["float32", "float64"]
    assert out["precision"]["final_loss_rel_err"] < 1e-4
    assert out["particles"]["memory_estimate_bytes"] > 0 and out["ensemble"]["single_s"] > 0
