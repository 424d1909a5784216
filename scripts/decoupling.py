"""Reused against decoupled backward weights for the plain μP network, the μP ResNet and the
depth-μP ResNet across depth (the paper's v3 Fig. 2): the paired final-loss gap against L.

Thin entry to `nfd figures --only decoupling`: smoke size by default, ``--full`` (CPU full size) or
``--gpu`` (the paper's sizes), ``--out DIR``, ``--set KEY=VALUE``, ``--quiet``; ``--replot RUN_DIR``
redraws a saved run without recomputation.
"""

import sys

from nfd.cli import experiment_script

if __name__ == "__main__":
    sys.exit(experiment_script("decoupling"))
