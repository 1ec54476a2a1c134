"""``dcfs mount --consistency open``: every open asks the bucket (one HEAD)
whether the object still has the version the namespace says; if not, the
metadata service refreshes that path (so every client learns of it) and the
open pins the new version. For read-after-write across writers, at the cost
of a bucket request per open."""

from dcfs.errors import ObjectNotFound
from dcfs.objstore.base import ObjectStore
from fsclient.namespace import NamespaceClient
from protos import dcfs_pb2


class OpenCheck:
    def __init__(self, store: ObjectStore, namespace: NamespaceClient) -> None:
        self._store = store
        self._namespace = namespace

    def current(self, attr: dcfs_pb2.Attr) -> dcfs_pb2.Attr | None:
        """The file's current attributes; None when it is gone. Bucket and
        metadata errors propagate (the open fails: no guessing)."""
        try:
            info = self._store.head(attr.key)
        except ObjectNotFound:
            info = None
        if info is not None and (info.etag, info.size) == (attr.etag, attr.size):
            return attr
        fresh = self._namespace.refresh(attr.key)
        if fresh is None or fresh.is_dir:
            return None
        return fresh
