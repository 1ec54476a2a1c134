"""A real cluster: three or four cache nodes and one or two mounts, each a
separate process on loopback. Shared cold reads cost one bucket fetch per
block; a node killed, stopped or added while a large file is read costs no
error and no wrong byte; a dead node leaves ``dcfs status`` and rejoins.

Bucket requests are counted where they are made: each node's Stats
``bucket_fetches`` and each mount's direct-bucket count (its shutdown log).
"""

import hashlib
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from clusters import blocks_of, members, mounted, node_stats, running_cluster, wait_until

from dcfs.blocks import BlockRef
from dcfs.launcher import Child, LocalCluster
from dcfs.ring import Ring, assign, moved_fraction

BLOCK = 1024 * 1024
BIG = "big.bin"  # 40 blocks
OTHER = "other.bin"  # 32 blocks
SMALL = [f"small/s{i:02d}.bin" for i in range(12)]
NODE = ("64MiB", "256MiB")
# Failover tests: a silent node is outrun after 0.3 s, a request gives up after 2 s.
FAST_FAILOVER = ("--hedge-after", "0.3", "--peer-timeout", "2", "--prefetch", "4MiB")
# Placement tests: never hedge, so that every block is fetched by its owner only.
NO_HEDGE = ("--hedge-after", "60")
# Prints the sha256 of each file it is given: a reader in another process.
CAT = (
    "import hashlib, sys\n"
    "print(*(hashlib.sha256(open(p, 'rb').read()).hexdigest() for p in sys.argv[1:]))"
)


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cluster-bucket")
    (root / BIG).write_bytes(os.urandom(40 * BLOCK - 1234))
    (root / OTHER).write_bytes(os.urandom(32 * BLOCK))
    (root / "small").mkdir()
    for i, name in enumerate(SMALL):
        (root / name).write_bytes(os.urandom(50_000 + 7919 * i))
    return root


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_in_chunks(path: Path, on_chunk: Callable[[int], None] = lambda i: None) -> bytes:
    """Read ``path`` 1 MiB at a time, calling ``on_chunk(i)`` before chunk i."""
    parts = []
    with path.open("rb", buffering=0) as f:
        for i in range(10_000):
            on_chunk(i)
            part = f.read(BLOCK)
            if not part:
                break
            parts.append(part)
    return b"".join(parts)


def _blocks(cluster: LocalCluster, name: str) -> list[BlockRef]:
    return blocks_of(cluster, name, BLOCK)


def _bucket_fetches(address: str) -> int:
    return int(node_stats(address).bucket_fetches)


def _client_bucket_fetches(cluster: LocalCluster, name: str) -> int:
    """The mount's direct-bucket count, from the line it logs when unmounted."""
    assert cluster.log_dir is not None
    log = (cluster.log_dir / f"{name}.log").read_text()
    found = re.findall(r"client fetches: \d+ from cache nodes, (\d+) from the bucket", log)
    assert found, f"{name} did not log its fetch counts"
    return int(found[-1])


def _members_seen(cluster: LocalCluster, name: str) -> list[str]:
    """The member addresses a mount logged last."""
    assert cluster.log_dir is not None
    log = (cluster.log_dir / f"{name}.log").read_text()
    found = re.findall(r"cluster members: (.*)", log)
    return found[-1].split(", ") if found else []


def _victim(cluster: LocalCluster) -> tuple[str, Child]:
    """The node owning most of the second half of BIG: its address and process."""
    ring = Ring(members(cluster))
    counts = Counter(
        ring.owner(r.block_id).address  # type: ignore[union-attr]
        for r in _blocks(cluster, BIG)[16:]
    )
    address = counts.most_common(1)[0][0]
    return address, cluster.node(address)


def _fetched_by_owner(
    ring: Ring, refs: list[BlockRef], before: dict[str, int] | None = None
) -> tuple[dict[str, int], dict[str, int]]:
    """Each node's bucket fetches (since ``before``) and its share of ``refs``."""
    owned = Counter(ring.owner(r.block_id).address for r in refs)  # type: ignore[union-attr]
    fetched = {
        n.address: _bucket_fetches(n.address) - (before or {}).get(n.address, 0) for n in ring.nodes
    }
    return fetched, {n.address: owned[n.address] for n in ring.nodes}


def _status(cluster: LocalCluster) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "dcfs", "status", cluster.metadata_address],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def cluster(tmp_path: Path, bucket: Path) -> Iterator[LocalCluster]:
    """Three cache nodes; nodes that stop heartbeating are dropped after 3 s."""
    metadata_args = ("--block-size", "1MiB", "--node-timeout", "3")
    with running_cluster(
        tmp_path / "state", f"file://{bucket}", nodes=3, metadata_args=metadata_args
    ) as running:
        yield running


