"""The set-ups the benchmark scripts measure on: a SeaweedFS server holding
a random object, a dcfs cluster over it, libfuse's passthrough_ll compiled
and mounted at run time, and the 16 parallel ranged GETs that stand for
what the bucket delivers. Each starts what it needs and stops it by PID at
the end; mounts are unmounted.
"""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from seaweed import SeaweedServer  # noqa: E402

from dcfs.bench import fio, pyreader  # noqa: E402
from dcfs.bench.jobs import JobResult, JobSpec  # noqa: E402
from dcfs.blocks import DEFAULT_BLOCK_SIZE  # noqa: E402
from dcfs.launcher import LocalCluster, unmount  # noqa: E402

MiB = 1024 * 1024
PASSTHROUGH_SRC = Path("/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c")
COLD = JobSpec("seq-1m cold", "seq", "cold")  # one pass: the first one reads the bucket


def seq(spec: JobSpec, path: Path, size: int) -> JobResult:
    return fio.run(spec, path, size) if fio.available() else pyreader.sequential(spec, path, size)


def use_dummy_credentials() -> None:
    """SeaweedFS takes any key; dcfs's processes inherit these."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "any"),
        ("AWS_SECRET_ACCESS_KEY", "any"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)


def s3_parallel_get(
    server: SeaweedServer,
    endpoint: str,
    bucket: str,
    key: str,
    size: int,
    streams: int,
    range_size: int = DEFAULT_BLOCK_SIZE,
) -> float:
    """MiB/s of ``streams`` threads doing ranged GETs of one object."""
    client = boto3.client(
        "s3",
        endpoint_url=endpoint or server.endpoint_url,
        config=Config(max_pool_connections=streams),
    )
    ranges = [(o, min(size, o + range_size) - 1) for o in range(0, size, range_size)]
    started = time.perf_counter()

    def get(r: tuple[int, int]) -> int:
        body = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={r[0]}-{r[1]}")["Body"]
        return len(body.read())

    with ThreadPoolExecutor(streams) as pool:
        total = sum(pool.map(get, ranges))
    return total / MiB / (time.perf_counter() - started)


@dataclass
class ColdCluster:
    server: SeaweedServer
    cluster: LocalCluster
    nodes: list[str]  # their addresses
    path: Path  # the object, through the mount


@contextlib.contextmanager
def seaweed_object(size: int, bucket: str, prefix: str) -> Iterator[tuple[SeaweedServer, Path]]:
    """A SeaweedFS server holding ``size`` random bytes as
    s3://``bucket``/big.bin, and a work directory that keeps a copy of them
    as ``big``; both stop and go at the end."""
    use_dummy_credentials()
    work = Path(tempfile.mkdtemp(prefix=prefix))
    server = SeaweedServer()
    try:
        server.start(work / "seaweed")
        server.create_bucket(bucket)
        (work / "big").write_bytes(os.urandom(size))
        server.client().upload_file(str(work / "big"), bucket, "big.bin")
        yield server, work
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def cold_cluster(
    size: int, node_disk: str, *mount_args: str, metadata_args: tuple[str, ...] = ()
) -> Iterator[ColdCluster]:
    """A SeaweedFS server holding ``size`` random bytes as s3://cold/big.bin
    and a dcfs cluster over it: two cache nodes (2 GiB of memory,
    ``node_disk`` of disk) and a mount (2 GiB of memory, no disk, then
    ``mount_args``). Everything stops and goes at the end."""
    with (
        seaweed_object(size, "cold", "dcfs-cold-") as (server, work),
        LocalCluster(work / "state", log_dir=work / "logs") as cluster,
    ):
        cluster.start_metadata("s3://cold", *metadata_args, endpoint_url=server.endpoint_url)
        nodes = [cluster.start_node("2GiB", node_disk) for _ in range(2)]
        mnt = work / "mnt"
        mnt.mkdir()
        cluster.start_mount(mnt, "--memory", "2GiB", "--disk", "0", *mount_args)
        yield ColdCluster(server, cluster, nodes, mnt / "big.bin")


@contextlib.contextmanager
def process(args: list[str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "ready"
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def passthrough(work: Path, source: Path) -> Iterator[Path]:
    binary = work / "passthrough_ll"
    subprocess.run(
        f"gcc -O2 -o {binary} {PASSTHROUGH_SRC} $(pkg-config --cflags --libs fuse3)",
        shell=True,
        check=True,
    )
    mnt = work / "passthrough-mnt"
    mnt.mkdir()
    subprocess.run([str(binary), "-o", f"source={source}", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        unmount(mnt)


@contextlib.contextmanager
def dcfs_cluster(
    work: Path, name: str, url: str, endpoint: str, *metadata_args: str
) -> Iterator[LocalCluster]:
    state = work / name
    with LocalCluster(state, log_dir=state / "logs") as cluster:
        cluster.start_metadata(url, *metadata_args, endpoint_url=endpoint)
        for _ in range(2):
            cluster.start_node("2GiB", "4GiB")
        yield cluster
