"""Test clusters: real daemons as subprocesses on loopback, a real mount.

Everything started here is stopped by PID, and every mount is unmounted,
even when a test fails; the daemons' logs are printed on failure.
"""

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dcfs import rpc
from dcfs.blocks import BlockRef, ObjectVersion, block_count
from dcfs.launcher import LocalCluster
from dcfs.ring import Node
from fsclient.namespace import NamespaceClient
from fsclient.warmup import resolve
from protos import dcfs_pb2, dcfs_pb2_grpc


@dataclass
class Mounted:
    cluster: LocalCluster
    mountpoint: Path
    source: Path  # a local copy of the bucket's content, to compare with


def dump_logs(cluster: LocalCluster) -> None:
    if cluster.log_dir is None:
        return
    for path in sorted(cluster.log_dir.glob("*.log")):
        text = path.read_text(errors="replace").splitlines()
        print(f"----- {path.name} (last 40 lines) -----")
        print("\n".join(text[-40:]))


@contextlib.contextmanager
def running_cluster(
    state_dir: Path,
    bucket_url: str,
    *,
    nodes: int = 2,
    endpoint_url: str | None = None,
    metadata_args: tuple[str, ...] = ("--block-size", "1MiB"),
    node_args: tuple[str, str] = ("64MiB", "256MiB"),
) -> Iterator[LocalCluster]:
    # Blocks go to disk however full this machine's disk is (its own 10%
    # reserve would keep them off a nearly full CI disk); tests of the
    # reserve ask for one.
    cluster = LocalCluster(
        state_dir,
        log_dir=state_dir / "logs",
        env=dict(os.environ),
        cache_args=("--free-space-ratio", "0"),
    )
    try:
        cluster.start_metadata(bucket_url, *metadata_args, endpoint_url=endpoint_url)
        for _ in range(nodes):
            cluster.start_node(*node_args)
        yield cluster
    except BaseException:
        dump_logs(cluster)
        raise
    finally:
        cluster.stop()


@contextlib.contextmanager
def mounted(
    cluster: LocalCluster, mountpoint: Path, *extra: str, name: str = "mount"
) -> Iterator[Path]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    child = cluster.start_mount(
        mountpoint, "--memory", "64MiB", "--disk", "128MiB", *extra, name=name
    )
    try:
        yield mountpoint
    except BaseException:
        dump_logs(cluster)
        raise
    finally:
        cluster.stop_child(child)
        assert not os.path.ismount(mountpoint), f"{mountpoint} is still mounted"


def members(cluster: LocalCluster) -> list[Node]:
    stub = dcfs_pb2_grpc.MetadataStub(rpc.channel(cluster.metadata_address))
    reply = stub.Members(dcfs_pb2.MembersRequest(), timeout=5)
    return [Node(n.node_id, n.address, n.capacity) for n in reply.nodes]


def blocks_of(cluster: LocalCluster, path: str, block_size: int) -> list[BlockRef]:
    """The blocks of a file of the cluster's namespace."""
    stub = dcfs_pb2_grpc.MetadataStub(rpc.channel(cluster.metadata_address))
    attr = resolve(NamespaceClient(stub, attr_ttl_s=1), path)
    version = ObjectVersion(attr.key, attr.etag, attr.size)
    return [BlockRef(version, i, block_size) for i in range(block_count(attr.size, block_size))]


def node_stats(address: str) -> dcfs_pb2.StatsReply:
    stub = dcfs_pb2_grpc.CacheNodeStub(rpc.channel(address))
    reply: dcfs_pb2.StatsReply = stub.Stats(dcfs_pb2.StatsRequest(), timeout=5)
    return reply


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``predicate`` every 0.1 s for at most ``timeout_s``: its last answer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()
