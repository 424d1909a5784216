"""Finite networks → the NFD limit over widths and depths, both coupling modes, K = L and K → ∞;
fitted rates and the depth-scaling fit (issue 4: experiments 1 and 3; §5.3, §7.1, T7, T11).

Thin entry to `nfd figures --only convergence`: smoke size by default, ``--full`` for the full
config (configs/figures/full/convergence.toml), ``--out DIR``, ``--set KEY=VALUE``, ``--quiet``;
``--replot RUN_DIR`` redraws a saved run without recomputation.
"""

import sys

from nfd.cli import experiment_script

if __name__ == "__main__":
    sys.exit(experiment_script("convergence"))
