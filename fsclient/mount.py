"""Runs the FUSE client: assembles the read path, mounts, follows the
namespace's changes, serves until unmounted or signalled, and always
unmounts on the way out."""

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import trio

from dcfs import heap, rpc
from dcfs.blockcache import BlockCache, DiskTier, MemoryTier
from dcfs.blockcache.statsfile import StatsFile
from dcfs.cluster import fetch_cluster_info
from dcfs.errors import ConfigError
from dcfs.objstore import open_store
from dcfs.sizes import format_size
from fsclient import fuseloop
from fsclient.changes import ChangeFollower
from fsclient.freshness import OpenCheck
from fsclient.kernel import FuseKernel
from fsclient.namespace import NamespaceClient
from fsclient.operations import Operations
from fsclient.reader import BlockReader
from fsclient.router import PeerRouter
from protos import dcfs_pb2_grpc

log = logging.getLogger("dcfs.client")


@dataclass(frozen=True)
class MountConfig:
    metadata: str
    mountpoint: Path
    cache_dir: Path
    memory: int
    disk: int
    prefetch: int
    free_space_ratio: float = 0.1  # of the disk tier's filesystem, left to others
    attr_timeout_s: float = 30.0
    peer_timeout_s: float = 10.0
    hedge_after_s: float = 1.0
    read_ahead_kb: int = 4096
    allow_other: bool = False
    debug_fuse: bool = False
    # "interval": changes show after the metadata service's next sync;
    # "open": every open checks the object's version with the bucket.
    consistency: str = "interval"
    stats_interval_s: float = 2.0  # how often CACHE_DIR/stats.json is rewritten
    pretouch: bool = False  # fault in the memory tier at start (dcfs.heap)


def check_mountpoint(path: Path) -> None:
    if not path.is_dir():
        raise ConfigError(f"mount point {path} does not exist or is not a directory")
    if os.path.ismount(path):
        raise ConfigError(f"{path} is already a mount point")


def run_mount(config: MountConfig, on_ready: Callable[[], None]) -> None:
    """Mount and serve until unmounted; ``on_ready`` runs once reads work."""
    check_mountpoint(config.mountpoint)
    heap.reuse_freed_memory()
    if config.pretouch:  # first: before any thread picks a malloc arena
        heap.pretouch(config.memory)
    info = fetch_cluster_info(config.metadata)
    store = open_store(info.bucket_url, info.endpoint_url or None)
    metadata = dcfs_pb2_grpc.MetadataStub(rpc.channel(config.metadata))
    disk = (
        DiskTier(config.cache_dir, config.disk, config.free_space_ratio)
        if config.disk > 0
        else None
    )
    cache = BlockCache(MemoryTier(config.memory), disk)
    router = PeerRouter(
        metadata,
        store,
        peer_timeout_s=config.peer_timeout_s,
        hedge_after_s=config.hedge_after_s,
        block_size=info.block_size,
    )
    reader = BlockReader(cache, router, info.block_size, config.prefetch)
    namespace = NamespaceClient(metadata, config.attr_timeout_s)
    kernel = FuseKernel()
    open_check = OpenCheck(store, namespace) if config.consistency == "open" else None
    ops = Operations(
        namespace,
        reader,
        attr_timeout_s=config.attr_timeout_s,
        open_check=open_check,
        kernel=kernel,
    )
    follower = ChangeFollower(metadata, namespace.attrs, kernel, info.generation)
    router.start(wait_for_streams=config.pretouch)
    waiter = fuseloop.QueuedFirst()
    stats_file = StatsFile(
        config.cache_dir / "stats.json",
        lambda: {
            **cache.report(),
            "fetches": _fetches(router),
            "lookups": dict(ops.lookups),
            "requests": {"found_queued": waiter.found_queued, "waited_for": waiter.waited_for},
        },
        config.stats_interval_s,
    )

    options = set(pyfuse3.default_options)
    options |= {"fsname=dcfs", "subtype=dcfs", "ro"}
    if config.allow_other:
        options.add("allow_other")
    if config.debug_fuse:
        options.add("debug")
    try:
        pyfuse3.init(ops, str(config.mountpoint), options)
    except RuntimeError as exc:
        raise ConfigError(f"cannot mount on {config.mountpoint}: {exc}") from None
    log.info("mounted %s on %s", info.bucket_url, config.mountpoint)
    follower.start()
    stats_file.start()
    fuseloop.install(waiter)
    try:
        trio.run(_serve, config, on_ready, follower, stats_file, cache)
    finally:
        fuseloop.uninstall()
        follower.stop()  # its kernel calls need the session: before close
        pyfuse3.close(unmount=True)
        router.stop()
        reader.close()
        for tier in cache.stats():
            log.info(
                "client %s tier: %d hits, %d misses, %s served, %d evictions, %d checksum failures",
                tier.name,
                tier.hits,
                tier.misses,
                format_size(tier.bytes_served),
                tier.evictions,
                tier.checksum_failures,
            )
        log.info(
            "client fetches: %d from cache nodes, %d from the bucket",
            router.peer_fetches,
            router.bucket_fetches,
        )
        cache.close()
        stats_file.close()
        store.close()


