"""The config error and the validation helpers shared by every table's dataclass."""

import math


class ConfigError(ValueError):
    """An invalid config value; ``str(err)`` is one line ``key: what is wrong (what is allowed)``."""

    def __init__(self, key: str, what: str, allowed: str):
        self.key, self.what, self.allowed = key, what, allowed
        super().__init__(f"{key}: {what} ({allowed})")


INT_MAX = 2**31 - 1  # every integer key fits a signed 32-bit integer (JAX's default int)


def positive(key: str, value, *, strict: bool = True, integer: bool = False):
    ok = value > 0 if strict else value >= 0
    if not ok or (not integer and not math.isfinite(value)):
        bound = "> 0" if strict else ">= 0"
        kind = "an integer" if integer else "a finite number"
        raise ConfigError(key, f"must be {bound}, got {value!r}", f"{kind} {bound}")
    if integer and value > INT_MAX:
        raise ConfigError(key, f"is too large, got {value!r}", f"an integer at most {INT_MAX}")
