"""The registry of live cache nodes, which clients hash blocks onto.

A node is live while it heartbeats at least every ``timeout_s``; silent nodes
are dropped lazily, on the next call, so no timer thread is needed. The epoch
changes with every change of the member list, so clients re-read the list
(and rebuild their ring) only when it moved.

With a :class:`NamespaceStore` the list and epoch are persisted: a restarted
service lists the same nodes again, each with a fresh grace period to send
its next heartbeat, and epochs never repeat.
"""

import threading
import time
from collections.abc import Callable

from dcfs.errors import ConfigError
from metadata.model import Node
from metadata.store import NamespaceStore


class Membership:
    """Thread-safe. ``clock`` is injectable for tests (seconds, monotonic)."""

    def __init__(
        self,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        store: NamespaceStore | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise ConfigError(f"node timeout must be positive, not {timeout_s}")
        self.timeout_s = timeout_s
        self._clock = clock
        self._store = store
        self._lock = threading.Lock()
        self._nodes: dict[str, Node] = {}
        self._last_seen: dict[str, float] = {}
        self._epoch = 0
        if store is not None:
            nodes, epoch = store.load_members()
            now = clock()
            for node in nodes:
                self._nodes[node.node_id] = node
                self._last_seen[node.node_id] = now
            # A new process is a new epoch: clients re-read the list once.
            self._epoch = epoch + 1
            store.save_members(nodes, self._epoch)

    @property
    def heartbeat_interval_s(self) -> float:
        """What nodes are told: three heartbeats fit in one timeout."""
        return self.timeout_s / 3

    def join(self, node_id: str, address: str, capacity: int, block_address: str = "") -> None:
        """Add or update a node; joining again with the same data only refreshes it."""
        node = Node(node_id, address, capacity, block_address)
        with self._lock:
            now = self._clock()
            changed = self._expire(now)
            self._last_seen[node_id] = now
            if self._nodes.get(node_id) != node:
                self._nodes[node_id] = node
                changed = True
            if changed:
                self._changed()

    def heartbeat(self, node_id: str) -> bool:
        """Refresh a node; False when it is unknown (timed out or never joined)."""
        with self._lock:
            now = self._clock()
            if self._expire(now):
                self._changed()
            if node_id not in self._nodes:
                return False
            self._last_seen[node_id] = now
            return True

    def leave(self, node_id: str) -> None:
        """Remove a node; unknown nodes are ignored (leave is retried freely)."""
        with self._lock:
            changed = self._expire(self._clock())
            if self._nodes.pop(node_id, None) is not None:
                del self._last_seen[node_id]
                changed = True
            if changed:
                self._changed()

    def members(self) -> tuple[list[Node], int]:
        """Live nodes sorted by node id, and the epoch."""
        with self._lock:
            if self._expire(self._clock()):
                self._changed()
            return sorted(self._nodes.values(), key=lambda n: n.node_id), self._epoch

    def _expire(self, now: float) -> bool:
        dead = [nid for nid, seen in self._last_seen.items() if now - seen > self.timeout_s]
        for node_id in dead:
            del self._nodes[node_id]
            del self._last_seen[node_id]
        return bool(dead)

    def _changed(self) -> None:
        self._epoch += 1
        if self._store is not None:
            self._store.save_members(self._nodes.values(), self._epoch)
