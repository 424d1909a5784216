"""The gradient-independence verdict at n = ∞: mode A vs mode B by the kernel fixed point at depths
up to 1024 and at K → ∞ (issue 11; §5.3).

Thin entry to `nfd figures --only gia_limit`: smoke size by default, ``--full`` for the full
config (configs/figures/full/gia_limit.toml), ``--out DIR``, ``--set KEY=VALUE``, ``--quiet``;
``--replot RUN_DIR`` redraws a saved run without recomputation.
"""

import sys

from nfd.cli import experiment_script

if __name__ == "__main__":
    sys.exit(experiment_script("gia_limit"))
