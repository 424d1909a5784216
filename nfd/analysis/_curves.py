"""Loss curves of a finite, limit or demo run: the seed means ± SE that their figures draw."""

from collections.abc import Mapping

import numpy as np

from ._stats import finite_mean_se

CURVES = (
    "loss_train",
    "loss_test",
    "limit_loss_train",
    "limit_loss_test",
    "acc_train",  # classification runs
    "acc_test",
)


def curves_summary(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Per saved loss curve (`CURVES`): ``mean`` and ``se`` over the members (axis −2), diverged
    members left out (a lone member has SE 0)."""
    out = {}
    for key in CURVES:
        if arrays.get(key) is not None:
            mean, se = finite_mean_se(arrays[key], axis=-2)
            out[key] = {"mean": mean, "se": se}
    return out
