"""The write primitives a sync applies inside one lmdb write transaction.

Every entry the sync touches gets the sync's mark; whatever is left with an
older mark afterwards is gone from the bucket and the sweep deletes it. Marks
only grow: an entry already marked by a newer sync (a refresh of one path
that ran while a full sync was listing) is left as that sync wrote it. A
path keeps its inode as long as its ``paths`` row lives.

A file and a directory of the same name compete for one directory entry;
the directory wins, whatever order the listing brings them in. A new file
'a' takes a free entry and a new directory 'a' takes it back; when a
directory of an older sync holds the entry, the file waits (``DEFERRED``)
until the listing shows whether the directory is still there, so an
unchanged bucket listed in key order never churns the entry.

Every visible change is recorded in ``changes`` (for the change log, written
by the store in the same transaction).
"""

import enum
import time
from dataclasses import dataclass

import lmdb

from dcfs.objstore.base import ObjectInfo
from metadata.changelog import Change as Logged
from metadata.changelog import Kind
from metadata.model import Record, dirent_key, from_u64, path_key, u64


class Change(enum.Enum):
    """What one listed entry did to the namespace."""

    ADDED = "added"
    CHANGED = "changed"
    SAME = "same"
    # Already marked by this sync: a duplicate in the listing.
    SEEN = "seen"
    # A directory of the same name holds the entry.
    HIDDEN = "hidden"
    # A directory of an older sync holds the entry: ask again (defer=False)
    # once the listing is past the keys that could bring it back.
    DEFERRED = "deferred"


@dataclass(frozen=True, slots=True)
class Tables:
    """The store's named lmdb databases."""

    meta: "lmdb._Database"
    paths: "lmdb._Database"
    inodes: "lmdb._Database"
    dirents: "lmdb._Database"
    changes: "lmdb._Database"
    members: "lmdb._Database"


