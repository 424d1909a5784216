"""Where more width or more depth stops paying: the final test loss of depth-μP ResNets against
width and depth at a fixed step budget, with the n = ∞ limit per depth (K = L) and its L → ∞ value
(K → ∞); the saturation width per depth and depth per width (the paper's diminishing returns, T11).

Thin entry to `nfd figures --only scaling`: smoke size by default, ``--full`` for the full config
(configs/figures/full/scaling.toml), ``--out DIR``, ``--set KEY=VALUE``, ``--quiet``;
``--replot RUN_DIR`` redraws a saved run without recomputation.
"""

import sys

from nfd.cli import experiment_script

if __name__ == "__main__":
    sys.exit(experiment_script("scaling"))
