"""The node's block service: its two tiers in front of the bucket."""

import threading

from dcfs.blockcache import BlockCache
from dcfs.blocks import BlockRef
from dcfs.checksum import BlockChecksums
from dcfs.objstore import ObjectStore


class BlockService:
    """Answers block reads from the cache, fetching a miss from the bucket.

    The cache's singleflight makes concurrent requests for one missing block,
    from any number of clients, cost one ranged GET. ``checksums`` are the
    ones the cache's disk tier writes into its headers, so a block fetched
    is summed once for both.
    """

    def __init__(
        self,
        cache: BlockCache,
        store: ObjectStore,
        block_size: int,
        checksums: BlockChecksums | None = None,
    ) -> None:
        self.cache = cache
        self.store = store
        self.block_size = block_size
        self.checksums = checksums or BlockChecksums()
        self._lock = threading.Lock()
        self.bucket_fetches = 0
        self.bucket_bytes = 0

    def read_block(self, ref: BlockRef) -> tuple[bytes, str]:
        data, source = self.cache.get(ref, self._fetch)
        return data, "bucket" if source == "fetch" else source

    def checksum(self, ref: BlockRef, data: bytes) -> int:
        """The block's CRC-32C for a reply (see :class:`BlockChecksums`)."""
        return self.checksums.of(ref, data)

    def read_part(self, ref: BlockRef, offset: int, length: int) -> tuple[bytes, str]:
        """Bytes ``[offset, offset + length)`` of the block: a slice of it if
        a tier holds it, else just that range from the bucket, kept nowhere
        (a random small read should not cost a whole block)."""
        found = self.cache.cached(ref, served=length)
        if found is not None:
            data, source = found
            return memoryview(data)[offset : offset + length], source  # type: ignore[return-value]
        return self._fetch_range(ref, offset, length), "bucket"

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
            disk.put(ref, data, self.checksum(ref, data))
        return source

    def _fetch(self, ref: BlockRef) -> bytes:
        return self._fetch_range(ref, 0, ref.length)

    def _fetch_range(self, ref: BlockRef, offset: int, length: int) -> bytes:
        data = self.store.read_range(ref.version, ref.offset + offset, length)
        with self._lock:
            self.bucket_fetches += 1
            self.bucket_bytes += len(data)
        return data