class NamespaceWriter:
    """Applies listed entries in one write transaction; ``changes`` lists
    what became visible (not just new marks)."""

    def __init__(self, txn: "lmdb.Transaction[bytes]", mark: int, tables: Tables) -> None:
        self._txn = txn
        self._mark = mark
        self._meta = tables.meta
        self._paths = tables.paths
        self._inodes = tables.inodes
        self._dirents = tables.dirents
        self.changes: list[Logged] = []

    @property
    def dirty(self) -> bool:
        return bool(self.changes)

    def ensure_dir(self, parent: int, name: str, path: str) -> tuple[int, Change, str | None]:
        """Mark directory ``path`` (creating it if new). Returns its inode, the
        change, and the path of a file listed earlier in this sync that it
        displaced from the directory entry (that file is deleted)."""
        inode = self._inode_of(path_key(path, True))
        old = None if inode is None else self._record(inode)
        if inode is not None and old is not None and old.mark >= self._mark:
            return inode, Change.SEEN, None
        if inode is None:
            inode = self._allocate(path_key(path, True))
        displaced = None
        dkey = dirent_key(parent, name)
        holder = self._txn.get(dkey, db=self._dirents)
        if holder is not None and from_u64(holder) != inode:
            other = self._record(from_u64(holder))
            if other is not None and other.mark >= self._mark:
                # A file from this listing: remove it now, the sweep would keep it.
                self.delete(from_u64(holder), other)
                displaced = other.path
            # Otherwise a stale entry from an older sync: the sweep deletes it.
            holder = None
        if holder is None:
            self._txn.put(dkey, u64(inode), db=self._dirents)
        mtime_ns = time.time_ns() if old is None else old.mtime_ns
        record = Record(parent, True, 0, mtime_ns, self._mark, "", path)
        self._txn.put(u64(inode), record.pack(), db=self._inodes)
        if old is None or old.parent != parent or holder is None:
            self.changes.append(Logged(Kind.ADDED, inode, parent, name))
        if old is None or old.parent != parent:
            return inode, Change.ADDED, displaced
        return inode, Change.SAME, displaced

    def put_file(self, parent: int, name: str, info: ObjectInfo, defer: bool = True) -> Change:
        """Mark the object ``info`` as file ``name`` in ``parent``."""
        pkey = path_key(info.key, False)
        inode = self._inode_of(pkey)
        dkey = dirent_key(parent, name)
        holder = self._txn.get(dkey, db=self._dirents)
        if holder is not None and (inode is None or from_u64(holder) != inode):
            other = self._record(from_u64(holder))
            if other is not None and other.is_dir and other.mark >= self._mark:
                return Change.HIDDEN
            if other is not None and other.is_dir and defer:
                return Change.DEFERRED
            holder = None  # a stale entry of an older sync: take its place
        old = None if inode is None else self._record(inode)
        if inode is None:
            inode = self._allocate(pkey)
        elif old is not None and old.mark == self._mark:
            return Change.SEEN
        elif old is not None and old.mark > self._mark:
            return Change.SAME  # a newer sync wrote it: it knows better
        record = Record(parent, False, info.size, info.mtime_ns, self._mark, info.etag, info.key)
        self._txn.put(u64(inode), record.pack(), db=self._inodes)
        if holder is None:
            self._txn.put(dkey, u64(inode), db=self._dirents)
        if old is None or holder is None:
            self.changes.append(Logged(Kind.ADDED, inode, parent, name))
        if old is None:
            return Change.ADDED
        if (old.size, old.mtime_ns, old.etag, old.parent) != (
            info.size,
            info.mtime_ns,
            info.etag,
            parent,
        ):
            self.changes.append(Logged(Kind.CHANGED, inode, parent, name))
            return Change.CHANGED
        return Change.SAME

    def delete(self, inode: int, record: Record) -> None:
        """Remove the entry ``inode`` (its rows that still point to it)."""
        key = u64(inode)
        self._txn.delete(key, db=self._inodes)
        pkey = path_key(record.path, record.is_dir)
        if self._txn.get(pkey, db=self._paths) == key:
            self._txn.delete(pkey, db=self._paths)
        dkey = dirent_key(record.parent, record.name)
        if self._txn.get(dkey, db=self._dirents) == key:
            self._txn.delete(dkey, db=self._dirents)
        self.changes.append(Logged(Kind.DELETED, inode, record.parent, record.name))

    def records_from(self, start: int, limit: int) -> list[tuple[int, Record]]:
        """Up to ``limit`` inodes from ``start`` on, in inode order."""
        found: list[tuple[int, Record]] = []
        cursor = self._txn.cursor(db=self._inodes)
        if cursor.set_range(u64(start)):
            for key, value in cursor:
                found.append((from_u64(key), Record.unpack(value)))
                if len(found) == limit:
                    break
        return found

    def child_after(self, parent: int, name: str) -> tuple[str, int] | None:
        """The first entry of directory ``parent`` after ``name`` ("" = the first)."""
        prefix = u64(parent)
        cursor = self._txn.cursor(db=self._dirents)
        start = prefix + name.encode() + b"\0" if name else prefix
        if not cursor.set_range(start) or not cursor.key().startswith(prefix):
            return None
        return cursor.key()[len(prefix) :].decode(), from_u64(cursor.value())

    def record(self, inode: int) -> Record | None:
        return self._record(inode)

    def _inode_of(self, pkey: bytes) -> int | None:
        raw = self._txn.get(pkey, db=self._paths)
        return None if raw is None else from_u64(raw)

    def _record(self, inode: int) -> Record | None:
        raw = self._txn.get(u64(inode), db=self._inodes)
        return None if raw is None else Record.unpack(raw)

    def _allocate(self, pkey: bytes) -> int:
        raw = self._txn.get(b"next_inode", db=self._meta)
        assert raw is not None, "store not initialised"
        inode = from_u64(raw)
        self._txn.put(b"next_inode", u64(inode + 1), db=self._meta)
        self._txn.put(pkey, u64(inode), db=self._paths)
        return inode
