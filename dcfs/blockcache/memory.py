"""The memory tier: a byte-bounded map of block id → block bytes.

The bytes objects are stored as given (no copies), so a block fetched once is
shared by the memory tier, the disk writer's waiting blocks and every reader. Which
block leaves first is decided by an :class:`EvictionPolicy` (S3-FIFO, see
:mod:`dcfs.blockcache.policy`), kept apart from the accounting here.
"""

import threading

from dcfs.blockcache.policy import EvictionPolicy, S3FifoPolicy
from dcfs.blockcache.stats import TierStats
from dcfs.blocks import BlockRef


class MemoryTier:
    """Never holds more than ``capacity`` bytes of block data."""

    def __init__(self, capacity: int, policy: EvictionPolicy | None = None) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._capacity = capacity
        self._policy: EvictionPolicy = policy if policy is not None else S3FifoPolicy()
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

    def get(
        self,
        ref: BlockRef,
        *,
        count_miss: bool = True,
        served: int | None = None,
        reference: bool = True,
    ) -> bytes | None:
        """The block, counted as a hit.

        ``served``: the bytes of it the reader takes (default: all of it).
        ``reference=False`` for lookups that are not a new use of the block
        (a prefetch, a sequential read continuing inside it): counted, but
        they do not make the block look hot. ``count_miss=False`` for a
        fast-path probe whose miss the caller's slow path will count.
        """
        key = ref.block_id
        with self._lock:
            data = self._blocks.get(key)
            if data is None:
                self._misses += count_miss
                return None
            if reference:
                self._policy.touch(key)
            self._hits += 1
            self._bytes_served += len(data) if served is None else served
            return data

    def touch(self, ref: BlockRef) -> None:
        """Record a reference without serving (a reader that shared a fetch)."""
        with self._lock:
            if ref.block_id in self._blocks:
                self._policy.touch(ref.block_id)

    def peek(self, ref: BlockRef) -> bytes | None:
        """Look up without counting or reordering: for re-checks after a miss
        was already counted (the block cache's singleflight leader)."""
        with self._lock:
            return self._blocks.get(ref.block_id)

    def contains(self, ref: BlockRef) -> bool:
        with self._lock:
            return ref.block_id in self._blocks

    def put(self, ref: BlockRef, data: bytes, *, referenced: bool = True) -> list[str]:
        """Store ``data``, and return the ids of the blocks this let go: those
        evicted for it, or its own if it is larger than the whole tier (it is
        not stored).

        ``referenced=False`` for a block fetched ahead of its reader.
        """
        size = len(data)
        key = ref.block_id
        if size > self._capacity:
            return [key]
        evicted: list[str] = []
        with self._lock:
            if key in self._blocks:
                # Same id, same bytes: a block never changes.
                if referenced:
                    self._policy.touch(key)
                return evicted
            while self._used + size > self._capacity:
                victim = self._policy.evict()
                self._used -= len(self._blocks.pop(victim))
                evicted.append(victim)
            self._evictions += len(evicted)
            self._blocks[key] = data
            self._policy.insert(key, size, referenced)
            self._used += size
        return evicted

    def clear(self) -> int:
        """Drop every block (not counted as evictions); the bytes dropped."""
        with self._lock:
            for key in self._blocks:
                self._policy.remove(key)
            dropped, self._used = self._used, 0
            self._blocks.clear()
            return dropped

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
