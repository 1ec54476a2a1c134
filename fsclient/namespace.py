"""Namespace calls to the metadata service, as plain synchronous methods."""

from collections.abc import Callable
from typing import Any

import grpc

from dcfs.cluster import describe_rpc_error
from dcfs.errors import PeerError
from protos import dcfs_pb2, dcfs_pb2_grpc

READDIR_PAGE = 1000


class NamespaceClient:
    """Lookup, getattr and paged readdir; ``None`` means "no such entry"."""

    def __init__(self, stub: dcfs_pb2_grpc.MetadataStub, timeout_s: float = 10) -> None:
        self._stub = stub
        self._timeout_s = timeout_s

    def lookup(self, parent: int, name: str) -> dcfs_pb2.Attr | None:
        return self._attr(self._stub.Lookup, dcfs_pb2.LookupRequest(parent=parent, name=name))

    def getattr(self, inode: int) -> dcfs_pb2.Attr | None:
        return self._attr(self._stub.Getattr, dcfs_pb2.GetattrRequest(inode=inode))

    def readdir(self, inode: int, start_after: str) -> tuple[list[dcfs_pb2.DirEntry], bool]:
        request = dcfs_pb2.ReaddirRequest(inode=inode, start_after=start_after, limit=READDIR_PAGE)
        try:
            reply = self._stub.Readdir(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.NOT_FOUND:
                return [], False
            raise PeerError(f"metadata service: {describe_rpc_error(exc)}") from None
        return list(reply.entries), reply.more

    def _attr(self, method: Callable[..., Any], request: object) -> dcfs_pb2.Attr | None:
        try:
            reply = method(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise PeerError(f"metadata service: {describe_rpc_error(exc)}") from None
        attr: dcfs_pb2.Attr = reply.attr
        return attr
