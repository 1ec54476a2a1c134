"""The disk tier's index file: block sizes and eviction order, for restarts.

Written whole (tmp file, then rename) every so often and when the tier
closes; read once at start. It is a hint, never the truth about presence:
the block files found in the directory are. An entry without a file is
ignored, a file without an entry (written after the last save) is added with
a ``stat``. A missing, truncated or corrupt index costs only the order: the
tier then falls back to file mtimes. Format (little-endian)::

    magic b"DCFSIDX2" | u32 entry count
    per entry: 16-byte block id | u32 bytes on disk | u8 queue | i8 freq
    u32 CRC-32C of everything above
"""

import os
import secrets
import struct
from contextlib import suppress
from pathlib import Path

from dcfs.blockcache.blockfile import write_all
from dcfs.checksum import crc32c

MAGIC = b"DCFSIDX2"  # 1: zlib CRC-32
_HEAD = struct.Struct("<8sI")
_ENTRY = struct.Struct("<16sIBb")
_CRC = struct.Struct("<I")

Entry = tuple[str, int, int, int]  # block id, bytes on disk, queue, freq


def encode(entries: list[Entry]) -> bytes:
    parts = [_HEAD.pack(MAGIC, len(entries))]
    pack = _ENTRY.pack
    parts += [pack(bytes.fromhex(bid), size, queue, freq) for bid, size, queue, freq in entries]
    body = b"".join(parts)
    return body + _CRC.pack(crc32c(body))


def decode(raw: bytes) -> list[Entry] | None:
    """The entries, or None if ``raw`` is not an intact index."""
    if len(raw) < _HEAD.size + _CRC.size:
        return None
    body = memoryview(raw)[: -_CRC.size]
    if _CRC.unpack_from(raw, len(body))[0] != crc32c(body):
        return None
    magic, count = _HEAD.unpack_from(body)
    if magic != MAGIC or len(body) != _HEAD.size + count * _ENTRY.size:
        return None
    return [
        (bid.hex(), size, queue, freq)
        for bid, size, queue, freq in _ENTRY.iter_unpack(body[_HEAD.size :])
    ]


def load(path: Path) -> list[Entry] | None:
    try:
        return decode(path.read_bytes())
    except FileNotFoundError:
        return None


def save(path: Path, entries: list[Entry]) -> None:
    """Replace the index atomically (a crash leaves the old one or the new one)."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, encode(entries))
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
