"""Namespace calls to the metadata service, as plain synchronous methods,
with a client-side attribute cache so that ``open`` and ``getattr`` of
entries just looked up or listed cost no round trip."""

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


class AttrCache:
    """inode -> attributes, each valid for ``ttl_s``; LRU-bounded in entries."""

    def __init__(self, ttl_s: float, max_entries: int = 1_000_000) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, tuple[float, dcfs_pb2.Attr]] = OrderedDict()

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

    def put(self, attr: dcfs_pb2.Attr) -> None:
        expires = time.monotonic() + self._ttl_s
        with self._lock:
            self._entries[attr.inode] = (expires, attr)
            self._entries.move_to_end(attr.inode)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def forget(self, inode: int) -> None:
        with self._lock:
            self._entries.pop(inode, None)


class NamespaceClient:
    """Lookup, getattr and paged readdir; ``None`` means "no such entry"."""

    def __init__(
        self, stub: dcfs_pb2_grpc.MetadataStub, attr_ttl_s: float, timeout_s: float = 10
    ) -> None:
        self._stub = stub
        self._timeout_s = timeout_s
        self.attrs = AttrCache(attr_ttl_s)

    def lookup(self, parent: int, name: str) -> dcfs_pb2.Attr | None:
        return self._attr(self._stub.Lookup, dcfs_pb2.LookupRequest(parent=parent, name=name))

    def getattr(self, inode: int) -> dcfs_pb2.Attr | None:
        cached = self.attrs.get(inode)
        if cached is not None:
            return cached
        return self._attr(self._stub.Getattr, dcfs_pb2.GetattrRequest(inode=inode))

    def readdir(self, inode: int, start_after: str) -> tuple[list[dcfs_pb2.DirEntry], bool]:
        request = dcfs_pb2.ReaddirRequest(inode=inode, start_after=start_after, limit=READDIR_PAGE)
        try:
            reply = self._stub.Readdir(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.NOT_FOUND:
                return [], False
            raise PeerError(f"metadata service: {describe_rpc_error(exc)}") from None
        for entry in reply.entries:
            self.attrs.put(entry.attr)
        return list(reply.entries), reply.more

    def _attr(self, method: Callable[..., Any], request: object) -> dcfs_pb2.Attr | None:
        try:
            reply = method(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise PeerError(f"metadata service: {describe_rpc_error(exc)}") from None
        attr: dcfs_pb2.Attr = reply.attr
        self.attrs.put(attr)
        return attr
