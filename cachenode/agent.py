"""Keeps a cache node in the metadata service's member list: join,
heartbeat, join again when forgotten, leave on shutdown."""

import logging
import threading

import grpc

from dcfs.cluster import describe_rpc_error
from protos import dcfs_pb2, dcfs_pb2_grpc

log = logging.getLogger("dcfs.cachenode")


class MembershipAgent:
    def __init__(self, metadata: dcfs_pb2_grpc.MetadataStub, node: dcfs_pb2.NodeInfo) -> None:
        self._metadata = metadata
        self._node = node
        self._interval_s = 1.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._warned = False

    def start(self) -> None:
        """Join once synchronously (so a wrong address fails at start), then heartbeat."""
        self._join()
        self._thread.start()

    def _join(self) -> None:
        reply = self._metadata.Join(dcfs_pb2.JoinRequest(node=self._node), timeout=5)
        self._interval_s = max(0.1, reply.heartbeat_interval_ms / 1000)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                reply = self._metadata.Heartbeat(
                    dcfs_pb2.HeartbeatRequest(node_id=self._node.node_id), timeout=5
                )
                if not reply.known:
                    log.info("metadata service forgot this node; joining again")
                    self._join()
                if self._warned:
                    log.info("metadata service reachable again")
                    self._warned = False
            except grpc.RpcError as exc:
                if not self._warned:
                    log.warning("heartbeat failed (will keep trying): %s", describe_rpc_error(exc))
                    self._warned = True

    def stop(self) -> None:
        """Stop heartbeating and leave, so clients stop routing here at once."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        try:
            self._metadata.Leave(dcfs_pb2.LeaveRequest(node_id=self._node.node_id), timeout=2)
        except grpc.RpcError as exc:
            log.warning("could not leave the cluster: %s", describe_rpc_error(exc))
