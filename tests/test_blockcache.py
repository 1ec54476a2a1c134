"""The two-tier block cache, on real files in tmp_path (and a tiny tmpfs when
this machine lets us mount one)."""

import contextlib
import logging
import os
import random
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from blockrefs import (
    BS,
    Fetcher,
    block_files,
    cache_with_blocks,
    dir_bytes,
    file_size,
    payload,
    ref,
)
from smallfs import tmpfs

from dcfs.blockcache import BlockCache, DiskTier, MemoryTier, directio
from dcfs.blockcache.policy import LruPolicy
from dcfs.blocks import BlockRef, ObjectVersion
from dcfs.checksum import BlockChecksums, crc32c
from dcfs.errors import ConfigError, CorruptBlock


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[DiskTier]:
    tier = DiskTier(tmp_path / "cache", capacity=1 << 30, reserve_fraction=0.0)
    yield tier
    tier.close()


# -- memory tier ---------------------------------------------------------------


def test_memory_bound_never_exceeded() -> None:
    mem = MemoryTier(10 * BS)
    rng = random.Random(1)
    for i in range(2000):
        r = ref(i % 300, size=300 * BS - rng.randrange(BS))  # some short last blocks
        mem.put(r, payload(r))
        assert mem.used_bytes <= 10 * BS
    st = mem.stats()
    assert st.used_bytes == mem.used_bytes <= st.capacity_bytes
    assert st.evictions > 0 and st.blocks <= 10


def test_memory_policy_seam_and_oversized_block() -> None:
    mem = MemoryTier(3 * BS, LruPolicy())
    a, b, c, d = (ref(i) for i in range(4))
    for r in (a, b, c):
        mem.put(r, payload(r))
    assert mem.get(a) == payload(a)  # a is now the most recent: b goes first
    mem.put(d, payload(d))
    assert mem.get(b) is None
    assert all(mem.get(r) is not None for r in (a, c, d))
    big = BlockRef(ObjectVersion("big", "e", 8 * BS), 0, 8 * BS)
    mem.put(big, payload(big))
    assert mem.get(big) is None and mem.stats().blocks == 3


def test_memory_stores_bytes_without_copy() -> None:
    mem = MemoryTier(4 * BS)
    data = payload(ref(0))
    mem.put(ref(0), data)
    assert mem.get(ref(0)) is data
    assert mem.get(ref(0), served=100) is data  # a reader taking part of the block
    st = mem.stats()
    assert (st.hits, st.misses, st.bytes_served) == (2, 0, BS + 100)


# -- disk tier -----------------------------------------------------------------


def test_disk_round_trip_and_layout(disk: DiskTier) -> None:
    r = ref(3, size=3 * BS + 100)  # the short last block
    disk.put(r, payload(r))
    assert disk.get(r) == payload(r)
    assert disk.get(ref(1)) is None
    [path] = block_files(disk.directory)
    assert path == disk.directory / "blocks" / r.block_id[:2] / f"{r.block_id}.blk"
    assert path.read_bytes()[:8] == b"DCFSBLK1"
    assert disk.used_bytes == path.stat().st_blocks * 512 == file_size(r)
    assert disk.contains(r) and not disk.contains(ref(1))
    assert disk.get(r, served=10) == payload(r)
    st = disk.stats()
    assert (st.name, st.hits, st.misses, st.bytes_served, st.blocks) == ("disk", 2, 1, 110, 1)


def test_disk_bound_respected(tmp_path: Path) -> None:
    capacity = 5 * file_size(ref(0)) + 10
    tier = DiskTier(tmp_path / "c", capacity)
    for i in range(40):
        tier.put(ref(i), payload(ref(i)))
        assert dir_bytes(tmp_path / "c") <= capacity
    assert tier.used_bytes == dir_bytes(tmp_path / "c")
    assert tier.stats().evictions == 35
    assert [tier.get(ref(i)) is not None for i in range(34, 40)] == [False] + [True] * 5
    tier.close()


def test_restart_serves_without_fetching(tmp_path: Path) -> None:
    fetch = Fetcher()
    cache = BlockCache(MemoryTier(64 * BS), DiskTier(tmp_path / "c", 1 << 20))
    for i in range(20):
        assert cache.get(ref(i), fetch) == (payload(ref(i)), "fetch")
    cache.close()  # finishes the queued disk writes
    cache = BlockCache(MemoryTier(64 * BS), DiskTier(tmp_path / "c", 1 << 20))
    for i in range(20):
        assert cache.get(ref(i), fetch) == (payload(ref(i)), "disk")
        assert cache.get(ref(i), fetch) == (payload(ref(i)), "memory")
    assert fetch.total == 20
    cache.close()


