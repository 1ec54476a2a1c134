"""The disk tier: block files under one directory, bounded, surviving restarts.

Each block file (see :mod:`dcfs.blockcache.blockfile`) carries the block's
identity and a CRC32 of the data; every read checks both, and a file that
fails is deleted and reported as a miss: the cache may lose blocks, never
return wrong ones.

The disk is optional to correctness, so disk faults never reach callers: the
tier warns once, goes degraded, then off (get/put do nothing) and retries after
a back-off, like JuiceFS's normal → unstable → down disk states.
"""

import fcntl
import logging
import os
import secrets
import threading
import time
import zlib
from collections import OrderedDict
from contextlib import suppress
from pathlib import Path

from dcfs.blockcache.blockfile import (
    TMP_SUFFIX,
    block_path,
    check_header,
    encode_header,
    header_length,
    read_exact,
    scan_blocks,
    write_all,
)
from dcfs.blockcache.stats import TierStats
from dcfs.blocks import BlockRef
from dcfs.errors import ConfigError, CorruptBlock

log = logging.getLogger("dcfs.disk")

# Rewrite a hit file's mtime (its LRU position after a restart) at most this often.
_TOUCH_NS = 10 * 10**9

NORMAL, DEGRADED, OFF = "normal", "degraded", "off"


