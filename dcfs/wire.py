"""Conversions between wire messages and domain values, with validation:
a malformed request is an :class:`InvalidRequest`, never a traceback."""

from dcfs.blocks import BlockRef, ObjectVersion
from dcfs.checksum import crc32c
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


def part_from_proto(request: dcfs_pb2.ReadBlockRequest, ref: BlockRef) -> tuple[int, int]:
    """``(offset, length)`` of the part of ``ref`` a request asks for; the
    whole block for length 0."""
    if request.length == 0:
        return 0, ref.length
    if request.offset + request.length > ref.length:
        raise InvalidRequest(
            f"bytes {request.offset}+{request.length} are past the end of a {ref.length}-byte block"
        )
    return request.offset, request.length


def verify_block(
    ref: BlockRef, data: bytes | memoryview, crc: int, length: int | None = None
) -> bytes:
    """Check a block (or ``length`` bytes of it) received from a peer: its
    length and checksum."""
    expected = ref.length if length is None else length
    if len(data) != expected:
        raise CorruptBlock(
            f"block {ref.index} of {ref.version.key!r}: got {len(data)} bytes, expected {expected}"
        )
    if crc32c(data) != crc:
        raise CorruptBlock(f"block {ref.index} of {ref.version.key!r}: checksum mismatch")
    # A view into the received message is kept as the block: no copy.
    return data  # type: ignore[return-value]


# ReadBlock replies carry whole blocks. The generated protobuf classes copy a
# payload several times (into the message, out to bytes, back in on the other
# side); these two functions write and read the same ReadBlockReply wire
# format by hand so that the payload is copied once and sliced, not copied,
# on receipt. tests/test_units.py checks them against the generated class.

_DATA_TAG = b"\x0a"  # field 1, length-delimited
_CRC_TAG = b"\x10"  # field 2, varint
_SOURCE_TAG = b"\x1a"  # field 3, length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CorruptBlock("malformed ReadBlock reply")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def encode_block_reply(data: bytes, source: str, crc: int | None = None) -> bytes:
    """A serialized ``ReadBlockReply`` for ``data`` and its CRC-32C (computed
    here unless the caller knows it)."""
    src = source.encode()
    crc = crc32c(data) if crc is None else crc
    head = _CRC_TAG + _varint(crc) + _SOURCE_TAG + _varint(len(src)) + src
    return b"".join((head, _DATA_TAG, _varint(len(data)), data))


def decode_block_reply(message: bytes) -> tuple[memoryview, int, str]:
    """``(data, crc32c, source)`` of a serialized ``ReadBlockReply``; ``data``
    is a view into ``message``. Unknown fields are skipped, as protobuf does."""
    buf = memoryview(message)
    data, crc, source = memoryview(b""), 0, ""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(buf, pos)
            if field == 2:
                crc = value
        elif wire_type == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise CorruptBlock("truncated ReadBlock reply")
            if field == 1:
                data = buf[pos : pos + length]
            elif field == 3:
                source = bytes(buf[pos : pos + length]).decode(errors="replace")
            pos += length
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
        else:
            raise CorruptBlock(f"malformed ReadBlock reply (wire type {wire_type})")
    return data, crc, source
