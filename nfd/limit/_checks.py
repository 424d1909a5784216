"""Construction checks shared by the limit methods (messages name the config keys)."""

from ..param import AbstractBlock


def check_layer_steps(num_layer_steps: int) -> None:
    if num_layer_steps < 1:
        raise ValueError(f"[limit] layer_steps must be >= 1, got {num_layer_steps}.")


def check_one_layer(block: AbstractBlock, method: str) -> None:
    """Refuse two-layer blocks for a method that solves one-layer blocks only."""
    if block.two_layer:
        raise ValueError(
            f"[limit] method = {method!r} solves model.block = 'one_layer' only, got "
            f"{block.name!r}; use limit.method = 'particles' with noise = 'matrix'."
        )