class DiskTier:
    """Keeps the sum of its block file sizes at most ``capacity`` bytes, and
    leaves ``reserve_fraction`` of the filesystem free for everyone else.

    Setting up the directory raises (a misconfiguration should be loud);
    ``get`` and ``put`` never raise for disk faults.
    """

    def __init__(
        self,
        directory: Path,
        capacity: int,
        reserve_fraction: float = 0.10,
        *,
        retry_after: float = 30.0,
        max_failures: int = 3,
    ) -> None:
        self.directory = Path(directory)
        self._capacity = capacity
        self._reserve = reserve_fraction
        self._retry_after = retry_after
        self._max_failures = max_failures
        self._lock = threading.Lock()
        self._index: OrderedDict[str, int] = OrderedDict()  # block id -> file size, LRU first
        self._used = 0
        self._hits = self._misses = self._bytes_served = 0
        self._evictions = self._checksum_failures = 0
        self._state, self._failures, self._warned, self._retry_at = NORMAL, 0, False, 0.0
        self._closed = False

        self._blocks = str(self.directory / "blocks")
        self._make_dirs()
        # Two tiers on one directory would delete each other's .tmp files and
        # count each other's blocks: refuse the second one.
        self._lock_fd = os.open(self.directory / "lock", os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise ConfigError(f"disk cache {self.directory} is already in use") from None
        try:
            self._scan()
        except OSError as exc:
            self._fault(exc)

    @property
    def used_bytes(self) -> int:
        return self._used

    @property
    def state(self) -> str:
        """``normal``, ``degraded`` (failing, still tried) or ``off`` (bypassed)."""
        return self._state

    def _make_dirs(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)  # blocks of private objects: owner only
        os.makedirs(self._blocks, mode=0o700, exist_ok=True)

    def _scan(self) -> None:
        """Rebuild the index from the files, oldest mtime first."""
        found = scan_blocks(self._blocks)
        with self._lock:
            for _, block_id, size in found:
                self._index[block_id] = size
                self._used += size
            self._evict_locked(self._capacity)

    def contains(self, ref: BlockRef) -> bool:
        with self._lock:
            return self._state != OFF and ref.block_id in self._index

    def get(self, ref: BlockRef) -> bytes | None:
        """The block's bytes, or None on a miss, a bad file or a failing disk."""
        block_id = ref.block_id
        data = self._load(ref, block_id)
        with self._lock:
            if data is None:
                self._misses += 1
            else:
                self._hits += 1
                self._bytes_served += len(data)
                if block_id in self._index:
                    self._index.move_to_end(block_id)
        return data

    def _load(self, ref: BlockRef, block_id: str) -> bytes | None:
        with self._lock:
            if block_id not in self._index:
                return None
        if not self._usable():  # after the index check: a miss must not use up a probe
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
                self._fault(err)
            return None
        except OSError as exc:
            self._fault(exc)
            return None
        self._ok()
        return data

    def _read(self, path: str, ref: BlockRef) -> bytes:
        """Read header and data with one open and no copy of the data."""
        hlen = header_length(ref)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if st.st_size != hlen + ref.length:
                raise CorruptBlock("block file has the wrong size")
            crc = check_header(read_exact(fd, hlen), ref)
            data = read_exact(fd, ref.length)
            if len(data) != ref.length or zlib.crc32(data) != crc:
                raise CorruptBlock("block data checksum mismatch")
            if time.time_ns() - st.st_mtime_ns > _TOUCH_NS:
                with suppress(OSError):  # best effort: only the restart order suffers
                    os.utime(fd)
            return data
        finally:
            os.close(fd)

    def _forget(self, block_id: str, bad_file: str | None) -> None:
        with self._lock:
            size = self._index.pop(block_id, None)
            if size is not None:
                self._used -= size
            if bad_file is not None:
                self._checksum_failures += 1
                with suppress(FileNotFoundError):
                    os.unlink(bad_file)

    def put(self, ref: BlockRef, data: bytes) -> None:
        """Store a block; skipped when it cannot fit or the disk is failing."""
        if len(data) != ref.length:
            raise ValueError(f"block {ref.block_id} is {ref.length} bytes, got {len(data)}")
        block_id = ref.block_id
        size = header_length(ref) + len(data)
        if size > self._capacity:
            return
        with self._lock:
            if block_id in self._index:  # a block id always names the same bytes
                return
        if not self._usable():
            return
        try:
            if self._make_room_on_fs(size):
                self._write(block_id, size, encode_header(ref, data), data)
        except OSError as exc:
            self._fault(exc)
        else:
            self._ok()

    def _make_room_on_fs(self, size: int) -> bool:
        """Keep the reserve free, evicting our own oldest files if that is enough."""
        try:
            st = os.statvfs(self._blocks)
        except FileNotFoundError:  # someone removed our directory: start it again
            self._make_dirs()
            st = os.statvfs(self._blocks)
        floor = int(self._reserve * st.f_blocks * st.f_frsize)
        short = floor + size - st.f_bavail * st.f_frsize
        if short <= 0:
            return True
        with self._lock:
            if short > self._used:
                return False
            self._evict_locked(self._used - short)
        return True

    def _write(self, block_id: str, size: int, header: bytes, data: bytes) -> None:
        path = block_path(self._blocks, block_id)
        tmp = f"{path}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(tmp, flags, 0o600)
        try:
            try:
                write_all(fd, header)
                write_all(fd, data)
            finally:
                os.close(fd)
            with self._lock:  # rename and account together, so eviction sees both
                os.replace(tmp, path)
                old = self._index.pop(block_id, None)
                self._used += size - (old or 0)
                self._index[block_id] = size
                self._evict_locked(self._capacity)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise

    def _evict_locked(self, limit: int) -> None:
        while self._used > limit and self._index:
            block_id, size = self._index.popitem(last=False)
            self._used -= size
            self._evictions += 1
            with suppress(FileNotFoundError):
                os.unlink(block_path(self._blocks, block_id))

    def _usable(self) -> bool:
        """False while closed or off; once per back-off period, let one call probe."""
        with self._lock:
            if self._closed:
                return False
            if self._state != OFF:
                return True
            now = time.monotonic()
            if now < self._retry_at:
                return False
            self._retry_at = now + self._retry_after
            return True

    def _fault(self, exc: OSError) -> None:
        with self._lock:
            self._failures += 1
            first, self._warned = not self._warned, True
            turned_off = self._failures >= self._max_failures and self._state != OFF
            if self._failures >= self._max_failures:
                self._state = OFF
                self._retry_at = time.monotonic() + self._retry_after
            else:
                self._state = DEGRADED
        if first:
            log.warning("disk cache %s is failing, bypassing it: %s", self.directory, exc)
        if turned_off:
            log.info("disk cache %s off; retrying in %.0f s", self.directory, self._retry_after)

    def _ok(self) -> None:
        if self._state == NORMAL:  # unlocked fast path; a stale read only delays recovery
            return
        with self._lock:
            recovered = self._state != NORMAL
            self._state, self._failures, self._warned = NORMAL, 0, False
        if recovered:
            log.info("disk cache %s works again", self.directory)

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
                blocks=len(self._index),
            )

    def close(self) -> None:
        """Stop serving and release the directory; the files stay for the next start."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        os.close(self._lock_fd)
