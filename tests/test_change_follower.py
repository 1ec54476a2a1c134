"""The change stream end to end without FUSE: a real metadata server on
loopback, the client's ChangeFollower with a kernel that records what it is
told to drop, the Refresh RPC, the attribute cache's epoch and the
page-cache policy of version-pinned handles."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from clusters import wait_until
from test_metadata_changes import HeadStore
from test_metadata_service import FakeClock, code_of

from dcfs import rpc
from dcfs.blocks import ObjectVersion
from fsclient.changes import ChangeFollower
from fsclient.namespace import AttrCache, NamespaceClient
from fsclient.openfiles import OpenFiles, OpenMode
from metadata.model import ROOT_INODE
from metadata.service import MetadataServer
from protos import dcfs_pb2, dcfs_pb2_grpc


class RecordingKernel:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inodes: list[int] = []
        self.entries: list[tuple[int, str]] = []

    def invalidate_inode(self, inode: int, attr_only: bool = False) -> None:
        with self.lock:
            self.inodes.append(inode)

    def invalidate_entry(self, parent: int, name: str) -> None:
        with self.lock:
            self.entries.append((parent, name))


class Service:
    """A metadata server that can be restarted on the same port and database."""

    def __init__(self, db: Path, bucket: HeadStore, **options: object) -> None:
        self.db, self.bucket, self.options = db, bucket, options
        self.address = f"127.0.0.1:{rpc.free_port()}"
        self.server: MetadataServer | None = None

    def start(self) -> MetadataServer:
        self.server = MetadataServer(
            bucket_url="fake://bucket",
            endpoint_url=None,
            db_dir=self.db,
            listen=self.address,
            block_size=4096,
            node_timeout_s=10,
            store=self.bucket,
            **self.options,
        )
        self.server.start()
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace_s=None)
            self.server = None


@pytest.fixture
def bucket() -> HeadStore:
    return HeadStore({"d/a": (1, "ea"), "d/b": (2, "eb"), "top": (3, "et")})


@pytest.fixture
def service(tmp_path: Path, bucket: HeadStore) -> Iterator[Service]:
    svc = Service(tmp_path / "db", bucket)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def stub(service: Service) -> Iterator[dcfs_pb2_grpc.MetadataStub]:
    with rpc.channel(service.address) as chan:
        yield dcfs_pb2_grpc.MetadataStub(chan)


def start_follower(
    stub: dcfs_pb2_grpc.MetadataStub, ns: NamespaceClient, kernel: RecordingKernel
) -> ChangeFollower:
    generation = stub.Info(dcfs_pb2.InfoRequest(), timeout=5).generation
    follower = ChangeFollower(stub, ns.attrs, kernel, generation, max_backoff_s=0.5)
    follower.start()
    assert follower.connected.wait(10)
    return follower


def test_follower_drops_what_changed(
    service: Service, bucket: HeadStore, stub: dcfs_pb2_grpc.MetadataStub
) -> None:
    ns = NamespaceClient(stub, attr_ttl_s=300)
    kernel = RecordingKernel()
    d = ns.lookup(ROOT_INODE, "d")
    assert d is not None
    a, b = ns.lookup(d.inode, "a"), ns.lookup(d.inode, "b")
    assert a is not None and b is not None
    follower = start_follower(stub, ns, kernel)
    try:
        bucket.put("d/a", size=5, etag="ea2")
        del bucket.objects["d/b"]
        bucket.put("d/c")
        assert service.server is not None
        service.server.resync()
        generation = stub.Info(dcfs_pb2.InfoRequest(), timeout=5).generation
        assert wait_until(lambda: follower.generation == generation, 10), "no changes"
        assert kernel.inodes == [a.inode]  # changed: attributes and pages
        assert sorted(kernel.entries) == [(d.inode, "b"), (d.inode, "c")]
        assert ns.attrs.get(a.inode) is None and ns.attrs.get(b.inode) is None
        fresh = ns.getattr(a.inode)
        assert fresh is not None and (fresh.etag, fresh.size) == ("ea2", 5)
    finally:
        follower.stop()


def test_follower_resumes_across_a_restart(tmp_path: Path, bucket: HeadStore) -> None:
    service = Service(tmp_path / "db", bucket)
    service.start()
    kernel = RecordingKernel()
    with rpc.channel(service.address) as chan:
        stub = dcfs_pb2_grpc.MetadataStub(chan)
        ns = NamespaceClient(stub, attr_ttl_s=300)
        top = ns.lookup(ROOT_INODE, "top")
        assert top is not None
        follower = start_follower(stub, ns, kernel)
        try:
            service.stop()
            assert wait_until(lambda: not follower.connected.is_set(), 10), "no break"
            bucket.put("top", size=9, etag="et2")  # changed while the service is down
            service.start()  # its first sync sees the change and logs it
            assert wait_until(lambda: top.inode in kernel.inodes, 10), "not replayed"
            again = ns.lookup(ROOT_INODE, "top")
            assert again is not None and again.inode == top.inode and again.etag == "et2"
            assert follower.resets == 0  # replayed from the log, not a reset
        finally:
            follower.stop()
            service.stop()


def test_a_live_stream_keeps_names_past_the_timeout(tmp_path: Path, bucket: HeadStore) -> None:
    service = Service(tmp_path / "db", bucket)
    service.start()
    try:
        with rpc.channel(service.address) as chan:
            stub = dcfs_pb2_grpc.MetadataStub(chan)
            ns = NamespaceClient(stub, attr_ttl_s=0.2)
            follower = start_follower(stub, ns, RecordingKernel())
            try:
                d = ns.lookup(ROOT_INODE, "d")
                assert d is not None and ns.lookup(d.inode, "a") is not None
                time.sleep(0.5)  # past the timeout: the stream vouches
                assert ns.attrs.lookup(d.inode, "a") is not None
                service.stop()
                assert wait_until(lambda: not follower.connected.is_set(), 10), "no break"
                assert ns.attrs.lookup(d.inode, "a") is None  # back to the timeout
                service.start()
                assert wait_until(follower.connected.is_set, 10), "no reconnect"
                assert ns.lookup(d.inode, "a") is not None
                follower.stop()  # a stopped follower vouches for nothing
                time.sleep(0.5)
                assert ns.attrs.lookup(d.inode, "a") is None
            finally:
                follower.stop()
    finally:
        service.stop()


def test_follower_resets_when_too_far_behind(tmp_path: Path, bucket: HeadStore) -> None:
    service = Service(tmp_path / "db", bucket)
    service.start()
    kernel = RecordingKernel()
    try:
        with rpc.channel(service.address) as chan:
            stub = dcfs_pb2_grpc.MetadataStub(chan)
            ns = NamespaceClient(stub, attr_ttl_s=300)
            d = ns.lookup(ROOT_INODE, "d")
            assert d is not None
            a = ns.lookup(d.inode, "a")
            assert a is not None
            # A generation of another database: nothing it cached can be trusted.
            follower = ChangeFollower(stub, ns.attrs, kernel, 10**6)
            follower.start()
            try:
                assert wait_until(lambda: follower.resets == 1, 10), "no reset"
                assert ns.attrs.get(a.inode) is None and ns.attrs.get(d.inode) is None
                assert (ROOT_INODE, "d") in kernel.entries and (d.inode, "a") in kernel.entries
                assert {a.inode, d.inode, ROOT_INODE} <= set(kernel.inodes)
            finally:
                follower.stop()
    finally:
        service.stop()


def test_change_streams_are_limited(tmp_path: Path, bucket: HeadStore) -> None:
    service = Service(tmp_path / "db", bucket, max_watchers=1)
    service.start()
    try:
        with rpc.channel(service.address) as chan:
            stub = dcfs_pb2_grpc.MetadataStub(chan)
            first = stub.WatchChanges(dcfs_pb2.WatchRequest(since_generation=1))
            assert next(first).generation == 1
            second = stub.WatchChanges(dcfs_pb2.WatchRequest(since_generation=1))
            assert code_of(lambda: next(second)) == grpc.StatusCode.RESOURCE_EXHAUSTED
            first.cancel()
            assert wait_until(lambda: _stream_opens(stub), 10), "the slot stays taken"
    finally:
        service.stop()


def _stream_opens(stub: dcfs_pb2_grpc.MetadataStub) -> bool:
    call = stub.WatchChanges(dcfs_pb2.WatchRequest(since_generation=1))
    try:
        next(call)
        return True
    except grpc.RpcError:
        return False
    finally:
        call.cancel()


def test_refresh_rpc(service: Service, bucket: HeadStore, stub: dcfs_pb2_grpc.MetadataStub) -> None:
    def refresh(path: str) -> dcfs_pb2.RefreshReply:
        reply: dcfs_pb2.RefreshReply = stub.Refresh(dcfs_pb2.RefreshRequest(path=path), timeout=5)
        return reply

    before = refresh("d/a")
    assert before.attr.etag == "ea" and before.generation == 1
    bucket.put("d/a", size=4, etag="ea2")
    after = refresh("d/a")
    assert (after.attr.etag, after.attr.inode) == ("ea2", before.attr.inode)
    assert after.generation == 2
    del bucket.objects["top"]
    assert not refresh("top").HasField("attr")
    assert refresh("d").attr.is_dir and refresh("").attr.inode == ROOT_INODE
    for bad in ["/d", "d/", "d//a", "../x", "d/./a", "x\0y", "n" * 256]:
        assert code_of(functools.partial(refresh, bad)) == grpc.StatusCode.INVALID_ARGUMENT, bad


def test_attr_cache_refuses_replies_older_than_a_forget() -> None:
    cache = AttrCache(ttl_s=300, max_forgotten=2)
    attr = dcfs_pb2.Attr(inode=7, etag="old")
    epoch = cache.epoch
    cache.forget(7)  # the follower dropped inode 7 while the reply was on its way
    assert not cache.put(attr, epoch) and cache.get(7) is None
    epoch = cache.epoch
    cache.forget(8)  # another inode: no reason to doubt this reply
    assert cache.put(dcfs_pb2.Attr(inode=9), epoch)
    cache.forget(10, 11)  # 8 no longer remembered: every older reply is suspect
    assert not cache.put(dcfs_pb2.Attr(inode=9), epoch)
    assert cache.put(attr, cache.epoch, parent=1, name="f") and cache.get(7) == attr
    assert cache.put(dcfs_pb2.Attr(inode=7, etag="new"))  # a getattr keeps the name
    assert cache.drain() == [(9, 0, ""), (7, 1, "f")] and cache.get(7) is None


def test_attr_cache_answers_names_past_the_timeout_while_the_stream_vouches() -> None:
    clock = FakeClock()
    cache = AttrCache(ttl_s=30, vouch_s=15, clock=clock)
    a = dcfs_pb2.Attr(inode=7, etag="e")
    cache.put(a, parent=1, name="a")  # no stream yet: the timeout holds
    clock.now += 29
    assert cache.lookup(1, "a") == a and cache.get(7) == a
    clock.now += 2
    assert cache.lookup(1, "a") is None and cache.get(7) is None

    cache.heard()  # the stream is up
    cache.put(a, parent=1, name="a")
    for _ in range(10):  # 100 s, hearing from the stream every 10 s
        clock.now += 10
        cache.heard()
    assert cache.lookup(1, "a") == a and cache.get(7) == a
    clock.now += 16  # silent longer than vouch_s: back to the timeout
    assert cache.lookup(1, "a") is None

    cache.heard()
    cache.put(a, parent=1, name="a")
    cache.stream_lost()
    cache.heard()  # another stream: it never saw this entry cached
    clock.now += 31
    assert cache.lookup(1, "a") is None


def test_attr_cache_keeps_names_with_their_inodes() -> None:
    cache = AttrCache(ttl_s=300, max_entries=2)
    a, b, c = (dcfs_pb2.Attr(inode=i) for i in (7, 8, 9))
    cache.put(a, parent=1, name="a")
    assert (
        cache.lookup(1, "a") == a and cache.lookup(1, "b") is None and cache.lookup(2, "a") is None
    )
    cache.put(a, parent=2, name="a2")  # seen under another name: the old one goes
    assert cache.lookup(1, "a") is None and cache.lookup(2, "a2") == a
    cache.put(dcfs_pb2.Attr(inode=7, etag="x"))  # a getattr keeps the name
    assert cache.lookup(2, "a2") == dcfs_pb2.Attr(inode=7, etag="x")
    cache.forget(7)
    assert cache.lookup(2, "a2") is None
    cache.put(b, parent=1, name="b")
    cache.forget(names=[(1, "b")])  # the follower: "b" was added anew
    assert cache.lookup(1, "b") is None and cache.get(8) is None
    cache.put(a, parent=1, name="a")
    cache.put(b, parent=1, name="b")
    cache.put(c, parent=1, name="c")  # over max_entries: the oldest goes, with its name
    assert cache.lookup(1, "a") is None and cache.lookup(1, "c") == c
    assert cache.drain() == [(8, 1, "b"), (9, 1, "c")] and cache.lookup(1, "b") is None


def test_follower_forgets_a_name_added_anew() -> None:
    cache = AttrCache(ttl_s=300)
    cache.put(dcfs_pb2.Attr(inode=5), parent=1, name="x")
    kernel = RecordingKernel()
    follower = ChangeFollower(SilentStub(), cache, kernel, 1)
    added = dcfs_pb2.Change(kind=dcfs_pb2.Change.ADDED, inode=9, parent=1, name="x")
    follower.apply(dcfs_pb2.ChangeBatch(generation=2, changes=[added]))
    assert cache.lookup(1, "x") is None and kernel.entries == [(1, "x")]


def test_open_files_keep_versions_apart() -> None:
    files = OpenFiles()
    v1, v2 = ObjectVersion("k", "e1", 10), ObjectVersion("k", "e2", 12)
    buffered_fresh = OpenMode(keep_cache=False, direct_io=False, stale_attrs=False)
    buffered_kept = OpenMode(keep_cache=True, direct_io=False, stale_attrs=False)
    # First open: the page cache's version is unknown, so it is dropped.
    assert files.open(5, v1) == buffered_fresh
    assert files.open(5, v1) == buffered_kept
    # v2 while v1 is open: direct, so the page cache stays v1's.
    assert files.open(5, v2) == OpenMode(keep_cache=True, direct_io=True, stale_attrs=False)
    files.release(5, v1)
    files.release(5, v1)
    # Only v2 open now, but the pages are v1's: dropped, with the size.
    assert files.open(5, v2) == OpenMode(keep_cache=False, direct_io=False, stale_attrs=True)
    files.release(5, v2)
    files.release(5, v2)
    assert files.open(5, v2) == buffered_kept
    # A bounded memory of versions: a forgotten inode is simply unknown again.
    small = OpenFiles(max_remembered=2)
    for inode in (1, 2, 3):
        small.open(inode, v1)
        small.release(inode, v1)
    assert small.open(1, v1) == buffered_fresh


class SilentCall(grpc.RpcError, grpc.Call):
    """A stream that sends one batch, then nothing, like a connection to a
    host that vanished; only cancel() ends it."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.sent = False

    def __iter__(self) -> SilentCall:
        return self

    def __next__(self) -> dcfs_pb2.ChangeBatch:
        if not self.sent:
            self.sent = True
            return dcfs_pb2.ChangeBatch(generation=1)
        self.cancelled.wait(30)
        raise self

    def cancel(self) -> bool:
        self.cancelled.set()
        return True

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.CANCELLED

    def details(self) -> str:
        return "cancelled"


class SilentStub:
    def __init__(self) -> None:
        self.calls: list[SilentCall] = []

    def WatchChanges(self, request: dcfs_pb2.WatchRequest) -> SilentCall:
        self.calls.append(SilentCall())
        return self.calls[-1]


def test_a_silent_stream_is_given_up() -> None:
    stub = SilentStub()
    follower = ChangeFollower(
        stub,
        AttrCache(30),
        RecordingKernel(),
        1,
        min_backoff_s=0.01,
        stall_s=0.2,
    )
    follower.start()
    try:
        assert wait_until(lambda: len(stub.calls) >= 2, 10), "the silent stream was kept"
        assert stub.calls[0].cancelled.is_set()
    finally:
        follower.stop()