def test_two_mounts_fetch_each_cold_block_from_the_bucket_once(
    cluster: LocalCluster, bucket: Path, tmp_path: Path
) -> None:
    names = [BIG, *SMALL]
    refs = [r for name in names for r in _blocks(cluster, name)]
    ring = Ring(members(cluster))
    with (
        mounted(cluster, tmp_path / "a", *NO_HEDGE, name="mount-a") as a,
        mounted(cluster, tmp_path / "b", *NO_HEDGE, name="mount-b") as b,
    ):
        # Both mounts read the same cold files at the same time.
        with subprocess.Popen(
            [sys.executable, "-c", CAT, *(str(b / n) for n in names)], stdout=subprocess.PIPE
        ) as other:
            got_a = {n: _sha((a / n).read_bytes()) for n in names}
            out, _ = other.communicate(timeout=120)
        got_b = dict(zip(names, out.decode().split(), strict=True))
    want = {n: _sha((bucket / n).read_bytes()) for n in names}
    assert got_a == want and got_b == want

    fetched, owned = _fetched_by_owner(ring, refs)
    assert fetched == owned  # each block once, by its owner
    assert sum(fetched.values()) == len(refs)
    assert _client_bucket_fetches(cluster, "mount-a") == 0
    assert _client_bucket_fetches(cluster, "mount-b") == 0


def test_kill_9_during_a_read_then_the_node_leaves_and_rejoins(
    cluster: LocalCluster, bucket: Path, tmp_path: Path
) -> None:
    victim, child = _victim(cluster)
    index = int(child.name.removeprefix("cachenode"))
    node_id = next(n.node_id for n in members(cluster) if n.address == victim)

    def kill_at_chunk(i: int) -> None:
        if i == 10:
            child.process.send_signal(signal.SIGKILL)

    with mounted(cluster, tmp_path / "mnt", *FAST_FAILOVER) as mnt:
        data = _read_in_chunks(mnt / BIG, kill_at_chunk)
        assert _sha(data) == _sha((bucket / BIG).read_bytes())
        assert child.process.wait(timeout=10) == -signal.SIGKILL
        cluster.stop_child(child)

        # Gone from the member list once its heartbeats are overdue.
        assert wait_until(lambda: victim not in cluster.member_addresses(), 20)
        status = _status(cluster)
        assert "cache nodes 2" in status and victim not in status

        # Started again on its cache dir, it rejoins as the same node.
        cluster.start_node(*NODE, index=index, address=victim)
        status = _status(cluster)
        assert "cache nodes 3" in status and f"{node_id} at {victim}" in status
        assert (mnt / OTHER).read_bytes() == (bucket / OTHER).read_bytes()


def test_a_fourth_node_joins_while_reading(
    cluster: LocalCluster, bucket: Path, tmp_path: Path
) -> None:
    three = Ring(members(cluster))
    joined: list[str] = []

    def join_at_chunk(i: int) -> None:
        if i == 16:  # mid-read: a node joins and the mount follows, no remount
            joined.append(cluster.start_node(*NODE))
            assert wait_until(lambda: joined[0] in _members_seen(cluster, "mount-a"), 10)

    with mounted(cluster, tmp_path / "a", *NO_HEDGE, "--prefetch", "4MiB", name="mount-a") as a:
        assert _read_in_chunks(a / BIG, join_at_chunk) == (bucket / BIG).read_bytes()
    four = Ring(members(cluster))
    assert len(four) == 4 and joined
    # Still one fetch per block: before the change by the old owner, after it by the new.
    assert sum(_bucket_fetches(n.address) for n in four.nodes) == len(_blocks(cluster, BIG))

    # About 1/4 of all blocks move, every one of them to the new node.
    ids = [f"block-{i}" for i in range(20_000)]
    before, after = assign(three, ids), assign(four, ids)
    assert 0.2 < moved_fraction(before, after) < 0.3
    new_id = next(n.node_id for n in four.nodes if n.address == joined[0])
    assert {new for old, new in zip(before, after, strict=True) if old != new} == {new_id}

    # New fetches follow the new placement: the new node takes its share.
    refs = _blocks(cluster, OTHER)
    start = {n.address: _bucket_fetches(n.address) for n in four.nodes}
    with mounted(cluster, tmp_path / "b", *NO_HEDGE, name="mount-b") as b:
        assert (b / OTHER).read_bytes() == (bucket / OTHER).read_bytes()
    fetched, owned = _fetched_by_owner(four, refs, start)
    assert fetched == owned
    assert fetched[joined[0]] > 0


def test_a_stopped_node_costs_a_deadline_not_the_read(
    cluster: LocalCluster, bucket: Path, tmp_path: Path
) -> None:
    victim, child = _victim(cluster)

    def stop_at_chunk(i: int) -> None:
        if i == 10:
            child.process.send_signal(signal.SIGSTOP)

    try:
        with mounted(cluster, tmp_path / "mnt", *FAST_FAILOVER) as mnt:
            data = _read_in_chunks(mnt / BIG, stop_at_chunk)
            assert _sha(data) == _sha((bucket / BIG).read_bytes())
    finally:
        child.process.send_signal(signal.SIGCONT)
    assert cluster.log_dir is not None
    log = (cluster.log_dir / "mount.log").read_text()
    assert f"cache node {victim} skipped" in log
