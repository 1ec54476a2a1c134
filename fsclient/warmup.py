"""``dcfs warmup``'s engine: resolves paths in the namespace, then has each
block's owner cache node load it (WarmBlock: no bytes come back), many
blocks at once, counting what was already cached and what was fetched."""

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import PurePosixPath

import pyfuse3

from dcfs.blocks import BlockRef, ObjectVersion, block_count
from dcfs.errors import ConfigError, DcfsError
from fsclient.namespace import NamespaceClient
from fsclient.router import Peers
from protos import dcfs_pb2


@dataclass
class WarmupStats:
    """Totals are known before the first block is warmed (for the ETA); the
    blocks done are cached (found on the node), fetched, or failed."""

    files: int = 0
    blocks: int = 0
    bytes: int = 0
    done_blocks: int = 0
    done_bytes: int = 0
    cached_blocks: int = 0
    fetched_blocks: int = 0
    fetched_bytes: int = 0
    failed_blocks: int = 0
    first_error: str = ""
    elapsed_s: float = 0.0


def resolve(namespace: NamespaceClient, path: str) -> dcfs_pb2.Attr:
    """The attributes of a path of the bucket's namespace ('/' is its root)."""
    attr = namespace.getattr(pyfuse3.ROOT_INODE)
    if attr is None:
        raise DcfsError("the metadata service has no root directory")
    for part in PurePosixPath("/", path).parts[1:]:
        if part == "..":
            raise ConfigError(f"{path!r}: '..' is not allowed")
        found = namespace.lookup(attr.inode, part) if attr.is_dir else None
        if found is None:
            raise ConfigError(f"{path!r}: no such file or directory in the bucket")
        attr = found
    return attr


def walk(namespace: NamespaceClient, attr: dcfs_pb2.Attr) -> Iterator[dcfs_pb2.Attr]:
    """Every file at or below ``attr``, directory pages followed to the end."""
    if not attr.is_dir:
        yield attr
        return
    start_after, more = "", True
    while more:
        entries, more = namespace.readdir(attr.inode, start_after)
        for entry in entries:
            yield from walk(namespace, entry.attr)
        if entries:
            start_after = entries[-1].name


class Warmup:
    """Warms files block by block with ``parallel`` requests in flight."""

    def __init__(
        self, peers: Peers, block_size: int, *, parallel: int = 16, timeout_s: float = 60.0
    ) -> None:
        if parallel < 1:
            raise ConfigError("--parallel must be at least 1")
        self._peers = peers
        self._block_size = block_size
        self._parallel = parallel
        self._timeout_s = timeout_s
        self._lock = threading.Lock()

    def plan(self, files: list[dcfs_pb2.Attr]) -> tuple[list[BlockRef], WarmupStats]:
        """The blocks of ``files`` (each file once) and the totals to warm."""
        seen: set[int] = set()
        refs: list[BlockRef] = []
        stats = WarmupStats()
        for attr in files:
            if attr.inode in seen:
                continue
            seen.add(attr.inode)
            stats.files += 1
            stats.bytes += attr.size
            version = ObjectVersion(attr.key, attr.etag, attr.size)
            refs += (
                BlockRef(version, i, self._block_size)
                for i in range(block_count(attr.size, self._block_size))
            )
        stats.blocks = len(refs)
        return refs, stats

    def run(
        self,
        refs: list[BlockRef],
        stats: WarmupStats,
        tick: Callable[[WarmupStats], None],
        tick_s: float = 0.2,
    ) -> WarmupStats:
        """Warm every block; ``tick`` sees the counters every ``tick_s`` and
        once at the end. A block no node could load is counted, not raised."""
        if refs and not len(self._peers.ring):
            raise ConfigError("the cluster has no cache nodes to warm")
        started = last_tick = time.monotonic()
        todo = iter(refs)
        running: set[Future[None]] = set()
        with ThreadPoolExecutor(self._parallel, thread_name_prefix="warmup") as pool:
            while True:
                while len(running) < 2 * self._parallel:
                    ref = next(todo, None)
                    if ref is None:
                        break
                    running.add(pool.submit(self._warm_one, ref, stats))
                if not running:
                    break
                _, running = wait(running, timeout=tick_s, return_when=FIRST_COMPLETED)
                if time.monotonic() - last_tick >= tick_s:
                    last_tick = time.monotonic()
                    stats.elapsed_s = last_tick - started
                    tick(stats)
        stats.elapsed_s = time.monotonic() - started
        tick(stats)
        return stats

    def _warm_one(self, ref: BlockRef, stats: WarmupStats) -> None:
        error = ""
        try:
            source = self._peers.warm(ref, self._timeout_s)
        except DcfsError as exc:
            source, error = "", str(exc)
        with self._lock:
            stats.done_blocks += 1
            stats.done_bytes += ref.length
            if not source:
                stats.failed_blocks += 1
                stats.first_error = stats.first_error or error
            elif source == "bucket":
                stats.fetched_blocks += 1
                stats.fetched_bytes += ref.length
            else:
                stats.cached_blocks += 1
