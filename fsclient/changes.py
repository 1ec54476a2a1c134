"""Follows the metadata service's change stream and drops what changed from
the client's attribute cache and the kernel's caches, so that a new ``open``
sees a new object version as soon as the service has synced it.

One thread, outside the FUSE handlers (the kernel calls block until related
requests finish; the handlers keep running meanwhile). When the stream
breaks — the service restarted, the network hiccuped — it reconnects with
backoff from the last generation it applied; the change log lives in the
service's lmdb, so a restart loses nothing. The service sends something at
least every 10 s (``metadata.watch.KEEPALIVE_S``); a stream silent for
``stall_s`` is given up too, for a connection to a host that vanished can
stay open on this side forever. When the service cannot say
what changed (the client fell behind its bounded log, or it is another
database), it drops every name and attribute it knows.

Stop it before ``pyfuse3.close``: kernel calls need the live session.
"""

import logging
import threading
import time

import grpc

from dcfs.cluster import describe_rpc_error
from fsclient.kernel import KernelCache
from fsclient.namespace import AttrCache
from protos import dcfs_pb2, dcfs_pb2_grpc

log = logging.getLogger("dcfs.client")

ROOT_INODE = 1


class ChangeFollower:
    """``since`` is the generation the caches start from (``Info.generation``
    fetched before anything was cached)."""

    def __init__(
        self,
        stub: dcfs_pb2_grpc.MetadataStub,
        attrs: AttrCache,
        kernel: KernelCache,
        since: int,
        *,
        min_backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        stall_s: float = 30.0,
    ) -> None:
        self._stub = stub
        self._attrs = attrs
        self._kernel = kernel
        self._min_backoff_s = min_backoff_s
        self._max_backoff_s = max_backoff_s
        self._stall_s = stall_s
        self._lock = threading.Lock()
        self._heard = time.monotonic()
        self._generation = since
        self._namespace_id = ""
        self._call: grpc.Call | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="changes", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="changes-watch", daemon=True)
        self.connected = threading.Event()
        self.resets = 0

    @property
    def generation(self) -> int:
        """The last generation whose changes were applied."""
        with self._lock:
            return self._generation

    def start(self) -> None:
        self._thread.start()
        self._watchdog.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Cancel the stream and wait for the thread (it may be inside a
        kernel call: give it ``timeout_s``)."""
        self._stop.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("the change follower did not stop in %.0f s", timeout_s)
        if self._watchdog.is_alive():
            self._watchdog.join()

    def _run(self) -> None:
        delay = self._min_backoff_s
        lost = False
        while not self._stop.is_set():
            with self._lock:
                request = dcfs_pb2.WatchRequest(
                    since_generation=self._generation, namespace_id=self._namespace_id
                )
                call = self._call = self._stub.WatchChanges(request)
                self._heard = time.monotonic()
            if self._stop.is_set():
                call.cancel()
            try:
                for batch in call:
                    if not self.connected.is_set():
                        log.info("following namespace changes from generation %d", self.generation)
                        self.connected.set()
                    lost = False
                    delay = self._min_backoff_s
                    self.apply(batch)
                    self._attrs.heard()  # what it said is applied: cached entries hold
                    with self._lock:
                        self._heard = time.monotonic()
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    break
                if not lost:
                    log.info("change stream lost (%s): reconnecting", describe_rpc_error(exc))
                lost = True
            self._attrs.stream_lost()
            with self._lock:
                self._call = None
            self.connected.clear()
            self._stop.wait(delay)
            delay = min(delay * 2, self._max_backoff_s)
        self._attrs.stream_lost()  # stopped: nothing vouches for the cache any more

    def _watch(self) -> None:
        while not self._stop.wait(self._stall_s / 4):
            with self._lock:
                call, silent = self._call, time.monotonic() - self._heard
            if call is not None and silent > self._stall_s:
                log.info("change stream silent for %.0f s: reconnecting", silent)
                call.cancel()

    def apply(self, batch: dcfs_pb2.ChangeBatch) -> None:
        """Invalidate what ``batch`` changed, then record its generation."""
        if batch.reset:
            self._reset()
        elif batch.changes:
            # The client's cache first: from now on, lookups fetch afresh.
            added = dcfs_pb2.Change.ADDED
            self._attrs.forget(
                *(c.inode for c in batch.changes if c.kind != added),
                names=[(c.parent, c.name) for c in batch.changes if c.kind == added],
            )
            for change in batch.changes:
                if change.kind == dcfs_pb2.Change.CHANGED:
                    self._kernel.invalidate_inode(change.inode)
                else:
                    self._kernel.invalidate_entry(change.parent, change.name)
        with self._lock:
            self._generation = batch.generation
            self._namespace_id = batch.namespace_id

    def _reset(self) -> None:
        known = self._attrs.drain()
        log.info("namespace changes unknown: dropping %d cached entries", len(known))
        for inode, parent, name in known:
            if parent:
                self._kernel.invalidate_entry(parent, name)
            self._kernel.invalidate_inode(inode)
        self._kernel.invalidate_inode(ROOT_INODE)
        self.resets += 1
