"""The change log: what each generation changed, kept in lmdb next to the
namespace so that a client (or a restarted service) can replay it.

Rows are written in the same write transaction as the namespace change they
describe, and that transaction bumps the generation: a reader sees a
generation exactly when it sees its rows. The log is bounded: the oldest rows
go first, and ``floor`` records the newest generation whose rows are no
longer complete. A client that knows only generations below the floor cannot
be told what changed and must drop its caches.

Row key: generation (8 bytes) + sequence number (4 bytes), so one cursor
scan returns changes in order. Value: kind (1 byte), inode, parent, name.
"""

import enum
import struct
from dataclasses import dataclass

import lmdb

from metadata.model import from_u64, u64

_KEY = struct.Struct(">QI")
_VALUE = struct.Struct(">BQQ")

DEFAULT_MAX_ROWS = 100_000


class Kind(enum.IntEnum):
    """What happened to a directory entry; the values are the wire's."""

    ADDED = 0
    CHANGED = 1
    DELETED = 2


@dataclass(frozen=True, slots=True)
class Change:
    """``name`` in directory ``parent`` (inode ``inode``) was added, changed
    (new attributes, same inode) or deleted."""

    kind: Kind
    inode: int
    parent: int
    name: str


@dataclass(frozen=True, slots=True)
class Page:
    """Rows read from the log in one read transaction.

    ``rows`` are ``(generation, change)`` in order; ``full`` says the read
    stopped at its limit (more rows may follow, even of the last generation);
    ``generation`` and ``floor`` are the store's at the time of the read.
    """

    rows: list[tuple[int, Change]]
    next_key: bytes
    full: bool
    generation: int
    floor: int


def first_key(generation: int) -> bytes:
    """The key of the first row of ``generation``."""
    return _KEY.pack(generation, 0)


def append(
    txn: "lmdb.Transaction[bytes]",
    log: "lmdb._Database",
    meta: "lmdb._Database",
    generation: int,
    changes: list[Change],
    max_rows: int,
) -> None:
    """Write ``changes`` as generation ``generation``, then trim the log to
    ``max_rows`` rows, raising the floor past what was trimmed."""
    for seq, change in enumerate(changes):
        value = _VALUE.pack(change.kind, change.inode, change.parent) + change.name.encode()
        txn.put(_KEY.pack(generation, seq), value, db=log)
    excess = txn.stat(log)["entries"] - max_rows
    if excess <= 0:
        return
    cursor = txn.cursor(db=log)
    floor = read_floor(txn, meta)
    cursor.first()
    for _ in range(excess):
        floor = max(floor, _KEY.unpack(cursor.key())[0])
        cursor.delete()
    txn.put(b"log_floor", u64(floor), db=meta)


def read_floor(txn: "lmdb.Transaction[bytes]", meta: "lmdb._Database") -> int:
    raw = txn.get(b"log_floor", db=meta)
    return 0 if raw is None else from_u64(raw)


def read(
    txn: "lmdb.Transaction[bytes]", log: "lmdb._Database", start: bytes, limit: int
) -> tuple[list[tuple[int, Change]], bytes, bool]:
    """Up to ``limit`` rows from key ``start`` on; the key after the last one;
    whether the limit stopped the read."""
    rows: list[tuple[int, Change]] = []
    cursor = txn.cursor(db=log)
    if not cursor.set_range(start):
        return rows, start, False
    for key, value in cursor:
        if len(rows) == limit:
            return rows, key, True
        generation, _ = _KEY.unpack(key)
        kind, inode, parent = _VALUE.unpack_from(value)
        name = value[_VALUE.size :].decode()
        rows.append((generation, Change(Kind(kind), inode, parent, name)))
        start = key + b"\0"
    return rows, start, False
