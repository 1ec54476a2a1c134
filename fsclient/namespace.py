"""Namespace calls to the metadata service, as plain synchronous methods,
with a client-side cache of names and attributes so that ``lookup``,
``open`` and ``getattr`` of entries looked up or listed before cost no round
trip.

The change follower (:mod:`fsclient.changes`) forgets changed entries. A
reply that was on its way while it did may describe the old version, so the
cache has an epoch that every forget moves and remembers when each inode was
last forgotten: a reply is cached, and handed to the kernel, only if its
inode was not forgotten while it was fetched (else it is fetched again).

An entry is good for ``ttl_s`` (``--attr-timeout``, the kernel's timeout
too), and for longer while the follower vouches for it: an entry cached
while the change stream was up stays good as long as that same stream is up
and was heard from within ``vouch_s`` (the service sends something every
10 s), for the stream would have said if it changed. Without this, every
name of an epoch longer than the timeout cost a metadata round trip again
(1.4-1.6 ms a lookup here, against 0.1 from the cache). A lost or silent
stream ends the vouching: entries fall back to ``ttl_s`` from when they were
fetched.
"""

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import grpc

from dcfs.cluster import describe_rpc_error
from dcfs.errors import PeerError
from protos import dcfs_pb2, dcfs_pb2_grpc

READDIR_PAGE = 1000
# Fetches of one reply while invalidations keep coming, before the last one is used.
_ATTEMPTS = 3
# How recently the change stream must have delivered to vouch for entries
# past their timeout: the service sends something every 10 s
# (metadata.watch.KEEPALIVE_S).
VOUCH_S = 15.0


class _Entry(NamedTuple):
    expires: float
    attr: dcfs_pb2.Attr
    parent: int  # 0: not known
    name: str
    session: int  # the change stream it was cached under; -1: none was up


class AttrCache:
    """inode -> attributes (and the directory entry they were last seen
    under), plus (parent, name) -> inode; LRU-bounded in entries."""

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 1_000_000,
        max_forgotten: int = 100_000,
        vouch_s: float = VOUCH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._max_forgotten = max_forgotten
        self._vouch_s = vouch_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._names: dict[tuple[int, str], int] = {}
        self._epoch = 0
        # inode -> epoch of its last forget; older forgets are summed up by
        # ``_lost``: any reply fetched before it is suspect.
        self._forgotten: OrderedDict[int, int] = OrderedDict()
        self._lost = 0
        # The change stream: which one (every start or loss moves it), whether
        # it is up, and when it last delivered.
        self._session = 0
        self._following = False
        self._heard = 0.0

    @property
    def epoch(self) -> int:
        """Moves with every forget; read it before fetching, pass it to :meth:`put`."""
        with self._lock:
            return self._epoch

    def get(self, inode: int) -> dcfs_pb2.Attr | None:
        with self._lock:
            found = self._good(inode)
            return None if found is None else found.attr

    def lookup(self, parent: int, name: str) -> dcfs_pb2.Attr | None:
        """The attributes of ``name`` in directory ``parent``, if cached and good."""
        with self._lock:
            inode = self._names.get((parent, name))
            found = None if inode is None else self._good(inode)
            return None if found is None else found.attr

    def _good(self, inode: int) -> _Entry | None:
        """The entry of ``inode`` if still good (a stale one is dropped)."""
        found = self._entries.get(inode)
        if found is None:
            return None
        now = self._clock()
        if found.expires < now and not self._vouched(found, now):
            self._drop(inode)
            return None
        self._entries.move_to_end(inode)
        return found

    def _vouched(self, entry: _Entry, now: float) -> bool:
        """Cached under the change stream that is up, and heard from lately."""
        return (
            entry.session == self._session and self._following and now - self._heard < self._vouch_s
        )

    def put(
        self, attr: dcfs_pb2.Attr, epoch: int | None = None, parent: int = 0, name: str = ""
    ) -> bool:
        """Cache ``attr`` unless its inode was forgotten since ``epoch``
        (then it may be stale: False)."""
        expires = self._clock() + self._ttl_s
        with self._lock:
            if epoch is not None and max(self._lost, self._forgotten.get(attr.inode, 0)) > epoch:
                return False
            old = self._entries.get(attr.inode)
            if old is not None and not parent:
                parent, name = old.parent, old.name
            elif old is not None and (old.parent, old.name) != (parent, name):
                self._names.pop((old.parent, old.name), None)
            session = self._session if self._following else -1
            self._entries[attr.inode] = _Entry(expires, attr, parent, name, session)
            self._entries.move_to_end(attr.inode)
            if parent:
                self._names[(parent, name)] = attr.inode
            while len(self._entries) > self._max_entries:
                self._drop(next(iter(self._entries)))
        return True

    def _drop(self, inode: int) -> None:
        gone = self._entries.pop(inode, None)
        if gone is not None and gone.parent and self._names.get((gone.parent, gone.name)) == inode:
            del self._names[(gone.parent, gone.name)]

    def forget(self, *inodes: int, names: Iterable[tuple[int, str]] = ()) -> None:
        """Drop these inodes, and the inodes these ``(parent, name)`` pairs
        name (a name added anew may have meant another inode before)."""
        with self._lock:
            self._epoch += 1
            named = (self._names.get(key) for key in names)
            for inode in [*inodes, *(i for i in named if i is not None)]:
                self._drop(inode)
                self._forgotten[inode] = self._epoch
                self._forgotten.move_to_end(inode)
            while len(self._forgotten) > self._max_forgotten:
                _, epoch = self._forgotten.popitem(last=False)
                self._lost = max(self._lost, epoch)

    def heard(self) -> None:
        """The change stream delivered (and what it said is applied): the
        entries cached under it are up to date as of now."""
        with self._lock:
            if not self._following:
                self._session += 1
                self._following = True
            self._heard = self._clock()

    def stream_lost(self) -> None:
        """No change stream: from now on entries are good for ``ttl_s`` only."""
        with self._lock:
            self._following = False
            self._session += 1

    def drain(self) -> list[tuple[int, int, str]]:
        """Forget everything; return each ``(inode, parent, name)`` it held."""
        with self._lock:
            self._epoch += 1
            self._lost = self._epoch
            self._forgotten.clear()
            known = [(inode, e.parent, e.name) for inode, e in self._entries.items()]
            self._entries.clear()
            self._names.clear()
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
        cached = self.attrs.lookup(parent, name)
        if cached is not None:
            return cached
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
