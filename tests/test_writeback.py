"""The disk writer: fetched blocks wait for the fetching to pause, and for
nothing when memory lets them go, when flushed or closed."""

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from blockrefs import BS, block_files, payload, ref
from clusters import wait_until

from dcfs.blockcache import BlockCache, DiskTier, MemoryTier
from dcfs.blockcache.writeback import WriteBack
from dcfs.blocks import BlockRef


class GatedDisk(DiskTier):
    """Its writes wait for ``gate`` (at most 10 s)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, 1 << 20)
        self.gate = threading.Event()
        self.gate.set()

    def put(self, ref: BlockRef, data: bytes, crc: int | None = None) -> None:
        self.gate.wait(10)
        super().put(ref, data, crc)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[GatedDisk]:
    tier = GatedDisk(tmp_path / "c")
    yield tier
    tier.gate.set()
    tier.close()


def written(disk: DiskTier) -> set[int]:
    return {i for i in range(16) if disk.contains(ref(i))}


def test_writes_wait_while_fetching_and_follow_a_pause(disk: GatedDisk) -> None:
    writer = WriteBack(disk, idle_s=0.2, max_wait_s=60)
    with writer.fetching():
        for i in range(4):
            writer.add(ref(i), payload(ref(i)))
        # Nothing is due while a fetch runs: no pause, no eviction, no flush.
        assert not wait_until(lambda: bool(written(disk)), 0.6)
        assert len(writer) == 4 and writer.get(ref(2).block_id) == payload(ref(2))
    assert wait_until(lambda: written(disk) == {0, 1, 2, 3}, 10)
    assert len(writer) == 0 and writer.get(ref(2).block_id) is None
    writer.close()


def test_an_evicted_block_is_written_at_once(disk: GatedDisk) -> None:
    writer = WriteBack(disk, idle_s=60, max_wait_s=60)
    with writer.fetching():
        for i in range(4):
            writer.add(ref(i), payload(ref(i)))
        writer.evicted([ref(2).block_id, ref(9).block_id])  # 9 never waited here
        assert wait_until(lambda: written(disk) == {2}, 10)
        assert len(writer) == 3
    writer.close()
    assert written(disk) == {0, 1, 2, 3}  # close writes what waits


def test_a_cache_never_idle_still_writes(disk: GatedDisk) -> None:
    writer = WriteBack(disk, idle_s=60, max_wait_s=0.3)
    with writer.fetching():
        writer.add(ref(0), payload(ref(0)))
        assert wait_until(lambda: written(disk) == {0}, 10)
    writer.close()


def test_flush_writes_now_and_discard_forgets(disk: GatedDisk) -> None:
    writer = WriteBack(disk, idle_s=60, max_wait_s=60)
    with writer.fetching():
        writer.add(ref(0), payload(ref(0)))
        writer.flush()
        assert written(disk) == {0}
        writer.add(ref(1), payload(ref(1)))
        writer.discard()
        assert len(writer) == 0
    writer.close()
    assert written(disk) == {0}


def test_close_drops_what_it_cannot_write_in_its_budget(
    disk: GatedDisk, caplog: pytest.LogCaptureFixture
) -> None:
    disk.gate.clear()
    writer = WriteBack(disk, idle_s=60, max_wait_s=60)
    for i in range(3):
        writer.add(ref(i), payload(ref(i)))
    threading.Timer(1.0, disk.gate.set).start()  # the first write ends after the budget
    writer.close(budget_s=0.3)
    assert writer.dropped == 2 and len(writer) == 0
    assert len(written(disk)) == 1
    assert "2 blocks not yet written" in caplog.text
    writer.add(ref(5), payload(ref(5)))  # after close: refused
    assert len(writer) == 0


def test_a_cold_pass_that_fits_in_memory_writes_after_it(tmp_path: Path) -> None:
    """Through the block cache: nothing reaches the disk while a fetch runs
    (here one held open by another reader), if the blocks fit in memory; all
    of them do once the fetching pauses, and then they outlive memory."""
    cache = BlockCache(MemoryTier(16 * BS), DiskTier(tmp_path / "c", 1 << 20))
    release = threading.Event()

    def held_fetch(r: BlockRef) -> bytes:
        release.wait(10)
        return payload(r)

    other = threading.Thread(target=cache.get, args=(ref(15), held_fetch))
    other.start()
    try:
        for i in range(8):
            assert cache.get(ref(i), payload) == (payload(ref(i)), "fetch")
        assert block_files(tmp_path / "c") == []
        assert cache.report()["waiting_disk_writes"] == 8
    finally:
        release.set()
        other.join()
    assert wait_until(lambda: len(block_files(tmp_path / "c")) == 9, 10)
    assert cache.report()["waiting_disk_writes"] == 0
    cache.memory.clear()
    assert all(cache.get(ref(i), payload)[1] == "disk" for i in range(8))
    cache.close()
