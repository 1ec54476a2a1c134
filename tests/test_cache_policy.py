"""Eviction: S3-FIFO's behaviour (scan resistance, ghosts, prefetched blocks),
in both tiers, and its order surviving a restart of the disk tier."""

import time
from pathlib import Path

import pytest
from blockrefs import BS, Fetcher, cache_with_blocks, dir_bytes, file_size, payload, ref

from dcfs.blockcache import BlockCache, DiskTier, MemoryTier
from dcfs.blockcache.policy import GHOST, MAIN, SMALL, EvictionPolicy, LruPolicy, S3FifoPolicy


class Sim:
    """A cache of ``capacity`` units of a policy, as the tiers drive it."""

    def __init__(self, policy: EvictionPolicy, capacity: int) -> None:
        self.policy, self.capacity = policy, capacity
        self.resident: dict[str, int] = {}
        self.evicted: list[str] = []

    def put(self, keys: list[str], size: int = 1, referenced: bool = True) -> None:
        for key in keys:
            if key in self.resident:
                if referenced:
                    self.policy.touch(key)
                continue
            while sum(self.resident.values()) + size > self.capacity:
                victim = self.policy.evict()
                del self.resident[victim]
                self.evicted.append(victim)
            self.policy.insert(key, size, referenced)
            self.resident[key] = size

    def queues(self) -> dict[str, int]:
        return {key: queue for key, queue, _ in self.policy.dump()}


def scan(n: int, prefix: str = "scan") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


@pytest.mark.parametrize("policy_type", [S3FifoPolicy, LruPolicy])
def test_a_scan_flushes_the_hot_set_only_under_lru(policy_type: type) -> None:
    sim = Sim(policy_type(), 100)
    hot = scan(20, "hot")
    sim.put(hot)
    sim.put(hot)  # read again: hot
    sim.put(scan(1000))
    survivors = [key for key in hot if key in sim.resident]
    assert survivors == (hot if policy_type is S3FifoPolicy else [])


def test_one_hit_blocks_leave_through_the_ghost_and_return_to_main() -> None:
    sim = Sim(S3FifoPolicy(), 10)
    sim.put(scan(30))
    assert sim.evicted == scan(20)  # plain FIFO for blocks read once
    assert sim.queues()["scan19"] == GHOST and sim.queues()["scan29"] == SMALL
    sim.put(["scan19"])  # wanted again soon after it left: straight to main
    assert sim.queues()["scan19"] == MAIN


def test_main_gives_touched_blocks_another_round() -> None:
    policy = S3FifoPolicy()
    for key in "abcde":
        policy.load(key, 1, MAIN, 0)
    policy.touch("c")
    assert [policy.evict() for _ in range(5)] == ["a", "b", "d", "e", "c"]


def test_prefetched_block_waits_for_its_reader() -> None:
    policy = S3FifoPolicy()
    for i in range(10):
        policy.insert(f"ahead{i}", 1, referenced=False)
    for key in scan(5):
        policy.insert(key, 1)
    # The cache is full of blocks fetched ahead: they move to main unread
    # rather than be dropped just before their reader arrives ...
    assert [policy.evict() for _ in range(4)] == scan(4)
    assert {key for key, queue, _ in policy.dump() if queue == MAIN} == {
        f"ahead{i}" for i in range(10)
    }
    # ... where one read does not earn them a second round, two do.
    policy.remove("scan4")
    policy.touch("ahead0")
    policy.touch("ahead1")
    policy.touch("ahead1")
    assert [policy.evict() for _ in range(2)] == ["ahead0", "ahead2"]


def test_queue_shares_are_bytes_not_blocks() -> None:
    policy = S3FifoPolicy()
    policy.load("m", 80, MAIN, 0)
    policy.insert("s1", 15)
    policy.insert("s2", 5)
    assert policy.evict() == "s1"  # S holds 20% of the bytes: too much
    assert policy.evict() == "m"  # now 5 of 85 bytes: S may keep its one block
    policy.insert("gone", 1)
    policy.remove("gone")
    policy.remove("absent")
    assert policy.evict() == "s2"


def test_dump_and_load_keep_the_order() -> None:
    sim = Sim(S3FifoPolicy(), 10)
    sim.put(scan(10))
    sim.put(scan(5))
    sim.put(scan(12, "x"))
    copy = S3FifoPolicy()
    for key, queue, freq in sim.policy.dump():
        copy.load(key, 1, queue, freq)
    assert copy.dump() == sim.policy.dump()
    assert [copy.evict() for _ in range(8)] == [sim.policy.evict() for _ in range(8)]


# -- in the tiers ----------------------------------------------------------------


