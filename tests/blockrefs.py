"""Small blocks with known bytes and a counting fetch: helpers of the block
cache tests."""

import random
import threading
import time
from collections import Counter
from pathlib import Path

from dcfs.blockcache import BlockCache, DiskTier, MemoryTier
from dcfs.blockcache.blockfile import header_length
from dcfs.blocks import BlockRef, ObjectVersion

BS = 4096


def ref(index: int, key: str = "models/a.bin", etag: str = "e1", size: int = 64 * BS) -> BlockRef:
    return BlockRef(ObjectVersion(key, etag, size), index, BS)


def payload(r: BlockRef) -> bytes:
    return random.Random(r.block_id).randbytes(r.length)


def file_size(r: BlockRef) -> int:
    """Bytes block ``r`` occupies on disk: its file rounded up to 4 KiB."""
    return -(-(header_length(r) + r.length) // 4096) * 4096


class Fetcher:
    """Counts calls per block; optionally slow, to make readers overlap."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, r: BlockRef) -> bytes:
        with self._lock:
            self.calls[r.block_id] += 1
        time.sleep(self.delay)
        return payload(r)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def block_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.blk"))


def dir_bytes(directory: Path) -> int:
    """What the block files under ``directory`` occupy (``du``, not sizes)."""
    return sum(p.stat().st_blocks * 512 for p in (directory / "blocks").rglob("*") if p.is_file())


def cache_with_blocks(directory: Path, count: int, fetch: Fetcher) -> BlockCache:
    """A cache holding one block in memory and blocks ``0..count-1`` on disk."""
    cache = BlockCache(MemoryTier(BS), DiskTier(directory, 1 << 20))
    for i in range(count):
        cache.get(ref(i), fetch)
    cache.flush()
    return cache
