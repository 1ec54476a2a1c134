"""The pause a reader sees when a cache node dies in the middle of its read.

Starts a metadata service, three cache nodes and a mount on loopback over a
local-directory bucket holding one file, reads the file cold in 1 MiB reads,
and a third of the way in kills (``kill -9``) or freezes (``SIGSTOP``) the
node that owns most of the rest. Prints the read latencies before and after:
the longest read after the event is the pause.

    python bench/failover.py --mode kill
    python bench/failover.py --mode stop [--hedge-after 1.0] [--peer-timeout 10]
    python bench/failover.py --mode none      (the same read, nothing happens)
"""

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from clusters import blocks_of, members

from dcfs.launcher import LocalCluster
from dcfs.ring import Ring
from dcfs.sizes import parse_size

READ = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["kill", "stop", "none"], default="kill")
    parser.add_argument("--size", default="256MiB", help="size of the file read")
    parser.add_argument("--block-size", default="4MiB")
    parser.add_argument("--hedge-after", default="1.0", help="the mount's --hedge-after")
    parser.add_argument("--peer-timeout", default="10", help="the mount's --peer-timeout")
    parser.add_argument("--node-timeout", default="6", help="the metadata's --node-timeout")
    args = parser.parse_args()
    size, block_size = parse_size(args.size), parse_size(args.block_size)

    with tempfile.TemporaryDirectory(prefix="dcfs-failover-") as tmp:
        root = Path(tmp)
        (root / "bucket").mkdir()
        with (root / "bucket" / "big.bin").open("wb") as f:
            for _ in range(size // READ):
                f.write(os.urandom(READ))
        cluster = LocalCluster(root / "state", log_dir=root / "logs", env=dict(os.environ))
        victim = None
        try:
            cluster.start_metadata(
                f"file://{root / 'bucket'}",
                "--block-size",
                args.block_size,
                "--node-timeout",
                args.node_timeout,
            )
            for _ in range(3):
                cluster.start_node("1GiB", "0")
            (root / "mnt").mkdir()
            cluster.start_mount(
                root / "mnt",
                "--memory",
                "2GiB",
                "--disk",
                "0",
                "--hedge-after",
                args.hedge_after,
                "--peer-timeout",
                args.peer_timeout,
            )
            refs = blocks_of(cluster, "big.bin", block_size)
            rest = refs[len(refs) // 3 + 2 :]
            ring = Ring(members(cluster))
            owners = Counter(ring.owner(r.block_id).address for r in rest)  # type: ignore[union-attr]
            victim = cluster.node(owners.most_common(1)[0][0])
            event_at = size // 3 // READ
            before, after, total = _read(root / "mnt" / "big.bin", event_at, victim, args.mode)
            _report(args, before, after, total, size)
            mount_log = (root / "logs" / "mount.log").read_text().splitlines()
            print("\n".join(line for line in mount_log if "WARNING" in line or "hedged" in line))
        finally:
            if victim is not None and victim.process.poll() is None:
                victim.process.send_signal(signal.SIGCONT)
            cluster.stop()


def _read(path: Path, event_at: int, victim, mode: str):  # type: ignore[no-untyped-def]
    before: list[float] = []
    after: list[float] = []
    started = time.perf_counter()
    with path.open("rb", buffering=0) as f:
        for i in range(1_000_000):
            if i == event_at and mode != "none":
                victim.process.send_signal(signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
            t = time.perf_counter()
            if not f.read(READ):
                break
            (before if i < event_at else after).append(time.perf_counter() - t)
    return before, after, time.perf_counter() - started


def _report(args, before, after, total, size) -> None:  # type: ignore[no-untyped-def]
    def ms(values: list[float], q: float) -> str:
        values = sorted(values)
        return f"{1000 * values[min(len(values) - 1, int(q * len(values)))]:.1f}"

    print(
        f"{args.mode if args.mode != 'none' else 'no event'} for the busiest owner after "
        f"{len(before)} MiB of a {size >> 20} MiB cold read "
        f"(block {args.block_size}, --hedge-after {args.hedge_after}, "
        f"--peer-timeout {args.peer_timeout})"
    )
    print(f"  1 MiB reads before: median {ms(before, 0.5)} ms, max {ms(before, 1.0)} ms")
    print(f"  1 MiB reads after:  median {ms(after, 0.5)} ms, max {ms(after, 1.0)} ms  <- pause")
    slow = [x for x in after if x > 10 * statistics.median(before)]
    print(f"  reads after the event slower than 10x the median before: {len(slow)}")
    print(f"  whole read: {total:.2f} s, {size / total / 2**20:.0f} MiB/s")


if __name__ == "__main__":
    main()
