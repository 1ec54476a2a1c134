"""Cold random 4 KiB reads through a dcfs mount: IOPS and the bytes the
cache nodes took from the bucket for them. A 1 GiB object on SeaweedFS, two
cache nodes, 300 ``O_DIRECT`` reads at random 4 KiB offsets.

    .venv/bin/python bench/random_cold.py
"""

import mmap
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from compare import use_dummy_credentials  # noqa: E402
from seaweed import SeaweedServer  # noqa: E402

from dcfs import rpc  # noqa: E402
from dcfs.launcher import LocalCluster  # noqa: E402
from protos import dcfs_pb2, dcfs_pb2_grpc  # noqa: E402

MiB = 1024 * 1024
SIZE = 1024 * MiB
READS = 300


def main() -> None:
    use_dummy_credentials()
    work = Path(tempfile.mkdtemp(prefix="dcfs-random-cold-"))
    server = SeaweedServer()
    try:
        server.start(work / "seaweed")
        server.create_bucket("cold")
        (work / "big").write_bytes(os.urandom(SIZE))
        server.client().upload_file(str(work / "big"), "cold", "big.bin")
        with LocalCluster(work / "state", log_dir=work / "logs") as cluster:
            cluster.start_metadata("s3://cold", endpoint_url=server.endpoint_url)
            nodes = [cluster.start_node("2GiB", "0") for _ in range(2)]
            mnt = work / "mnt"
            mnt.mkdir()
            cluster.start_mount(mnt, "--memory", "2GiB", "--disk", "0")

            def bucket_bytes() -> int:
                stubs = [dcfs_pb2_grpc.CacheNodeStub(rpc.channel(n)) for n in nodes]
                return sum(s.Stats(dcfs_pb2.StatsRequest(), timeout=10).bucket_bytes for s in stubs)

            rng = random.Random(1)
            offsets = [rng.randrange(SIZE // 4096) * 4096 for _ in range(READS)]
            before = bucket_bytes()
            fd = os.open(mnt / "big.bin", os.O_RDONLY | os.O_DIRECT)
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
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
