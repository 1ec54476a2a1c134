"""Eviction policies: which resident block leaves first.

Both tiers (memory and disk, in the client and in the cache nodes) use
:class:`S3FifoPolicy` — S3-FIFO, from "FIFO queues are all you need for cache
eviction" (Yang et al., SOSP 2023). Why this one:

- **Scan resistance.** One pass over a dataset larger than the cache (an
  epoch, a checkpoint load, ``cp -r``) is the common case here. New blocks
  enter a small FIFO (10% of the bytes) and leave it unless read again while
  there, so a scan flushes only that 10%, never the hot set in the main FIFO.
  Plain LRU lets a scan flush everything; 2Q behaves alike but needs tuning
  of two queue sizes, and ARC is patented and heavier.
- **Cheap hits.** A hit only bumps a 2-bit counter; nothing moves, which
  matters on the FUSE client's memory fast path.
- **Persistable.** Its state is three ordered key lists and a counter per
  key, which the disk tier writes to its index so the order survives a
  restart (:meth:`dump` and :meth:`load`).

Two adaptations: sizes are bytes, not object counts (the last block of an
object is short), and a block fetched ahead of its reader (prefetch) is
inserted *unreferenced*. Prefetched blocks sit in the small FIFO until read;
if one reaches its head unread it moves to the main FIFO instead of being
dropped (dropping it would waste the fetch just before its reader arrives),
and a single read there does not earn it a second round.

Policies are called under their tier's lock, so they need none of their own.
"""

from collections import OrderedDict
from typing import Protocol

# Queue numbers in dumps (and in the disk tier's index file).
SMALL, MAIN, GHOST = 0, 1, 2
_MAX_FREQ = 3
_UNREAD = -1  # fetched ahead of its reader, not referenced yet


class EvictionPolicy(Protocol):
    """Orders resident keys; the tier owns the bytes and the accounting."""

    def insert(self, key: str, size: int, referenced: bool = True) -> None:
        """``key`` (``size`` bytes) just became resident; ``referenced=False``
        when nobody asked for it yet (prefetch)."""

    def touch(self, key: str) -> None:
        """A reader referenced resident ``key``."""

    def remove(self, key: str) -> None:
        """``key`` left the tier for another reason (a bad file); no-op if absent."""

    def evict(self) -> str:
        """Forget and return the key to drop next (only called when non-empty)."""

    def dump(self) -> list[tuple[str, int, int]]:
        """``(key, queue, freq)`` per key, each queue oldest first, ghosts last."""

    def load(self, key: str, size: int, queue: int, freq: int) -> None:
        """Append a dumped key (as the newest of ``queue``) when restoring."""


class LruPolicy:
    """Least recently used first: kept as the baseline of the simulation."""

    def __init__(self) -> None:
        self._order: OrderedDict[str, None] = OrderedDict()

    def insert(self, key: str, size: int, referenced: bool = True) -> None:
        self._order[key] = None

    def touch(self, key: str) -> None:
        if key in self._order:
            self._order.move_to_end(key)

    def remove(self, key: str) -> None:
        self._order.pop(key, None)

    def evict(self) -> str:
        return self._order.popitem(last=False)[0]

    def dump(self) -> list[tuple[str, int, int]]:
        return [(key, MAIN, 0) for key in self._order]

    def load(self, key: str, size: int, queue: int, freq: int) -> None:
        if queue != GHOST:
            self._order[key] = None


class S3FifoPolicy:
    """S3-FIFO over bytes: a small FIFO (probation), a main FIFO with
    reinsertion (a 2-bit CLOCK) and a ghost FIFO of recently dropped keys."""

    def __init__(self, small_fraction: float = 0.10) -> None:
        if not 0 < small_fraction < 1:
            raise ValueError("small_fraction must be between 0 and 1")
        self._small_fraction = small_fraction
        self._small: OrderedDict[str, None] = OrderedDict()  # oldest first
        self._main: OrderedDict[str, None] = OrderedDict()
        self._ghost: OrderedDict[str, None] = OrderedDict()
        self._freq: dict[str, int] = {}
        self._size: dict[str, int] = {}
        self._small_bytes = self._main_bytes = 0

    def insert(self, key: str, size: int, referenced: bool = True) -> None:
        if key in self._freq:
            if referenced:
                self.touch(key)
            return
        self._size[key] = size
        self._freq[key] = 0 if referenced else _UNREAD
        if key in self._ghost:  # dropped recently, wanted again: main
            del self._ghost[key]
            self._main[key] = None
            self._main_bytes += size
        else:
            self._small[key] = None
            self._small_bytes += size

    def touch(self, key: str) -> None:
        freq = self._freq.get(key)
        if freq is not None and freq < _MAX_FREQ:
            self._freq[key] = freq + 1

    def remove(self, key: str) -> None:
        if self._freq.pop(key, None) is None:
            return
        size = self._size.pop(key)
        if key in self._small:
            del self._small[key]
            self._small_bytes -= size
        else:
            del self._main[key]
            self._main_bytes -= size

    def evict(self) -> str:
        while True:
            total = self._small_bytes + self._main_bytes
            if self._small and (
                not self._main or self._small_bytes >= self._small_fraction * total
            ):
                victim = self._evict_small()
            else:
                victim = self._evict_main()
            if victim is not None:
                return victim

    def _evict_small(self) -> str | None:
        key = self._small.popitem(last=False)[0]
        size, freq = self._size[key], self._freq[key]
        self._small_bytes -= size
        if freq != 0:  # read again while on probation, or not read yet: main
            self._main[key] = None
            self._main_bytes += size
            self._freq[key] = min(freq, 0)  # the paper clears the bits on the move
            return None
        del self._freq[key], self._size[key]
        self._ghost[key] = None
        # The ghost remembers about as many keys as the main FIFO holds.
        limit = max(1, int(len(self._freq) * (1 - self._small_fraction)))
        while len(self._ghost) > limit:
            self._ghost.popitem(last=False)
        return key

    def _evict_main(self) -> str | None:
        key = self._main.popitem(last=False)[0]
        freq = self._freq[key]
        if freq > 0:  # referenced since its last pass: one more round
            self._main[key] = None
            self._freq[key] = freq - 1
            return None
        self._main_bytes -= self._size.pop(key)
        del self._freq[key]
        return key

    def dump(self) -> list[tuple[str, int, int]]:
        found = [(key, SMALL, self._freq[key]) for key in self._small]
        found += [(key, MAIN, self._freq[key]) for key in self._main]
        return found + [(key, GHOST, 0) for key in self._ghost]

    def load(self, key: str, size: int, queue: int, freq: int) -> None:
        if key in self._freq:
            return
        if queue == GHOST:
            self._ghost[key] = None
            return
        self._ghost.pop(key, None)
        self._size[key] = size
        self._freq[key] = max(_UNREAD, min(freq, _MAX_FREQ))
        if queue == SMALL:
            self._small[key] = None
            self._small_bytes += size
        else:
            self._main[key] = None
            self._main_bytes += size
