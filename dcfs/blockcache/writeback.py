"""The disk tier's writer: fetched blocks reach the disk when the cache is
idle, not while it fetches.

On a machine with few cores a block's disk write (``O_DIRECT`` ``pwritev``,
inode and fan-out directory creation) takes CPU from the fetch of the next
block: a cache node spent 0.44-0.54 CPU-s on its half of a 1 GiB cold read
with a disk tier, 0.32-0.40 without (``bench/cold_cpu.py``). A fetched block
is in the memory tier anyway, so it waits there and is written

- once no fetch has started or ended for ``idle_s``;
- at once when the memory tier lets it go (until then it is served from
  here, and it costs memory: at most ``max_evicted`` such blocks wait, and
  past that the oldest one's write is dropped — a cache loses only future
  disk hits);
- once it has waited ``max_wait_s``, so a cache that is never idle still
  fills its disk;
- when :meth:`WriteBack.flush` or :meth:`WriteBack.close` asks.

A crash loses the blocks still waiting: the disk tier is a cache, and the
bucket has them.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dcfs.blockcache.disk import DiskTier
from dcfs.blocks import BlockRef

log = logging.getLogger("dcfs.blockcache")

Checksum = Callable[[BlockRef, bytes], int]
IDLE_S = 0.5
MAX_WAIT_S = 30.0
CLOSE_BUDGET_S = 5.0  # what close() spends on waiting writes before it drops them
_TICK_S = 1.0  # how often an idle writer saves the disk's index when due


class WriteBack:
    """Thread-safe. One writer thread; ``add`` and the lookups never wait for it."""

    def __init__(
        self,
        disk: DiskTier,
        *,
        checksum: Checksum | None = None,
        max_evicted: int = 64,
        idle_s: float = IDLE_S,
        max_wait_s: float = MAX_WAIT_S,
    ) -> None:
        self._disk = disk
        self._checksum = checksum
        self._max_evicted = max_evicted
        self._idle_s = idle_s
        self._max_wait_s = max_wait_s
        self._cond = threading.Condition()
        # Waiting blocks, oldest first: id → (ref, bytes, when added). The
        # lookups read it without the lock (one dict get).
        self._waiting: dict[str, tuple[BlockRef, bytes, float]] = {}
        self._evicted: dict[str, None] = {}  # ids the memory tier let go, oldest first
        self._writing: str | None = None
        self._fetches = 0  # in progress
        self._last_fetch = time.monotonic()  # when one last started or ended
        self._flushers = 0
        self._closed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="dcfs-disk-writer", daemon=True)
        self._thread.start()

    def add(self, ref: BlockRef, data: bytes) -> None:
        """``ref`` was fetched and is in memory: write it when due."""
        with self._cond:
            if not self._closed and ref.block_id not in self._waiting:
                self._waiting[ref.block_id] = (ref, data, time.monotonic())

    def get(self, block_id: str) -> bytes | None:
        """A waiting block's bytes (one the memory tier let go is still here)."""
        found = self._waiting.get(block_id)
        return None if found is None else found[1]

    def __contains__(self, block_id: str) -> bool:
        return block_id in self._waiting

    def __len__(self) -> int:
        return len(self._waiting)

    @contextmanager
    def fetching(self) -> Iterator[None]:
        """Around a fetch: while one runs, and ``idle_s`` after, writes wait."""
        with self._cond:
            self._fetches += 1
            self._last_fetch = time.monotonic()
        try:
            yield
        finally:
            with self._cond:
                self._fetches -= 1
                self._last_fetch = time.monotonic()

    def evicted(self, block_ids: list[str]) -> None:
        """The memory tier let these go: write the waiting ones now."""
        with self._cond:
            for block_id in block_ids:
                if block_id in self._waiting:
                    self._evicted[block_id] = None
            while len(self._evicted) > self._max_evicted:
                oldest = next(block_id for block_id in self._evicted if block_id != self._writing)
                del self._evicted[oldest], self._waiting[oldest]
                self.dropped += 1
            self._cond.notify_all()

    def flush(self) -> None:
        """Write every waiting block now, and return when they are written."""
        with self._cond:
            self._flushers += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self._waiting)
            self._flushers -= 1

    def discard(self) -> None:
        """Forget the waiting blocks (the cache is being emptied), after the
        write in progress, so that none lands afterwards."""
        with self._cond:
            self._waiting = {k: v for k, v in self._waiting.items() if k == self._writing}
            self._evicted.clear()
            self._cond.wait_for(lambda: not self._waiting)

    def close(self, budget_s: float = CLOSE_BUDGET_S) -> None:
        """Write the waiting blocks (for at most ``budget_s``; the rest are
        dropped, and the log says how many), then stop the writer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(budget_s)
        if self._thread.is_alive():
            with self._cond:
                left = len(self._waiting) - (self._writing is not None)
                self.discard()
                self.dropped += left
            log.warning("stopped with %d blocks not yet written to the disk cache", left)
        self._thread.join()

    def _due_in(self, now: float) -> float:
        """Seconds until the oldest waiting block is due (<= 0: now)."""
        if self._evicted or self._closed or self._flushers:
            return 0.0
        oldest_added = next(iter(self._waiting.values()))[2]
        due = oldest_added + self._max_wait_s
        if not self._fetches:
            due = min(due, self._last_fetch + self._idle_s)
        return due - now

    def _next(self) -> tuple[BlockRef, bytes] | None:
        """The next block to write; None on a tick (nothing due for a while)."""
        with self._cond:
            while True:
                if self._waiting:
                    wait = self._due_in(time.monotonic())
                    if wait <= 0:
                        block_id = next(iter(self._evicted), None) or next(iter(self._waiting))
                        self._writing = block_id
                        ref, data, _ = self._waiting[block_id]
                        return ref, data
                elif self._closed:
                    raise _Closed
                else:
                    wait = _TICK_S
                if not self._cond.wait(min(wait, _TICK_S)) and wait >= _TICK_S:
                    return None

    def _run(self) -> None:
        disk = self._disk
        while True:
            try:
                item = self._next()
            except _Closed:
                return
            if item is None:
                disk.save_index(if_due=True)
                continue
            ref, data = item
            try:
                disk.put(ref, data, self._checksum(ref, data) if self._checksum else None)
                disk.save_index(if_due=True)
            except Exception:  # a bug must not kill the writer; disk faults never get here
                log.exception("disk cache write failed")
            finally:
                with self._cond:
                    self._waiting.pop(ref.block_id, None)
                    self._evicted.pop(ref.block_id, None)
                    self._writing = None
                    self._cond.notify_all()


class _Closed(Exception):
    """The writer's stop signal: closed, and nothing left to write."""