def test_empty_drops_both_tiers_and_survives_a_restart(tmp_path: Path) -> None:
    fetch = Fetcher()
    cache = BlockCache(MemoryTier(64 * BS), DiskTier(tmp_path / "c", 1 << 20))
    for i in range(10):
        cache.get(ref(i), fetch)
    # Memory's 10 blocks, and the files of those the writer got to: the
    # writes still waiting are forgotten, none lands after.
    assert cache.empty() >= 10 * BS
    assert not any(cache.contains(ref(i)) for i in range(10))
    assert [(t.used_bytes, t.blocks, t.evictions) for t in cache.stats()] == [(0, 0, 0)] * 2
    assert block_files(tmp_path / "c") == []
    assert cache.get(ref(3), fetch) == (payload(ref(3)), "fetch")  # fetched anew, cached again
    assert cache.get(ref(3), fetch)[1] == "memory"
    cache.close()
    cache = BlockCache(MemoryTier(64 * BS), DiskTier(tmp_path / "c", 1 << 20))
    assert [cache.get(ref(i), fetch)[1] for i in (3, 4)] == ["disk", "fetch"]
    assert fetch.total == 12
    cache.close()


@pytest.mark.parametrize("index_damage", ["missing", "corrupt"])
def test_restart_without_index_evicts_oldest_mtime_first(tmp_path: Path, index_damage: str) -> None:
    tier = DiskTier(tmp_path / "c", 1 << 20)
    for i in range(6):
        tier.put(ref(i), payload(ref(i)))
    tier.close()
    index = tmp_path / "c" / "index"
    if index_damage == "missing":
        index.unlink()
    else:
        raw = bytearray(index.read_bytes())
        raw[20] ^= 1
        index.write_bytes(raw)
    now = time.time_ns()
    for i in range(6):  # block 0 newest, block 5 oldest
        path = tmp_path / "c" / "blocks" / ref(i).block_id[:2] / f"{ref(i).block_id}.blk"
        os.utime(path, ns=(now, now - i * 10**9))
    tier = DiskTier(tmp_path / "c", 3 * file_size(ref(0)))
    assert [tier.contains(ref(i)) for i in range(6)] == [True] * 3 + [False] * 3
    assert tier.used_bytes == dir_bytes(tmp_path / "c")
    tier.close()


def test_leftover_tmp_removed_and_mode_0700(tmp_path: Path) -> None:
    root = tmp_path / "c"
    sub = root / "blocks" / "ab"
    sub.mkdir(parents=True)
    root.chmod(0o755)
    (sub / ("ab" * 16 + ".blk.1234abcd.tmp")).write_bytes(b"half a block")
    (root / "index.5678abcd.tmp").write_bytes(b"half an index")
    tier = DiskTier(root, 1 << 20)
    assert list(sub.iterdir()) == [] and not (root / "index.5678abcd.tmp").exists()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    tier.close()
    fresh = DiskTier(tmp_path / "new" / "cache", 1 << 20)
    assert stat.S_IMODE((tmp_path / "new" / "cache").stat().st_mode) == 0o700
    fresh.close()


def test_second_tier_on_same_directory_refused(disk: DiskTier) -> None:
    with pytest.raises(ConfigError):
        DiskTier(disk.directory, 1 << 20)


@pytest.mark.parametrize("where", ["magic", "identity", "header_crc", "data", "last_byte"])
def test_flipped_byte_refetched(tmp_path: Path, where: str) -> None:
    fetch = Fetcher()
    cache = BlockCache(MemoryTier(64 * BS), DiskTier(tmp_path / "c", 1 << 20))
    refs = [ref(i) for i in range(8)]
    for r in refs:
        cache.get(r, fetch)
    cache.close()
    for path in block_files(tmp_path / "c"):
        raw = bytearray(path.read_bytes())
        hlen = len(raw) - BS
        pos = {"magic": 0, "identity": 30, "header_crc": hlen - 1, "data": hlen + 7}
        raw[pos.get(where, len(raw) - 1)] ^= 0x40
        path.write_bytes(raw)
    cache = BlockCache(MemoryTier(BS), DiskTier(tmp_path / "c", 1 << 20))
    for r in refs:
        assert cache.get(r, fetch) == (payload(r), "fetch")
    cache.flush()
    assert [s.checksum_failures for s in cache.stats()] == [0, 8]
    assert fetch.total == 16
    # Memory holds one block: the others come from the rewritten, good files.
    assert all(cache.get(r, fetch) == (payload(r), "disk") for r in refs[:-1])
    cache.close()


