"""The two-tier block cache in front of a fetch function.

Lookup order: memory → disk (a hit is promoted into memory) → one fetch per
block id at a time (concurrent readers of a missing block share it). Fetched
blocks go into memory at once and to disk through a single background writer
with a bounded queue that drops work when full: a read never waits for the
disk, and a slow or failing disk only costs future hits.
"""

import logging
import queue
import threading
from collections.abc import Callable

from dcfs.blockcache.disk import DiskTier
from dcfs.blockcache.memory import MemoryTier
from dcfs.blockcache.stats import TierStats
from dcfs.blocks import BlockRef
from dcfs.errors import CorruptBlock
from dcfs.singleflight import SingleFlight

log = logging.getLogger("dcfs.blockcache")

Fetch = Callable[[BlockRef], bytes]


class BlockCache:
    """Shared by the FUSE client (fetch = peers, then bucket) and the cache
    nodes (fetch = bucket). Thread-safe; call it from worker threads."""

    def __init__(self, memory: MemoryTier, disk: DiskTier | None, write_queue: int = 64) -> None:
        self.memory = memory
        self.disk = disk
        self._flight: SingleFlight[tuple[bytes, str]] = SingleFlight()
        self._queue: queue.Queue[tuple[BlockRef, bytes] | None] = queue.Queue(write_queue)
        self._closing = threading.Lock()
        self._closed = False
        self.dropped_writes = 0
        self._writer: threading.Thread | None = None
        if disk is not None:
            self._writer = threading.Thread(
                target=self._write_loop, args=(disk,), name="dcfs-disk-writer", daemon=True
            )
            self._writer.start()

    def get(self, ref: BlockRef, fetch: Fetch) -> tuple[bytes, str]:
        """The block's bytes and the source that answered: memory, disk or fetch.

        Raises what ``fetch`` raises, or CorruptBlock if it returned the wrong
        number of bytes; nothing is cached then.
        """
        data = self.memory.get(ref)
        if data is not None:
            return data, "memory"
        if self.disk is not None:
            data = self.disk.get(ref)
            if data is not None:
                self.memory.put(ref, data)
                return data, "disk"
        result, _shared = self._flight.do(ref.block_id, lambda: self._fetch(ref, fetch))
        return result

    def _fetch(self, ref: BlockRef, fetch: Fetch) -> tuple[bytes, str]:
        # A leader that just finished may have filled memory between our miss
        # and our turn: don't fetch twice.
        data = self.memory.peek(ref)
        if data is not None:
            return data, "memory"
        data = fetch(ref)
        if len(data) != ref.length:
            raise CorruptBlock(
                f"fetched {len(data)} bytes for block {ref.index} of {ref.version.key!r}, "
                f"expected {ref.length}"
            )
        self.memory.put(ref, data)
        self._schedule_write(ref, data)
        return data, "fetch"

    def _schedule_write(self, ref: BlockRef, data: bytes) -> None:
        if self._writer is None:
            return
        with self._closing:  # no write may land behind close()'s stop marker
            if self._closed:
                return
            try:
                self._queue.put_nowait((ref, data))
            except queue.Full:
                self.dropped_writes += 1

    def _write_loop(self, disk: DiskTier) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                disk.put(*item)
            except Exception:  # a bug must not kill the writer; disk faults never get here
                log.exception("disk cache write failed")
            finally:
                self._queue.task_done()

    def contains(self, ref: BlockRef) -> bool:
        """Cheap: no disk I/O (the disk tier answers from its index)."""
        return self.memory.contains(ref) or (self.disk is not None and self.disk.contains(ref))

    def stats(self) -> list[TierStats]:
        tiers = [self.memory.stats()]
        if self.disk is not None:
            tiers.append(self.disk.stats())
        return tiers

    def flush(self) -> None:
        """Wait until the queued disk writes are done (tests, shutdown)."""
        self._queue.join()

    def close(self) -> None:
        """Finish queued disk writes, stop the writer and close the disk tier."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
        if self.disk is not None:
            self.disk.close()
