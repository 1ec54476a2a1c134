"""Routes a block to its owner cache node, then the next owner, then the
bucket itself, following the metadata service's member list.

Two kinds of dead node cost only a short pause:
- one that is gone (killed, host down) refuses or resets the connection at
  once, and the next owner is asked right away;
- one that accepts and never answers (stopped, swapping, wedged) is caught
  by hedging: after ``hedge_after_s`` without an answer the next owner is
  asked too (after the last owner, the bucket), the first good answer wins,
  and the slow node is skipped.

Either way the node is then skipped for ``down_s``, so it costs one pause,
not one per block; the metadata service drops it from the member list once
its heartbeats stop.
"""

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

import grpc

from dcfs import rpc, rpcerrors, wire
from dcfs.blocks import BlockRef
from dcfs.blockstream import BlockStreamClient
from dcfs.cluster import describe_rpc_error
from dcfs.errors import CorruptBlock, PeerError
from dcfs.objstore import ObjectStore
from dcfs.ring import Node, Ring
from protos import dcfs_pb2, dcfs_pb2_grpc

log = logging.getLogger("dcfs.client")
T = TypeVar("T")
# Block stream connections opened to a node before the first read: about
# the prefetcher's parallel fetches (fsclient.reader).
STREAMS_AHEAD = 8
STREAMS_AHEAD_WAIT_S = 5.0  # the longest a mount waits for them at start

# Starts one RPC on a node; parses its finished future (raises DcfsError).
Start = Callable[["NodeClient"], "grpc.Future[Any]"]
Parse = Callable[[Node, "grpc.Future[Any]"], T]


