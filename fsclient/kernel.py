"""The kernel's caches of this mount: what the change follower and ``open``
invalidate. A protocol, so the follower is testable without FUSE."""

import errno
import logging
from typing import Protocol

import pyfuse3

log = logging.getLogger("dcfs.client")


class KernelCache(Protocol):
    def invalidate_inode(self, inode: int, attr_only: bool = False) -> None:
        """Drop the attributes (and, unless ``attr_only``, the pages) of ``inode``."""

    def invalidate_entry(self, parent: int, name: str) -> None:
        """Drop the name ``name`` in directory ``parent``."""


class FuseKernel:
    """Through pyfuse3, for the mounted session.

    Both calls block until the kernel is done, which may wait for a request
    on the same inode or directory to finish: call them from a thread that
    is not a handler (the handlers keep running meanwhile), never from the
    trio thread, and only while the session lives (before ``pyfuse3.close``).
    Not ``invalidate_entry_async``: its queue may still run after
    ``pyfuse3.close`` freed the session. Names or inodes the kernel does not
    hold (ENOENT) are nothing to invalidate.
    """

    def invalidate_inode(self, inode: int, attr_only: bool = False) -> None:
        try:
            pyfuse3.invalidate_inode(inode, attr_only)
        except OSError as exc:
            _log_unless_enoent(exc, f"inode {inode}")

    def invalidate_entry(self, parent: int, name: str) -> None:
        try:
            pyfuse3.invalidate_entry(parent, name.encode("utf-8", "surrogateescape"))
        except OSError as exc:
            _log_unless_enoent(exc, f"entry {name!r} of inode {parent}")


def _log_unless_enoent(exc: OSError, what: str) -> None:
    if exc.errno != errno.ENOENT:
        log.debug("could not invalidate %s: %s", what, exc)
