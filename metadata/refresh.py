"""Refresh one path from the bucket now, between periodic syncs: a file (one
HEAD) or a directory and everything under it (a listing of its prefix).

Used when a client sees with its own HEAD that an object changed
(``dcfs mount --consistency open``) and by ``dcfs refresh``. A refresh takes
a mark newer than any running full sync's, so the full sync leaves what the
refresh wrote alone (it listed earlier), and the refresh's sweep deletes only
under its own path.
"""

import itertools
from collections.abc import Iterator

from dcfs.errors import ObjectNotFound
from dcfs.objstore.base import ObjectInfo, ObjectStore
from metadata.model import Attr
from metadata.store import NamespaceStore
from metadata.sweep import sweep_subtree
from metadata.sync import apply_listing, split_key, sync_from_bucket


def refresh_path(
    store: NamespaceStore, objstore: ObjectStore, path: str, batch: int = 5000
) -> Attr | None:
    """Bring ``path`` ('a/b.bin', 'a/dir'; "" for the whole bucket) in line
    with the bucket; returns its entry afterwards (None: nothing there).

    Raises :class:`~metadata.sync.BadKey` for a path that cannot be one, and
    bucket errors as they come (what was applied stays; nothing is swept).
    """
    if not path:
        sync_from_bucket(store, objstore, batch)
        return store.resolve("")
    split_key(path)
    with store.refresh_session() as mark:
        before = store.resolve(path)
        # The directory's keys first, so a file of the same name finds it
        # there and stays hidden instead of churning the entry.
        listing = itertools.chain(
            objstore.list(path + "/", page_size=min(batch, 1000)), _head(objstore, path)
        )
        apply_listing(store, mark, listing, batch)
        after = store.resolve(path)
        for entry in {a.inode: a for a in (before, after) if a is not None}.values():
            sweep_subtree(store, entry.inode, mark, batch)
    return store.resolve(path)


def _head(objstore: ObjectStore, key: str) -> Iterator[ObjectInfo]:
    try:
        yield objstore.head(key)
    except ObjectNotFound:
        return
