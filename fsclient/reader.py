"""The client's read path: its own tiers, then the router; plus prefetch."""

import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from dcfs.blockcache import BlockCache
from dcfs.blocks import BlockRef, ObjectVersion, block_count, blocks_for_range
from dcfs.errors import DcfsError
from fsclient.prefetch import PrefetchWindow
from fsclient.router import PeerRouter

log = logging.getLogger("dcfs.client")

# Blocks remembered as touched once by a random read (about 100 bytes each).
MAX_RANDOM_TOUCHES = 65536


class BlockReader:
    """Synchronous and thread-safe; the FUSE handlers call it from threads."""

    def __init__(
        self,
        cache: BlockCache,
        router: PeerRouter,
        block_size: int,
        prefetch_budget: int,
        prefetch_threads: int = 8,
    ) -> None:
        self.cache = cache
        self.router = router
        self.block_size = block_size
        # Prefetched blocks wait in the memory tier: a window larger than half
        # of it would evict blocks before their reader gets to them.
        budget = min(prefetch_budget, cache.memory.capacity // 2)
        self.max_prefetch_blocks = budget // block_size
        self._pool = ThreadPoolExecutor(prefetch_threads, thread_name_prefix="prefetch")
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._random_touches: OrderedDict[str, None] = OrderedDict()

    def new_window(self) -> PrefetchWindow:
        return PrefetchWindow(self.max_prefetch_blocks)

    def read(
        self, version: ObjectVersion, offset: int, size: int, window: PrefetchWindow | None = None
    ) -> bytes | memoryview:
        """Bytes ``[offset, offset + size)`` of ``version`` (short at EOF)."""
        refs = blocks_for_range(version, offset, size, self.block_size)
        fresh = window.unread_from(offset) if window is not None else 0
        # Random access: a read off the sequence of a handle that is not in a
        # sequential run (one in a run that arrives off its place is the
        # kernel's readahead, issued in parallel, not a jump).
        jump = window is not None and window.blocks == 0 and not window.follows(offset)
        if window is not None:
            self._prefetch(
                version, window, window.advise(offset, size, self.block_size, self._count(version))
            )
        if not refs:
            return b""
        if len(refs) == 1:
            return self._slice(refs[0], offset, size, refs[0].offset >= fresh, jump)
        return b"".join(self._slice(ref, offset, size, ref.offset >= fresh, jump) for ref in refs)

    def read_from_memory(
        self, version: ObjectVersion, offset: int, size: int, window: PrefetchWindow | None
    ) -> memoryview | None:
        """The read if its one block is in the memory tier, else None.

        Never blocks, so the FUSE handler calls it on the trio thread and
        skips the hop to a worker thread for the common warm read (which is
        why it works out its one block without building a list of them).
        """
        block_size = self.block_size
        index, start = divmod(offset, block_size)
        end = min(version.size, offset + size)
        if end <= offset or (end - 1) // block_size != index:
            return None
        ref = BlockRef(version, index, block_size)
        fresh = window.unread_from(offset) if window is not None else 0
        data = self.cache.from_memory(ref, served=end - offset, reference=offset - start >= fresh)
        if data is None:
            return None
        if window is not None:
            self._prefetch(
                version, window, window.advise(offset, size, block_size, self._count(version))
            )
        return memoryview(data)[start : start + size]

    def _slice(
        self, ref: BlockRef, offset: int, size: int, reference: bool, jump: bool = False
    ) -> memoryview:
        """The part of block ``ref`` inside the read, without copying;
        ``reference``: this read is a new use of the block (see BlockCache.get).

        A read after a jump (random access) into a block no tier here holds
        fetches just its bytes, cached nowhere, the first time: a random small
        read costs no whole block. A second such read of the block fetches
        and caches all of it.
        """
        start = max(offset, ref.offset) - ref.offset
        end = min(offset + size, ref.offset + ref.length) - ref.offset
        if jump and end - start < ref.length and self._first_random_touch(ref):
            return memoryview(self.router.fetch_part(ref, start, end - start))
        data, _ = self.cache.get(ref, self.router.fetch, served=end - start, reference=reference)
        return memoryview(data)[start:end]

    def _first_random_touch(self, ref: BlockRef) -> bool:
        """True the first time a random read lands in ``ref`` while no tier
        holds it (remembering the last MAX_RANDOM_TOUCHES such blocks)."""
        if self.cache.contains(ref):
            return False
        block_id = ref.block_id
        with self._lock:
            if block_id in self._random_touches:
                del self._random_touches[block_id]
                return False
            self._random_touches[block_id] = None
            while len(self._random_touches) > MAX_RANDOM_TOUCHES:
                self._random_touches.popitem(last=False)
            return True

    def _count(self, version: ObjectVersion) -> int:
        return block_count(version.size, self.block_size)

    def _prefetch(self, version: ObjectVersion, window: PrefetchWindow, indexes: range) -> None:
        """Start fetching the blocks of ``indexes`` this window has not handed
        out yet; stop at the budget (the next read asks again)."""
        for index in range(max(indexes.start, window.issued_until), indexes.stop):
            if not self._start_prefetch(BlockRef(version, index, self.block_size)):
                return
            window.issued_until = index + 1

    def prefetch_first_blocks(self, versions: list[ObjectVersion]) -> int:
        """Fetch the first block of each of these files ahead of their reader
        (the next files of a directory read in order), within the budget; how
        many of them, from the first, are now cached or on their way."""
        for done, version in enumerate(versions):
            if not self._start_prefetch(BlockRef(version, 0, self.block_size)):
                return done
        return len(versions)

    def _start_prefetch(self, ref: BlockRef) -> bool:
        """Fetch ``ref`` in the background unless it is cached or on its way;
        False when the budget is used up."""
        block_id = ref.block_id
        with self._lock:
            if block_id in self._in_flight or self.cache.contains(ref):
                return True
            if len(self._in_flight) >= self.max_prefetch_blocks:
                return False
            self._in_flight.add(block_id)
            self._pool.submit(self._prefetch_one, ref, block_id)
            return True

    def _prefetch_one(self, ref: BlockRef, block_id: str) -> None:
        try:  # not a use of the block: its reader will count when it arrives
            self.cache.get(ref, self.router.fetch, served=0, reference=False)
        except DcfsError as exc:
            log.debug("prefetch of block %d of %r failed: %s", ref.index, ref.version.key, exc)
        finally:
            with self._lock:
                self._in_flight.discard(block_id)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
