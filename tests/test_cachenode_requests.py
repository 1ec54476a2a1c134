"""A real cache node answers malformed or impossible requests with a clear
status code, and keeps serving correct blocks afterwards."""

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from clusters import running_cluster

from dcfs import rpc, wire
from dcfs.blocks import BlockRef
from dcfs.launcher import LocalCluster
from dcfs.objstore import open_store
from protos import dcfs_pb2

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


def _request(key: str, etag: str, size: int, index: int, block_size: int = MiB) -> bytes:
    ref = dcfs_pb2.BlockRef(
        key=key, etag=etag, object_size=size, index=index, block_size=block_size
    )
    return dcfs_pb2.ReadBlockRequest(block=ref).SerializeToString()


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
