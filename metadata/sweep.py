"""Delete what a sync did not see: every entry whose mark is older than the
sync's, across the whole namespace (after a full sync) or under one path
(after a refresh of that path).

Both work in write transactions of ``batch`` steps, so memory stays bounded
and lookups (readers) and other writers wait one batch at most. Ancestors are
marked with every entry, so an unmarked directory has only unmarked
children: the full sweep orphans nothing.
"""

from metadata.model import ROOT_INODE
from metadata.store import NamespaceStore


def sweep_all(store: NamespaceStore, mark: int, batch: int) -> tuple[int, int]:
    """Delete every entry older than ``mark``; returns (files, directories)."""
    files = dirs = 0
    start = ROOT_INODE + 1
    while True:
        with store.writer(mark) as writer:
            records = writer.records_from(start, batch)
            for inode, record in records:
                if record.mark < mark:
                    writer.delete(inode, record)
                    dirs += record.is_dir
                    files += not record.is_dir
        if len(records) < batch:
            return files, dirs
        start = records[-1][0] + 1


def sweep_subtree(store: NamespaceStore, top: int, mark: int, batch: int) -> tuple[int, int]:
    """Delete the entries older than ``mark`` in the subtree of inode ``top``
    (``top`` included, unless it is the root); returns (files, directories).

    Depth first, children before their directory; the walk keeps one
    (directory, last name) pair per level, so memory is bounded by depth.
    """
    files = dirs = 0
    stack: list[tuple[int, str]] = [(top, "")]
    while stack:
        with store.writer(mark) as writer:
            for _ in range(batch):
                if not stack:
                    break
                inode, after = stack[-1]
                record = writer.record(inode)
                child = None
                if record is not None and record.is_dir:
                    child = writer.child_after(inode, after)
                if child is not None:
                    stack[-1] = (inode, child[0])
                    stack.append((child[1], ""))
                    continue
                stack.pop()
                if record is not None and record.mark < mark and inode != ROOT_INODE:
                    writer.delete(inode, record)
                    dirs += record.is_dir
                    files += not record.is_dir
    return files, dirs
