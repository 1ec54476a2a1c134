"""The disk tier: block files under one directory, bounded, surviving restarts.

Each block file (see :mod:`dcfs.blockcache.blockfile`) carries the block's
identity and a CRC-32C of the data; every read checks both, and a file that
fails is deleted and reported as a miss: the cache may lose blocks, never
return wrong ones.

Accounting is in bytes the files occupy (sizes rounded up to the
filesystem's block), and a write reserves its room before the temporary file
exists, so the directory never holds more than ``capacity`` bytes of blocks,
not even for a moment. Eviction order is S3-FIFO (:mod:`.policy`), saved
with the sizes in an index file (:mod:`.index`) so a restart needs no
``stat`` per file and keeps the order.

The disk is optional to correctness, so disk faults never reach callers
(:mod:`.health`).
"""

import fcntl
import logging
import os
import threading
import time
from contextlib import suppress
from pathlib import Path

from dcfs.blockcache import directio, index
from dcfs.blockcache.blockfile import (
    block_path,
    check_header,
    encode_header,
    header_length,
    read_exact,
    remove_leftovers,
    scan_blocks,
    stat_blocks,
    write_temp_file,
)
from dcfs.blockcache.health import DEGRADED, NORMAL, OFF, DiskHealth
from dcfs.blockcache.policy import GHOST, MAIN, SMALL, EvictionPolicy, S3FifoPolicy
from dcfs.blockcache.stats import TierStats
from dcfs.blocks import BlockRef
from dcfs.checksum import crc32c
from dcfs.errors import ConfigError, CorruptBlock
from dcfs.sizes import format_size

__all__ = ["DEGRADED", "NORMAL", "OFF", "DiskTier"]

log = logging.getLogger("dcfs.disk")

# Rewrite a hit file's mtime (its order after a restart without an index) at most this often.
_TOUCH_NS = 10 * 10**9


