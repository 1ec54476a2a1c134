"""The namespace's values and their lmdb encodings.

Keys are chosen so lmdb's sorted B-tree does the work: inode numbers are
8-byte big-endian (numeric order = byte order) and a directory entry's key is
``parent + name`` so a directory listing is one cursor range scan, sorted
bytewise by name as the wire contract promises.
"""

import struct
from dataclasses import dataclass

# pyfuse3.ROOT_INODE; repeated here so the daemon does not need FUSE installed.
ROOT_INODE = 1

_U64 = struct.Struct(">Q")
# parent, is_dir, size, mtime_ns, sync mark, len(etag), len(path); then etag, path.
_HEAD = struct.Struct(">Q?QqQII")


def u64(value: int) -> bytes:
    return _U64.pack(value)


def from_u64(data: bytes) -> int:
    return int(_U64.unpack(data)[0])


def path_key(path: str, is_dir: bool) -> bytes:
    """``paths`` db key. Directories carry a trailing '/' (the root is "/"), so a
    file 'a' and a directory 'a' keep separate inodes when one replaces the other."""
    return (path + "/" if is_dir else path).encode()


def dirent_key(parent: int, name: str) -> bytes:
    return _U64.pack(parent) + name.encode()


@dataclass(frozen=True, slots=True)
class Attr:
    """What clients see of an inode. ``etag`` and ``key`` are empty for directories."""

    inode: int
    is_dir: bool
    size: int
    mtime_ns: int
    etag: str
    key: str


@dataclass(frozen=True, slots=True)
class Node:
    """A live cache node: where it serves and how much it holds (placement weight)."""

    node_id: str
    address: str
    capacity: int
    block_address: str = ""


@dataclass(frozen=True, slots=True)
class Record:
    """One ``inodes`` row. ``path`` (no trailing '/', "" for the root) lets the
    sweep remove the entry's ``paths`` and ``dirents`` rows without a reverse
    index; ``mark`` is the last sync that saw the entry."""

    parent: int
    is_dir: bool
    size: int
    mtime_ns: int
    mark: int
    etag: str
    path: str

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]

    def attr(self, inode: int) -> Attr:
        key = "" if self.is_dir else self.path
        return Attr(inode, self.is_dir, self.size, self.mtime_ns, self.etag, key)

    def pack(self) -> bytes:
        etag = self.etag.encode()
        path = self.path.encode()
        head = _HEAD.pack(
            self.parent, self.is_dir, self.size, self.mtime_ns, self.mark, len(etag), len(path)
        )
        return head + etag + path

    @classmethod
    def unpack(cls, data: bytes) -> "Record":
        parent, is_dir, size, mtime_ns, mark, etag_len, path_len = _HEAD.unpack_from(data)
        start = _HEAD.size
        etag = data[start : start + etag_len].decode()
        path = data[start + etag_len : start + etag_len + path_len].decode()
        return cls(parent, is_dir, size, mtime_ns, mark, etag, path)
