"""Placement numbers of the ring: 10 equal nodes, 100,000 block ids; the
share of blocks that move when an 11th node joins or one of the ten leaves,
and the load spread (blocks owned / fair share, min and max over nodes).

    python bench/placement.py [--nodes 10] [--blocks 100000]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcfs.ring import Node, Ring, assign, load_spread, moved_fraction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=100_000)
    args = parser.parse_args()
    n = args.nodes
    nodes = [Node(f"node{i}", f"127.0.0.1:{7000 + i}", 100) for i in range(n + 1)]
    blocks = [f"block{i}" for i in range(args.blocks)]
    ring = Ring(nodes[:n])
    base = assign(ring, blocks)
    joined = moved_fraction(base, assign(Ring(nodes), blocks))
    left = moved_fraction(base, assign(Ring(nodes[: n - 1]), blocks))
    low, high = load_spread(ring, base)
    print(f"{n} nodes, {args.blocks} blocks")
    print(f"node joins: {joined:.4f} of blocks moved (ideal 1/{n + 1} = {1 / (n + 1):.4f})")
    print(f"node leaves: {left:.4f} of blocks moved (ideal 1/{n} = {1 / n:.4f})")
    print(f"load spread: min {low:.3f}, max {high:.3f} of a fair share")


if __name__ == "__main__":
    main()
