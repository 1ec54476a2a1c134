"""Hit counters of the cache tiers, read before and after each job so the
report can show each tier's hit ratio in that job; and, for cold jobs on a
warm cluster, emptying the tiers first (``dcfs bench --empty-caches``)."""

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from dcfs import rpc
from dcfs.cluster import describe_rpc_error, list_cache_nodes
from dcfs.errors import PeerError
from protos import dcfs_pb2, dcfs_pb2_grpc

Counters = dict[str, tuple[int, int]]  # tier -> (hits, misses)
StatsSource = Callable[[], Counters]


def cluster_counters(metadata_address: str) -> StatsSource:
    """The cache nodes' tiers, summed over the nodes the metadata service lists."""

    def read() -> Counters:
        totals: dict[str, list[int]] = {}
        try:
            nodes = list_cache_nodes(metadata_address)
        except PeerError:
            return {}
        for node in nodes:
            stub = dcfs_pb2_grpc.CacheNodeStub(rpc.channel(node.address))
            try:
                stats = stub.Stats(dcfs_pb2.StatsRequest(), timeout=5)
            except grpc.RpcError:
                continue
            for tier in stats.tiers:
                entry = totals.setdefault(f"node {tier.name}", [0, 0])
                entry[0] += tier.hits
                entry[1] += tier.misses
        return {name: (h, m) for name, (h, m) in totals.items()}

    return read


def client_counters(stats_path: Path) -> StatsSource:
    """The mount's own tiers, from its stats file: SIGUSR1 asks the mount to
    rewrite it now, and the new version is read (at most a second's wait)."""

    def read() -> Counters:
        current, _ = _signal_mount(stats_path, signal.SIGUSR1, "updated", timeout_s=1.0)
        tiers = current.get("tiers")
        if not isinstance(tiers, list):
            return {}
        return {f"client {t['name']}": (int(t["hits"]), int(t["misses"])) for t in tiers}

    return read


def empty_client(stats_path: Path) -> None:
    """Drop every block of the mount's tiers: SIGUSR2, answered by a count
    of emptyings one higher in its stats file; PeerError if that does not come."""
    if not _signal_mount(stats_path, signal.SIGUSR2, "emptied", timeout_s=120.0)[1]:
        raise PeerError(f"the mount of {stats_path} did not empty its tiers")


def empty_nodes(metadata_address: str) -> None:
    """Drop every block of every cache node the metadata service lists;
    PeerError for one that does not answer."""
    for node in list_cache_nodes(metadata_address):
        stub = dcfs_pb2_grpc.CacheNodeStub(rpc.channel(node.address))
        try:
            stub.EmptyCache(dcfs_pb2.EmptyCacheRequest(), timeout=120)
        except grpc.RpcError as exc:
            raise PeerError(f"cache node at {node.address}: {describe_rpc_error(exc)}") from None


def _load(stats_path: Path) -> dict[str, object]:
    try:
        data: dict[str, object] = json.loads(stats_path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def _signal_mount(
    stats_path: Path, signum: int, answer: str, timeout_s: float
) -> tuple[dict[str, object], bool]:
    """Send ``signum`` to the mount that writes ``stats_path``; its stats
    file afterwards, and whether the field ``answer`` of it changed within
    ``timeout_s``. ``({}, False)`` if no mount runs there."""
    current = _load(stats_path)
    pid = current.get("pid")
    if not isinstance(pid, int) or not _is_dcfs_mount(pid):
        return {}, False
    try:
        os.kill(pid, signum)
    except OSError:
        return {}, False
    before = current.get(answer)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = _load(stats_path) or current
        if current.get(answer) != before:
            return current, True
        time.sleep(0.01)
    return current, False


def _is_dcfs_mount(pid: int) -> bool:
    """Whether ``pid`` runs ``dcfs mount``: a stats file left by a mount that
    is gone may name a PID the system has given to another process, which
    SIGUSR1 would end."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"mount" in args and any(arg.endswith(b"dcfs") for arg in args)


def combined(*sources: StatsSource) -> StatsSource:
    def read() -> Counters:
        counters: Counters = {}
        for source in sources:
            counters.update(source())
        return counters

    return read


def hit_ratios(before: Counters, after: Counters) -> dict[str, float]:
    ratios = {}
    for name, (hits, misses) in after.items():
        h0, m0 = before.get(name, (0, 0))
        lookups = (hits - h0) + (misses - m0)
        if lookups > 0:
            ratios[name] = (hits - h0) / lookups
    return ratios
