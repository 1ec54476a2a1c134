"""Hit ratios of S3-FIFO and plain LRU on a hot set plus a looping scan.

Drives the real memory tier (dcfs.blockcache.MemoryTier) with each policy.
Each access is, with probability ``--hot``, a read of a random block of a
hot set, else the next block of a scan that loops over a dataset larger
than the cache. Variant ``prefetched``: scan blocks are fetched ``--window``
blocks ahead of their reader (inserted unreferenced), as the FUSE client's
prefetcher does.

    /work/main/.venv/bin/python bench/eviction_sim.py
"""

import argparse
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcfs.blockcache import MemoryTier
from dcfs.blockcache.policy import EvictionPolicy, LruPolicy, S3FifoPolicy
from dcfs.blocks import BlockRef, ObjectVersion

BLOCK = 1024
DATA = bytes(BLOCK)  # every block shares these bytes: the tier stores references


@dataclass
class Result:
    hot_hits: int = 0
    hot_reads: int = 0
    scan_hits: int = 0
    scan_reads: int = 0
    fetches: int = 0

    @property
    def hit_ratio(self) -> float:
        return (self.hot_hits + self.scan_hits) / max(1, self.hot_reads + self.scan_reads)


def run(
    policy: EvictionPolicy,
    cache_blocks: int,
    hot_blocks: int,
    loop_blocks: int,
    hot_share: float,
    accesses: int,
    window: int,
    seed: int,
) -> Result:
    tier = MemoryTier(cache_blocks * BLOCK, policy)
    hot = ObjectVersion("hot", "e", max(1, hot_blocks) * BLOCK)
    data = ObjectVersion("dataset", "e", loop_blocks * BLOCK)
    rng = random.Random(seed)
    result = Result()
    position = 0

    def read(ref: BlockRef) -> bool:
        if tier.get(ref) is not None:
            return True
        result.fetches += 1
        tier.put(ref, DATA)
        return False

    for _ in range(accesses):
        if rng.random() < hot_share:
            result.hot_reads += 1
            result.hot_hits += read(BlockRef(hot, rng.randrange(hot_blocks), BLOCK))
            continue
        if window:
            ahead = BlockRef(data, (position + window) % loop_blocks, BLOCK)
            if not tier.contains(ahead):
                result.fetches += 1
                tier.put(ahead, DATA, referenced=False)
        result.scan_reads += 1
        result.scan_hits += read(BlockRef(data, position, BLOCK))
        position = (position + 1) % loop_blocks
    return result


POLICIES: dict[str, Callable[[], EvictionPolicy]] = {"LRU": LruPolicy, "S3-FIFO": S3FifoPolicy}
# (hot set in blocks, share of accesses to it, scan loop in blocks), for a 1,000-block cache
SCENARIOS = [(200, 0.50, 3000), (400, 0.25, 3000), (500, 0.30, 10_000), (0, 0.0, 1500)]
CACHE = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accesses", type=int, default=100_000, help="per run")
    parser.add_argument("--window", type=int, default=32, help="prefetch distance, in blocks")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"cache {CACHE} blocks, {args.accesses} accesses per run\n")
    print(f"{'hot set':>7} {'share':>5} {'loop':>6} {'variant':<10} {'policy':<7} "
          f"{'hit ratio':>9} {'hot hits':>8} {'fetches':>7}")  # fmt: skip
    for hot_blocks, share, loop in SCENARIOS:
        for variant, window in (("demand", 0), ("prefetched", args.window)):
            for name, make in POLICIES.items():
                r = run(make(), CACHE, hot_blocks, loop, share, args.accesses, window, args.seed)
                hot_hits = f"{r.hot_hits / r.hot_reads:.1%}" if r.hot_reads else "-"
                print(
                    f"{hot_blocks:>7} {share:>5.0%} {loop:>6} {variant:<10} {name:<7} "
                    f"{r.hit_ratio:>9.1%} {hot_hits:>8} {r.fetches:>7}"
                )


if __name__ == "__main__":
    main()