@pytest.mark.parametrize("policy_type", [S3FifoPolicy, LruPolicy])
def test_memory_hot_set_survives_a_prefetched_scan(policy_type: type) -> None:
    mem = MemoryTier(20 * BS, policy_type())
    hot = [ref(i, key="hot") for i in range(5)]
    for r in hot:
        mem.put(r, payload(r))
        assert mem.get(r) is not None
    for i in range(200):  # each block fetched ahead, then read through once
        r = ref(i % 64, key=f"scan{i // 64}")
        mem.put(r, payload(r), referenced=False)
        assert mem.get(r, served=BS // 4) is not None
        for _ in range(3):  # the same reader continuing inside the block
            assert mem.get(r, served=BS // 4, reference=False) is not None
    survivors = [r for r in hot if mem.contains(r)]
    assert survivors == (hot if policy_type is S3FifoPolicy else [])
    assert mem.used_bytes <= 20 * BS
    assert mem.stats().bytes_served == 5 * BS + 200 * BS


def test_disk_keeps_blocks_hot_in_memory_across_a_scan(tmp_path: Path) -> None:
    fetch = Fetcher()
    disk = DiskTier(tmp_path / "c", 20 * file_size(ref(0)))
    cache = BlockCache(MemoryTier(8 * BS), disk)
    hot = [ref(i, key="hot") for i in range(4)]
    for r in hot:
        cache.get(r, fetch)
    cache.flush()
    for _ in range(2):  # hits in memory only; the disk hears of them
        for r in hot:
            assert cache.get(r, fetch)[1] == "memory"
    for i in range(100):
        cache.get(ref(i % 64, key=f"scan{i // 64}"), fetch)
    cache.flush()
    assert all(disk.contains(r) for r in hot)
    assert disk.stats().hits == 0 and disk.stats().evictions > 0
    cache.close()


def test_order_survives_a_restart(tmp_path: Path) -> None:
    capacity = 20 * file_size(ref(0))
    policy = S3FifoPolicy()
    disk = DiskTier(tmp_path / "c", capacity, policy=policy)
    hot = [ref(i, key="hot") for i in range(4)]
    for r in hot:
        disk.put(r, payload(r))
        disk.touch(r)
    for i in range(30):
        disk.put(ref(i, key="scan1"), payload(ref(i, key="scan1")))
    before = policy.dump()
    disk.close()
    assert {queue for _, queue, _ in before} == {SMALL, MAIN, GHOST}

    policy = S3FifoPolicy()
    disk = DiskTier(tmp_path / "c", capacity, policy=policy)
    assert policy.dump() == before
    for i in range(30):  # a second scan after the restart
        disk.put(ref(i, key="scan2"), payload(ref(i, key="scan2")))
    assert all(disk.contains(r) for r in hot)
    assert disk.stats().used_bytes <= capacity
    disk.close()


def test_index_is_a_hint_the_files_are_the_truth(tmp_path: Path) -> None:
    fetch = Fetcher()
    cache_with_blocks(tmp_path / "c", 6, fetch).close()
    index = tmp_path / "c" / "index"
    stale = index.read_bytes()  # knows blocks 0-5
    gone = tmp_path / "c" / "blocks" / ref(0).block_id[:2] / f"{ref(0).block_id}.blk"
    gone.unlink()  # removed behind the index's back
    disk = DiskTier(tmp_path / "c", 1 << 20)
    disk.put(ref(6), payload(ref(6)))
    disk.close()
    index.write_bytes(stale)  # as if the process had died before saving again
    disk = DiskTier(tmp_path / "c", 1 << 20)
    assert [disk.contains(ref(i)) for i in range(7)] == [False] + [True] * 6
    assert disk.used_bytes == 6 * file_size(ref(0))
    cache = BlockCache(MemoryTier(BS), disk)
    assert [cache.get(ref(i), fetch)[1] for i in range(7)] == ["fetch"] + ["disk"] * 6
    cache.close()


def test_index_saved_when_due_by_the_writer(tmp_path: Path) -> None:
    disk = DiskTier(tmp_path / "c", 1 << 20, index_interval_s=0.01)
    cache = BlockCache(MemoryTier(BS), disk)
    index = tmp_path / "c" / "index"
    cache.get(ref(0), Fetcher())
    cache.flush()
    for _ in range(100):  # the writer checks once a second: bounded wait
        if index.exists():
            break
        time.sleep(0.05)
    assert index.exists() and index.stat().st_size > 0
    cache.close()


def test_stale_index_never_hides_a_file(tmp_path: Path) -> None:
    capacity = 3 * file_size(ref(0))
    policy = S3FifoPolicy()
    disk = DiskTier(tmp_path / "c", capacity, policy=policy)
    for i in range(6):
        disk.put(ref(i), payload(ref(i)))
    assert (ref(2).block_id, GHOST, 0) in policy.dump()
    disk.close()
    index = tmp_path / "c" / "index"
    stale = index.read_bytes()  # block 2 is a ghost there
    disk = DiskTier(tmp_path / "c", capacity)
    disk.put(ref(2), payload(ref(2)))  # its file is back
    disk.close()
    index.write_bytes(stale)
    disk = DiskTier(tmp_path / "c", capacity)
    assert disk.contains(ref(2))
    assert disk.used_bytes == dir_bytes(tmp_path / "c") <= capacity
    disk.close()