class Peers:
    """The cluster's cache nodes as this process sees them: the member list
    (followed in a thread), the ring over it, and the nodes marked down.
    Thread-safe; ``warm`` is all ``dcfs warmup`` needs."""

    def __init__(
        self,
        metadata: dcfs_pb2_grpc.MetadataStub,
        *,
        members_interval_s: float = 2.0,
        down_s: float = 10.0,
        owners_to_try: int = 2,
    ) -> None:
        self._metadata = metadata
        self._members_interval_s = members_interval_s
        self._down_s = down_s
        self._owners_to_try = owners_to_try
        self._lock = threading.Lock()
        self._ring = Ring([])
        self._epoch = -1
        self._clients: dict[str, NodeClient] = {}
        # Block-stream calls run here, so they are futures like gRPC's.
        self._stream_pool = ThreadPoolExecutor(32, thread_name_prefix="block-stream")
        self._down_until: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="members", daemon=True)
        self.hedged_requests = 0

    @property
    def ring(self) -> Ring:
        return self._ring

    def start(self) -> None:
        self.refresh()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._stream_pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for client in self._clients.values():
                client.close()
        if self.hedged_requests:
            log.info(
                "%d block requests were hedged to the next owner or the bucket",
                self.hedged_requests,
            )

    def refresh(self) -> None:
        """Reload the member list; keep the old one if the service is away."""
        try:
            reply = self._metadata.Members(dcfs_pb2.MembersRequest(), timeout=5)
        except grpc.RpcError as exc:
            log.debug("members refresh failed: %s", describe_rpc_error(exc))
            return
        if reply.epoch == self._epoch:
            return
        nodes = [Node(n.node_id, n.address, n.capacity, n.block_address) for n in reply.nodes]
        with self._lock:
            self._ring = Ring(nodes)
            self._epoch = reply.epoch
        log.info("cluster members: %s", ", ".join(n.address for n in nodes) or "none")
        self._members_changed(nodes)

    def _members_changed(self, nodes: list[Node]) -> None:
        """Called after each new member list."""

    def _follow(self) -> None:
        while not self._stop.wait(self._members_interval_s):
            self.refresh()

    def warm(self, ref: BlockRef, timeout_s: float) -> str:
        """Have the block's owner (or the next one) load it; the tier it was
        found in ("memory", "disk") or "bucket" when it was fetched.
        :class:`PeerError` when no node could."""
        request = dcfs_pb2.WarmBlockRequest(block=wire.block_to_proto(ref))
        source = self._ask_owners(
            ref,
            lambda node: node.stub.WarmBlock.future(request, timeout=timeout_s),
            lambda node, future: str(_result(node, future).source),
            None,
        )
        if source is None:
            raise PeerError(f"no cache node could load block {ref.index} of {ref.version.key!r}")
        return source

    def _ask_owners(
        self, ref: BlockRef, start: Start, parse: Parse[T], hedge_after_s: float | None
    ) -> T | None:
        """The first good answer of the block's live owners, in ring order.

        The next owner is asked when the previous one fails or (with
        ``hedge_after_s``) stays silent that long; once the last one has been
        silent that long too, None: the caller goes to the bucket, so a read
        waits at most one ``hedge_after_s`` per owner, whatever is marked
        down. A node that failed, or was outrun by a node after it, is marked
        down. Without ``hedge_after_s`` each node gets its whole deadline.
        """
        candidates = [
            n for n in self._ring.owners(ref.block_id, self._owners_to_try) if not self._is_down(n)
        ]
        done: queue.Queue[tuple[int, grpc.Future[Any]]] = queue.Queue()
        pending: dict[int, grpc.Future[Any]] = {}  # by rank in ``candidates``
        launched = 0

        def launch() -> None:
            nonlocal launched
            rank, launched = launched, launched + 1
            future = start(self._client(candidates[rank]))
            pending[rank] = future
            future.add_done_callback(lambda f: done.put((rank, f)))

        try:
            if candidates:
                launch()
            while pending:
                try:
                    rank, future = done.get(timeout=hedge_after_s)
                except queue.Empty:
                    with self._lock:
                        self.hedged_requests += 1
                    if launched == len(candidates):
                        return None  # all silent: the bucket is next
                    launch()
                    continue
                del pending[rank]
                node = candidates[rank]
                try:
                    answer = parse(node, future)
                except PeerError as exc:
                    self._mark_down(node, str(exc))
                    if launched < len(candidates):
                        launch()
                    continue
                for slow in [r for r in pending if r < rank]:
                    self._mark_down(candidates[slow], f"no answer in {hedge_after_s} s")
                return answer
            return None
        finally:
            for future in pending.values():
                future.cancel()

    @property
    def slot_replies(self) -> int:
        """Blocks that came from nodes through shared-memory slots."""
        with self._lock:
            return sum(client.slot_replies for client in self._clients.values())

    def _client(self, node: Node) -> "NodeClient":
        with self._lock:
            client = self._clients.get(node.address)
            if client is None or client.block_address != node.block_address:
                if client is not None:
                    client.close()  # a restarted node: its old connections and slots go
                client = self._clients[node.address] = NodeClient(node, self._stream_pool)
            return client

    def _is_down(self, node: Node) -> bool:
        with self._lock:
            return self._down_until.get(node.node_id, 0.0) > time.monotonic()

    def _mark_down(self, node: Node, why: str) -> None:
        now = time.monotonic()
        with self._lock:
            was_up = self._down_until.get(node.node_id, 0.0) <= now
            self._down_until[node.node_id] = now + self._down_s
        if was_up:
            log.warning("cache node %s skipped for %.0f s: %s", node.address, self._down_s, why)


