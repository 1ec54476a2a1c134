"""Prefetch across small files: a reader that opens the files of a directory
one after another in listing order (a training data loader's epoch) gets the
next files' first blocks fetched ahead of it.

Each directory listing the kernel reads is remembered in order (files only,
bounded in entries). Opening the file right after the previously opened one
grows the depth 1 -> 2 -> 4 ... up to ``max_depth``; any other open resets it,
so shuffled readers cost nothing. Files already on their way are not handed
out again: in a steady scan each open adds one file to the window, so the
open of a warm file does not check 16 of them.
"""

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from protos import dcfs_pb2


@dataclass
class _Directory:
    files: list[dcfs_pb2.Attr] = field(default_factory=list)
    last_opened: int = -1  # position of the last file opened here (-1: none yet)
    depth: int = 0
    ahead_until: int = 0  # positions before this were handed out to fetch ahead


class SiblingIndex:
    """Thread-safe; the FUSE handlers call it on the trio thread (no I/O)."""

    def __init__(self, max_depth: int = 16, max_entries: int = 200_000) -> None:
        self._max_depth = max_depth
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._dirs: OrderedDict[int, _Directory] = OrderedDict()
        self._where: dict[int, tuple[int, int]] = {}  # file inode -> (directory, position)
        self._entries = 0

    def listed(self, directory: int, first_page: bool, entries: list[dcfs_pb2.Attr]) -> None:
        """Record a page of a listing (``first_page``: the listing starts anew)."""
        files = [a for a in entries if not a.is_dir and a.size > 0]
        with self._lock:
            known = self._dirs.get(directory)
            if first_page or known is None:
                if known is not None:
                    self._forget(directory, known)
                known = self._dirs[directory] = _Directory()
            self._dirs.move_to_end(directory)
            for attr in files:
                self._where[attr.inode] = (directory, len(known.files))
                known.files.append(attr)
            self._entries += len(files)
            while self._entries > self._max_entries and len(self._dirs) > 1:
                oldest, gone = next(iter(self._dirs.items()))
                self._forget(oldest, gone)

    def _forget(self, directory: int, gone: _Directory) -> None:
        del self._dirs[directory]
        self._entries -= len(gone.files)
        for attr in gone.files:
            if self._where.get(attr.inode, (None,))[0] == directory:
                del self._where[attr.inode]

    def opened(self, inode: int) -> list[dcfs_pb2.Attr]:
        """Note an open; the files worth fetching ahead of the reader."""
        with self._lock:
            found = self._where.get(inode)
            if found is None:
                return []
            directory, position = found
            listing = self._dirs[directory]
            if position == listing.last_opened + 1:
                listing.depth = min(self._max_depth, max(1, listing.depth * 2))
            else:
                listing.depth = listing.ahead_until = 0
            listing.last_opened = position
            start = max(position + 1, listing.ahead_until)
            return listing.files[start : position + 1 + listing.depth]

    def fetching_ahead(self, inode: int, count: int) -> None:
        """The first ``count`` files that ``opened(inode)`` just returned are
        cached or on their way: later opens leave them out."""
        with self._lock:
            found = self._where.get(inode)
            if found is not None:
                listing = self._dirs[found[0]]
                listing.ahead_until = max(found[1] + 1, listing.ahead_until) + count
