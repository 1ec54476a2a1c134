"""Routes a block to its owner cache node, then the next owner, then the
bucket itself, following the metadata service's member list."""

import logging
import threading
import time

import grpc

from dcfs import rpc, rpcerrors, wire
from dcfs.blocks import BlockRef
from dcfs.cluster import describe_rpc_error
from dcfs.errors import CorruptBlock, ObjectChanged, ObjectNotFound, PeerError
from dcfs.objstore import ObjectStore
from dcfs.ring import Node, Ring
from protos import dcfs_pb2, dcfs_pb2_grpc

log = logging.getLogger("dcfs.client")


class PeerRouter:
    """Fetches blocks the client's own tiers lack.

    A node that fails is skipped for ``down_s`` seconds, so a dead node costs
    one deadline, not one per block.
    """

    def __init__(
        self,
        metadata: dcfs_pb2_grpc.MetadataStub,
        store: ObjectStore,
        *,
        peer_timeout_s: float = 10.0,
        members_interval_s: float = 2.0,
        down_s: float = 10.0,
        owners_to_try: int = 2,
    ) -> None:
        self._metadata = metadata
        self.store = store
        self._peer_timeout_s = peer_timeout_s
        self._members_interval_s = members_interval_s
        self._down_s = down_s
        self._owners_to_try = owners_to_try
        self._lock = threading.Lock()
        self._ring = Ring([])
        self._epoch = -1
        self._calls: dict[str, grpc.UnaryUnaryMultiCallable] = {}  # type: ignore[type-arg]
        self._down_until: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="members", daemon=True)
        self.peer_fetches = 0
        self.bucket_fetches = 0

    @property
    def ring(self) -> Ring:
        return self._ring

    def start(self) -> None:
        self.refresh()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def refresh(self) -> None:
        """Reload the member list; keep the old one if the service is away."""
        try:
            reply = self._metadata.Members(dcfs_pb2.MembersRequest(), timeout=5)
        except grpc.RpcError as exc:
            log.debug("members refresh failed: %s", describe_rpc_error(exc))
            return
        if reply.epoch == self._epoch:
            return
        nodes = [Node(n.node_id, n.address, n.capacity) for n in reply.nodes]
        with self._lock:
            self._ring = Ring(nodes)
            self._epoch = reply.epoch
        log.info("cluster members: %s", ", ".join(n.address for n in nodes) or "none")

    def _follow(self) -> None:
        while not self._stop.wait(self._members_interval_s):
            self.refresh()

    def fetch(self, ref: BlockRef) -> bytes:
        """The block's bytes from the first source that answers correctly.

        A changed or vanished object is final (every source would say so).
        """
        for node in self._ring.owners(ref.block_id, self._owners_to_try):
            if self._down_until.get(node.node_id, 0) > time.monotonic():
                continue
            try:
                data = self._read_from(node, ref)
            except (ObjectChanged, ObjectNotFound):
                raise
            except PeerError as exc:
                self._mark_down(node, exc)
                continue
            with self._lock:
                self.peer_fetches += 1
            return data
        data = self.store.read_range(ref.version, ref.offset, ref.length)
        with self._lock:
            self.bucket_fetches += 1
        return data

    def _read_from(self, node: Node, ref: BlockRef) -> bytes:
        request = dcfs_pb2.ReadBlockRequest(block=wire.block_to_proto(ref))
        try:
            message = self._read_block_call(node)(request, timeout=self._peer_timeout_s)
        except grpc.RpcError as exc:
            raise rpcerrors.from_rpc_error(exc, node.address) from None
        try:
            data, crc32, _source = wire.decode_block_reply(message)
            return wire.verify_block(ref, data, crc32)
        except CorruptBlock as exc:
            raise PeerError(f"{node.address}: {exc}") from None

    def _read_block_call(self, node: Node) -> grpc.UnaryUnaryMultiCallable:  # type: ignore[type-arg]
        """ReadBlock returning the raw reply, decoded by :mod:`dcfs.wire`."""
        with self._lock:
            call = self._calls.get(node.address)
            if call is None:
                call = self._calls[node.address] = rpc.channel(node.address).unary_unary(
                    "/dcfs.CacheNode/ReadBlock",
                    request_serializer=dcfs_pb2.ReadBlockRequest.SerializeToString,
                    response_deserializer=None,
                )
            return call

    def _mark_down(self, node: Node, exc: Exception) -> None:
        if self._down_until.get(node.node_id, 0) <= time.monotonic():
            log.warning("cache node %s skipped for %.0f s: %s", node.address, self._down_s, exc)
        self._down_until[node.node_id] = time.monotonic() + self._down_s
