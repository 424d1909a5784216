"""The config error and the validation helpers shared by every table's dataclass."""

import math


class ConfigError(ValueError):
    """An invalid config value; ``str(err)`` is one line ``key: what is wrong (what is allowed)``."""

    def __init__(self, key: str, what: str, allowed: str):
        self.key, self.what, self.allowed = key, what, allowed
        super().__init__(f"{key}: {what} ({allowed})")


def positive(key: str, value, *, strict: bool = True, integer: bool = False):
    ok = value > 0 if strict else value >= 0
    if not ok or (not integer and not math.isfinite(value)):
        bound = "> 0" if strict else ">= 0"
        kind = "an integer" if integer else "a finite number"
        raise ConfigError(key, f"must be {bound}, got {value!r}", f"{kind} {bound}")
