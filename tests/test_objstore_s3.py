"""S3Store against a real SeaweedFS S3 server on loopback."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from seaweed import SeaweedServer

from dcfs.blocks import ObjectVersion
from dcfs.errors import BucketError, ConfigError, ObjectChanged, ObjectNotFound
from dcfs.objstore import open_store
from dcfs.objstore.s3 import S3Store
from dcfs.objstore.s3get import PresignedRangeGetter


@pytest.fixture
def client(seaweed: SeaweedServer) -> Any:
    return seaweed.client()


@pytest.fixture
def bucket(seaweed: SeaweedServer) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    seaweed.create_bucket(name)
    return name


@pytest.fixture
def store(seaweed: SeaweedServer, bucket: str) -> Iterator[S3Store]:
    s = open_store(f"s3://{bucket}", endpoint_url=seaweed.endpoint_url)
    assert isinstance(s, S3Store)
    yield s
    s.close()


def put(client: Any, bucket: str, key: str, data: bytes) -> None:
    client.put_object(Bucket=bucket, Key=key, Body=data)


def count_calls(store: S3Store, operation: str) -> list[str]:
    """Records each ``operation`` request the store's client makes."""
    calls: list[str] = []
    store._client.meta.events.register(
        f"before-call.s3.{operation}", lambda **kw: calls.append(operation)
    )
    return calls


# -- URLs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "s3://",
        "s3:///prefix",
        "s3://ab",
        "s3://Upper-Case",
        "s3://under_score",
        "s3://-leading-hyphen",
        "s3://trailing-hyphen-",
        "s3://double..dot",
        "s3://" + "x" * 64,
        "s3://user@bucket",
        "s3://bucket:9000",
        "s3://bucket/p?versionId=1",
        "gs://bucket",
    ],
)
def test_bad_urls(s3_env: None, url: str) -> None:
    with pytest.raises(ConfigError) as e:
        S3Store.from_url(url)
    assert "\n" not in str(e.value)


def test_bad_endpoint_url(s3_env: None) -> None:
    with pytest.raises(ConfigError):
        S3Store.from_url("s3://bucket", endpoint_url="localhost:9000")


@pytest.mark.parametrize(
    ("url", "prefix"),
    [
        ("s3://abc", ""),
        ("s3://abc/", ""),
        ("s3://abc/data", "data/"),
        ("s3://abc/data/", "data/"),
        ("s3://a.b-c/x/y", "x/y/"),
        ("s3://" + "x" * 63 + "/p", "p/"),
    ],
)
def test_prefix_is_normalized(s3_env: None, url: str, prefix: str) -> None:
    s = S3Store.from_url(url, endpoint_url="http://127.0.0.1:1")
    assert s.prefix == prefix
    s.close()


# -- listing ---------------------------------------------------------------------


def test_list_pages_in_key_order(client: Any, bucket: str, store: S3Store) -> None:
    names = ["k0", "k1", "k2/x", "k3", "k4"]
    for k in names:
        put(client, bucket, k, k.encode())
    calls = count_calls(store, "ListObjectsV2")
    listed = list(store.list(page_size=2))
    assert [o.key for o in listed] == names
    assert len(calls) == 3  # 2 + 2 + 1
    assert [o.size for o in listed] == [2, 2, 4, 2, 2]
    assert listed[0].etag == hashlib.md5(b"k0").hexdigest()


def test_list_is_lazy(client: Any, bucket: str, store: S3Store) -> None:
    for i in range(5):
        put(client, bucket, f"k{i}", b"x")
    calls = count_calls(store, "ListObjectsV2")
    it = store.list(page_size=2)
    assert [next(it).key, next(it).key] == ["k0", "k1"]
    assert len(calls) == 1


def test_seaweedfs_lists_a_directory_at_its_name(client: Any, bucket: str, store: S3Store) -> None:
    """A SeaweedFS quirk (4.48): it walks its directory tree, so 'a/b' comes
    before 'a-b' and 'a.txt', where AWS S3 would list them after. Consumers
    must not assume a strictly sorted listing from every S3 service."""
    for k in ["a/b", "a-b", "a.txt", "a0"]:
        put(client, bucket, k, b"x")
    listed = [o.key for o in store.list()]
    assert sorted(listed) == ["a-b", "a.txt", "a/b", "a0"]
    assert listed == ["a/b", "a-b", "a.txt", "a0"]


def test_prefix_store_and_list_prefix(client: Any, bucket: str, seaweed: SeaweedServer) -> None:
    for k in ["data/x", "data/sub/z", "data2/y", "other", "data/dir/"]:
        put(client, bucket, k, b"" if k.endswith("/") else b"abc")
    s = S3Store.from_url(f"s3://{bucket}/data", endpoint_url=seaweed.endpoint_url)
    listed = list(s.list())
    assert sorted(o.key for o in listed) == ["dir/", "sub/z", "x"]
    marker = next(o for o in listed if o.key == "dir/")
    assert marker.size == 0
    assert [o.key for o in s.list("sub/")] == ["sub/z"]
    assert [o.key for o in s.list("x")] == ["x"]
    assert list(s.list("nope")) == []
    info = s.head("sub/z")
    assert info.key == "sub/z"
    assert s.read_range(info.version, 1, 10) == b"bc"
    s.close()


