"""Pre- vs post-activation feature norms across layers, at initialisation and after training (the
paper's v1 Fig. 1, T10), with the n = ∞ recursion and the limit at K = L.

Thin entry to `nfd figures --only feature_norms`: smoke size by default, ``--full`` (CPU full size) or
``--gpu`` (the paper's sizes), ``--out DIR``, ``--set KEY=VALUE``, ``--quiet``; ``--replot RUN_DIR``
redraws a saved run without recomputation.
"""

import sys

from nfd.cli import experiment_script

if __name__ == "__main__":
    sys.exit(experiment_script("feature_norms"))
