"""A real cache node answers malformed or impossible requests with a clear
status code, and keeps serving correct blocks afterwards."""

import errno
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from clusters import running_cluster

from dcfs import blockslot, rpc, wire
from dcfs.blocks import BlockRef
from dcfs.blockstream import BlockStreamClient
from dcfs.checksum import crc32c
from dcfs.errors import ObjectChanged, PeerError
from dcfs.launcher import LocalCluster
from dcfs.objstore import open_store
from protos import dcfs_pb2, dcfs_pb2_grpc

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, str, Path]]:
    bucket = tmp_path_factory.mktemp("bucket")
    (bucket / "data.bin").write_bytes(os.urandom(3 * MiB + 5))
    (bucket / "doomed.bin").write_bytes(b"x" * 100)
    with running_cluster(tmp_path_factory.mktemp("state"), f"file://{bucket}", nodes=1) as c:
        yield c, c.member_addresses()[0], bucket


def _call(address: str, request: bytes) -> bytes:
    call = rpc.channel(address).unary_unary("/dcfs.CacheNode/ReadBlock")
    reply: bytes = call(request, timeout=10)
    return reply


def _request(
    key: str,
    etag: str,
    size: int,
    index: int,
    block_size: int = MiB,
    part: tuple[int, int] = (0, 0),
) -> bytes:
    ref = dcfs_pb2.BlockRef(
        key=key, etag=etag, object_size=size, index=index, block_size=block_size
    )
    offset, length = part
    return dcfs_pb2.ReadBlockRequest(block=ref, offset=offset, length=length).SerializeToString()


def _code(address: str, request: bytes) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        _call(address, request)
    return info.value.code()  # type: ignore[no-any-return, attr-defined]


def test_malformed_requests_get_status_codes(node: tuple[LocalCluster, str, Path]) -> None:
    cluster, address, bucket = node
    version = open_store(f"file://{bucket}").head("data.bin").version
    bad = {
        _request("", version.etag, version.size, 0): grpc.StatusCode.INVALID_ARGUMENT,
        _request("data.bin", "", version.size, 0): grpc.StatusCode.INVALID_ARGUMENT,
        _request("data.bin", version.etag, version.size, 0, 2 * MiB): (
            grpc.StatusCode.INVALID_ARGUMENT
        ),
        _request("data.bin", version.etag, version.size, 9): grpc.StatusCode.INVALID_ARGUMENT,
        _request("../../etc/passwd", "e", 10, 0): grpc.StatusCode.NOT_FOUND,
        _request("data.bin", "not-the-etag", version.size, 0): (
            grpc.StatusCode.FAILED_PRECONDITION
        ),
        _request("no-such-object", "e", 10, 0): grpc.StatusCode.NOT_FOUND,
        _request("data.bin", version.etag, version.size, 3, part=(0, 6)): (
            grpc.StatusCode.INVALID_ARGUMENT  # the last block has 5 bytes
        ),
    }
    for request, code in bad.items():
        assert _code(address, request) == code
    # Bytes that are not a ReadBlockRequest at all.
    assert _code(address, b"\xff\xff\xff\xff") != grpc.StatusCode.OK

    # The node is still up and serves the right bytes.
    ref = BlockRef(version, 3, MiB)
    data, crc, source = wire.decode_block_reply(
        _call(address, _request("data.bin", version.etag, version.size, 3))
    )
    assert bytes(data) == (bucket / "data.bin").read_bytes()[3 * MiB :]
    assert wire.verify_block(ref, data, crc) is data and source == "bucket"
    assert all(c.process.poll() is None for c in cluster.children)


def test_a_vanished_object_is_not_found(node: tuple[LocalCluster, str, Path]) -> None:
    _cluster, address, bucket = node
    version = open_store(f"file://{bucket}").head("doomed.bin").version
    (bucket / "doomed.bin").unlink()
    assert _code(address, _request("doomed.bin", version.etag, version.size, 0)) == (
        grpc.StatusCode.NOT_FOUND
    )


def _block_address(cluster: LocalCluster, address: str) -> str:
    stub = dcfs_pb2_grpc.MetadataStub(rpc.channel(cluster.metadata_address))
    nodes = stub.Members(dcfs_pb2.MembersRequest(), timeout=5).nodes
    found: str = next(n.block_address for n in nodes if n.address == address)
    return found


def _closed_by_peer(sock: socket.socket) -> bool:
    """True once the node has closed the connection: an end of stream, or a
    reset when it closed with our bytes unread (it may do so before we shut
    down our side)."""
    try:
        sock.shutdown(socket.SHUT_WR)
        return sock.recv(100) == b""
    except OSError as exc:
        return exc.errno in (errno.ECONNRESET, errno.ENOTCONN)


