"""The gRPC edge of the metadata service: requests are checked here, the
synchronous core answers, and domain outcomes become status codes only here.

- NOT_FOUND: unknown inode, or no such name in the directory.
- FAILED_PRECONDITION: Readdir on a file (ENOTDIR to a client).
- INVALID_ARGUMENT: inode 0, a bad name ('', '.', '..', '/' or NUL in it,
  longer than 255 bytes), a bad path to refresh, a bad node id, address or
  capacity.
- RESOURCE_EXHAUSTED: more change streams than the service serves at once
  (each holds a server thread); the client retries later.
- Refresh's bucket errors map as :mod:`dcfs.rpcerrors` says.

A Readdir ``limit`` of 0 means :data:`DEFAULT_READDIR_LIMIT`; larger limits are
capped at :data:`MAX_READDIR_LIMIT` (the client pages on ``more`` anyway).
"""

import threading
from collections.abc import Callable, Iterator
from typing import NoReturn

import grpc

from dcfs import rpcerrors
from dcfs.errors import ConfigError, DcfsError
from dcfs.rpc import parse_address
from metadata.membership import Membership
from metadata.model import Attr
from metadata.store import NamespaceStore, NoSuchInode, NotADirectory
from metadata.sync import MAX_NAME_BYTES
from metadata.watch import follow
from protos import dcfs_pb2, dcfs_pb2_grpc

DEFAULT_READDIR_LIMIT = 1000
MAX_READDIR_LIMIT = 10000


def attr_to_pb(attr: Attr) -> dcfs_pb2.Attr:
    return dcfs_pb2.Attr(
        inode=attr.inode,
        is_dir=attr.is_dir,
        size=attr.size,
        mtime_ns=attr.mtime_ns,
        etag=attr.etag,
        key=attr.key,
    )


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # it raises; this keeps mypy honest


def _check_inode(context: grpc.ServicerContext, inode: int) -> None:
    if inode == 0:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "inode 0 does not exist")


def _check_name(context: grpc.ServicerContext, name: str, what: str = "name") -> None:
    problem = None
    if not name:
        problem = "is empty"
    elif name in (".", ".."):
        problem = "is . or .."
    elif "/" in name or "\0" in name:
        problem = "contains '/' or NUL"
    elif len(name.encode()) > MAX_NAME_BYTES:
        problem = f"is longer than {MAX_NAME_BYTES} bytes"
    if problem:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"{what} {name[:64]!r} {problem}")


