"""The namespace on lmdb: stable inode numbers, attributes and directory entries.

One lmdb environment, five named databases:

- ``paths``: path -> inode. A path keeps its inode across restarts and
  re-syncs (the kernel and open file handles hold inode numbers). The row
  goes when the sweep deletes the entry, so a path that disappears and
  comes back is a new file with a new inode, and the table does not grow
  with every name the bucket ever had.
- ``inodes``: inode -> :class:`Record`.
- ``dirents``: parent + name -> child inode; ``readdir`` is a range scan.
- ``meta``: counters (next inode, sync mark, generation, object/dir counts,
  membership epoch).
- ``members``: node id -> capacity + address, so a restarted service knows
  its cache nodes again.

Reads open a short read transaction per call: lmdb readers never block the
writer, so lookups keep flowing while a sync writes.
"""

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

from dcfs.errors import ConfigError, DcfsError
from metadata.model import (
    ROOT_INODE,
    Attr,
    Node,
    Record,
    dirent_key,
    from_u64,
    path_key,
    u64,
)
from metadata.writer import NamespaceWriter

# Sparse: lmdb reserves address space, the file grows only as data is written.
DEFAULT_MAP_SIZE = 64 << 30


class NoSuchInode(DcfsError):
    """The inode does not exist (never did, or a sync deleted it)."""


class NotADirectory(DcfsError):
    """A directory operation on a file inode."""


