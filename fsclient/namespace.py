"""Namespace calls to the metadata service, as plain synchronous methods,
with a client-side attribute cache so that ``open`` and ``getattr`` of
entries just looked up or listed cost no round trip.

The change follower (:mod:`fsclient.changes`) forgets changed entries. A
reply that was on its way while it did may describe the old version, so the
cache has an epoch that every forget moves and remembers when each inode was
last forgotten: a reply is cached, and handed to the kernel, only if its
inode was not forgotten while it was fetched (else it is fetched again).
"""

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import grpc

from dcfs.cluster import describe_rpc_error
from dcfs.errors import PeerError
from protos import dcfs_pb2, dcfs_pb2_grpc

READDIR_PAGE = 1000
# Fetches of one reply while invalidations keep coming, before the last one is used.
_ATTEMPTS = 3


class AttrCache:
    """inode -> attributes (and the directory entry they were last seen
    under), each valid for ``ttl_s``; LRU-bounded in entries."""

    def __init__(
        self, ttl_s: float, max_entries: int = 1_000_000, max_forgotten: int = 100_000
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._max_forgotten = max_forgotten
        self._lock = threading.Lock()
        # inode -> (expires, attributes, parent, name); parent 0: not known.
        self._entries: OrderedDict[int, tuple[float, dcfs_pb2.Attr, int, str]] = OrderedDict()
        self._epoch = 0
        # inode -> epoch of its last forget; older forgets are summed up by
        # ``_lost``: any reply fetched before it is suspect.
        self._forgotten: OrderedDict[int, int] = OrderedDict()
        self._lost = 0

    @property
    def epoch(self) -> int:
        """Moves with every forget; read it before fetching, pass it to :meth:`put`."""
        with self._lock:
            return self._epoch

    def get(self, inode: int) -> dcfs_pb2.Attr | None:
        with self._lock:
            found = self._entries.get(inode)
            if found is None:
                return None
            if found[0] < time.monotonic():
                del self._entries[inode]
                return None
            self._entries.move_to_end(inode)
            return found[1]

    def put(
        self, attr: dcfs_pb2.Attr, epoch: int | None = None, parent: int = 0, name: str = ""
    ) -> bool:
        """Cache ``attr`` unless its inode was forgotten since ``epoch``
        (then it may be stale: False)."""
        expires = time.monotonic() + self._ttl_s
        with self._lock:
            if epoch is not None and max(self._lost, self._forgotten.get(attr.inode, 0)) > epoch:
                return False
            if not parent and (old := self._entries.get(attr.inode)) is not None:
                parent, name = old[2], old[3]
            self._entries[attr.inode] = (expires, attr, parent, name)
            self._entries.move_to_end(attr.inode)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return True

    def forget(self, *inodes: int) -> None:
        with self._lock:
            self._epoch += 1
            for inode in inodes:
                self._entries.pop(inode, None)
                self._forgotten[inode] = self._epoch
                self._forgotten.move_to_end(inode)
            while len(self._forgotten) > self._max_forgotten:
                _, epoch = self._forgotten.popitem(last=False)
                self._lost = max(self._lost, epoch)

    def drain(self) -> list[tuple[int, int, str]]:
        """Forget everything; return each ``(inode, parent, name)`` it held."""
        with self._lock:
            self._epoch += 1
            self._lost = self._epoch
            self._forgotten.clear()
            known = [(inode, e[2], e[3]) for inode, e in self._entries.items()]
            self._entries.clear()
        return known


class NamespaceClient:
    """Lookup, getattr, paged readdir and refresh; ``None`` means "no such entry"."""

    def __init__(
        self,
        stub: dcfs_pb2_grpc.MetadataStub,
        attr_ttl_s: float,
        timeout_s: float = 10,
        refresh_timeout_s: float = 60,
    ) -> None:
        self._stub = stub
        self._timeout_s = timeout_s
        self._refresh_timeout_s = refresh_timeout_s
        self.attrs = AttrCache(attr_ttl_s)

    def lookup(self, parent: int, name: str) -> dcfs_pb2.Attr | None:
        request = dcfs_pb2.LookupRequest(parent=parent, name=name)
        for _ in range(_ATTEMPTS):
            epoch = self.attrs.epoch
            attr = self._attr(self._stub.Lookup, request)
            if attr is None or self.attrs.put(attr, epoch, parent, name):
                break
        return attr

    def getattr(self, inode: int) -> dcfs_pb2.Attr | None:
        cached = self.attrs.get(inode)
        if cached is not None:
            return cached
        request = dcfs_pb2.GetattrRequest(inode=inode)
        for _ in range(_ATTEMPTS):
            epoch = self.attrs.epoch
            attr = self._attr(self._stub.Getattr, request)
            if attr is None or self.attrs.put(attr, epoch):
                break
        return attr

    def readdir(self, inode: int, start_after: str) -> tuple[list[dcfs_pb2.DirEntry], bool]:
        request = dcfs_pb2.ReaddirRequest(inode=inode, start_after=start_after, limit=READDIR_PAGE)
        for _ in range(_ATTEMPTS):
            epoch = self.attrs.epoch
            try:
                reply = self._stub.Readdir(request, timeout=self._timeout_s)
            except grpc.RpcError as exc:
                if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.NOT_FOUND:
                    return [], False
                raise PeerError(f"metadata service: {describe_rpc_error(exc)}") from None
            if all(self.attrs.put(e.attr, epoch, inode, e.name) for e in reply.entries):
                break
        return list(reply.entries), reply.more

    def refresh(self, path: str) -> dcfs_pb2.Attr | None:
        """Have the metadata service bring ``path`` in line with the bucket now;
        the entry afterwards."""
        request = dcfs_pb2.RefreshRequest(path=path)
        try:
            reply = self._stub.Refresh(request, timeout=self._refresh_timeout_s)
        except grpc.RpcError as exc:
            raise PeerError(f"metadata service: refresh: {describe_rpc_error(exc)}") from None
        if not reply.HasField("attr"):
            return None
        self.attrs.put(reply.attr)
        return reply.attr

    def _attr(self, method: Callable[..., Any], request: object) -> dcfs_pb2.Attr | None:
        try:
            reply = method(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise PeerError(f"metadata service: {describe_rpc_error(exc)}") from None
        attr: dcfs_pb2.Attr = reply.attr
        return attr