def test_identity_and_size_mismatch_rejected(disk: DiskTier) -> None:
    a, b, c = ref(0), ref(1), ref(2, etag="e2")
    for r in (a, b, c):
        disk.put(r, payload(r))
    files = {r: disk.directory / "blocks" / r.block_id[:2] / f"{r.block_id}.blk" for r in (a, b, c)}
    shutil.copyfile(files[a], files[b])  # a's file under b's name
    shutil.copyfile(files[a], files[c])  # same key and index, other etag
    assert disk.get(b) is None and disk.get(c) is None
    with open(files[a], "r+b") as f:  # truncated
        f.truncate(100)
    assert disk.get(a) is None
    assert disk.stats().checksum_failures == 3
    assert block_files(disk.directory) == [] and disk.used_bytes == 0


# -- BlockCache ----------------------------------------------------------------


def test_sources_and_contains(tmp_path: Path) -> None:
    fetch = Fetcher()
    # LRU in memory, so that two new blocks surely push block 0 out.
    cache = BlockCache(MemoryTier(2 * BS, LruPolicy()), DiskTier(tmp_path / "c", 1 << 20))
    assert not cache.contains(ref(0))
    assert cache.get(ref(0), fetch) == (payload(ref(0)), "fetch")
    assert cache.get(ref(0), fetch)[1] == "memory"
    cache.flush()
    for i in (1, 2):
        cache.get(ref(i), fetch)  # pushes block 0 out of memory
    assert cache.contains(ref(0))
    assert cache.get(ref(0), fetch)[1] == "disk"
    assert cache.get(ref(0), fetch)[1] == "memory"  # promoted
    assert fetch.total == 3
    cache.close()


def test_a_known_checksum_is_summed_once_for_reply_and_disk(tmp_path: Path) -> None:
    """A cache node sums each block once: its replies and its disk headers
    share :class:`BlockChecksums`, and the header holds that sum."""
    sums = BlockChecksums()
    summed: list[str] = []

    def checksum(r: BlockRef, data: bytes) -> int:
        summed.append(r.block_id)
        return sums.of(r, data)

    cache = BlockCache(MemoryTier(BS), DiskTier(tmp_path / "c", 1 << 20), checksum=checksum)
    data, _ = cache.get(ref(0), Fetcher())
    assert sums.of(ref(0), data) == crc32c(data)  # the reply's sum, first
    cache.flush()
    assert summed == [ref(0).block_id]
    assert sums.of(ref(0), b"other bytes") == crc32c(data)  # remembered, not summed again
    cache.get(ref(1), Fetcher())  # pushes block 0 out of memory
    assert cache.get(ref(0), Fetcher()) == (payload(ref(0)), "disk")  # the header checks out
    cache.close()


def test_singleflight_one_fetch_for_concurrent_readers(tmp_path: Path) -> None:
    fetch = Fetcher(delay=0.2)
    cache = BlockCache(MemoryTier(64 * BS), DiskTier(tmp_path / "c", 1 << 20))
    barrier = threading.Barrier(8)
    results: list[tuple[bytes, str]] = []

    def reader() -> None:
        barrier.wait()
        results.append(cache.get(ref(5), fetch))

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fetch.total == 1
    assert len(results) == 8 and all(data is results[0][0] for data, _ in results)
    assert results[0][0] == payload(ref(5))
    cache.close()


def test_fetch_error_propagates_to_all_and_is_not_cached(tmp_path: Path) -> None:
    cache = BlockCache(MemoryTier(64 * BS), DiskTier(tmp_path / "c", 1 << 20))
    calls = 0
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def failing(r: BlockRef) -> bytes:
        nonlocal calls
        calls += 1
        time.sleep(0.2)
        raise OSError("bucket unreachable")

    def reader() -> None:
        barrier.wait()
        try:
            cache.get(ref(1), failing)
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == 1 and len(errors) == 4
    cache.flush()
    assert not cache.contains(ref(1))
    assert cache.get(ref(1), Fetcher()) == (payload(ref(1)), "fetch")
    cache.close()


