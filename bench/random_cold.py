"""Cold random 4 KiB reads through a dcfs mount: IOPS and the bytes the
cache nodes took from the bucket for them. A 1 GiB object on SeaweedFS, two
cache nodes, 300 ``O_DIRECT`` reads at random 4 KiB offsets.

    .venv/bin/python bench/random_cold.py
"""

import mmap
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from rigs import cold_cluster  # noqa: E402

from dcfs import rpc  # noqa: E402
from protos import dcfs_pb2, dcfs_pb2_grpc  # noqa: E402

MiB = 1024 * 1024
SIZE = 1024 * MiB
READS = 300


def main() -> None:
    with cold_cluster(SIZE, "0") as cold:
        stubs = [dcfs_pb2_grpc.CacheNodeStub(rpc.channel(node)) for node in cold.nodes]

        def bucket_bytes() -> int:
            return sum(s.Stats(dcfs_pb2.StatsRequest(), timeout=10).bucket_bytes for s in stubs)

        rng = random.Random(1)
        offsets = [rng.randrange(SIZE // 4096) * 4096 for _ in range(READS)]
        before = bucket_bytes()
        fd = os.open(cold.path, os.O_RDONLY | os.O_DIRECT)
        try:
            with mmap.mmap(-1, 4096) as buf:
                started = time.perf_counter()
                for offset in offsets:
                    os.preadv(fd, [buf], offset)
                seconds = time.perf_counter() - started
        finally:
            os.close(fd)
        fetched = bucket_bytes() - before
    print(
        f"{READS} cold random 4 KiB reads: {READS / seconds:.0f} IOPS, "
        f"{seconds / READS * 1000:.2f} ms each; {fetched / MiB:.1f} MiB from the bucket"
    )


if __name__ == "__main__":
    main()