def test_missing_bucket_is_not_found(s3_env: None, seaweed: SeaweedServer) -> None:
    s = S3Store.from_url("s3://no-such-bucket-here", endpoint_url=seaweed.endpoint_url)
    with pytest.raises(ObjectNotFound):
        list(s.list())
    s.close()


# -- head and read_range ---------------------------------------------------------


def test_head(client: Any, bucket: str, store: S3Store) -> None:
    put(client, bucket, "d/f", b"hello")
    info = store.head("d/f")
    assert (info.key, info.size, info.etag) == ("d/f", 5, hashlib.md5(b"hello").hexdigest())
    raw = client.head_object(Bucket=bucket, Key="d/f")
    assert info.mtime_ns == int(raw["LastModified"].timestamp()) * 10**9
    assert [o for o in store.list() if o.key == "d/f"] == [info]


def test_head_missing(store: S3Store) -> None:
    with pytest.raises(ObjectNotFound):
        store.head("nope")


def test_ranged_reads_at_the_edges(client: Any, bucket: str, store: S3Store) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    put(client, bucket, "big", data)
    v = store.head("big").version
    size = len(data)
    assert store.read_range(v, 0, 1) == data[:1]
    assert store.read_range(v, 0, size) == data
    assert store.read_range(v, size - 1, 1) == data[-1:]
    assert store.read_range(v, size - 1, 100) == data[-1:]
    assert store.read_range(v, 1000, size) == data[1000:]
    assert store.read_range(v, 12345, 4096) == data[12345 : 12345 + 4096]
    assert store.read_range(v, size, 10) == b""
    assert store.read_range(v, size + 10, 10) == b""
    assert store.read_range(v, 5, 0) == b""
    with pytest.raises(ValueError):
        store.read_range(v, -1, 10)


def test_overwrite_between_head_and_read(client: Any, bucket: str, store: S3Store) -> None:
    put(client, bucket, "f", b"aaaa")
    v = store.head("f").version
    put(client, bucket, "f", b"bbbb")  # same size: only the etag tells
    with pytest.raises(ObjectChanged):
        store.read_range(v, 0, 4)
    assert store.read_range(store.head("f").version, 0, 4) == b"bbbb"


def test_deleted_between_head_and_read(client: Any, bucket: str, store: S3Store) -> None:
    put(client, bucket, "f", b"data")
    v = store.head("f").version
    client.delete_object(Bucket=bucket, Key="f")
    with pytest.raises(ObjectNotFound):
        store.read_range(v, 0, 4)
    with pytest.raises(ObjectNotFound):
        store.head("f")


# -- the fast ranged GET (dcfs.objstore.s3get) ------------------------------------


def test_ranged_reads_bypass_boto3(client: Any, bucket: str, store: S3Store) -> None:
    """Whole and partial ranges, from 8 threads at once: right bytes, and not
    one GetObject through boto3."""
    data = os.urandom(9 * 1024 * 1024 + 13)
    put(client, bucket, "big", data)
    v = store.head("big").version
    calls = count_calls(store, "GetObject")
    step = 1024 * 1024 + 1
    ranges = [(off, step) for off in range(0, len(data), step)] * 2

    def read(r: tuple[int, int]) -> str:
        return hashlib.sha256(store.read_range(v, *r)).hexdigest()

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(read, ranges))
    assert got == [hashlib.sha256(data[o : o + n]).hexdigest() for o, n in ranges]
    assert calls == []


def test_a_changed_object_goes_through_boto3(client: Any, bucket: str, store: S3Store) -> None:
    """The 412 is not interpreted by the fast path: boto3 asks again and its
    error mapping decides."""
    put(client, bucket, "f", b"aaaa")
    v = store.head("f").version
    put(client, bucket, "f", b"bbbb")
    calls = count_calls(store, "GetObject")
    with pytest.raises(ObjectChanged):
        store.read_range(v, 0, 4)
    assert calls == ["GetObject"]


def test_a_connection_closed_while_idle_is_replaced_not_given_up(
    client: Any, bucket: str, store: S3Store
) -> None:
    data = os.urandom(100_000)
    put(client, bucket, "f", data)
    v = store.head("f").version
    assert store.read_range(v, 0, 10) == data[:10]
    assert store._fast is not None
    [conn] = store._fast._local.conns.values()
    assert conn.sock is not None
    conn.sock.shutdown(socket.SHUT_RDWR)  # as a server closing an idle keep-alive
    calls = count_calls(store, "GetObject")
    assert store.read_range(v, 10, 1000) == data[10:1010]
    assert calls == []  # a new connection, not boto3


