"""Prefetch memory stays within its budget: a sequential reader over a fake
peer never has more blocks in flight or cached than the budget allows, and
still gets the right bytes."""

import threading
import time

from dcfs.blockcache import BlockCache, MemoryTier
from dcfs.blocks import BlockRef, ObjectVersion
from fsclient.reader import BlockReader

MiB = 1024 * 1024


class SlowPeer:
    """Stands in for the router: a block's bytes are its index, repeated."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.fetched: list[int] = []

    def fetch(self, ref: BlockRef) -> bytes:
        with self.lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            self.fetched.append(ref.index)
        time.sleep(0.005)
        with self.lock:
            self.in_flight -= 1
        return bytes([ref.index % 256]) * ref.length


def test_prefetch_stays_within_its_budget() -> None:
    memory = MemoryTier(8 * MiB)
    peer = SlowPeer()
    reader = BlockReader(BlockCache(memory, None), peer, MiB, prefetch_budget=64 * MiB)  # type: ignore[arg-type]
    # The window is bounded by half the memory tier, not only by the flag.
    assert reader.max_prefetch_blocks == 4
    version = ObjectVersion("k", "e", 40 * MiB + 1000)
    window = reader.new_window()
    peak_memory = 0
    try:
        for offset in range(0, version.size, 128 * 1024):
            data = bytes(reader.read(version, offset, 128 * 1024, window))
            expected_len = min(128 * 1024, version.size - offset)
            assert data == bytes([(offset // MiB) % 256]) * expected_len
            peak_memory = max(peak_memory, memory.used_bytes)
    finally:
        reader.close()
    assert peak_memory <= 8 * MiB
    # One block for the reader itself, the rest ahead of it.
    assert peer.peak_in_flight <= reader.max_prefetch_blocks + 1
    # Prefetch did work: blocks were fetched before their first read, and each once.
    assert sorted(peer.fetched) == list(range(41))
    assert window.blocks == reader.max_prefetch_blocks
