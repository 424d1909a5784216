"""Remedies for two-layer blocks side by side: W1's rate × L^a under depth-μP (a = 0, ½) and the
1/L branch multiplier (CompleteP), under SGD and Adam: learning-rate transfer and loss vs depth.

Thin entry to `nfd figures --only remedies`: smoke size by default, ``--full`` (CPU full size) or
``--gpu`` (the paper's sizes), ``--out DIR``, ``--set KEY=VALUE``, ``--quiet``; ``--replot RUN_DIR``
redraws a saved run without recomputation.
"""

import sys

from nfd.cli import experiment_script

if __name__ == "__main__":
    sys.exit(experiment_script("remedies"))
