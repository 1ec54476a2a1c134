"""How long a disk tier of 100,000 cached blocks takes to be ready after a
restart: with its index, and without it (one ``stat`` per file), with the
kernel's caches warm and (``--drop-caches``, root only) cold.

    /work/main/.venv/bin/python bench/restart_time.py [--dir DIR] [--drop-caches]

The blocks are small (1 KiB of data): what a restart costs is per file, not
per byte. Filling the directory takes a minute or so; ``--keep`` leaves it
for the next run.
"""

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcfs.blockcache import DiskTier
from dcfs.blocks import BlockRef, ObjectVersion

BLOCK = 1024


def fill(directory: Path, count: int) -> None:
    version = ObjectVersion("bench/restart.bin", "etag", count * BLOCK)
    tier = DiskTier(directory, capacity=1 << 40, reserve_fraction=0.0)
    data = bytes(BLOCK)
    started = time.perf_counter()
    for index in range(count):
        tier.put(BlockRef(version, index, BLOCK), data)
        if index % 20_000 == 0:
            print(f"  {index} blocks written", flush=True)
    tier.close()
    print(f"  filled {count} blocks in {time.perf_counter() - started:.0f} s", flush=True)


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def ready_time(directory: Path, cold: bool) -> tuple[float, int, float]:
    """Seconds until the tier is ready, its block count, seconds to close (save the index)."""
    if cold:
        drop_caches()
    started = time.perf_counter()
    tier = DiskTier(directory, capacity=1 << 40, reserve_fraction=0.0)
    ready = time.perf_counter() - started
    blocks = tier.stats().blocks
    started = time.perf_counter()
    tier.close()
    return ready, blocks, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/dcfs-restart-bench"))
    parser.add_argument("--blocks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--drop-caches", action="store_true", help="also measure cold (root)")
    parser.add_argument("--keep", action="store_true", help="keep the directory afterwards")
    args = parser.parse_args()
    directory: Path = args.dir
    fs = subprocess.run(
        ["df", "--output=fstype", str(directory.parent)], capture_output=True, text=True
    ).stdout.split()[-1]
    print(f"{args.blocks} blocks in {directory} ({fs})")
    if not (directory / "index").exists():
        shutil.rmtree(directory, ignore_errors=True)
        fill(directory, args.blocks)
    index = directory / "index"
    saved = index.read_bytes()
    try:
        for with_index in (True, False):
            for cold in (False, True) if args.drop_caches else (False,):
                for _ in range(args.runs):
                    if not with_index:
                        index.unlink(missing_ok=True)
                    ready, blocks, close = ready_time(directory, cold)
                    print(
                        f"{'index' if with_index else 'no index (stat)':<16} "
                        f"{'cold' if cold else 'warm':<5} ready in {ready:.2f} s, "
                        f"{blocks} blocks; close (saving the index) {close:.2f} s",
                        flush=True,
                    )
                    index.write_bytes(saved)
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
