"""Placement of blocks on cache nodes: weighted rendezvous hashing.

Rendezvous (highest-random-weight) hashing gives every (block, node) pair a
pseudo-random score; a block's owners are the nodes in score order. When a
node joins or leaves, only the blocks it wins or held move (about 1/N), and
the order doubles as the failover list. Weights use the logarithmic method
(score = -w / ln(u)), so a node's share is proportional to its capacity.
"""

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Node:
    node_id: str
    address: str
    capacity: int
    block_address: str = ""  # the node's block stream; "" means gRPC only


def _unit_hash(key: bytes) -> float:
    digest = hashlib.blake2b(key, digest_size=8).digest()
    # Map to (0, 1): never exactly 0 or 1, so the logarithm is finite and negative.
    return (int.from_bytes(digest, "big") + 1) / (2**64 + 2)


class Ring:
    """An immutable placement over a set of nodes; build a new one on change."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.nodes = tuple(sorted(nodes, key=lambda n: n.node_id))
        total = sum(max(n.capacity, 1) for n in self.nodes) or 1
        self._weights = [max(n.capacity, 1) / total for n in self.nodes]
        self._suffixes = [b"\0" + n.node_id.encode() for n in self.nodes]

    def __len__(self) -> int:
        return len(self.nodes)

    def _scores(self, block_id: str) -> list[tuple[float, str, Node]]:
        prefix = block_id.encode()
        return [
            (-weight / math.log(_unit_hash(prefix + suffix)), node.node_id, node)
            for weight, suffix, node in zip(self._weights, self._suffixes, self.nodes, strict=True)
        ]

    def owners(self, block_id: str, count: int | None = None) -> list[Node]:
        """Nodes in preference order for ``block_id`` (first is the owner)."""
        ranked = [node for _, _, node in sorted(self._scores(block_id), reverse=True)]
        return ranked if count is None else ranked[:count]

    def owner(self, block_id: str) -> Node | None:
        """``owners(block_id)[0]`` without sorting them all."""
        return max(self._scores(block_id))[2] if self.nodes else None


def assign(ring: Ring, block_ids: Iterable[str]) -> list[str]:
    """The owner's node id of each block ("" when the ring is empty)."""
    return [owner.node_id if (owner := ring.owner(b)) else "" for b in block_ids]


def moved_fraction(before: Sequence[str], after: Sequence[str]) -> float:
    """The share of blocks whose owner differs between two :func:`assign` results."""
    if not before:
        return 0.0
    return sum(a != b for a, b in zip(before, after, strict=True)) / len(before)


def load_spread(ring: Ring, owners: Sequence[str]) -> tuple[float, float]:
    """(min, max) over the ring's nodes of blocks owned / the share their
    capacity calls for, from an :func:`assign` result: 1.0 is a fair share."""
    counts = Counter(owners)
    total = sum(max(n.capacity, 1) for n in ring.nodes)
    ratios = [counts[n.node_id] / (len(owners) * max(n.capacity, 1) / total) for n in ring.nodes]
    return (min(ratios), max(ratios)) if ratios and owners else (0.0, 0.0)