def test_the_block_stream_serves_blocks_and_survives_garbage(
    node: tuple[LocalCluster, str, Path],
) -> None:
    cluster, address, bucket = node
    stream_address = _block_address(cluster, address)
    host, port = rpc.parse_address(stream_address)
    # Not our protocol, an absurd length, a truncated request: each closes the
    # connection and nothing else.
    for garbage in (b"GET / HTTP/1.1\r\n\r\n", b"DCB1\xff\xff\xff\xff", b"DCB1\x10\x00\x00\x00ab"):
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(garbage)
            assert _closed_by_peer(sock)

    client = BlockStreamClient(stream_address)
    version = open_store(f"file://{bucket}").head("data.bin").version
    request = dcfs_pb2.ReadBlockRequest(block=wire.block_to_proto(BlockRef(version, 1, MiB)))
    for _ in range(3):  # the connection is reused
        data, crc, _source = client.read_block(request, timeout_s=10)
        assert bytes(data) == (bucket / "data.bin").read_bytes()[MiB : 2 * MiB]
        assert crc32c(data) == crc
    assert client.slot_replies == 3  # a node on this machine: through a slot
    stale = dcfs_pb2.ReadBlockRequest(
        block=dcfs_pb2.BlockRef(
            key="data.bin", etag="old", object_size=version.size, index=0, block_size=MiB
        )
    )
    with pytest.raises(ObjectChanged):
        client.read_block(stale, timeout_s=10)
    bad = dcfs_pb2.ReadBlockRequest(block=dcfs_pb2.BlockRef(key="", etag="e"))
    with pytest.raises(PeerError, match="key"):
        client.read_block(bad, timeout_s=10)
    client.close()
    assert all(c.process.poll() is None for c in cluster.children)


def test_a_part_of_a_block_costs_only_its_bytes(node: tuple[LocalCluster, str, Path]) -> None:
    """A node without the block fetches just the part and keeps nothing; with
    the block cached it slices it."""
    _cluster, address, bucket = node
    version = open_store(f"file://{bucket}").head("data.bin").version
    content = (bucket / "data.bin").read_bytes()
    stub = dcfs_pb2_grpc.CacheNodeStub(rpc.channel(address))

    def bucket_bytes() -> int:
        reply = stub.Stats(dcfs_pb2.StatsRequest(), timeout=10)
        return int(reply.bucket_bytes)

    def part(offset: int, length: int) -> tuple[bytes, str]:
        request = _request("data.bin", version.etag, version.size, 2, part=(offset, length))
        data, crc, source = wire.decode_block_reply(_call(address, request))
        ref = BlockRef(version, 2, MiB)
        assert wire.verify_block(ref, data, crc, length) is data
        return bytes(data), source

    before = bucket_bytes()
    assert part(1000, 4096) == (content[2 * MiB + 1000 : 2 * MiB + 5096], "bucket")
    assert bucket_bytes() - before == 4096
    assert part(1000, 4096)[1] == "bucket"  # not kept
    _call(address, _request("data.bin", version.etag, version.size, 2))  # the whole block
    assert part(77, 100) == (content[2 * MiB + 77 : 2 * MiB + 177], "memory")


def test_block_slots_carry_what_fits_and_the_socket_the_rest(
    node: tuple[LocalCluster, str, Path],
) -> None:
    cluster, address, bucket = node
    content = (bucket / "data.bin").read_bytes()
    version = open_store(f"file://{bucket}").head("data.bin").version
    whole = dcfs_pb2.ReadBlockRequest(block=wire.block_to_proto(BlockRef(version, 0, MiB)))
    part = dcfs_pb2.ReadBlockRequest(block=whole.block, offset=1000, length=4096)

    client = BlockStreamClient(_block_address(cluster, address))
    assert client.prepare(block_size=64 * 1024, count=1, timeout_s=10) == 1  # a small slot
    data, crc, _ = client.read_block(whole, timeout_s=10)  # does not fit: over the socket
    assert bytes(data) == content[:MiB] and crc32c(data) == crc and client.slot_replies == 0
    data, crc, _ = client.read_block(part, timeout_s=10)  # fits
    assert bytes(data) == content[1000:5096] and crc32c(data) == crc and client.slot_replies == 1
    client.close()

    # A slot the node cannot verify is declined, and the connection serves on.
    host, port = rpc.parse_address(_block_address(cluster, address))
    slot = blockslot.Slot(MiB)
    forged = os.urandom(blockslot.TOKEN_SIZE) + slot.offer()[blockslot.TOKEN_SIZE :]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"DCS1" + struct.pack("<I", len(forged)) + forged)
        assert sock.recv(1) == b"\x00"
        body = whole.SerializeToString()
        sock.sendall(b"DCB1" + struct.pack("<I", len(body)) + body)
        assert sock.recv(1) == b"\x00"  # OK, with the bytes on the socket
    slot.close()


class _NodeBeforeSlots(socketserver.ThreadingTCPServer):
    """A block stream server as nodes were before slots: any frame but a
    block request closes the connection."""

    daemon_threads = True

    def __init__(self, block: bytes) -> None:
        self.block = block
        super().__init__(("127.0.0.1", 0), _OldConnection)


class _OldConnection(socketserver.BaseRequestHandler):
    server: _NodeBeforeSlots

    def handle(self) -> None:
        sock: socket.socket = self.request
        while (head := sock.recv(8, socket.MSG_WAITALL)) and head[:4] == b"DCB1":
            sock.recv(struct.unpack("<I", head[4:])[0], socket.MSG_WAITALL)
            data = self.server.block
            sock.sendall(struct.pack("<BIB", 0, crc32c(data), 3) + b"old")
            sock.sendall(struct.pack("<Q", len(data)) + data)


def test_a_node_from_before_slots_is_read_without_one() -> None:
    block = os.urandom(MiB)
    server = _NodeBeforeSlots(block)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = BlockStreamClient(f"127.0.0.1:{server.server_address[1]}")
        ref = dcfs_pb2.BlockRef(key="k", etag="e", object_size=MiB, index=0, block_size=MiB)
        for _ in range(2):
            data, crc, source = client.read_block(
                dcfs_pb2.ReadBlockRequest(block=ref), timeout_s=10
            )
            assert (bytes(data), crc, source) == (block, crc32c(block), "old")
        assert not client.offers_slots and client.slot_replies == 0
        client.close()
    finally:
        server.shutdown()
        server.server_close()
