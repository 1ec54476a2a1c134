"""PeerRouter's failover, against in-process gRPC cache nodes on loopback
that answer, fail, or accept and stay silent (as a SIGSTOPped node does)."""

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from dcfs import rpc, wire
from dcfs.blocks import BlockRef
from dcfs.checksum import crc32c
from dcfs.objstore import ObjectStore, open_store
from dcfs.ring import Node, Ring
from fsclient.router import PeerRouter
from protos import dcfs_pb2, dcfs_pb2_grpc

BLOCK = 64 * 1024


class FakeNode(dcfs_pb2_grpc.CacheNodeServicer):
    """A cache node whose ``mode`` is "answer", "fail" or "silent"."""

    def __init__(self, store: ObjectStore, release: threading.Event) -> None:
        self.store = store
        self.release = release
        self.mode = "answer"
        self.calls = 0

    def ReadBlock(
        self, request: dcfs_pb2.ReadBlockRequest, context: grpc.ServicerContext
    ) -> dcfs_pb2.ReadBlockReply:
        self.calls += 1
        if self.mode == "silent":
            self.release.wait(60)
        if self.mode != "answer":
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.mode} node")
        ref = wire.block_from_proto(request.block, BLOCK)
        data = self.store.read_range(ref.version, ref.offset, ref.length)
        return dcfs_pb2.ReadBlockReply(data=data, crc32c=crc32c(data), source="memory")


class FakeMetadata(dcfs_pb2_grpc.MetadataServicer):
    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes

    def Members(
        self, request: dcfs_pb2.MembersRequest, context: grpc.ServicerContext
    ) -> dcfs_pb2.MembersReply:
        nodes = [
            dcfs_pb2.NodeInfo(node_id=n.node_id, address=n.address, capacity=n.capacity)
            for n in self.nodes
        ]
        return dcfs_pb2.MembersReply(nodes=nodes, epoch=1)


class Cluster:
    """Three fake nodes and a fake metadata service, each a gRPC server."""

    def __init__(self, store: ObjectStore) -> None:
        self.release = threading.Event()
        self.servers: list[grpc.Server] = []
        self.fakes: dict[str, FakeNode] = {}
        nodes = []
        for i in range(3):
            fake = FakeNode(store, self.release)
            server = rpc.make_server(4)
            dcfs_pb2_grpc.add_CacheNodeServicer_to_server(fake, server)
            nodes.append(Node(f"n{i}", self._serve(server), 1))
            self.fakes[nodes[-1].address] = fake
        self.ring = Ring(nodes)
        metadata = rpc.make_server(2)
        dcfs_pb2_grpc.add_MetadataServicer_to_server(FakeMetadata(nodes), metadata)
        self.metadata = dcfs_pb2_grpc.MetadataStub(rpc.channel(self._serve(metadata)))

    def _serve(self, server: grpc.Server) -> str:
        address = f"127.0.0.1:{rpc.free_port()}"
        rpc.bind(server, address)
        server.start()
        self.servers.append(server)
        return address

    def owners(self, ref: BlockRef) -> list[FakeNode]:
        return [self.fakes[n.address] for n in self.ring.owners(ref.block_id)]

    def stop(self) -> None:
        self.release.set()
        for server in self.servers:
            server.stop(None)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObjectStore]:
    (tmp_path / "obj").write_bytes(os.urandom(40 * BLOCK))
    opened = open_store(f"file://{tmp_path}")
    yield opened
    opened.close()


@pytest.fixture
def cluster(store: ObjectStore) -> Iterator[Cluster]:
    running = Cluster(store)
    yield running
    running.stop()


def _router(cluster: Cluster, store: ObjectStore) -> PeerRouter:
    router = PeerRouter(cluster.metadata, store, peer_timeout_s=60, hedge_after_s=0.2)
    router.refresh()
    return router


def _refs(store: ObjectStore) -> list[BlockRef]:
    version = store.head("obj").version
    return [BlockRef(version, i, BLOCK) for i in range(40)]


def test_a_silent_owner_is_hedged_to_the_next_owner_then_skipped(
    cluster: Cluster, store: ObjectStore
) -> None:
    router = _router(cluster, store)
    refs = _refs(store)
    silent = cluster.owners(refs[0])[0]
    silent.mode = "silent"
    assert router.fetch(refs[0]) == store.read_range(refs[0].version, 0, BLOCK)
    assert (router.hedged_requests, router.peer_fetches, silent.calls) == (1, 1, 1)
    # Skipped from now on: its other blocks go to their next owner at once.
    mine = [r for r in refs[1:] if cluster.owners(r)[0] is silent]
    assert mine
    for ref in mine:
        assert router.fetch(ref) == store.read_range(ref.version, ref.offset, BLOCK)
    assert (router.hedged_requests, silent.calls, router.bucket_fetches) == (1, 1, 0)


def test_silent_owners_fall_back_to_the_bucket_without_waiting_the_deadline(
    cluster: Cluster, store: ObjectStore
) -> None:
    router = _router(cluster, store)
    ref = _refs(store)[3]
    first, second, third = cluster.owners(ref)
    first.mode = second.mode = "silent"
    assert router.fetch(ref) == store.read_range(ref.version, ref.offset, BLOCK)
    # Hedged to the next owner, then gave up on both: the deadline (60 s) never
    # expired, and the third node, beyond the owners tried, was not asked.
    assert (router.hedged_requests, router.bucket_fetches) == (2, 1)
    assert (first.calls, second.calls, third.calls) == (1, 1, 0)
    assert not cluster.release.is_set()


def test_a_failing_owner_fails_over_without_hedging(cluster: Cluster, store: ObjectStore) -> None:
    router = _router(cluster, store)
    ref = _refs(store)[5]
    first, second, _ = cluster.owners(ref)
    first.mode = "fail"
    assert router.fetch(ref) == store.read_range(ref.version, ref.offset, BLOCK)
    assert (router.hedged_requests, router.peer_fetches, first.calls, second.calls) == (0, 1, 1, 1)


def test_a_part_of_a_block_falls_back_to_the_bucket_as_a_part(
    cluster: Cluster, store: ObjectStore
) -> None:
    router = _router(cluster, store)
    ref = _refs(store)[7]
    for node in cluster.owners(ref):
        node.mode = "silent"
    assert router.fetch_part(ref, 100, 50) == store.read_range(ref.version, ref.offset + 100, 50)
    assert router.bucket_fetches == 1
