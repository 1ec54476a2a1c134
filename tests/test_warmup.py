"""``dcfs warmup`` against a real cluster: each block lands on its owner
node (and its disk tier), a second run finds everything cached, a mount then
reads without a bucket fetch; plus the progress line and bad paths."""

import subprocess
import sys
from collections import Counter
from pathlib import Path

from clusters import blocks_of, members, mounted, node_stats, running_cluster

from dcfs.blocks import block_count
from dcfs.cli.warmup import progress_line, summary
from dcfs.ring import Ring
from fsclient.warmup import WarmupStats

BLOCK = 1024 * 1024


def _warmup(address: str, *paths: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dcfs", "warmup", address, *paths, "--parallel", "4"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_warmup_loads_each_block_on_its_owner_once(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    (bucket / "models" / "m").mkdir(parents=True)
    files = {
        "models/m/weights.bin": bytes(range(256)) * (9 * BLOCK // 256) + b"tail",
        "models/m/config.json": b'{"layers": 2}\n',
        "models/readme.txt": b"hello\n",
        "other.bin": b"x" * (2 * BLOCK),
    }
    for name, data in files.items():
        (bucket / name).write_bytes(data)
    with running_cluster(tmp_path / "state", f"file://{bucket}", nodes=3) as cluster:
        first = _warmup(cluster.metadata_address, "models", "/models/m/weights.bin")
        assert first.returncode == 0, first.stderr
        warmed = [n for n in files if n.startswith("models/")]
        blocks = sum(block_count(len(files[n]), BLOCK) for n in warmed)
        assert f"warmed 3 files, {blocks} blocks" in first.stdout
        assert f"{blocks} blocks fetched from the bucket" in first.stdout

        # Each block on its owner, on the owner's disk tier, fetched once.
        nodes = members(cluster)
        ring = Ring(nodes)
        owned = Counter(
            ring.owner(ref.block_id).address  # type: ignore[union-attr]
            for name in warmed
            for ref in blocks_of(cluster, name, BLOCK)
        )
        for node in nodes:
            stats = node_stats(node.address)
            disk = next(t for t in stats.tiers if t.name == "disk")
            assert (stats.bucket_fetches, disk.blocks) == (owned[node.address],) * 2

        second = _warmup(cluster.metadata_address, "models")
        assert second.returncode == 0, second.stderr
        assert f"all {blocks} blocks were already cached" in second.stdout

        # A mount now reads the warmed files without a bucket fetch anywhere.
        with mounted(cluster, tmp_path / "mnt") as mnt:
            for name in warmed:
                assert (mnt / name).read_bytes() == files[name]
        assert sum(node_stats(n.address).bucket_fetches for n in nodes) == blocks

        missing = _warmup(cluster.metadata_address, "models/nope")
        assert missing.returncode == 1
        assert missing.stderr.strip() == (
            "dcfs warmup: error: 'models/nope': no such file or directory in the bucket"
        )


def test_progress_line_and_summary() -> None:
    stats = WarmupStats(files=2, blocks=10, bytes=10 * BLOCK, done_blocks=4)
    stats.done_bytes, stats.elapsed_s = 4 * BLOCK, 2.0
    line = progress_line(stats)
    assert line.startswith("[############..................]  40%")
    assert "4.0 MiB / 10.0 MiB" in line and "2.0 MiB/s" in line and "ETA 0:03" in line
    stats.cached_blocks = 10
    stats.done_blocks, stats.done_bytes = 10, 10 * BLOCK
    assert summary(stats).endswith("all 10 blocks were already cached")
