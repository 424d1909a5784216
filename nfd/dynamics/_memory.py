"""Memory planning: what the machine has, and how many members fit in one vmapped computation."""

import os


def available_memory() -> int | None:
    """Bytes of memory available to a computation: an accelerator's free memory (its limit minus
    what is in use), else the host's (MemAvailable on Linux); None if unknown."""
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def chunk_size(per_member: int, total: int, budget: int) -> int:
    """The largest number of members (at most ``total``) whose estimated memory fits ``budget``
    bytes, at least 1; chunks of equal size compile once."""
    return max(1, min(total, budget // max(per_member, 1)))