def _fetches(router: PeerRouter) -> dict[str, int]:
    return {
        "cache_nodes": router.peer_fetches,
        "bucket": router.bucket_fetches,
        "through_slots": router.slot_replies,  # of the cache nodes' (dcfs.blockslot)
    }


async def _serve(
    config: MountConfig,
    on_ready: Callable[[], None],
    follower: ChangeFollower,
    stats_file: StatsFile,
    cache: BlockCache,
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, follower)
        nursery.start_soon(_answer_user_signals, stats_file, cache)
        nursery.start_soon(_announce_ready, config, on_ready)
        # One idle reader of /dev/fuse: pyfuse3 starts another whenever all
        # are busy, so requests still overlap. Measured against four idle
        # ones: warm 1 MiB reads, one job, 3,700-4,200 -> 4,800-5,400 MiB/s;
        # small files unchanged.
        await pyfuse3.main(min_tasks=1, max_tasks=64)
        nursery.cancel_scope.cancel()


async def _stop_on_signal(follower: ChangeFollower) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("got %s: unmounting", signal.Signals(signum).name)
            # While the handlers still run: a kernel call of the follower may
            # wait for one of them to finish.
            await trio.to_thread.run_sync(follower.stop)
            pyfuse3.terminate()
            return


async def _answer_user_signals(stats_file: StatsFile, cache: BlockCache) -> None:
    """SIGUSR1 rewrites CACHE_DIR/stats.json now (``dcfs bench`` reads the
    client's counters before and after each job); SIGUSR2 first drops every
    block of the client's tiers (``dcfs bench --empty-caches``). Either way
    the rewritten file tells the sender it is done."""
    with trio.open_signal_receiver(signal.SIGUSR1, signal.SIGUSR2) as signals:
        async for signum in signals:
            if signum == signal.SIGUSR2:
                dropped = await trio.to_thread.run_sync(cache.empty)
                log.info("emptied the client's tiers on SIGUSR2: %s dropped", format_size(dropped))
            await trio.to_thread.run_sync(stats_file.write)


async def _announce_ready(config: MountConfig, on_ready: Callable[[], None]) -> None:
    """Wait for the kernel's INIT (a stat through the mount answers only after
    it), then raise the readahead, which INIT resets, and report ready."""
    st = await trio.to_thread.run_sync(os.stat, config.mountpoint)
    if config.read_ahead_kb > 0:
        set_read_ahead(st.st_dev, config.read_ahead_kb)
    on_ready()


def set_read_ahead(st_dev: int, kib: int) -> None:
    """Let the kernel send large read requests (its default is 128 KiB)."""
    path = Path(f"/sys/class/bdi/{os.major(st_dev)}:{os.minor(st_dev)}/read_ahead_kb")
    try:
        path.write_text(str(kib))
    except OSError as exc:
        log.info("could not raise readahead (%s): reads stay at 128 KiB", exc)
