"""Run-time status codes shared by the trainer and the limit solver (equinox Enumeration)."""

import equinox as eqx


class RESULTS(eqx.Enumeration):
    successful = ""
    nonfinite = "Non-finite loss or features: lower `optim.lr` (or increase `limit.layer_steps`)."
