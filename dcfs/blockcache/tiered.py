"""The two-tier block cache in front of a fetch function.

Lookup order: memory → disk (a hit is promoted into memory) → one fetch per
block id at a time (concurrent readers of a missing block share it). Fetched
blocks go into memory at once and to disk through a single background writer
with a bounded queue that drops work when full: a read never waits for the
disk, and a slow or failing disk only costs future hits. A block evicted
from memory while it waits in that queue is served from there. The writer also
saves the disk tier's index every so often.

Both tiers evict by S3-FIFO; every use of a block by a reader is reported to
both, so a block hot in memory stays on disk when a scan passes through.
"""

import dataclasses
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
Checksum = Callable[[BlockRef, bytes], int]
_INDEX_CHECK_S = 1.0


class BlockCache:
    """Shared by the FUSE client (fetch = peers, then bucket) and the cache
    nodes (fetch = bucket). Thread-safe; call it from worker threads."""

    def __init__(
        self,
        memory: MemoryTier,
        disk: DiskTier | None,
        write_queue: int = 64,
        checksum: Checksum | None = None,
    ) -> None:
        """``checksum``: a block's CRC-32C for its disk file, where the owner
        computes (and remembers) it anyway (a cache node, for its replies)."""
        self.memory = memory
        self.disk = disk
        self._checksum = checksum
        self._flight: SingleFlight[tuple[bytes, str]] = SingleFlight()
        self._queue: queue.Queue[tuple[BlockRef, bytes] | None] = queue.Queue(write_queue)
        # Blocks in the queue, by id: one evicted from memory before its write
        # is served from here, not fetched again.
        self._pending: dict[str, bytes] = {}
        self._closing = threading.Lock()
        self._closed = False
        self.dropped_writes = 0
        self.emptied = 0  # times empty() ran (the stats file shows it)
        self._writer: threading.Thread | None = None
        if disk is not None:
            self._writer = threading.Thread(
                target=self._write_loop, args=(disk,), name="dcfs-disk-writer", daemon=True
            )
            self._writer.start()

    def get(
        self, ref: BlockRef, fetch: Fetch, *, served: int | None = None, reference: bool = True
    ) -> tuple[bytes, str]:
        """The block's bytes and the source that answered: memory, disk or fetch.

        ``served``: the bytes of the block the reader takes (counted by the
        tier that hits; default the whole block). ``reference=False`` for a
        lookup that is no new use of the block — a prefetch, or a sequential
        reader continuing inside it — so it does not make the block look hot.

        Raises what ``fetch`` raises, or CorruptBlock if it returned the wrong
        number of bytes; nothing is cached then.
        """
        found = self.cached(ref, served=served, reference=reference)
        if found is not None:
            return found
        result, shared = self._flight.do(ref.block_id, lambda: self._fetch(ref, fetch, reference))
        if shared and reference:  # the leader's insert counted only its own use
            self.memory.touch(ref)
        return result

    def cached(
        self, ref: BlockRef, *, served: int | None = None, reference: bool = True
    ) -> tuple[bytes, str] | None:
        """The block and the tier that had it, memory or disk, or None: the
        first half of :meth:`get`, which never fetches. A block found on disk
        (or still queued for it) is promoted into memory."""
        data = self.from_memory(ref, served=served, reference=reference, count_miss=True)
        if data is not None:
            return data, "memory"
        if self.disk is not None:
            data = self._pending.get(ref.block_id)
            if data is not None:
                self.memory.put(ref, data, referenced=reference)
                return data, "memory"
            data = self.disk.get(ref, served=served, reference=reference)
            if data is not None:
                self.memory.put(ref, data, referenced=reference)
                return data, "disk"
        return None

    def from_memory(
        self,
        ref: BlockRef,
        *,
        served: int | None = None,
        reference: bool = True,
        count_miss: bool = False,
    ) -> bytes | None:
        """The block if the memory tier has it. Never blocks on I/O, so the
        FUSE handler calls it on the trio thread; a miss is not counted
        unless ``count_miss`` (the slow path that follows counts it)."""
        data = self.memory.get(ref, count_miss=count_miss, served=served, reference=reference)
        if data is not None and reference and self.disk is not None:
            self.disk.touch(ref)  # hot in memory is hot: keep it on disk across scans
        return data

    def _fetch(self, ref: BlockRef, fetch: Fetch, reference: bool) -> tuple[bytes, str]:
        # A leader that just finished may have filled memory between our miss
        # and our turn: don't fetch twice.
        data = self.memory.peek(ref) or self._pending.get(ref.block_id)
        if data is not None:
            return data, "memory"
        data = fetch(ref)
        if len(data) != ref.length:
            raise CorruptBlock(
                f"fetched {len(data)} bytes for block {ref.index} of {ref.version.key!r}, "
                f"expected {ref.length}"
            )
        self.memory.put(ref, data, referenced=reference)
        self._schedule_write(ref, data)
        return data, "fetch"

    def _schedule_write(self, ref: BlockRef, data: bytes) -> None:
        if self._writer is None:
            return
        with self._closing:  # no write may land behind close()'s stop marker
            if self._closed:
                return
            self._pending[ref.block_id] = data  # before the writer can see it
            try:
                self._queue.put_nowait((ref, data))
            except queue.Full:
                self._pending.pop(ref.block_id, None)
                self.dropped_writes += 1

    def _write_loop(self, disk: DiskTier) -> None:
        """Writes queued blocks; between them, saves the disk's index when due."""
        while True:
            try:
                item = self._queue.get(timeout=_INDEX_CHECK_S)
            except queue.Empty:
                disk.save_index(if_due=True)
                continue
            try:
                if item is None:
                    return
                ref, data = item
                disk.put(ref, data, self._checksum(ref, data) if self._checksum else None)
                disk.save_index(if_due=True)
            except Exception:  # a bug must not kill the writer; disk faults never get here
                log.exception("disk cache write failed")
            finally:
                if item is not None:
                    self._pending.pop(item[0].block_id, None)
                self._queue.task_done()

    def contains(self, ref: BlockRef) -> bool:
        """Cheap: no disk I/O (the disk tier answers from its index)."""
        return (
            self.memory.contains(ref)
            or ref.block_id in self._pending
            or (self.disk is not None and self.disk.contains(ref))
        )

    def stats(self) -> list[TierStats]:
        tiers = [self.memory.stats()]
        if self.disk is not None:
            tiers.append(self.disk.stats())
        return tiers

    def report(self) -> dict[str, object]:
        """The counters as plain data (for a stats file)."""
        return {
            "tiers": [dataclasses.asdict(tier) for tier in self.stats()],
            "dropped_disk_writes": self.dropped_writes,
            "emptied": self.emptied,
        }

    def empty(self) -> int:
        """Drop every cached block from both tiers, after the queued disk
        writes (so none lands afterwards); the bytes dropped. For cold-read
        benchmarks: a block is fetched again when next read."""
        self.flush()
        dropped = self.memory.clear()
        if self.disk is not None:
            dropped += self.disk.clear()
        self.emptied += 1
        return dropped

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
