"""The namespace on lmdb: stable inode numbers, attributes, directory entries
and the log of their changes.

One lmdb environment, six named databases:

- ``paths``: path -> inode. A path keeps its inode across restarts and
  re-syncs (the kernel and open file handles hold inode numbers). The row
  goes when the sweep deletes the entry, so a path that disappears and
  comes back is a new file with a new inode, and the table does not grow
  with every name the bucket ever had.
- ``inodes``: inode -> :class:`Record`.
- ``dirents``: parent + name -> child inode; ``readdir`` is a range scan.
- ``changes``: the change log (:mod:`metadata.changelog`), bounded.
- ``meta``: counters (next inode, sync mark, generation, log floor,
  object/dir counts, membership epoch) and the namespace id.
- ``members``: node id -> capacity + address, so a restarted service knows
  its cache nodes again.

Every write transaction that changes something visible bumps the generation
and logs its changes in the same commit; waiters (change streams) are woken
after the commit. Reads open a short read transaction per call: lmdb readers
never block the writer, so lookups keep flowing while a sync writes.
"""

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

from dcfs.errors import ConfigError, DcfsError
from metadata import changelog
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
from metadata.writer import NamespaceWriter, Tables

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

    def __init__(
        self,
        path: Path,
        map_size: int = DEFAULT_MAP_SIZE,
        max_log_rows: int = changelog.DEFAULT_MAX_ROWS,
    ) -> None:
        if max_log_rows < 1:
            raise ValueError(f"max_log_rows must be at least 1, not {max_log_rows}")
        self.path = path
        self._max_log_rows = max_log_rows
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._env = lmdb.open(
                str(path), map_size=map_size, max_dbs=8, subdir=True, readahead=False
            )
        except (OSError, lmdb.Error) as exc:
            raise ConfigError(f"cannot open the metadata db in {path}: {exc}") from None
        self._tables = Tables(
            meta=self._env.open_db(b"meta"),
            paths=self._env.open_db(b"paths"),
            inodes=self._env.open_db(b"inodes"),
            dirents=self._env.open_db(b"dirents"),
            changes=self._env.open_db(b"changes"),
            members=self._env.open_db(b"members"),
        )
        self._meta = self._tables.meta
        self._inodes = self._tables.inodes
        self._dirents = self._tables.dirents
        self._members = self._tables.members
        self._sync_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._published = threading.Condition()
        self._closing = False
        self.namespace_id, self._generation = self._init_root()

    def _init_root(self) -> tuple[str, int]:
        with self._env.begin(write=True) as txn:
            if txn.get(u64(ROOT_INODE), db=self._inodes) is None:
                root = Record(0, True, 0, time.time_ns(), 0, "", "")
                txn.put(u64(ROOT_INODE), root.pack(), db=self._inodes)
                txn.put(path_key("", True), u64(ROOT_INODE), db=self._tables.paths)
                txn.put(b"next_inode", u64(ROOT_INODE + 1), db=self._meta)
            generation = _get_u64(txn, self._meta, b"generation")
            if txn.get(b"log_floor", db=self._meta) is None:
                # A db from before the change log: no history to replay.
                txn.put(b"log_floor", u64(generation), db=self._meta)
            raw = txn.get(b"namespace_id", db=self._meta)
            if raw is None:
                raw = uuid.uuid4().hex.encode()
                txn.put(b"namespace_id", raw, db=self._meta)
        return raw.decode(), generation

    def close(self) -> None:
        self.wake(closing=True)
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

    def resolve(self, path: str) -> Attr | None:
        """The entry at ``path`` ('a/b', "" for the root); None if there is none."""
        with self._env.begin() as txn:
            inode = ROOT_INODE
            for name in path.split("/") if path else []:
                child = txn.get(dirent_key(inode, name), db=self._dirents)
                if child is None:
                    return None
                inode = from_u64(child)
            return self._attr(txn, inode)

    def _counter(self, name: bytes) -> int:
        with self._env.begin() as txn:
            return _get_u64(txn, self._meta, name)

    @property
    def generation(self) -> int:
        """Bumped by every committed write that changed the namespace."""
        with self._published:
            return self._generation

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
            tables = {
                "paths": self._tables.paths,
                "inodes": self._inodes,
                "dirents": self._dirents,
                "changes": self._tables.changes,
            }
            return {name: txn.stat(db)["entries"] for name, db in tables.items()}

    # ---- membership rows --------------------------------------------------

    def load_members(self) -> tuple[list[Node], int]:
        """The persisted member list (sorted by node id) and epoch."""
        nodes: list[Node] = []
        with self._env.begin() as txn:
            for key, value in txn.cursor(db=self._members):
                address, _, block_address = value[8:].decode().partition("\0")
                nodes.append(Node(key.decode(), address, from_u64(value[:8]), block_address))
            raw = txn.get(b"epoch", db=self._meta)
        return nodes, 0 if raw is None else from_u64(raw)

    def save_members(self, nodes: Iterable[Node], epoch: int) -> None:
        """Replace the persisted member list (a handful of rows) and epoch."""
        with self._env.begin(write=True) as txn:
            txn.drop(self._members, delete=False)
            for node in nodes:
                value = u64(node.capacity) + f"{node.address}\0{node.block_address}".encode()
                txn.put(node.node_id.encode(), value, db=self._members)
            txn.put(b"epoch", u64(epoch), db=self._meta)

    # ---- change log -------------------------------------------------------

    def changes(self, start: bytes, limit: int) -> changelog.Page:
        """Up to ``limit`` logged changes from log key ``start`` on
        (:func:`changelog.first_key`), with the generation and floor they go with."""
        with self._env.begin() as txn:
            rows, next_key, full = changelog.read(txn, self._tables.changes, start, limit)
            generation = _get_u64(txn, self._meta, b"generation")
            floor = changelog.read_floor(txn, self._meta)
        return changelog.Page(rows, next_key, full, generation, floor)

    def wait_for_generation(
        self, after: int, timeout_s: float, stop: Callable[[], bool] = lambda: False
    ) -> int:
        """Block until the generation passes ``after``, the store closes,
        ``stop()`` holds (checked whenever :meth:`wake` is called) or
        ``timeout_s`` passes; return the generation."""
        with self._published:
            self._published.wait_for(
                lambda: self._generation > after or self._closing or stop(), timeout=timeout_s
            )
            return self._generation

    def wake(self, closing: bool = False) -> None:
        """Make every :meth:`wait_for_generation` check its ``stop`` again."""
        with self._published:
            self._closing = self._closing or closing
            self._published.notify_all()

    # ---- sync side (used by metadata.sync, metadata.sweep, metadata.refresh) ----

    @contextmanager
    def sync_session(self) -> Iterator[int]:
        """One full sync at a time; yields the sync's new mark."""
        with self._sync_lock:
            yield self._new_mark()

    @contextmanager
    def refresh_session(self) -> Iterator[int]:
        """One refresh of a path at a time, beside a full sync; yields its mark,
        newer than the running full sync's."""
        with self._refresh_lock:
            yield self._new_mark()

    def _new_mark(self) -> int:
        """Persisted first, so a sync that dies halfway never shares a mark
        with the next one."""
        with self._env.begin(write=True) as txn:
            mark = _get_u64(txn, self._meta, b"mark") + 1
            txn.put(b"mark", u64(mark), db=self._meta)
        return mark

    @contextmanager
    def writer(self, mark: int) -> Iterator[NamespaceWriter]:
        """One write transaction, committed on a clean exit, aborted otherwise.
        If it changed anything visible, it bumps the generation and logs the
        changes in the same commit."""
        generation = 0
        with self._env.begin(write=True) as txn:
            writer = NamespaceWriter(txn, mark, self._tables)
            yield writer
            if writer.changes:
                generation = _get_u64(txn, self._meta, b"generation") + 1
                txn.put(b"generation", u64(generation), db=self._meta)
                changelog.append(
                    txn,
                    self._tables.changes,
                    self._meta,
                    generation,
                    writer.changes,
                    self._max_log_rows,
                )
        if generation:
            with self._published:
                # Another writer may have committed (and announced) a later one.
                self._generation = max(self._generation, generation)
                self._published.notify_all()

    def finish_sync(self, *, objects: int, dirs: int, skipped: int) -> None:
        """Record the counts of a full sync."""
        with self._env.begin(write=True) as txn:
            txn.put(b"objects", u64(objects), db=self._meta)
            txn.put(b"dirs", u64(dirs), db=self._meta)
            txn.put(b"skipped", u64(skipped), db=self._meta)


def _get_u64(txn: "lmdb.Transaction[bytes]", db: "lmdb._Database", key: bytes) -> int:
    raw = txn.get(key, db=db)
    return 0 if raw is None else from_u64(raw)
