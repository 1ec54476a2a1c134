"""The metadata daemon assembled: namespace store, initial sync, membership,
gRPC server, the periodic re-sync and refreshes of one path on demand.
Argument parsing stays in the command line; this module takes plain values.
"""

import logging
import threading
from pathlib import Path

from dcfs.errors import ConfigError, DcfsError
from dcfs.objstore.base import ObjectStore
from dcfs.rpc import bind, make_server
from metadata.membership import Membership
from metadata.model import Attr
from metadata.refresh import refresh_path
from metadata.servicer import MetadataServicer
from metadata.store import NamespaceStore
from metadata.sync import SyncCancelled, SyncReport, sync_from_bucket
from protos import dcfs_pb2_grpc

log = logging.getLogger("dcfs.metadata")


class MetadataServer:
    """Serves ``store`` (the bucket at ``bucket_url``) from an lmdb db in ``db_dir``.

    The constructor only checks its arguments; :meth:`start` opens the db,
    binds ``listen`` (``ConfigError`` if the port is taken, before any slow
    work), runs the initial sync (``BucketError`` propagates) and serves.
    ``sync_interval_s`` > 0 re-syncs in a background thread; a failed
    re-sync is logged and retried at the next interval. Each change stream
    holds a server thread, so the pool has ``max_watchers`` threads on top
    of ``max_workers``. The caller owns and closes ``store``.
    """

    def __init__(
        self,
        *,
        bucket_url: str,
        endpoint_url: str | None,
        db_dir: Path,
        listen: str,
        block_size: int,
        node_timeout_s: float,
        store: ObjectStore,
        sync_interval_s: float = 0.0,
        max_workers: int = 16,
        max_watchers: int = 256,
    ) -> None:
        if not 0 < block_size < 1 << 32:
            raise ConfigError(f"block size {block_size} is out of range")
        if not node_timeout_s > 0:
            raise ConfigError(f"node timeout must be positive, not {node_timeout_s}")
        if sync_interval_s < 0:
            raise ConfigError(f"sync interval must not be negative, not {sync_interval_s}")
        self.bucket_url = bucket_url
        self.endpoint_url = endpoint_url
        self.db_dir = db_dir
        self.listen = listen
        self.block_size = block_size
        self.node_timeout_s = node_timeout_s
        self.sync_interval_s = sync_interval_s
        self._objstore = store
        self._max_watchers = max_watchers
        self._namespace: NamespaceStore | None = None
        self._server = make_server(max_workers + max_watchers)
        self._stopping = threading.Event()
        self._resyncer: threading.Thread | None = None
        self.port = 0

    @property
    def address(self) -> str:
        """``host:port`` as bound (the real port when ``listen`` asked for 0)."""
        host = self.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    @property
    def namespace(self) -> NamespaceStore:
        if self._namespace is None:
            raise RuntimeError("the metadata server is not started")
        return self._namespace

    def start(self) -> None:
        namespace = NamespaceStore(self.db_dir)
        try:
            self.port = bind(self._server, self.listen)
            self._namespace = namespace
            report = self.resync()
            membership = Membership(self.node_timeout_s, store=namespace)
            servicer = MetadataServicer(
                namespace,
                membership,
                bucket_url=self.bucket_url,
                endpoint_url=self.endpoint_url,
                block_size=self.block_size,
                refresh=self.refresh,
                stopping=self._stopping,
                max_watchers=self._max_watchers,
            )
            dcfs_pb2_grpc.add_MetadataServicer_to_server(servicer, self._server)
            self._server.start()
        except BaseException:
            self._server.stop(None)
            self._namespace = None
            namespace.close()
            raise
        log.info(
            "serving %s on %s: %d objects, %d dirs, synced in %.2f s",
            self.bucket_url,
            self.address,
            report.objects,
            report.dirs,
            report.duration_s,
        )
        if self.sync_interval_s > 0:
            self._resyncer = threading.Thread(
                target=self._resync_loop, name="metadata-resync", daemon=True
            )
            self._resyncer.start()

    def resync(self) -> SyncReport:
        """Sync the namespace from the bucket now (serialised with other syncs)."""
        report = sync_from_bucket(self.namespace, self._objstore, cancel=self._stopping)
        log.debug("sync: %s", report)
        return report

    def refresh(self, path: str) -> Attr | None:
        """Refresh one path now (a file, or a directory and what is under it);
        its entry afterwards."""
        attr = refresh_path(self.namespace, self._objstore, path)
        log.debug("refreshed %r: %s", path, attr)
        return attr

    def _resync_loop(self) -> None:
        while not self._stopping.wait(self.sync_interval_s):
            try:
                report = self.resync()
            except SyncCancelled:
                return
            except DcfsError as exc:
                log.warning("re-sync of %s failed: %s", self.bucket_url, exc)
                continue
            if report.added or report.changed or report.deleted:
                log.info(
                    "re-sync: %d added, %d changed, %d deleted, generation %d",
                    report.added,
                    report.changed,
                    report.deleted,
                    report.generation,
                )

    def wait(self) -> None:
        """Block until :meth:`stop` (from another thread or a signal handler)."""
        self._server.wait_for_termination()

    def stop(self, grace_s: float | None = 1.0) -> None:
        """Stop serving (in-flight calls get ``grace_s``) and close the db."""
        self._stopping.set()
        if self._namespace is not None:
            self._namespace.wake()  # change streams see the stop
        self._server.stop(grace_s).wait()
        if self._resyncer is not None:
            self._resyncer.join()
            self._resyncer = None
        if self._namespace is not None:
            self._namespace.close()
            self._namespace = None

    def __enter__(self) -> "MetadataServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    bucket_url: str,
    endpoint_url: str | None,
    db_dir: Path,
    listen: str,
    block_size: int,
    node_timeout_s: float,
    store: ObjectStore,
    sync_interval_s: float = 0.0,
) -> MetadataServer:
    """Build and start a :class:`MetadataServer`; the caller stops it."""
    server = MetadataServer(
        bucket_url=bucket_url,
        endpoint_url=endpoint_url,
        db_dir=db_dir,
        listen=listen,
        block_size=block_size,
        node_timeout_s=node_timeout_s,
        store=store,
        sync_interval_s=sync_interval_s,
    )
    server.start()
    return server
