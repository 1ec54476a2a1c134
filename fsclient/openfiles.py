"""Version-pinned handles over one shared page cache per inode.

The kernel keeps one page cache per inode, for every handle on it, while
each dcfs handle is pinned to the object version it opened. So:

- a handle opening a version while another version of the inode is open
  gets ``direct_io``: it neither reads nor fills the page cache, which the
  older handles may still be filling with their version;
- a (buffered) handle opening a version other than the one the page cache
  was last filled with gets ``keep_cache=False``, so the kernel drops those
  pages at open, and its cached size is invalidated first;
- otherwise ``keep_cache=True``: re-reads never reach the daemon.

Without this, a new open after an overwrite could read old pages, and an
old handle could read pages a new one filled.
"""

import threading
from collections import OrderedDict
from dataclasses import dataclass

from dcfs.blocks import ObjectVersion


@dataclass(frozen=True, slots=True)
class OpenMode:
    keep_cache: bool
    direct_io: bool
    # The kernel may hold another version's size: invalidate its attributes
    # before answering the open.
    stale_attrs: bool


_SHARED = OpenMode(keep_cache=True, direct_io=True, stale_attrs=False)
_CACHED = OpenMode(keep_cache=True, direct_io=False, stale_attrs=False)
_FIRST = OpenMode(keep_cache=False, direct_io=False, stale_attrs=False)
_REPLACED = OpenMode(keep_cache=False, direct_io=False, stale_attrs=True)


class OpenFiles:
    """Thread-safe. Remembers the page cache's version of the last
    ``max_remembered`` inodes opened; a forgotten one is treated as unknown
    (its pages are dropped at the next open, which costs a re-read only)."""

    def __init__(self, max_remembered: int = 65536) -> None:
        self._max_remembered = max_remembered
        self._lock = threading.Lock()
        # inode -> open handles per version (plain dicts: an open of a small
        # file runs this on the trio thread, where every microsecond counts).
        self._open: dict[int, dict[ObjectVersion, int]] = {}
        self._cached: OrderedDict[int, int] = OrderedDict()

    def open(self, inode: int, version: ObjectVersion) -> OpenMode:
        fingerprint = hash(version)
        with self._lock:
            versions = self._open.get(inode)
            if versions is None:
                self._open[inode] = {version: 1}
            else:
                others = len(versions) > 1 or version not in versions
                versions[version] = versions.get(version, 0) + 1
                if others:
                    return _SHARED
            cached = self._cached.pop(inode, None)
            self._cached[inode] = fingerprint
            if len(self._cached) > self._max_remembered:
                self._cached.popitem(last=False)
        if cached == fingerprint:
            return _CACHED
        return _FIRST if cached is None else _REPLACED

    def release(self, inode: int, version: ObjectVersion) -> None:
        with self._lock:
            versions = self._open.get(inode)
            if versions is None:
                return
            left = versions.pop(version, 0) - 1
            if left > 0:
                versions[version] = left
            elif not versions:
                del self._open[inode]
