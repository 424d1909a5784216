# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Learning-rate transfer across depth (§6, T8–T10)
#
# Depth-muP's 1/√L branch scale makes the first internal layer of two-layer residual blocks stop
# learning features as depth grows (W1's own update δz^own ∝ L^(a−1/2) with W1's rate × L^a).
# Does the learning rate that is best at one depth stay best at another — for one-layer blocks,
# for two-layer blocks, and with which correction a? This notebook runs the `transfer`
# experiment from its config (smoke size with `NFD_SMOKE=1`, as the test suite does; the full
# config otherwise), then reads back the saved run: the tables and figures below are drawn from
# the saved arrays only. The command-line twin is `nfd figures --only transfer [--full]`.

# %%
import os
import pathlib
import tempfile

import jax

jax.config.update("jax_enable_x64", True)

from nfd import config, gallery  # noqa: E402
from nfd.analysis import (  # noqa: E402
    collapse_check,
    coordinate_check,
    labels_of,  # noqa: E402
    transfer_summary,
)
from nfd.runs import load_run  # noqa: E402

SIZE = "smoke" if os.environ.get("NFD_SMOKE") else "full"
ROOT = pathlib.Path(gallery.CONFIGS)
cfg = config.load(ROOT / SIZE / "transfer.toml")
out = pathlib.Path(os.environ.get("NFD_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="transfer-"))
if out.exists() and any(out.iterdir()):
    out = out / "run"
run_dir, _ = gallery.run_experiment(cfg, out, progress=False)
run = load_run(run_dir)

# %% [markdown]
# ## Argmin η0 per depth, and whether it transfers (T8: within one grid step)

# %%
a = run.arrays
labels = labels_of(a)
summary = transfer_summary(a, cfg.transfer.optimizers, labels)
for row in summary:
    print(
        f"{row['optimizer']:4s} {row['variant']:18s} n={row['width']}: argmin {row['argmin']}, "
        f"slope {row['slope']:+.2f}, transfer {row['transfer']}"
    )

# %% [markdown]
# ## One-step diagnostics: W1's collapse (T9) and the coordinate check (T8)
#
# Read from step 1 of the same runs at each optimizer's collapse η0. Under SGD and Adam alike,
# rms δz^own should scale like L^(a − 1/2) and W1's NTK share like L^a; depth-μP's per-block
# update times L and the one-step change of f should be flat in L and n.

# %%
for r in collapse_check(a, cfg.transfer.optimizers, labels):
    print(
        f"{r['optimizer']:4s} {r['variant']:18s} δz^own slope {r['dz_slope']:+.2f} "
        f"(expected {r['a'] - 0.5:+.2f}), K_W1 slope {r['k_w1_slope']:+.2f}"
    )
for r in coordinate_check(a, cfg.transfer.optimizers, labels):
    print(
        f"{r['optimizer']:4s} {r['variant']:18s} flat: {r['block_move']['flat'] and r['df_step']['flat']}"
    )

# %% [markdown]
# ## The report (measured verdict) and the figures

# %%
print((run_dir / "report.md").read_text())
experiment = gallery.experiment("transfer")
figures = experiment.figures(run, experiment.analyse(run))
print(sorted(figures))
