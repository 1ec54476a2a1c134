"""Membership with a fake clock, and the servicer over a real gRPC server on
loopback with a real channel."""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from test_metadata_store import FakeStore

from dcfs import rpc
from dcfs.errors import BucketError, ConfigError
from dcfs.objstore.base import ObjectInfo
from metadata.membership import Membership
from metadata.model import ROOT_INODE, Node
from metadata.service import MetadataServer
from metadata.store import NamespaceStore
from protos import dcfs_pb2, dcfs_pb2_grpc


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_membership_join_heartbeat_timeout() -> None:
    clock = FakeClock()
    members = Membership(10.0, clock=clock)
    assert members.members() == ([], 0)
    members.join("b", "h:2", 20)
    members.join("a", "h:1", 10)
    nodes, epoch = members.members()
    assert [n.node_id for n in nodes] == ["a", "b"] and epoch == 2
    members.join("a", "h:1", 10)  # the same again: no change
    assert members.members()[1] == 2
    clock.now += 8
    assert members.heartbeat("a") is True
    clock.now += 8  # b silent for 16 s > 10 s, a for 8 s
    nodes, epoch = members.members()
    assert nodes == [Node("a", "h:1", 10)] and epoch == 3
    assert members.heartbeat("b") is False  # b must join again
    members.join("a", "h:9", 10)  # a new address is a change
    assert members.members() == ([Node("a", "h:9", 10)], 4)
    members.leave("a")
    members.leave("a")  # idempotent
    assert members.members() == ([], 5)
    assert members.heartbeat_interval_s == pytest.approx(10 / 3)
    with pytest.raises(ConfigError):
        Membership(0)


def test_membership_survives_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    with NamespaceStore(tmp_path / "db", map_size=1 << 30) as ns:
        members = Membership(10.0, clock=clock, store=ns)
        members.join("n1", "h:1", 1)
        members.join("n2", "h:2", 2)
        members.leave("n2")
        _, epoch = members.members()
    clock.now += 1000  # long down: the restored node still gets a full grace period
    with NamespaceStore(tmp_path / "db", map_size=1 << 30) as ns:
        members = Membership(10.0, clock=clock, store=ns)
        nodes, restarted_epoch = members.members()
        assert nodes == [Node("n1", "h:1", 1)] and restarted_epoch > epoch
        clock.now += 5
        assert members.heartbeat("n1")
        clock.now += 11
        assert members.members() == ([], restarted_epoch + 1)
    with NamespaceStore(tmp_path / "db", map_size=1 << 30) as ns:
        assert Membership(10.0, clock=clock, store=ns).members()[0] == []


