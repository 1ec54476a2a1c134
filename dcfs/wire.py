"""Conversions between wire messages and domain values, with validation:
a malformed request is an :class:`InvalidRequest`, never a traceback."""

import zlib

from dcfs.blocks import BlockRef, ObjectVersion
from dcfs.errors import CorruptBlock, InvalidRequest
from protos import dcfs_pb2

MIN_BLOCK_SIZE = 64 * 1024
MAX_BLOCK_SIZE = 64 * 1024 * 1024


def block_to_proto(ref: BlockRef) -> dcfs_pb2.BlockRef:
    v = ref.version
    return dcfs_pb2.BlockRef(
        key=v.key, etag=v.etag, object_size=v.size, index=ref.index, block_size=ref.block_size
    )


def block_from_proto(msg: dcfs_pb2.BlockRef, expected_block_size: int) -> BlockRef:
    """Validate a block reference from a peer."""
    if not msg.key or not msg.etag:
        raise InvalidRequest("block reference needs a key and an etag")
    if msg.block_size != expected_block_size:
        raise InvalidRequest(
            f"block size {msg.block_size} does not match the cluster's {expected_block_size}"
        )
    if msg.index * msg.block_size >= msg.object_size:
        raise InvalidRequest(
            f"block {msg.index} is past the end of a {msg.object_size}-byte object"
        )
    version = ObjectVersion(msg.key, msg.etag, msg.object_size)
    return BlockRef(version, msg.index, msg.block_size)


def checksum(data: bytes | memoryview) -> int:
    return zlib.crc32(data)


def verify_block(ref: BlockRef, data: bytes, crc32: int) -> bytes:
    """Check a block received from a peer: its length and checksum."""
    if len(data) != ref.length:
        raise CorruptBlock(
            f"block {ref.index} of {ref.version.key!r}: got {len(data)} bytes, "
            f"expected {ref.length}"
        )
    if checksum(data) != crc32:
        raise CorruptBlock(f"block {ref.index} of {ref.version.key!r}: checksum mismatch")
    return data