class PeerRouter(Peers):
    """Fetches the blocks the client's own tiers lack: owner, next owner, bucket.

    ``peer_timeout_s`` is the deadline of one request to one node;
    ``hedge_after_s`` is how long the owner may stay silent before the next
    owner is asked as well (None: never hedge, only fail over on errors).
    """

    def __init__(
        self,
        metadata: dcfs_pb2_grpc.MetadataStub,
        store: ObjectStore,
        *,
        peer_timeout_s: float = 10.0,
        hedge_after_s: float | None = 1.0,
        members_interval_s: float = 2.0,
        down_s: float = 10.0,
        block_size: int = 0,
    ) -> None:
        super().__init__(metadata, members_interval_s=members_interval_s, down_s=down_s)
        self.store = store
        self._block_size = block_size
        self._prepared: set[tuple[str, str]] = set()  # (address, block address)
        self._preparing: list[Future[None]] = []
        self._peer_timeout_s = peer_timeout_s
        self._hedge_after_s = hedge_after_s
        self.peer_fetches = 0
        self.bucket_fetches = 0

    def _members_changed(self, nodes: list[Node]) -> None:
        """Open connections to each new node before the reads need them:
        STREAMS_AHEAD of them on a node that takes slots (on this machine),
        one otherwise. In the background: a node that is down costs no wait."""
        if self._block_size <= 0:
            return
        for node in nodes:
            key = (node.address, node.block_address)
            if node.block_address and key not in self._prepared:
                self._prepared.add(key)
                self._preparing.append(
                    self._stream_pool.submit(
                        self._client(node).prepare_stream,
                        self._block_size,
                        STREAMS_AHEAD,
                        self._peer_timeout_s,
                    )
                )

    def start(self, *, wait_for_streams: bool = False) -> None:
        """Follow the member list; with ``wait_for_streams``, return once the
        first nodes' connections are open (or STREAMS_AHEAD_WAIT_S passed), as
        a mount that pre-touches its memory wants: reads then pay for none."""
        super().start()
        if wait_for_streams:
            wait(self._preparing, timeout=min(self._peer_timeout_s, STREAMS_AHEAD_WAIT_S))
        self._preparing = []

    def fetch(self, ref: BlockRef) -> bytes:
        """The block's bytes from the first source that answers correctly.

        A changed or vanished object is final (every source would say so).
        """
        return self.fetch_part(ref, 0, ref.length)

    def fetch_part(self, ref: BlockRef, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` of the block, as :meth:`fetch`
        does for all of it; an owner that lacks the block fetches just those."""
        whole = offset == 0 and length == ref.length
        request = dcfs_pb2.ReadBlockRequest(
            block=wire.block_to_proto(ref),
            offset=0 if whole else offset,
            length=0 if whole else length,
        )
        data = self._ask_owners(
            ref,
            lambda node: node.read_block_future(request, self._peer_timeout_s),
            lambda node, future: _verified(node, ref, future, length),
            self._hedge_after_s,
        )
        if data is not None:
            with self._lock:
                self.peer_fetches += 1
            return data
        data = self.store.read_range(ref.version, ref.offset + offset, length)
        with self._lock:
            self.bucket_fetches += 1
        return data


class NodeClient:
    """The calls to one cache node.

    ReadBlock goes over the node's block stream when it has one (a plain TCP
    fast path, :mod:`dcfs.blockstream`), else over gRPC returning the raw
    reply, which :func:`dcfs.wire.decode_block_reply` slices without a copy.
    Either way the caller gets a future.
    """

    def __init__(self, node: Node, stream_pool: ThreadPoolExecutor) -> None:
        channel = rpc.channel(node.address)
        self.stub = dcfs_pb2_grpc.CacheNodeStub(channel)
        self.block_address = node.block_address
        self._stream = BlockStreamClient(node.block_address) if node.block_address else None
        self._stream_pool = stream_pool
        self._read_block: grpc.UnaryUnaryMultiCallable = channel.unary_unary(  # type: ignore[type-arg]
            "/dcfs.CacheNode/ReadBlock",
            request_serializer=dcfs_pb2.ReadBlockRequest.SerializeToString,
            response_deserializer=None,
        )

    def prepare_stream(self, block_size: int, count: int, timeout_s: float) -> None:
        """Open block stream connections ahead of the reads (see
        :meth:`BlockStreamClient.prepare`)."""
        if self._stream is not None:
            self._stream.prepare(block_size, count, timeout_s)

    @property
    def slot_replies(self) -> int:
        return self._stream.slot_replies if self._stream is not None else 0

    def close(self) -> None:
        """Close the idle block stream connections (calls in flight finish)."""
        if self._stream is not None:
            self._stream.close()

    def read_block_future(self, request: dcfs_pb2.ReadBlockRequest, timeout_s: float) -> Any:
        if self._stream is not None:
            return self._stream_pool.submit(self._stream.read_block, request, timeout_s)
        return self._read_block.future(request, timeout=timeout_s)


def _result(node: Node, future: Any) -> Any:
    """The reply of a finished call, or the domain error its status means."""
    try:
        return future.result()
    except grpc.RpcError as exc:
        raise rpcerrors.from_rpc_error(exc, node.address) from None


def _verified(node: Node, ref: BlockRef, future: Any, length: int) -> bytes:
    answer = _result(node, future)
    try:
        if isinstance(answer, tuple):  # the block stream: (block, crc32c, source)
            data, crc, _source = answer
        else:
            data, crc, _source = wire.decode_block_reply(answer)
        return wire.verify_block(ref, data, crc, length)
    except CorruptBlock as exc:
        raise PeerError(f"{node.address}: {exc}") from None
