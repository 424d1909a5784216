"""`[feature_norms]`: feature norms across layers, pre- vs post-activation, during training
(arXiv 2512.21075 Fig. 1; docs/math T10).

Read by ``kind = "feature_norms"`` runs (`nfd.experiments.run_feature_norms`, registered in
`nfd.gallery`): for every depth, ``seeds`` one-layer ResNets of width `model.width` in each form
(pre-activation depth-μP, and the post-activation control ``model.post_activation``) are
trained with `[optim]` on `[task]`; the n = ∞ pre-activation stream is the init-kernel recursion
at ``t = 0`` and, with ``limit``, the limit of `[limit]` at ``K = L`` during training.
"""

import dataclasses

from ._schema_base import ConfigError, positive


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeatureNormsConfig:
    """`[feature_norms]`: the depths and the n = ∞ reference of the feature-norm experiment."""

    depths: tuple[int, ...] = (16, 64)  # L; the growth exponent in L needs >= 2
    limit: bool = True  # the limit at K = L during training (SGD; pre-activation only)
    limit_seeds: int = 0  # limit repetitions per depth (0: `seeds`)

    def __post_init__(self):
        if not self.depths:
            raise ConfigError("feature_norms.depths", "must not be empty", "positive integers")
        for v in self.depths:
            positive("feature_norms.depths", v, integer=True)
        if list(self.depths) != sorted(set(self.depths)):
            raise ConfigError(
                "feature_norms.depths", "must be strictly increasing", "e.g. [16, 64]"
            )
        positive("feature_norms.limit_seeds", self.limit_seeds, strict=False, integer=True)
