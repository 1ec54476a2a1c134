"""The cache tiers end to end, with real processes over an s3:// bucket on
SeaweedFS: bounds under a dataset twice their size, flipped bytes, restarts
that need no bucket, a full small filesystem, concurrent cold readers.

What reached the bucket is counted by SeaweedFS itself (its metrics): ranged
GETs (HTTP 206) are block reads.
"""

import hashlib
import json
import mmap
import os
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from clusters import mounted, running_cluster
from seaweed import SeaweedServer
from smallfs import tmpfs

from dcfs import rpc
from dcfs.launcher import LocalCluster
from protos import dcfs_pb2, dcfs_pb2_grpc

MiB = 1024 * 1024
BUCKET = "cache-e2e"
CACHE = ("--memory", "8MiB", "--disk", "16MiB", "--prefetch", "4MiB")  # the client's
NODE_CACHE = ("8MiB", "16MiB")


@dataclass
class Bucket:
    url: str
    endpoint: str
    server: SeaweedServer
    digests: dict[str, str]  # key -> sha256 of its bytes

    def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.digests if k.startswith(prefix))

    def block_reads(self) -> int:
        return self.server.requests(BUCKET, code="206")


@pytest.fixture(scope="module")
def bucket(seaweed: SeaweedServer) -> Bucket:
    rng = random.Random(3)
    sizes = {f"big/f{i}.bin": 8 * MiB + MiB // 2 for i in range(4)}  # 34 MiB: 2x the disks
    sizes |= {f"small/f{i}.bin": 2 * MiB + MiB // 2 for i in range(3)}  # 9 blocks: fits
    sizes["one/cold.bin"] = 6 * MiB + 1  # 7 blocks
    client = seaweed.client()
    seaweed.create_bucket(BUCKET)
    digests = {}
    for key, size in sizes.items():
        data = rng.randbytes(size)
        client.put_object(Bucket=BUCKET, Key=key, Body=data)
        digests[key] = hashlib.sha256(data).hexdigest()
    return Bucket(f"s3://{BUCKET}", seaweed.endpoint_url, seaweed, digests)


@pytest.fixture
def cluster(bucket: Bucket, tmp_path: Path) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path, bucket.url, nodes=0, endpoint_url=bucket.endpoint) as started:
        yield started


def read_all(mnt: Path, bucket: Bucket, prefix: str) -> None:
    """Read every file under ``prefix`` through dcfs (not the kernel's page
    cache, which keeps what this mount read before) and check its bytes."""
    for key in bucket.keys(prefix):
        h = hashlib.sha256()
        with open(mnt / key, "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            while chunk := f.read(MiB):
                h.update(chunk)
        assert h.hexdigest() == bucket.digests[key], key


def node_stats(address: str) -> dcfs_pb2.StatsReply:
    stub = dcfs_pb2_grpc.CacheNodeStub(rpc.channel(address))
    reply: dcfs_pb2.StatsReply = stub.Stats(dcfs_pb2.StatsRequest(), timeout=10)
    return reply


def tiers(reply: dcfs_pb2.StatsReply) -> dict[str, dcfs_pb2.TierStats]:
    return {t.name: t for t in reply.tiers}


def client_stats(cache_dir: Path) -> dict[str, dict[str, int | str]]:
    """The client's tiers, from the stats file it rewrites (last at exit)."""
    report = json.loads((cache_dir / "stats.json").read_text())
    return {t["name"]: t for t in report["tiers"]} | {"fetches": report["fetches"]}


def client_used(cache_dir: Path, tier: str) -> int:
    """A client tier's own accounting, from its latest stats file (0 before one)."""
    try:
        return int(client_stats(cache_dir)[tier]["used_bytes"])
    except FileNotFoundError:
        return 0


def blocks_on_disk(cache_dir: Path) -> int:
    """What the block files occupy, as ``du`` counts it; 0 before any exist.

    The walk over 256 fan-out directories is not one snapshot: it can see a
    block in an early directory before its eviction and, later, the block
    written in its place. Only files still there after the walk count.
    """
    sizes: dict[Path, int] = {}
    for path in (cache_dir / "blocks").rglob("*"):
        try:
            if path.is_file():
                sizes[path] = path.stat().st_blocks * 512
        except FileNotFoundError:  # evicted while we looked
            pass
    return sum(size for path, size in sizes.items() if path.exists())


def stop(cluster: LocalCluster, name: str) -> None:
    cluster.stop_child(next(c for c in cluster.children if c.name == name))


class Sampler:
    """Records the peak of each measure while reads run (at most 2,000 rounds)."""

    def __init__(self, measures: dict[str, Callable[[], int]]) -> None:
        self.measures = measures
        self.peaks: dict[str, int] = dict.fromkeys(measures, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        for _ in range(2000):
            for name, measure in self.measures.items():
                self.peaks[name] = max(self.peaks[name], measure())
            if self._stop.wait(0.05):
                return

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for name, measure in self.measures.items():  # once more, at the end
            self.peaks[name] = max(self.peaks[name], measure())


def test_dataset_twice_the_caches_stays_within_bounds(
    cluster: LocalCluster, bucket: Bucket, tmp_path: Path
) -> None:
    node = cluster.start_node(*NODE_CACHE)
    node_dir, client_dir = tmp_path / "node0", tmp_path / "mount"
    measures: dict[str, Callable[[], int]] = {
        "node disk dir": lambda: blocks_on_disk(node_dir),
        "client disk dir": lambda: blocks_on_disk(client_dir),
        "node memory": lambda: tiers(node_stats(node))["memory"].used_bytes,
        "node disk": lambda: tiers(node_stats(node))["disk"].used_bytes,
        "client memory": lambda: client_used(client_dir, "memory"),
        "client disk": lambda: client_used(client_dir, "disk"),
    }
    with mounted(cluster, tmp_path / "mnt", *CACHE) as mnt, Sampler(measures) as sampler:
        for _ in range(2):
            read_all(mnt, bucket, "big/")
    client = client_stats(client_dir)  # written at exit, after the last read
    peaks = sampler.peaks
    assert peaks["node disk dir"] <= 16 * MiB and peaks["client disk dir"] <= 16 * MiB
    assert peaks["node memory"] <= 8 * MiB and peaks["node disk"] <= 16 * MiB
    assert peaks["client memory"] <= 8 * MiB and peaks["client disk"] <= 16 * MiB
    assert client["memory"]["used_bytes"] <= 8 * MiB and client["disk"]["used_bytes"] <= 16 * MiB
    assert peaks["node disk dir"] > 12 * MiB and peaks["client disk dir"] > 12 * MiB  # filled
    node_tiers = tiers(node_stats(node))
    assert node_tiers["disk"].evictions > 0 and node_tiers["memory"].evictions > 0
    assert int(client["disk"]["evictions"]) > 0 and int(client["memory"]["evictions"]) > 0


def flip_every_block_file(cache_dir: Path) -> int:
    files = sorted((cache_dir / "blocks").rglob("*.blk"))
    for path in files:
        with open(path, "r+b") as f:
            f.seek(path.stat().st_size // 2)  # in the data
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x20]))
    return len(files)


def test_flipped_bytes_are_caught_and_fetched_again(
    cluster: LocalCluster, bucket: Bucket, tmp_path: Path
) -> None:
    cluster.start_node(*NODE_CACHE)
    with mounted(cluster, tmp_path / "mnt", *CACHE) as mnt:
        read_all(mnt, bucket, "small/")
    stop(cluster, "cachenode0")
    flipped_node = flip_every_block_file(tmp_path / "node0")
    flipped_client = flip_every_block_file(tmp_path / "mount")
    assert flipped_node == flipped_client == 9

    node = cluster.start_node(*NODE_CACHE)  # same cache directory
    with mounted(cluster, tmp_path / "mnt", *CACHE) as mnt:
        read_all(mnt, bucket, "small/")
    reply = node_stats(node)
    assert tiers(reply)["disk"].checksum_failures == flipped_node
    assert reply.bucket_fetches == 9
    assert client_stats(tmp_path / "mount")["disk"]["checksum_failures"] == flipped_client


def test_restarted_node_and_client_serve_from_their_disks(
    cluster: LocalCluster, bucket: Bucket, tmp_path: Path
) -> None:
    before = bucket.block_reads()
    cluster.start_node(*NODE_CACHE)
    with mounted(cluster, tmp_path / "mnt", *CACHE) as mnt:
        read_all(mnt, bucket, "small/")
    assert bucket.block_reads() - before == 9  # the metric sees our reads
    stop(cluster, "cachenode0")

    node = cluster.start_node(*NODE_CACHE)
    before = bucket.block_reads()
    with mounted(cluster, tmp_path / "mnt", *CACHE) as mnt:  # the same client, restarted
        read_all(mnt, bucket, "small/")
    with mounted(cluster, tmp_path / "mnt2", *CACHE, name="fresh") as mnt:  # asks the node
        read_all(mnt, bucket, "small/")
    assert bucket.block_reads() == before
    client = client_stats(tmp_path / "mount")
    assert client["disk"]["hits"] == 9
    assert client["fetches"] == {"cache_nodes": 0, "bucket": 0, "through_slots": 0}
    reply = node_stats(node)
    assert tiers(reply)["disk"].hits == 9 and reply.bucket_fetches == 0


def test_reads_succeed_when_the_disk_tier_fills_a_small_filesystem(
    cluster: LocalCluster, bucket: Bucket, tmp_path: Path
) -> None:
    # The node's blocks on 3 MiB (it must evict to keep 10% free); the
    # client's on a tmpfs with 8 inodes (ENOSPC after a few files).
    with (
        tmpfs(tmp_path / "node0" / "blocks", "size=3m") as node_fs,
        tmpfs(tmp_path / "mount" / "blocks", "size=64m,nr_inodes=8"),
    ):
        node = cluster.start_node("4MiB", "1GiB", "--free-space-ratio", "10%")
        with mounted(cluster, tmp_path / "mnt", *CACHE) as mnt:
            read_all(mnt, bucket, "big/")
            read_all(mnt, bucket, "one/")
        node_disk = tiers(node_stats(node))["disk"]
        stop(cluster, "cachenode0")
        st = os.statvfs(node_fs)
        assert st.f_bavail >= st.f_blocks // 10  # the reserve was kept
    assert node_disk.evictions > 0 and node_disk.used_bytes <= 3 * MiB
    client = client_stats(tmp_path / "mount")
    assert client["disk"]["state"] in ("degraded", "off")
    log = (tmp_path / "logs" / "mount.log").read_text()
    assert log.count("is failing") == 1


def test_eight_readers_of_a_cold_file_fetch_each_block_once(
    cluster: LocalCluster, bucket: Bucket, tmp_path: Path
) -> None:
    nodes = [cluster.start_node(*NODE_CACHE) for _ in range(2)]
    before = bucket.block_reads()
    digests: list[str] = []
    barrier = threading.Barrier(8)

    def reader(mnt: Path) -> None:
        barrier.wait(timeout=30)
        with open(mnt / "one" / "cold.bin", "rb") as f:
            digests.append(hashlib.sha256(f.read()).hexdigest())

    # No hedging: on two busy cores an owner may stay silent past the default
    # second, and a hedge rightly asks the next owner, which fetches again.
    once = (*CACHE, "--hedge-after", "60")
    with (
        mounted(cluster, tmp_path / "mnt1", *once, name="m1") as mnt1,
        mounted(cluster, tmp_path / "mnt2", *once, name="m2") as mnt2,
    ):
        threads = [threading.Thread(target=reader, args=(m,)) for m in [mnt1, mnt2] * 4]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert digests == [bucket.digests["one/cold.bin"]] * 8
    assert bucket.block_reads() - before == 7
    assert sum(node_stats(n).bucket_fetches for n in nodes) == 7
    for name in ("m1", "m2"):
        fetches = client_stats(tmp_path / name)["fetches"]
        # From the nodes on this machine, through shared-memory slots.
        assert fetches["bucket"] == 0 and fetches["through_slots"] == fetches["cache_nodes"] > 0


def test_a_random_small_read_fetches_a_range_not_a_block(
    cluster: LocalCluster, bucket: Bucket, tmp_path: Path
) -> None:
    """The first random read into a cold block fetches its own bytes, the
    second read of that block all of it (1 MiB blocks here; O_DIRECT, so
    each read is one request of its own size)."""
    node = cluster.start_node(*NODE_CACHE)
    s3 = bucket.server.client()

    def expected(offset: int) -> bytes:
        span = f"bytes={offset}-{offset + 4095}"
        reply = s3.get_object(Bucket=BUCKET, Key="big/f1.bin", Range=span)
        return bytes(reply["Body"].read())

    with mounted(cluster, tmp_path / "mnt", *CACHE) as mnt, mmap.mmap(-1, 4096) as buf:
        fd = os.open(mnt / "big" / "f1.bin", os.O_RDONLY | os.O_DIRECT)
        try:
            before = node_stats(node)
            for offset in (5 * MiB + 12288, 2 * MiB + 8192):  # jumps into blocks 5 and 2
                assert os.preadv(fd, [buf], offset) == 4096
                assert buf[:] == expected(offset)
            first = node_stats(node)
            assert first.bucket_fetches - before.bucket_fetches == 2
            assert first.bucket_bytes - before.bucket_bytes == 2 * 4096
            assert tiers(first)["memory"].blocks == 0  # parts are kept nowhere
            assert os.preadv(fd, [buf], 5 * MiB + 700_416) == 4096  # block 5 again
            assert buf[:] == expected(5 * MiB + 700_416)
            second = node_stats(node)
            assert second.bucket_bytes - first.bucket_bytes == MiB  # now all of it, cached
            assert tiers(second)["memory"].blocks == 1
        finally:
            os.close(fd)