class NamespaceStore:
    """The namespace and membership rows in one lmdb environment at ``path``.

    Thread-safe. Raises :class:`ConfigError` when the directory cannot be
    opened (permissions, not a directory, another lmdb format).
    """

    def __init__(self, path: Path, map_size: int = DEFAULT_MAP_SIZE) -> None:
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._env = lmdb.open(
                str(path), map_size=map_size, max_dbs=8, subdir=True, readahead=False
            )
        except (OSError, lmdb.Error) as exc:
            raise ConfigError(f"cannot open the metadata db in {path}: {exc}") from None
        self._meta = self._env.open_db(b"meta")
        self._paths = self._env.open_db(b"paths")
        self._inodes = self._env.open_db(b"inodes")
        self._dirents = self._env.open_db(b"dirents")
        self._members = self._env.open_db(b"members")
        self._sync_lock = threading.Lock()
        self._init_root()

    def _init_root(self) -> None:
        with self._env.begin(write=True) as txn:
            if txn.get(u64(ROOT_INODE), db=self._inodes) is None:
                root = Record(0, True, 0, time.time_ns(), 0, "", "")
                txn.put(u64(ROOT_INODE), root.pack(), db=self._inodes)
                txn.put(path_key("", True), u64(ROOT_INODE), db=self._paths)
                txn.put(b"next_inode", u64(ROOT_INODE + 1), db=self._meta)

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> "NamespaceStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reads ------------------------------------------------------------

    def lookup(self, parent: int, name: str) -> Attr | None:
        """The entry ``name`` in directory ``parent``; None when there is none
        (including an unknown or non-directory ``parent``: both mean ENOENT)."""
        if not name or "/" in name:
            return None
        with self._env.begin() as txn:
            child = txn.get(dirent_key(parent, name), db=self._dirents)
            if child is None:
                return None
            return self._attr(txn, from_u64(child))

    def getattr(self, inode: int) -> Attr | None:
        """The inode's attributes; None when it does not exist."""
        with self._env.begin() as txn:
            return self._attr(txn, inode)

    def readdir(
        self, inode: int, start_after: str = "", limit: int = 1000
    ) -> tuple[list[tuple[str, Attr]], bool]:
        """Up to ``limit`` entries after the name ``start_after`` (bytewise
        order), and whether more follow. Raises :class:`NoSuchInode` or
        :class:`NotADirectory`; :class:`ValueError` for ``limit < 1``."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        prefix = u64(inode)
        entries: list[tuple[str, Attr]] = []
        more = False
        with self._env.begin() as txn:
            raw = txn.get(prefix, db=self._inodes)
            if raw is None:
                raise NoSuchInode(f"no inode {inode}")
            if not Record.unpack(raw).is_dir:
                raise NotADirectory(f"inode {inode} is not a directory")
            # The smallest key after prefix+name is prefix+name+NUL (names hold no NUL).
            start = prefix + start_after.encode() + b"\0" if start_after else prefix
            cursor = txn.cursor(db=self._dirents)
            if not cursor.set_range(start):
                return entries, more
            for key, value in cursor:
                if not key.startswith(prefix):
                    break
                if len(entries) == limit:
                    more = True
                    break
                attr = self._attr(txn, from_u64(value))
                if attr is not None:
                    entries.append((key[len(prefix) :].decode(), attr))
        return entries, more

    def _attr(self, txn: "lmdb.Transaction[bytes]", inode: int) -> Attr | None:
        raw = txn.get(u64(inode), db=self._inodes)
        return None if raw is None else Record.unpack(raw).attr(inode)

    def _counter(self, name: bytes) -> int:
        with self._env.begin() as txn:
            raw = txn.get(name, db=self._meta)
            return 0 if raw is None else from_u64(raw)

    @property
    def generation(self) -> int:
        """Bumped by every sync that changed the namespace."""
        return self._counter(b"generation")

    @property
    def object_count(self) -> int:
        """Files (objects) in the namespace after the last sync."""
        return self._counter(b"objects")

    @property
    def dir_count(self) -> int:
        """Directories after the last sync, the root not included."""
        return self._counter(b"dirs")

    @property
    def skipped_count(self) -> int:
        """Bucket keys the last sync could not turn into paths."""
        return self._counter(b"skipped")

    def table_sizes(self) -> dict[str, int]:
        """Rows per table: for status output, and for tests that look for leaks."""
        with self._env.begin() as txn:
            tables = {"paths": self._paths, "inodes": self._inodes, "dirents": self._dirents}
            return {name: txn.stat(db)["entries"] for name, db in tables.items()}

    # ---- membership rows --------------------------------------------------

    def load_members(self) -> tuple[list[Node], int]:
        """The persisted member list (sorted by node id) and epoch."""
        nodes: list[Node] = []
        with self._env.begin() as txn:
            for key, value in txn.cursor(db=self._members):
                address = value[8:].decode()
                nodes.append(Node(key.decode(), address, from_u64(value[:8])))
            raw = txn.get(b"epoch", db=self._meta)
        return nodes, 0 if raw is None else from_u64(raw)

    def save_members(self, nodes: Iterable[Node], epoch: int) -> None:
        """Replace the persisted member list (a handful of rows) and epoch."""
        with self._env.begin(write=True) as txn:
            txn.drop(self._members, delete=False)
            for node in nodes:
                value = u64(node.capacity) + node.address.encode()
                txn.put(node.node_id.encode(), value, db=self._members)
            txn.put(b"epoch", u64(epoch), db=self._meta)

    # ---- sync side (used by metadata.sync) ----------------------------------

    @contextmanager
    def sync_session(self) -> Iterator[int]:
        """One sync at a time; yields the sync's new mark (persisted first, so a
        sync that dies halfway never shares a mark with the next one)."""
        with self._sync_lock:
            with self._env.begin(write=True) as txn:
                raw = txn.get(b"mark", db=self._meta)
                mark = (0 if raw is None else from_u64(raw)) + 1
                txn.put(b"mark", u64(mark), db=self._meta)
            yield mark

    @contextmanager
    def writer(self, mark: int) -> Iterator[NamespaceWriter]:
        """One write transaction, committed on a clean exit, aborted otherwise."""
        with self._env.begin(write=True) as txn:
            yield NamespaceWriter(
                txn,
                mark,
                meta=self._meta,
                paths=self._paths,
                inodes=self._inodes,
                dirents=self._dirents,
            )

    def sweep(self, mark: int, batch: int) -> tuple[int, int]:
        """Delete every entry the sync ``mark`` did not see, ``batch`` records
        per write transaction. Returns (files, directories) deleted.

        Ancestors are marked with every entry, so an unmarked directory has
        only unmarked children: nothing is orphaned.
        """
        files = dirs = 0
        start = ROOT_INODE + 1
        while True:
            with self._env.begin(write=True) as txn:
                cursor = txn.cursor(db=self._inodes)
                scanned = 0
                victims: list[tuple[bytes, Record]] = []
                if cursor.set_range(u64(start)):
                    for key, value in cursor:
                        scanned += 1
                        record = Record.unpack(value)
                        if record.mark != mark:
                            victims.append((key, record))
                        if scanned == batch:
                            start = from_u64(key) + 1
                            break
                for key, record in victims:
                    txn.delete(key, db=self._inodes)
                    pkey = path_key(record.path, record.is_dir)
                    if txn.get(pkey, db=self._paths) == key:
                        txn.delete(pkey, db=self._paths)
                    dkey = dirent_key(record.parent, record.name)
                    if txn.get(dkey, db=self._dirents) == key:
                        txn.delete(dkey, db=self._dirents)
                    if record.is_dir:
                        dirs += 1
                    else:
                        files += 1
            if scanned < batch:
                return files, dirs

    def finish_sync(self, *, objects: int, dirs: int, skipped: int, changed: bool) -> int:
        """Record the counts; bump and return the generation if anything changed."""
        with self._env.begin(write=True) as txn:
            raw = txn.get(b"generation", db=self._meta)
            generation = (0 if raw is None else from_u64(raw)) + int(changed)
            txn.put(b"generation", u64(generation), db=self._meta)
            txn.put(b"objects", u64(objects), db=self._meta)
            txn.put(b"dirs", u64(dirs), db=self._meta)
            txn.put(b"skipped", u64(skipped), db=self._meta)
        return generation

    def bump_generation(self) -> int:
        """After a sync that failed halfway: what it committed is visible, say so."""
        with self._env.begin(write=True) as txn:
            raw = txn.get(b"generation", db=self._meta)
            generation = (0 if raw is None else from_u64(raw)) + 1
            txn.put(b"generation", u64(generation), db=self._meta)
        return generation
