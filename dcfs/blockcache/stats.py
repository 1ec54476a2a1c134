"""Per-tier counters, handed out as snapshots so callers (``dcfs status``,
the cache node's stats RPC, the client's stats file) never read a tier's
state under its lock."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TierStats:
    """One tier at one moment.

    ``hits`` and ``misses`` count lookups; ``bytes_served`` counts the bytes
    of hit blocks handed to readers (a client read of 4 KiB from a 4 MiB
    block counts 4 KiB; a cache node serves whole blocks). ``used_bytes`` of
    the disk tier is what its block files occupy, writes in progress included.
    """

    name: str
    hits: int
    misses: int
    bytes_served: int
    evictions: int
    checksum_failures: int
    used_bytes: int
    capacity_bytes: int
    blocks: int
    state: str = "normal"  # the disk tier's health: normal, degraded or off
