"""The two-tier block cache in front of a fetch function.

Lookup order: memory → disk (a hit is promoted into memory) → one fetch per
block id at a time (concurrent readers of a missing block share it). Fetched
blocks go into memory at once and to disk through a background writer that
waits for the fetching to pause (:mod:`.writeback`): a read never waits for
the disk, a slow or failing disk only costs future hits, and on a machine
with few cores the disk writes do not take CPU from the fetches. A block
evicted from memory before its write is served from the writer.

Both tiers evict by S3-FIFO; every use of a block by a reader is reported to
both, so a block hot in memory stays on disk when a scan passes through.
"""

import dataclasses
from collections.abc import Callable

from dcfs.blockcache.disk import DiskTier
from dcfs.blockcache.memory import MemoryTier
from dcfs.blockcache.stats import TierStats
from dcfs.blockcache.writeback import WriteBack
from dcfs.blocks import BlockRef
from dcfs.errors import CorruptBlock
from dcfs.singleflight import SingleFlight

Fetch = Callable[[BlockRef], bytes]
Checksum = Callable[[BlockRef, bytes], int]


class BlockCache:
    """Shared by the FUSE client (fetch = peers, then bucket) and the cache
    nodes (fetch = bucket). Thread-safe; call it from worker threads."""

    def __init__(
        self,
        memory: MemoryTier,
        disk: DiskTier | None,
        max_evicted_writes: int = 64,
        checksum: Checksum | None = None,
    ) -> None:
        """``checksum``: a block's CRC-32C for its disk file, where the owner
        computes (and remembers) it anyway (a cache node, for its replies)."""
        self.memory = memory
        self.disk = disk
        self._flight: SingleFlight[tuple[bytes, str]] = SingleFlight()
        # ``max_evicted_writes``: how many blocks may wait for the disk after
        # memory let them go (the memory that costs beyond the memory tier's).
        self._writeback = (
            None
            if disk is None
            else WriteBack(disk, checksum=checksum, max_evicted=max_evicted_writes)
        )
        self.emptied = 0  # times empty() ran (the stats file shows it)

    @property
    def dropped_writes(self) -> int:
        """Blocks never written to disk: too many waited outside memory."""
        return 0 if self._writeback is None else self._writeback.dropped

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
            data = self._waiting(ref)
            if data is not None:
                self._put_in_memory(ref, data, reference)
                return data, "memory"
            data = self.disk.get(ref, served=served, reference=reference)
            if data is not None:
                self._put_in_memory(ref, data, reference)
                return data, "disk"
        return None

    def _waiting(self, ref: BlockRef) -> bytes | None:
        """The block if it waits for its disk write."""
        return None if self._writeback is None else self._writeback.get(ref.block_id)

    def _put_in_memory(self, ref: BlockRef, data: bytes, referenced: bool) -> None:
        evicted = self.memory.put(ref, data, referenced=referenced)
        if evicted and self._writeback is not None:
            self._writeback.evicted(evicted)

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
        data = self.memory.peek(ref) or self._waiting(ref)
        if data is not None:
            return data, "memory"
        if self._writeback is None:
            data = fetch(ref)
        else:
            with self._writeback.fetching():
                data = fetch(ref)
        if len(data) != ref.length:
            raise CorruptBlock(
                f"fetched {len(data)} bytes for block {ref.index} of {ref.version.key!r}, "
                f"expected {ref.length}"
            )
        if self._writeback is not None:
            self._writeback.add(ref, data)  # before memory can let it go
        self._put_in_memory(ref, data, reference)
        return data, "fetch"

    def contains(self, ref: BlockRef) -> bool:
        """Cheap: no disk I/O (the disk tier answers from its index)."""
        return (
            self.memory.contains(ref)
            or (self._writeback is not None and ref.block_id in self._writeback)
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
            "waiting_disk_writes": 0 if self._writeback is None else len(self._writeback),
            "emptied": self.emptied,
        }

    def empty(self) -> int:
        """Drop every cached block from both tiers, and the blocks waiting
        for their disk write (after the one being written, so none lands
        afterwards); the bytes dropped. For cold-read benchmarks: a block is
        fetched again when next read."""
        if self._writeback is not None:
            self._writeback.discard()
        dropped = self.memory.clear()
        if self.disk is not None:
            dropped += self.disk.clear()
        self.emptied += 1
        return dropped

    def flush(self) -> None:
        """Write the blocks waiting for the disk now, and wait for them
        (tests, benchmarks)."""
        if self._writeback is not None:
            self._writeback.flush()

    def close(self) -> None:
        """Write the waiting blocks (for a few seconds at most), stop the
        writer and close the disk tier; again, it does nothing (both are
        idempotent)."""
        if self._writeback is not None:
            self._writeback.close()
        if self.disk is not None:
            self.disk.close()
