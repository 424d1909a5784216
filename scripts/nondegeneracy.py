"""Non-degeneracy of finite networks' kernels: λ_min of the feature Gram Φ_ℓ (and G_ℓ) against
width and depth, with its 1/n extrapolation and the n = ∞ value (issue 14; the paper's Fig. 3).

Thin entry to `nfd figures --only nondegeneracy`: smoke size by default, ``--full`` for the full
config (configs/figures/full/nondegeneracy.toml), ``--out DIR``, ``--set KEY=VALUE``, ``--quiet``;
``--replot RUN_DIR`` redraws a saved run without recomputation.
"""

import sys

from nfd.cli import experiment_script

if __name__ == "__main__":
    sys.exit(experiment_script("nondegeneracy"))
