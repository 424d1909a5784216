"""Learning-rate transfer across depth, first-layer collapse of two-layer blocks, the T8
coordinate check and the T10 control (issue 5; §6, T8–T10).

Thin entry to `nfd figures --only transfer`: smoke size by default, ``--full`` for the full
config (configs/figures/full/transfer.toml), ``--out DIR``, ``--set KEY=VALUE``, ``--quiet``;
``--replot RUN_DIR`` redraws a saved run without recomputation.
"""

import sys

from nfd.cli import experiment_script

if __name__ == "__main__":
    sys.exit(experiment_script("transfer"))