class DiskTier:
    """Keeps its block files within ``capacity`` bytes, and leaves
    ``reserve_fraction`` of the filesystem free for everyone else.

    Setting up the directory raises (a misconfiguration should be loud);
    ``get`` and ``put`` never raise for disk faults.

    ``bypass_page_cache`` is for a tier whose memory tier holds the hot copy
    (a cache node's): writes go around the page cache (:mod:`.directio`),
    or, where the filesystem refuses ``O_DIRECT``, are synced and dropped
    from it. A client's tier keeps its pages: the kernel serves re-reads of
    its disk tier from them.
    """

    def __init__(
        self,
        directory: Path,
        capacity: int,
        reserve_fraction: float = 0.10,
        *,
        policy: EvictionPolicy | None = None,
        retry_after: float = 30.0,
        max_failures: int = 3,
        index_interval_s: float = 30.0,
        bypass_page_cache: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self._capacity = capacity
        self._reserve = reserve_fraction
        self._policy: EvictionPolicy = policy if policy is not None else S3FifoPolicy()
        self._health = DiskHealth(self.directory, retry_after, max_failures)
        self._index_interval_s = index_interval_s
        self._bypass_page_cache = bypass_page_cache
        self._direct = False  # O_DIRECT writes: set once the filesystem is known to take them
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}  # resident block id -> bytes on disk
        self._used = 0  # bytes of resident files plus writes in progress
        self._hits = self._misses = self._bytes_served = 0
        self._evictions = self._checksum_failures = 0
        self._changes = 0  # since the index was last saved
        self._save_lock = threading.Lock()
        self._saved_at = time.monotonic()
        self._closed = False
        self._reserve_starved = False  # the last write found the filesystem below its reserve

        self._blocks = str(self.directory / "blocks")
        self._index_path = self.directory / "index"
        self._make_dirs()
        # Two tiers on one directory would delete each other's .tmp files and
        # count each other's blocks: refuse the second one.
        self._lock_fd = os.open(self.directory / "lock", os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise ConfigError(f"disk cache {self.directory} is already in use") from None
        self._fs_block = 4096
        try:
            self._fs_block = os.statvfs(self._blocks).f_frsize or 4096
            self._restore()
        except OSError as exc:
            self._health.fault(exc)
        self._direct = bypass_page_cache and directio.supported(self._blocks)

    @property
    def used_bytes(self) -> int:
        return self._used

    @property
    def state(self) -> str:
        """``normal``, ``degraded`` (failing, still tried) or ``off`` (bypassed)."""
        return self._health.state

    def _make_dirs(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)  # blocks of private objects: owner only
        os.makedirs(self._blocks, mode=0o700, exist_ok=True)

    def _on_disk(self, file_size: int) -> int:
        return -(-file_size // self._fs_block) * self._fs_block

    def _restore(self) -> None:
        """Rebuild sizes and order from the files present and the index."""
        present = scan_blocks(self._blocks)
        remove_leftovers(self._index_path)
        entries = index.load(self._index_path)
        with self._lock:
            for block_id, size, queue, freq in entries or ():
                if queue == GHOST:  # a ghost whose file is back is added below
                    if block_id not in present:
                        self._policy.load(block_id, 0, GHOST, 0)
                elif block_id in present:
                    present.discard(block_id)
                    self._add_locked(block_id, self._on_disk(size), queue, freq)
        # Files the index does not know (written after its last save, or no
        # index at all): oldest mtime first, as the newest of the order.
        unknown = stat_blocks(self._blocks, present)
        with self._lock:
            queue = MAIN if entries is None else SMALL
            for _, block_id, size in unknown:
                self._add_locked(block_id, self._on_disk(size), queue, 0)
            self._evict_locked(self._capacity)
            self._changes += len(unknown) + (entries is None)
        if entries is None and unknown:
            log.info("disk cache %s: no usable index; order rebuilt from mtimes", self.directory)

    def _add_locked(self, block_id: str, size: int, queue: int, freq: int) -> None:
        self._policy.load(block_id, size, queue, freq)
        self._sizes[block_id] = size
        self._used += size

    def contains(self, ref: BlockRef) -> bool:
        with self._lock:
            return ref.block_id in self._sizes and self._health.state != OFF

    def touch(self, ref: BlockRef) -> None:
        """A reader used the block from a faster tier: it is hot here too."""
        with self._lock:
            if ref.block_id in self._sizes:
                self._policy.touch(ref.block_id)
                self._changes += 1

    def get(
        self, ref: BlockRef, *, served: int | None = None, reference: bool = True
    ) -> bytes | None:
        """The block's bytes, or None on a miss, a bad file or a failing disk.

        ``served`` and ``reference`` as for :meth:`MemoryTier.get`.
        """
        block_id = ref.block_id
        data = self._load(ref, block_id)
        with self._lock:
            if data is None:
                self._misses += 1
                return None
            self._hits += 1
            self._bytes_served += len(data) if served is None else served
            if reference and block_id in self._sizes:
                self._policy.touch(block_id)
                self._changes += 1
        return data

    def _load(self, ref: BlockRef, block_id: str) -> bytes | None:
        with self._lock:
            if self._closed or block_id not in self._sizes:
                return None
        if not self._health.usable():  # after the index check: a miss must not use up a probe
            return None
        path = block_path(self._blocks, block_id)
        try:
            data = self._read(path, ref)
        except (FileNotFoundError, CorruptBlock) as exc:  # gone, or bad: drop it, miss
            corrupt = isinstance(exc, CorruptBlock)
            if corrupt:
                log.info("dropping bad block file %s: %s", path, exc)
            try:
                self._forget(block_id, path if corrupt else None)
            except OSError as err:
                self._health.fault(err)
            return None
        except OSError as exc:
            self._health.fault(exc)
            return None
        self._health.ok()
        return data

    def _read(self, path: str, ref: BlockRef) -> bytes:
        """Read header and data with one open and no copy of the data."""
        hlen = header_length(ref)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            start = st.st_size - ref.length  # right after the header, or a page on (directio)
            if start not in (hlen, directio.data_offset(hlen)):
                raise CorruptBlock("block file has the wrong size")
            crc = check_header(read_exact(fd, hlen), ref)
            if start != hlen:
                os.lseek(fd, start, os.SEEK_SET)
            data = read_exact(fd, ref.length)
            if len(data) != ref.length or crc32c(data) != crc:
                raise CorruptBlock("block data checksum mismatch")
            if time.time_ns() - st.st_mtime_ns > _TOUCH_NS:
                with suppress(OSError):  # best effort: only the fallback order suffers
                    os.utime(fd)
            return data
        finally:
            os.close(fd)

    def _forget(self, block_id: str, bad_file: str | None) -> None:
        with self._lock:
            size = self._sizes.pop(block_id, None)
            if size is not None:
                self._used -= size
                self._policy.remove(block_id)
                self._changes += 1
            if bad_file is not None:
                self._checksum_failures += 1
                with suppress(FileNotFoundError):
                    os.unlink(bad_file)

    def put(self, ref: BlockRef, data: bytes, crc: int | None = None) -> None:
        """Store a block; skipped when it cannot fit or the disk is failing.
        ``crc``: the data's CRC-32C, when the caller has it already."""
        if len(data) != ref.length:
            raise ValueError(f"block {ref.block_id} is {ref.length} bytes, got {len(data)}")
        block_id = ref.block_id
        hlen = header_length(ref)
        size = self._on_disk((directio.data_offset(hlen) if self._direct else hlen) + len(data))
        if size > self._capacity:
            return
        with self._lock:
            if self._closed or block_id in self._sizes:  # an id always names the same bytes
                return
        if not self._health.usable():
            return
        try:
            if self._reserve_room(size):
                self._write(block_id, size, encode_header(ref, data, crc), data)
        except OSError as exc:
            self._health.fault(exc)
        else:
            self._health.ok()

    def _reserve_room(self, size: int) -> bool:
        """Count ``size`` bytes as used, evicting first to stay within the
        capacity and to keep the filesystem's reserve free; False if even
        evicting everything of ours would not do."""
        try:
            st = os.statvfs(self._blocks)
        except FileNotFoundError:  # someone removed our directory: start it again
            self._make_dirs()
            st = os.statvfs(self._blocks)
        floor = int(self._reserve * st.f_blocks * st.f_frsize)
        free = st.f_bavail * st.f_frsize
        short = floor + size - free
        with self._lock:
            limit = min(self._capacity - size, self._used - max(short, 0))
            if limit >= 0:
                self._evict_locked(limit)
                self._used += size
        self._note_reserve(limit < 0, free, floor)
        return limit >= 0

    def _note_reserve(self, starved: bool, free: int, floor: int) -> None:
        """Say once per episode that the filesystem's free-space reserve
        keeps blocks off this disk: a silent cache that stores nothing
        looks like a bug."""
        if starved == self._reserve_starved:
            return
        self._reserve_starved = starved
        if starved:
            log.warning(
                "disk cache %s: its filesystem has %s free, less than the %s it must leave "
                "free (--free-space-ratio %g); blocks are not stored on disk until there is room",
                self.directory, format_size(free), format_size(floor), self._reserve,
            )  # fmt: skip
        else:
            log.info("disk cache %s: room on its filesystem again", self.directory)

    def _write(self, block_id: str, size: int, header: bytes, data: bytes) -> None:
        """Write into the reserved room; give it back if the write fails."""
        path = block_path(self._blocks, block_id)
        tmp: str | None = None
        try:
            tmp = write_temp_file(
                path, header, data, direct=self._direct, drop_pages=self._bypass_page_cache
            )
            with self._lock:  # rename and account together, so eviction sees both
                os.replace(tmp, path)
                if block_id in self._sizes:  # a concurrent put of the same block won
                    self._used -= size
                else:
                    self._sizes[block_id] = size
                    self._policy.insert(block_id, size)
                    self._changes += 1
        except BaseException:
            with self._lock:
                self._used -= size
            if tmp is not None:  # write_temp_file removes its own file when it fails
                with suppress(OSError):
                    os.unlink(tmp)
            raise

    def _evict_locked(self, limit: int) -> None:
        while self._used > limit and self._sizes:
            block_id = self._policy.evict()
            self._used -= self._sizes.pop(block_id)
            self._evictions += 1
            self._changes += 1
            with suppress(FileNotFoundError):
                os.unlink(block_path(self._blocks, block_id))

    def clear(self) -> int:
        """Delete every block file (not counted as evictions); the bytes
        freed. The files go after the lock is released: a reader that still
        finds one in the index and then not on disk takes it as a miss."""
        with self._lock:
            if self._closed:
                return 0
            dropped = list(self._sizes)
            freed = sum(self._sizes.values())
            for block_id in dropped:
                self._policy.remove(block_id)
            self._sizes.clear()
            self._used -= freed
            self._changes += 1
        for block_id in dropped:
            with suppress(OSError):  # a disk fault: the file is out of the index anyway
                os.unlink(block_path(self._blocks, block_id))
        self.save_index()
        return freed

    def save_index(self, *, if_due: bool = False) -> None:
        """Write the index if anything changed (and, with ``if_due``, only
        once per ``index_interval_s``). Disk faults are absorbed like others."""
        with self._save_lock:
            with self._lock:
                due = time.monotonic() - self._saved_at >= self._index_interval_s
                if not self._changes or (if_due and not due):
                    return
                sizes = self._sizes
                entries = [(k, sizes.get(k, 0), q, f) for k, q, f in self._policy.dump()]
                self._changes, self._saved_at = 0, time.monotonic()
            try:
                index.save(self._index_path, entries)
            except OSError as exc:
                with self._lock:
                    self._changes += 1  # try again next time
                self._health.fault(exc)

    def stats(self) -> TierStats:
        with self._lock:
            return TierStats(
                name="disk",
                hits=self._hits,
                misses=self._misses,
                bytes_served=self._bytes_served,
                evictions=self._evictions,
                checksum_failures=self._checksum_failures,
                used_bytes=self._used,
                capacity_bytes=self._capacity,
                blocks=len(self._sizes),
                state=self._health.state,
            )

    def close(self) -> None:
        """Save the index, stop serving and release the directory; the files
        stay for the next start."""
        with self._lock:
            if self._closed:
                return
        if self._health.state != OFF:
            self.save_index()
        with self._lock:
            self._closed = True
        os.close(self._lock_fd)