def test_a_presigned_url_is_reused_and_signed_anew_when_refused(
    client: Any, bucket: str, store: S3Store
) -> None:
    """One signature serves many GETs of a key; a URL the server refuses
    (here a spoiled signature, as after a change of credentials) is
    forgotten, so only that one GET goes through boto3."""
    data = os.urandom(100_000)
    put(client, bucket, "f", data)
    v = store.head("f").version
    signed: list[str] = []

    def presign(key: str) -> str:
        url = store._presign(key)
        signed.append(url)
        return url.replace("X-Amz-Signature=", "X-Amz-Signature=0") if len(signed) == 1 else url

    store._fast = PresignedRangeGetter(presign, 5.0)
    calls = count_calls(store, "GetObject")
    for i in range(6):
        assert store.read_range(v, i * 100, 100) == data[i * 100 : (i + 1) * 100]
    assert calls == ["GetObject"]  # the refused one
    assert len(signed) == 2


def test_fast_gets_that_keep_failing_are_turned_off(
    client: Any, bucket: str, store: S3Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A fast path that cannot work here (our own getter aimed at a closed
    port, as a CA bundle only boto3 knows would do) costs a few GETs, then
    stands aside; every read is right all along."""
    data = os.urandom(100_000)
    put(client, bucket, "f", data)
    v = store.head("f").version
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/nowhere?x=1"
        store._fast = PresignedRangeGetter(lambda key: dead, 1.0)
        calls = count_calls(store, "GetObject")
        for i in range(5):
            assert store.read_range(v, i * 100, 100) == data[i * 100 : (i + 1) * 100]
    assert store._fast is None
    assert len(calls) == 5
    assert "every GET goes through boto3" in caplog.text


class HalfBodyServer:
    """A loopback HTTP server that answers every GET with a 206 announcing
    ``length`` bytes, sends ``sent`` of them, then closes (``stall_s`` 0) or
    waits ``stall_s`` before it closes."""

    def __init__(self, length: int, sent: int, stall_s: float = 0.0) -> None:
        self.length, self.sent, self.stall_s = length, sent, stall_s
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/k?x=1"
        self.thread = threading.Thread(target=self._serve_one, daemon=True)
        self.thread.start()

    def _serve_one(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            while b"\r\n\r\n" not in conn.recv(65536):
                pass
            head = (
                "HTTP/1.1 206 Partial Content\r\n"
                f"Content-Length: {self.length}\r\n"
                f"Content-Range: bytes 0-{self.length - 1}/{self.length}\r\n"
                'ETag: "e"\r\n\r\n'
            )
            conn.sendall(head.encode() + os.urandom(self.sent))
            time.sleep(self.stall_s)

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.mark.parametrize(
    "sent, stall_s", [(0, 0.0), (300_000, 0.0), (300_000, 2.0)], ids=["none", "half", "stalled"]
)
def test_a_fast_get_cut_short_is_handed_to_boto3(sent: int, stall_s: float) -> None:
    """A body that ends or stalls before its announced length is never
    returned short: the fast path answers None, and the caller asks again
    through boto3 (whose retries and errors decide)."""
    server = HalfBodyServer(1_000_000, sent, stall_s)
    try:
        getter = PresignedRangeGetter(lambda key: server.url, 0.5)
        assert getter.get("k", 0, 1_000_000, '"e"') is None
        getter.close()
    finally:
        server.close()


def test_fast_gets_stand_aside_for_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    usable = PresignedRangeGetter.usable
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert usable("http://127.0.0.1:8333")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    assert not usable("http://s3.example.com")
    assert usable("https://s3.example.com")
    monkeypatch.setenv("NO_PROXY", "s3.example.com")
    assert usable("http://s3.example.com")


# -- an unreachable endpoint -----------------------------------------------------


@pytest.fixture
def dead_store(s3_env: None) -> Iterator[S3Store]:
    """A bound but never listening loopback port: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        s = S3Store.from_url(
            "s3://some-bucket/p",
            endpoint_url=f"http://127.0.0.1:{port}",
            connect_timeout=1,
            read_timeout=1,
            max_attempts=1,
        )
        yield s
        s.close()


@pytest.mark.parametrize("op", ["list", "head", "read_range"])
def test_unreachable_endpoint_is_a_bucket_error(dead_store: S3Store, op: str) -> None:
    with pytest.raises(BucketError) as e:
        if op == "list":
            list(dead_store.list())
        elif op == "head":
            dead_store.head("k")
        else:
            dead_store.read_range(ObjectVersion("k", "etag", 10), 0, 1)
    assert type(e.value) is BucketError  # not a botocore error, not "not found"
    msg = str(e.value)
    assert "s3://some-bucket/p/k" in msg or op == "list"
    assert "some-bucket" in msg
    assert f"{dead_store.endpoint_url}" in msg
    assert "\n" not in msg
