"""The gradient-independence check: standard vs decoupled networks against limit modes A and B
(issue 4: experiment 2; §5.3, §7.2, T6, T7).

Thin entry to `nfd figures --only gia`: smoke size by default, ``--full`` for the full
config (configs/figures/full/gia.toml), ``--out DIR``, ``--set KEY=VALUE``, ``--quiet``;
``--replot RUN_DIR`` redraws a saved run without recomputation.
"""

import sys

from nfd.cli import experiment_script

if __name__ == "__main__":
    sys.exit(experiment_script("gia"))