def test_wrong_length_fetch_is_corrupt_and_not_cached(tmp_path: Path) -> None:
    cache = BlockCache(MemoryTier(64 * BS), DiskTier(tmp_path / "c", 1 << 20))
    with pytest.raises(CorruptBlock):
        cache.get(ref(2), lambda r: payload(r)[:-1])
    with pytest.raises(CorruptBlock):
        cache.get(ref(2), lambda r: payload(r) + b"x")
    cache.flush()
    assert not cache.contains(ref(2)) and block_files(tmp_path / "c") == []
    cache.close()


class StuckDisk(DiskTier):
    """Its writes wait until released (at most 10 s, then it says so)."""

    release = threading.Event()
    waited_out = False

    def put(self, ref: BlockRef, data: bytes, crc: int | None = None) -> None:
        if not self.release.wait(10):
            StuckDisk.waited_out = True
        super().put(ref, data, crc)


def test_blocks_waiting_outside_memory_are_bounded(tmp_path: Path) -> None:
    """Blocks evicted from memory before their disk write wait for it, at
    most ``max_evicted_writes`` of them; the others' writes are dropped."""
    disk = StuckDisk(tmp_path / "c", 1 << 20)
    cache = BlockCache(MemoryTier(2 * BS), disk, max_evicted_writes=2)
    for i in range(50):  # would wait 10 s per write if reads waited for the disk
        cache.get(ref(i), Fetcher())
    assert not StuckDisk.waited_out  # every read returned while the disk was stuck
    StuckDisk.release.set()
    cache.flush()
    assert cache.dropped_writes > 0
    assert len(block_files(tmp_path / "c")) == 50 - cache.dropped_writes
    cache.close()


class HeldDisk(DiskTier):
    """Its writes wait until released (at most 10 s)."""

    release = threading.Event()

    def put(self, ref: BlockRef, data: bytes, crc: int | None = None) -> None:
        self.release.wait(10)
        super().put(ref, data, crc)


def test_a_block_waiting_for_its_disk_write_is_not_fetched_again(tmp_path: Path) -> None:
    """Evicted from memory before the writer got to it: served from the
    writer, where it still is, not fetched a second time."""
    fetch = Fetcher()
    cache = BlockCache(MemoryTier(2 * BS), HeldDisk(tmp_path / "c", 1 << 20))
    for i in range(6):
        cache.get(ref(i), fetch)
    assert cache.memory.used_bytes <= 2 * BS and cache.contains(ref(0))
    for i in range(6):
        assert cache.get(ref(i), fetch)[0] == payload(ref(i))
    assert fetch.total == 6
    HeldDisk.release.set()
    cache.flush()
    assert len(block_files(tmp_path / "c")) == 6
    cache.close()


def test_concurrent_mixed_load_keeps_bounds(tmp_path: Path) -> None:
    capacity = 12 * file_size(ref(0))
    cache = BlockCache(MemoryTier(8 * BS), DiskTier(tmp_path / "c", capacity))
    fetch = Fetcher()
    failures: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(300):
                r = ref(rng.randrange(40))
                assert cache.get(r, fetch)[0] == payload(r)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cache.flush()
    assert failures == []
    mem, dsk = cache.stats()
    assert mem.used_bytes <= 8 * BS
    assert dsk.used_bytes == dir_bytes(tmp_path / "c") <= capacity
    cache.close()


# -- disk faults ---------------------------------------------------------------


def disk_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "dcfs.disk" and r.levelno >= logging.WARNING]


def test_write_faults_never_reach_readers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    disk = DiskTier(tmp_path / "c", 1 << 20, retry_after=0.2)
    cache = BlockCache(MemoryTier(64 * BS), disk)
    blocks = tmp_path / "c" / "blocks"
    blocks.rmdir()
    blocks.write_bytes(b"not a directory")  # every write now fails with ENOTDIR
    fetch = Fetcher()
    for i in range(20):
        assert cache.get(ref(i), fetch) == (payload(ref(i)), "fetch")
    cache.flush()
    assert len(disk_warnings(caplog)) == 1
    assert disk.state == "off" and disk.stats().blocks == 0
    blocks.unlink()  # the disk comes back; after the back-off one write probes it
    time.sleep(0.25)
    assert cache.get(ref(30), fetch)[1] == "fetch"
    cache.flush()
    assert disk.state == "normal" and disk.contains(ref(30))
    assert len(disk_warnings(caplog)) == 1
    cache.close()