BUCKET = {
    "data/a.bin": (10, "ea"),
    "data/b.bin": (20, "eb"),
    "data/c.bin": (30, "ec"),
    "data/d.bin": (40, "ed"),
    "data/e.bin": (50, "ee"),
    "readme": (5, "er"),
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MetadataServer]:
    srv = MetadataServer(
        bucket_url="fake://bucket",
        endpoint_url=None,
        db_dir=tmp_path / "db",
        listen=f"127.0.0.1:{rpc.free_port()}",
        block_size=1 << 20,
        node_timeout_s=3.0,
        store=FakeStore(BUCKET),
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop(grace_s=None)


@pytest.fixture
def stub(server: MetadataServer) -> Iterator[dcfs_pb2_grpc.MetadataStub]:
    with rpc.channel(server.address) as chan:
        yield dcfs_pb2_grpc.MetadataStub(chan)


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    err = info.value
    assert isinstance(err, grpc.Call)
    return err.code()


def test_info(stub: dcfs_pb2_grpc.MetadataStub) -> None:
    info = stub.Info(dcfs_pb2.InfoRequest(), timeout=5)
    assert (info.bucket_url, info.endpoint_url, info.block_size) == ("fake://bucket", "", 1 << 20)
    assert (info.objects, info.generation) == (6, 1)


def test_lookup_getattr_readdir(stub: dcfs_pb2_grpc.MetadataStub) -> None:
    data = stub.Lookup(dcfs_pb2.LookupRequest(parent=ROOT_INODE, name="data"), timeout=5).attr
    assert data.is_dir and data.inode > ROOT_INODE
    b = stub.Lookup(dcfs_pb2.LookupRequest(parent=data.inode, name="b.bin"), timeout=5).attr
    assert (b.size, b.etag, b.key, b.is_dir) == (20, "eb", "data/b.bin", False)
    assert stub.Getattr(dcfs_pb2.GetattrRequest(inode=b.inode), timeout=5).attr == b
    root = stub.Getattr(dcfs_pb2.GetattrRequest(inode=ROOT_INODE), timeout=5).attr
    assert root.is_dir
    names: list[str] = []
    start, more = "", True
    while more:
        request = dcfs_pb2.ReaddirRequest(inode=data.inode, start_after=start, limit=2)
        reply = stub.Readdir(request, timeout=5)
        assert len(reply.entries) <= 2
        names += [e.name for e in reply.entries]
        start, more = reply.entries[-1].name, reply.more
    assert names == ["a.bin", "b.bin", "c.bin", "d.bin", "e.bin"]
    whole = stub.Readdir(dcfs_pb2.ReaddirRequest(inode=data.inode), timeout=5)  # limit 0
    assert [e.name for e in whole.entries] == names and not whole.more
    assert whole.entries[1].attr == b


def test_not_found_and_bad_requests(stub: dcfs_pb2_grpc.MetadataStub) -> None:
    nf, bad = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT

    def lookup(parent: int, name: str) -> Callable[[], object]:
        return lambda: stub.Lookup(dcfs_pb2.LookupRequest(parent=parent, name=name), timeout=5)

    assert code_of(lookup(ROOT_INODE, "nope")) == nf
    assert code_of(lookup(99999, "data")) == nf
    assert code_of(lambda: stub.Getattr(dcfs_pb2.GetattrRequest(inode=99999), timeout=5)) == nf
    readdir = stub.Readdir
    assert code_of(lambda: readdir(dcfs_pb2.ReaddirRequest(inode=99999), timeout=5)) == nf
    readme = stub.Lookup(dcfs_pb2.LookupRequest(parent=ROOT_INODE, name="readme"), timeout=5)
    file_request = dcfs_pb2.ReaddirRequest(inode=readme.attr.inode)
    assert code_of(lambda: readdir(file_request, timeout=5)) == grpc.StatusCode.FAILED_PRECONDITION
    for name in ["", ".", "..", "data/a.bin", "x\0y", "n" * 256]:
        assert code_of(lookup(ROOT_INODE, name)) == bad, name
    assert code_of(lookup(0, "data")) == bad
    assert code_of(lambda: stub.Getattr(dcfs_pb2.GetattrRequest(inode=0), timeout=5)) == bad
    assert code_of(lambda: readdir(dcfs_pb2.ReaddirRequest(inode=0), timeout=5)) == bad
    slash = dcfs_pb2.ReaddirRequest(inode=ROOT_INODE, start_after="a/b")
    assert code_of(lambda: readdir(slash, timeout=5)) == bad


def test_membership_rpcs(stub: dcfs_pb2_grpc.MetadataStub) -> None:
    bad = grpc.StatusCode.INVALID_ARGUMENT
    join = stub.Join
    node = dcfs_pb2.NodeInfo(node_id="n1", address="127.0.0.1:7001", capacity=1 << 30)
    reply = join(dcfs_pb2.JoinRequest(node=node), timeout=5)
    assert reply.heartbeat_interval_ms == 1000  # timeout 3 s / 3
    assert stub.Heartbeat(dcfs_pb2.HeartbeatRequest(node_id="n1"), timeout=5).known
    assert not stub.Heartbeat(dcfs_pb2.HeartbeatRequest(node_id="zz"), timeout=5).known
    members = stub.Members(dcfs_pb2.MembersRequest(), timeout=5)
    assert list(members.nodes) == [node] and members.epoch > 0
    stub.Leave(dcfs_pb2.LeaveRequest(node_id="n1"), timeout=5)
    after = stub.Members(dcfs_pb2.MembersRequest(), timeout=5)
    assert list(after.nodes) == [] and after.epoch != members.epoch
    for broken in [
        dcfs_pb2.NodeInfo(node_id="", address="127.0.0.1:1", capacity=1),
        dcfs_pb2.NodeInfo(node_id="n", address="no-port", capacity=1),
        dcfs_pb2.NodeInfo(node_id="n", address="127.0.0.1:1", capacity=0),
    ]:
        request = dcfs_pb2.JoinRequest(node=broken)
        assert code_of(functools.partial(join, request, timeout=5)) == bad
    heartbeat = stub.Heartbeat
    assert code_of(lambda: heartbeat(dcfs_pb2.HeartbeatRequest(), timeout=5)) == bad
    assert code_of(lambda: stub.Leave(dcfs_pb2.LeaveRequest(), timeout=5)) == bad


def test_restart_keeps_inodes(tmp_path: Path) -> None:
    def start() -> MetadataServer:
        srv = MetadataServer(
            bucket_url="fake://bucket",
            endpoint_url="http://127.0.0.1:9",
            db_dir=tmp_path / "db",
            listen=f"127.0.0.1:{rpc.free_port()}",
            block_size=4096,
            node_timeout_s=10,
            store=FakeStore(BUCKET),
        )
        srv.start()
        return srv

    inodes = []
    for _ in range(2):
        srv = start()
        try:
            with rpc.channel(srv.address) as chan:
                stub = dcfs_pb2_grpc.MetadataStub(chan)
                reply = stub.Readdir(dcfs_pb2.ReaddirRequest(inode=ROOT_INODE), timeout=5)
                inodes.append({e.name: e.attr.inode for e in reply.entries})
                info = stub.Info(dcfs_pb2.InfoRequest(), timeout=5)
                assert info.endpoint_url == "http://127.0.0.1:9" and info.generation == 1
        finally:
            srv.stop(grace_s=None)
    assert inodes[0] == inodes[1]


def test_port_in_use_is_config_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = MetadataServer(
            bucket_url="fake://bucket",
            endpoint_url=None,
            db_dir=tmp_path / "db",
            listen=f"127.0.0.1:{port}",
            block_size=4096,
            node_timeout_s=10,
            store=FakeStore(BUCKET),
        )
        with pytest.raises(ConfigError, match="cannot listen"):
            srv.start()
    # The db was closed: it can be opened again in this process.
    NamespaceStore(tmp_path / "db", map_size=1 << 30).close()


class BrokenStore(FakeStore):
    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        raise BucketError("access denied")


def test_initial_sync_failure_propagates(tmp_path: Path) -> None:
    srv = MetadataServer(
        bucket_url="fake://bucket",
        endpoint_url=None,
        db_dir=tmp_path / "db",
        listen=f"127.0.0.1:{rpc.free_port()}",
        block_size=4096,
        node_timeout_s=10,
        store=BrokenStore(),
    )
    with pytest.raises(BucketError, match="access denied"):
        srv.start()


@pytest.mark.parametrize(
    ("block_size", "node_timeout_s", "sync_interval_s"),
    [(0, 1.0, 0.0), (1 << 32, 1.0, 0.0), (4096, 0.0, 0.0), (4096, 1.0, -1.0)],
)
def test_bad_constructor_arguments(
    tmp_path: Path, block_size: int, node_timeout_s: float, sync_interval_s: float
) -> None:
    with pytest.raises(ConfigError):
        MetadataServer(
            bucket_url="fake://b",
            endpoint_url=None,
            db_dir=tmp_path,
            listen="127.0.0.1:0",
            block_size=block_size,
            node_timeout_s=node_timeout_s,
            store=FakeStore(),
            sync_interval_s=sync_interval_s,
        )


def test_periodic_resync(tmp_path: Path) -> None:
    bucket = FakeStore(BUCKET)
    srv = MetadataServer(
        bucket_url="fake://bucket",
        endpoint_url=None,
        db_dir=tmp_path / "db",
        listen=f"127.0.0.1:{rpc.free_port()}",
        block_size=4096,
        node_timeout_s=10,
        store=bucket,
        sync_interval_s=0.05,
    )
    srv.start()
    try:
        with rpc.channel(srv.address) as chan:
            stub = dcfs_pb2_grpc.MetadataStub(chan)
            bucket.put("new/file")
            deadline = time.monotonic() + 10
            while stub.Info(dcfs_pb2.InfoRequest(), timeout=5).objects != len(BUCKET) + 1:
                assert time.monotonic() < deadline, "the re-sync never picked up the change"
                time.sleep(0.02)
            new = stub.Lookup(dcfs_pb2.LookupRequest(parent=ROOT_INODE, name="new"), timeout=5)
            assert new.attr.is_dir
    finally:
        srv.stop(grace_s=None)