class MetadataServicer(dcfs_pb2_grpc.MetadataServicer):
    """Maps each RPC onto :class:`NamespaceStore` and :class:`Membership`."""

    def __init__(
        self,
        store: NamespaceStore,
        membership: Membership,
        *,
        bucket_url: str,
        endpoint_url: str | None,
        block_size: int,
        refresh: Callable[[str], Attr | None],
        stopping: threading.Event,
        max_watchers: int = 256,
    ) -> None:
        self._store = store
        self._membership = membership
        self._bucket_url = bucket_url
        self._endpoint_url = endpoint_url or ""
        self._block_size = block_size
        self._refresh = refresh
        self._stopping = stopping
        self._watchers = threading.BoundedSemaphore(max_watchers)

    def Info(
        self, request: dcfs_pb2.InfoRequest, context: grpc.ServicerContext
    ) -> dcfs_pb2.InfoReply:
        return dcfs_pb2.InfoReply(
            bucket_url=self._bucket_url,
            endpoint_url=self._endpoint_url,
            block_size=self._block_size,
            generation=self._store.generation,
            objects=self._store.object_count,
        )

    def Lookup(
        self, request: dcfs_pb2.LookupRequest, context: grpc.ServicerContext
    ) -> dcfs_pb2.AttrReply:
        _check_inode(context, request.parent)
        _check_name(context, request.name)
        attr = self._store.lookup(request.parent, request.name)
        if attr is None:
            _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no {request.name!r} in directory inode {request.parent}",
            )
        return dcfs_pb2.AttrReply(attr=attr_to_pb(attr))

    def Getattr(
        self, request: dcfs_pb2.GetattrRequest, context: grpc.ServicerContext
    ) -> dcfs_pb2.AttrReply:
        _check_inode(context, request.inode)
        attr = self._store.getattr(request.inode)
        if attr is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"no inode {request.inode}")
        return dcfs_pb2.AttrReply(attr=attr_to_pb(attr))

    def Readdir(
        self, request: dcfs_pb2.ReaddirRequest, context: grpc.ServicerContext
    ) -> dcfs_pb2.ReaddirReply:
        _check_inode(context, request.inode)
        if request.start_after:
            _check_name(context, request.start_after, "start_after")
        limit = min(request.limit or DEFAULT_READDIR_LIMIT, MAX_READDIR_LIMIT)
        try:
            entries, more = self._store.readdir(request.inode, request.start_after, limit)
        except NoSuchInode as exc:
            _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except NotADirectory as exc:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return dcfs_pb2.ReaddirReply(
            entries=[dcfs_pb2.DirEntry(name=name, attr=attr_to_pb(a)) for name, a in entries],
            more=more,
        )

    def Join(
        self, request: dcfs_pb2.JoinRequest, context: grpc.ServicerContext
    ) -> dcfs_pb2.JoinReply:
        node = request.node
        if not node.node_id:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "node_id is empty")
        try:
            parse_address(node.address)
        except ConfigError as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if node.capacity == 0:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "capacity must be positive")
        if node.block_address:
            try:
                parse_address(node.block_address)
            except ConfigError as exc:
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        self._membership.join(node.node_id, node.address, node.capacity, node.block_address)
        interval_ms = max(1, round(self._membership.heartbeat_interval_s * 1000))
        return dcfs_pb2.JoinReply(heartbeat_interval_ms=interval_ms)

    def Heartbeat(
        self, request: dcfs_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> dcfs_pb2.HeartbeatReply:
        if not request.node_id:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "node_id is empty")
        return dcfs_pb2.HeartbeatReply(known=self._membership.heartbeat(request.node_id))

    def Leave(
        self, request: dcfs_pb2.LeaveRequest, context: grpc.ServicerContext
    ) -> dcfs_pb2.LeaveReply:
        if not request.node_id:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "node_id is empty")
        self._membership.leave(request.node_id)
        return dcfs_pb2.LeaveReply()

    def Members(
        self, request: dcfs_pb2.MembersRequest, context: grpc.ServicerContext
    ) -> dcfs_pb2.MembersReply:
        nodes, epoch = self._membership.members()
        return dcfs_pb2.MembersReply(
            nodes=[
                dcfs_pb2.NodeInfo(
                    node_id=n.node_id,
                    address=n.address,
                    capacity=n.capacity,
                    block_address=n.block_address,
                )
                for n in nodes
            ],
            epoch=epoch,
        )

    def WatchChanges(
        self, request: dcfs_pb2.WatchRequest, context: grpc.ServicerContext
    ) -> Iterator[dcfs_pb2.ChangeBatch]:
        if not self._watchers.acquire(blocking=False):
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "too many change streams")
        try:
            context.add_callback(self._store.wake)  # a client that goes away ends the wait

            def stop() -> bool:
                return self._stopping.is_set() or not context.is_active()

            since, namespace_id = request.since_generation, request.namespace_id
            for batch in follow(self._store, since, namespace_id, stop):
                yield dcfs_pb2.ChangeBatch(
                    generation=batch.generation,
                    changes=[
                        dcfs_pb2.Change(
                            kind=dcfs_pb2.Change.Kind.ValueType(c.kind),
                            inode=c.inode,
                            parent=c.parent,
                            name=c.name,
                        )
                        for c in batch.changes
                    ],
                    reset=batch.reset,
                    namespace_id=self._store.namespace_id,
                )
        finally:
            self._watchers.release()

    def Refresh(
        self, request: dcfs_pb2.RefreshRequest, context: grpc.ServicerContext
    ) -> dcfs_pb2.RefreshReply:
        for name in request.path.split("/") if request.path else []:
            _check_name(context, name, "path component")
        try:
            attr = self._refresh(request.path)
        except DcfsError as exc:
            rpcerrors.abort(context, exc)
        reply = dcfs_pb2.RefreshReply(generation=self._store.generation)
        if attr is not None:
            reply.attr.CopyFrom(attr_to_pb(attr))
        return reply