def test_read_faults_fall_back_to_fetch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fetch = Fetcher()
    cache = cache_with_blocks(tmp_path / "c", 10, fetch)
    blocks = tmp_path / "c" / "blocks"
    blocks.rename(tmp_path / "c" / "moved")
    blocks.write_bytes(b"")
    for i in range(10):
        assert cache.get(ref(i), fetch) == (payload(ref(i)), "fetch")
    cache.flush()
    assert len(disk_warnings(caplog)) == 1
    assert cache.disk is not None and cache.disk.state == "off"
    cache.close()


def free_bytes(path: Path) -> tuple[int, int]:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def big(index: int) -> BlockRef:
    return BlockRef(ObjectVersion("big", "e", 1 << 30), index, 64 * 1024)


@pytest.mark.parametrize("node", [False, True], ids=["client", "node-direct"])
def test_reserve_kept_on_small_filesystem(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, node: bool
) -> None:
    with tmpfs(tmp_path / "fs") as fs:
        tier = DiskTier(fs / "c", capacity=1 << 30, reserve_fraction=0.25, bypass_page_cache=node)
        # tmpfs takes O_DIRECT since Linux 6.6: then the node's tier writes direct
        assert tier._direct == (node and directio.supported(str(fs / "c" / "blocks")))
        for i in range(40):  # 2.5 MiB into 2 MiB: our oldest blocks make room
            tier.put(big(i), payload(big(i)))
            free, total = free_bytes(fs)
            assert free >= total // 4 - 64 * 1024
        assert tier.get(big(39)) == payload(big(39)) and tier.get(big(0)) is None
        assert tier.state == "normal" and tier.stats().evictions > 0
        tier.close()
        shutil.rmtree(fs / "c")
        free, total = free_bytes(fs)
        (fs / "filler").write_bytes(b"\0" * (free - total // 4))
        tier = DiskTier(fs / "c", capacity=1 << 30, reserve_fraction=0.25, bypass_page_cache=node)
        caplog.set_level(logging.INFO, "dcfs.disk")
        for i in range(2):
            tier.put(big(i), payload(big(i)))  # would eat into the reserve: skipped
        assert tier.stats().blocks == 0 and block_files(fs / "c") == []
        told = [r.getMessage() for r in caplog.records if "must leave free" in r.getMessage()]
        assert len(told) == 1 and "--free-space-ratio 0.25" in told[0], told  # once, not per block
        (fs / "filler").unlink()
        tier.put(big(0), payload(big(0)))
        assert tier.stats().blocks == 1 and "room on its filesystem again" in caplog.text
        tier.close()


@pytest.mark.parametrize("node", [False, True], ids=["client", "node-direct"])
def test_enospc_and_read_only_fs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, node: bool
) -> None:
    fetch = Fetcher()
    with tmpfs(tmp_path / "fs", "size=2m,nr_inodes=64") as fs:
        disk = DiskTier(
            fs / "c", 1 << 30, reserve_fraction=0.0, retry_after=0.1, bypass_page_cache=node
        )
        cache = BlockCache(MemoryTier(BS), disk)
        for i in range(4):
            cache.get(ref(i), fetch)
        cache.flush()
        fillers = 0
        with contextlib.suppress(OSError):  # use up the inodes: bytes free, yet ENOSPC
            while True:
                (fs / f"filler{fillers}").touch()
                fillers += 1
        for i in range(4, 8):  # ENOSPC on every disk write
            assert cache.get(ref(i), fetch) == (payload(ref(i)), "fetch")
        cache.flush()
        assert len(disk_warnings(caplog)) == 1 and "No space" in caplog.text
        assert disk.state == "off"
        for n in range(fillers):
            (fs / f"filler{n}").unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        time.sleep(0.15)
        assert cache.get(ref(0), fetch) == (payload(ref(0)), "disk")  # reading still works
        assert disk.state == "normal"
        assert cache.get(ref(9), fetch)[1] == "fetch"  # EROFS on write: a new episode
        cache.flush()
        assert len(disk_warnings(caplog)) == 2 and "Read-only" in caplog.text
        assert fetch.total == 9
        cache.close()
