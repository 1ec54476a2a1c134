"""Per-tier counters, handed out as snapshots so callers (``dcfs status``,
the cache node's stats RPC) never read a tier's state under its lock."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TierStats:
    """One tier at one moment; ``bytes_served`` counts hits only."""

    name: str
    hits: int
    misses: int
    bytes_served: int
    evictions: int
    checksum_failures: int
    used_bytes: int
    capacity_bytes: int
    blocks: int
