"""The memory tier: a byte-bounded map of block id → block bytes.

The bytes objects are stored as given (no copies), so a block fetched once is
shared by the memory tier, the disk writer's queue and every reader. Which
block leaves first is decided by an :class:`EvictionPolicy`, kept apart so a
scan-resistant policy can replace plain LRU without touching the tier.
"""

import threading
from collections import OrderedDict
from typing import Protocol

from dcfs.blockcache.stats import TierStats
from dcfs.blocks import BlockRef


class EvictionPolicy(Protocol):
    """Orders resident keys; the tier owns the bytes and the accounting.

    Calls arrive under the tier's lock, so a policy needs no locking.
    """

    def insert(self, key: str) -> None:
        """``key`` just became resident."""

    def touch(self, key: str) -> None:
        """``key`` was read."""

    def evict(self) -> str:
        """Forget and return the key to drop next (only called when non-empty)."""


class LruPolicy:
    """Least recently used first."""

    def __init__(self) -> None:
        self._order: OrderedDict[str, None] = OrderedDict()

    def insert(self, key: str) -> None:
        self._order[key] = None

    def touch(self, key: str) -> None:
        self._order.move_to_end(key)

    def evict(self) -> str:
        return self._order.popitem(last=False)[0]


class MemoryTier:
    """Never holds more than ``capacity`` bytes of block data."""

    def __init__(self, capacity: int, policy: EvictionPolicy | None = None) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._capacity = capacity
        self._policy: EvictionPolicy = policy if policy is not None else LruPolicy()
        self._blocks: dict[str, bytes] = {}
        self._used = 0
        self._lock = threading.Lock()
        self._hits = self._misses = self._bytes_served = self._evictions = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def used_bytes(self) -> int:
        return self._used

    def get(self, ref: BlockRef, count_miss: bool = True) -> bytes | None:
        """The block, counted as a hit; ``count_miss=False`` for a fast-path
        probe whose miss the caller's slow path will count."""
        key = ref.block_id
        with self._lock:
            data = self._blocks.get(key)
            if data is None:
                self._misses += count_miss
                return None
            self._policy.touch(key)
            self._hits += 1
            self._bytes_served += len(data)
            return data

    def peek(self, ref: BlockRef) -> bytes | None:
        """Look up without counting or reordering: for re-checks after a miss
        was already counted (the block cache's singleflight leader)."""
        with self._lock:
            return self._blocks.get(ref.block_id)

    def contains(self, ref: BlockRef) -> bool:
        with self._lock:
            return ref.block_id in self._blocks

    def put(self, ref: BlockRef, data: bytes) -> None:
        """Store ``data``; a block larger than the whole tier is not stored."""
        size = len(data)
        if size > self._capacity:
            return
        key = ref.block_id
        with self._lock:
            if key in self._blocks:
                # Same id, same bytes: a block never changes.
                self._policy.touch(key)
                return
            while self._used + size > self._capacity:
                victim = self._policy.evict()
                self._used -= len(self._blocks.pop(victim))
                self._evictions += 1
            self._blocks[key] = data
            self._policy.insert(key)
            self._used += size

    def stats(self) -> TierStats:
        with self._lock:
            return TierStats(
                name="memory",
                hits=self._hits,
                misses=self._misses,
                bytes_served=self._bytes_served,
                evictions=self._evictions,
                checksum_failures=0,
                used_bytes=self._used,
                capacity_bytes=self._capacity,
                blocks=len(self._blocks),
            )
