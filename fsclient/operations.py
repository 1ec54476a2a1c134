"""pyfuse3 handlers: thin async wrappers over the synchronous core.

Blocking work (gRPC, disk, bucket) runs in threads under limiters; domain
errors become errno values here and nowhere else.
"""

import errno
import itertools
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyfuse3
import trio

from dcfs.blocks import ObjectVersion
from dcfs.errors import DcfsError, ObjectChanged, ObjectNotFound
from fsclient.freshness import OpenCheck
from fsclient.kernel import FuseKernel, KernelCache
from fsclient.namespace import NamespaceClient
from fsclient.openfiles import OpenFiles
from fsclient.prefetch import PrefetchWindow
from fsclient.reader import BlockReader
from fsclient.siblings import SiblingIndex
from protos import dcfs_pb2

log = logging.getLogger("dcfs.client")
T = TypeVar("T")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


@dataclass(slots=True)
class FileHandle:
    version: ObjectVersion
    window: PrefetchWindow
    inode: int


@dataclass
class DirHandle:
    """A directory listing, fetched page by page as the kernel asks. Offsets
    number the names from the start, so one handle never repeats or skips a
    name; only the current page is held (``base`` is its first offset), so
    a directory of any size costs one page of memory."""

    inode: int
    base: int = 0
    entries: list[tuple[bytes, dcfs_pb2.Attr]] = field(default_factory=list)
    more: bool = True

    def restart(self) -> None:
        self.base, self.entries, self.more = 0, [], True

    def next_page(self, page: list[dcfs_pb2.DirEntry], more: bool) -> None:
        self.base += len(self.entries)
        self.entries = [(e.name.encode("utf-8", "surrogateescape"), e.attr) for e in page]
        self.more = more

    @property
    def last_name(self) -> str:
        return self.entries[-1][0].decode("utf-8", "surrogateescape") if self.entries else ""


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(
        self,
        namespace: NamespaceClient,
        reader: BlockReader,
        *,
        attr_timeout_s: float,
        threads: int = 64,
        open_check: OpenCheck | None = None,
        kernel: KernelCache | None = None,
    ) -> None:
        super().__init__()
        self._ns = namespace
        self._reader = reader
        self._siblings = SiblingIndex()
        self._attr_timeout_s = attr_timeout_s
        self._open_check = open_check
        self._kernel = kernel or FuseKernel()
        self._open_files = OpenFiles()
        self._limiter = trio.CapacityLimiter(threads)
        self._fh_counter = itertools.count(1)
        self._files: dict[int, FileHandle] = {}
        self._dirs: dict[int, DirHandle] = {}
        self._uid, self._gid = os.getuid(), os.getgid()
        # Lookups answered from the client's cache and from the metadata
        # service (the stats file shows them); counted on the trio thread.
        self.lookups = {"cached": 0, "fetched": 0}

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except ObjectChanged as exc:
            log.warning("%s", exc)
            raise pyfuse3.FUSEError(errno.ESTALE) from None
        except ObjectNotFound as exc:
            log.warning("%s", exc)
            raise pyfuse3.FUSEError(errno.ESTALE) from None
        except DcfsError as exc:
            log.warning("%s", exc)
            raise pyfuse3.FUSEError(errno.EIO) from None

    def _entry(self, attr: dcfs_pb2.Attr) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = attr.inode
        entry.generation = 0
        entry.entry_timeout = self._attr_timeout_s
        entry.attr_timeout = self._attr_timeout_s
        if attr.is_dir:
            entry.st_mode = stat.S_IFDIR | 0o555
            entry.st_nlink = 2
        else:
            entry.st_mode = stat.S_IFREG | 0o444
            entry.st_nlink = 1
        entry.st_size = attr.size
        entry.st_blksize = 1024 * 1024
        entry.st_blocks = (attr.size + 511) // 512
        entry.st_uid, entry.st_gid = self._uid, self._gid
        entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = attr.mtime_ns
        return entry

    async def _getattr_or_enoent(self, inode: int) -> dcfs_pb2.Attr:
        attr = self._ns.attrs.get(inode) or await self._run(self._ns.getattr, inode)
        if attr is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return attr

    # ---- namespace -----------------------------------------------------

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        text = name.decode("utf-8", "surrogateescape")
        if text in (".", ".."):
            raise pyfuse3.FUSEError(errno.ENOENT)
        # From the client's cache on this thread when it can: no thread hop.
        attr = self._ns.attrs.lookup(parent_inode, text)
        if attr is not None:
            self.lookups["cached"] += 1
            return self._entry(attr)
        self.lookups["fetched"] += 1
        attr = await self._run(self._ns.lookup, parent_inode, text)
        if attr is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._entry(attr)

    async def getattr(
        self, inode: int, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        return self._entry(await self._getattr_or_enoent(inode))

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        attr = await self._getattr_or_enoent(inode)
        if not attr.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = next(self._fh_counter)
        self._dirs[fh] = DirHandle(inode)
        return fh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self._dirs[fh]
        if start_id < handle.base:
            handle.restart()  # a rewind: page again from the start
        index = start_id
        while True:
            while index < handle.base + len(handle.entries):
                name, attr = handle.entries[index - handle.base]
                index += 1
                if not pyfuse3.readdir_reply(token, name, self._entry(attr), index):
                    return
            if not handle.more:
                return
            first_page = handle.base == 0 and not handle.entries
            page, more = await self._run(self._ns.readdir, handle.inode, handle.last_name)
            handle.next_page(page, more)
            self._siblings.listed(handle.inode, first_page, [e.attr for e in page])

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    # ---- files ---------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & _WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        attr = await self._getattr_or_enoent(inode)
        if attr.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if self._open_check is not None:
            current = await self._run(self._open_check.current, attr)
            if current is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            attr = current
        fh = next(self._fh_counter)
        version = ObjectVersion(attr.key, attr.etag, attr.size)
        # Handles are version-pinned; the page cache is shared (fsclient.openfiles).
        mode = self._open_files.open(inode, version)
        self._files[fh] = FileHandle(version, self._reader.new_window(), inode)
        ahead = self._siblings.opened(inode)
        if ahead and not mode.direct_io:
            started = self._reader.prefetch_first_blocks(
                [ObjectVersion(a.key, a.etag, a.size) for a in ahead]
            )
            self._siblings.fetching_ahead(inode, started)
        if mode.stale_attrs:
            try:
                await trio.to_thread.run_sync(self._kernel.invalidate_inode, inode, True)
            except BaseException:
                await self.release(fh)
                raise
        return pyfuse3.FileInfo(fh=fh, keep_cache=mode.keep_cache, direct_io=mode.direct_io)

    # pyfuse3 takes any contiguous buffer here (its stub says bytes): returning a
    # memoryview of the cached block saves a copy per request.
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:  # type: ignore[override]
        handle = self._files[fh]
        cached = self._reader.read_from_memory(handle.version, off, size, handle.window)
        if cached is not None:
            return cached
        return await self._run(self._reader.read, handle.version, off, size, handle.window)

    # No flush handler: pyfuse3 answers ENOSYS, after which the kernel stops
    # sending FLUSH on every close (one request less per small file).

    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh, None)
        if handle is not None:
            self._open_files.release(handle.inode, handle.version)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_namemax = 255
        return data

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return []

    # ---- a read-only filesystem ------------------------------------------

    async def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    setattr = mknod = mkdir = unlink = rmdir = symlink = rename = link = _read_only
    create = write = setxattr = removexattr = _read_only
