"""Placement of blocks on cache nodes: weighted rendezvous hashing.

Rendezvous (highest-random-weight) hashing gives every (block, node) pair a
pseudo-random score; a block's owners are the nodes in score order. When a
node joins or leaves, only the blocks it wins or held move (about 1/N), and
the order doubles as the failover list. Weights use the logarithmic method
(score = -w / ln(u)), so a node's share is proportional to its capacity.
"""

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Node:
    node_id: str
    address: str
    capacity: int


def _unit_hash(block_id: str, node_id: str) -> float:
    digest = hashlib.blake2b(f"{block_id}\0{node_id}".encode(), digest_size=8).digest()
    # Map to (0, 1): never exactly 0 or 1, so the logarithm is finite and negative.
    return (int.from_bytes(digest, "big") + 1) / (2**64 + 2)


class Ring:
    """An immutable placement over a set of nodes; build a new one on change."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.nodes = tuple(sorted(nodes, key=lambda n: n.node_id))
        total = sum(max(n.capacity, 1) for n in self.nodes) or 1
        self._weights = [max(n.capacity, 1) / total for n in self.nodes]

    def __len__(self) -> int:
        return len(self.nodes)

    def owners(self, block_id: str, count: int | None = None) -> list[Node]:
        """Nodes in preference order for ``block_id`` (first is the owner)."""
        scored = sorted(
            (
                (-weight / math.log(_unit_hash(block_id, node.node_id)), node.node_id, node)
                for weight, node in zip(self._weights, self.nodes, strict=True)
            ),
            reverse=True,
        )
        ranked = [node for _, _, node in scored]
        return ranked if count is None else ranked[:count]

    def owner(self, block_id: str) -> Node | None:
        best = self.owners(block_id, 1)
        return best[0] if best else None
