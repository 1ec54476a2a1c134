"""The node's block service: its two tiers in front of the bucket."""

import threading

from dcfs.blockcache import BlockCache
from dcfs.blocks import BlockRef
from dcfs.objstore import ObjectStore


class BlockService:
    """Answers block reads from the cache, fetching a miss from the bucket.

    The cache's singleflight makes concurrent requests for one missing block,
    from any number of clients, cost one ranged GET.
    """

    def __init__(self, cache: BlockCache, store: ObjectStore, block_size: int) -> None:
        self.cache = cache
        self.store = store
        self.block_size = block_size
        self._lock = threading.Lock()
        self.bucket_fetches = 0
        self.bucket_bytes = 0

    def read_block(self, ref: BlockRef) -> tuple[bytes, str]:
        data, source = self.cache.get(ref, self._fetch)
        return data, "bucket" if source == "fetch" else source

    def warm_block(self, ref: BlockRef) -> str:
        """Make sure the block is cached here: where it was found, or "bucket".

        A fetched block is written to the disk tier before this returns (the
        cache's background writer drops work when busy, and a warm-up runs
        many blocks at once): a warmed block must still be here afterwards.
        """
        disk = self.cache.disk
        if disk is not None and disk.contains(ref):
            return "disk"
        if disk is None and self.cache.memory.contains(ref):
            return "memory"
        data, source = self.read_block(ref)
        if disk is not None:
            disk.put(ref, data)
        return source

    def _fetch(self, ref: BlockRef) -> bytes:
        data = self.store.read_range(ref.version, ref.offset, ref.length)
        with self._lock:
            self.bucket_fetches += 1
            self.bucket_bytes += len(data)
        return data
