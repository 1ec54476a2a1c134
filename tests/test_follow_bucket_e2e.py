"""The mount follows the bucket, with real daemons and a real mount over a
file:// bucket and an s3:// bucket on SeaweedFS: objects added, overwritten
and deleted while mounted show up after the metadata service's next refresh
(1 s here; the kernel's timeouts stay at 30 s, so only invalidation can make
that happen); an open handle keeps reading its version; --consistency open
sees an overwrite at once; a restart of the metadata service keeps inode
numbers and the mount working; a directory of 100,000 names lists whole."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from clusters import mounted, running_cluster
from seaweed import SeaweedServer

from dcfs import rpc
from dcfs.launcher import LocalCluster
from metadata.model import ROOT_INODE
from protos import dcfs_pb2, dcfs_pb2_grpc

BLOCK = 1 << 20
T = TypeVar("T")
# Well below the mount's 30 s attribute and entry timeouts.
WAIT_S = 20.0


@dataclass
class Bucket:
    """A bucket the test writes to, and what it should hold."""

    url: str
    endpoint: str | None
    write: Callable[[str, bytes], None]
    remove: Callable[[str], None]
    objects: dict[str, bytes] = field(default_factory=dict)

    def put(self, key: str, data: bytes) -> None:
        self.write(key, data)
        self.objects[key] = data

    def delete(self, key: str) -> None:
        self.remove(key)
        del self.objects[key]

    def expected(self) -> dict[str, str]:
        """path -> sha256 for files, 'dir' for directories (prefixes)."""
        tree = {k: hashlib.sha256(v).hexdigest() for k, v in self.objects.items()}
        for key in self.objects:
            parts = key.split("/")
            tree.update({"/".join(parts[:i]) + "/": "dir" for i in range(1, len(parts))})
        return tree


def snapshot(root: Path) -> dict[str, str]:
    """The mount as :meth:`Bucket.expected` describes a bucket."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        for name in dirnames:
            found[f"{rel / name}/"] = "dir"
        for name in filenames:
            found[str(rel / name)] = hashlib.sha256(Path(dirpath, name).read_bytes()).hexdigest()
    return found


def settle(what: Callable[[], T], want: T, timeout_s: float = WAIT_S) -> T:
    """Poll ``what()`` until it equals ``want`` or ``timeout_s`` passes; the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            got = what()
        except OSError:
            got = None  # e.g. a name listed, then deleted
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def _file_bucket(root: Path) -> Bucket:
    def write(key: str, data: bytes) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # as writers do: readers never see half a file

    def remove(key: str) -> None:
        (root / key).unlink()
        parent = (root / key).parent
        while parent != root and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent

    return Bucket(f"file://{root}", None, write, remove)


def _s3_bucket(server: SeaweedServer, name: str) -> Bucket:
    server.create_bucket(name)
    client = server.client()

    def write(key: str, data: bytes) -> None:
        client.put_object(Bucket=name, Key=f"data/{key}", Body=data)

    def remove(key: str) -> None:
        client.delete_object(Bucket=name, Key=f"data/{key}")

    return Bucket(f"s3://{name}/data", server.endpoint_url, write, remove)


@pytest.fixture(scope="module", params=["file", "s3"])
def bucket(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Bucket:
    if request.param == "file":
        made = _file_bucket(tmp_path_factory.mktemp("follow-bucket"))
    else:
        made = _s3_bucket(request.getfixturevalue("seaweed"), "follow-e2e")
    made.put("keep/a.txt", b"a" * 100)
    made.put("follow/change.bin", os.urandom(2 * BLOCK + 500))
    made.put("follow/same-size.txt", b"1" * 4000)
    made.put("follow/gone.txt", b"gone")
    made.put("follow/gone-dir/x.txt", b"x")
    return made


@dataclass
class Following:
    cluster: LocalCluster
    mountpoint: Path


@pytest.fixture(scope="module")
def following(bucket: Bucket, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Following]:
    """A metadata service refreshing every second, and a mount with default timeouts."""
    state = tmp_path_factory.mktemp("follow-state")
    args = ("--block-size", "1MiB", "--refresh-interval", "1")
    with (
        running_cluster(
            state, bucket.url, nodes=0, endpoint_url=bucket.endpoint, metadata_args=args
        ) as cluster,
        mounted(cluster, state / "mnt") as mnt,
    ):
        yield Following(cluster, mnt)


def test_mount_shows_adds_overwrites_and_deletes(bucket: Bucket, following: Following) -> None:
    mnt = following.mountpoint
    assert snapshot(mnt) == bucket.expected()  # and everything is in every cache now
    bucket.put("follow/change.bin", os.urandom(BLOCK + 7))
    bucket.put("follow/same-size.txt", b"2" * 4000)
    bucket.delete("follow/gone.txt")
    bucket.delete("follow/gone-dir/x.txt")
    bucket.put("follow/new/deep/n.txt", b"new")
    bucket.put("added.txt", b"added")

    # By path, as a program that knows its names would (a listing would
    # refresh the attributes it returns): only invalidation shows the change.
    def by_path() -> tuple[bytes, bytes, bool, bool, bytes]:
        return (
            (mnt / "follow" / "change.bin").read_bytes(),
            (mnt / "follow" / "same-size.txt").read_bytes(),
            (mnt / "follow" / "gone.txt").exists(),
            (mnt / "follow" / "gone-dir").exists(),
            (mnt / "follow" / "new" / "deep" / "n.txt").read_bytes(),
        )

    want = (bucket.objects["follow/change.bin"], b"2" * 4000, False, False, b"new")
    assert settle(by_path, want) == want
    assert snapshot(mnt) == bucket.expected()


def test_an_open_handle_reads_the_version_it_opened(bucket: Bucket, following: Following) -> None:
    mnt, key, chunk = following.mountpoint, "pin/model.bin", 256 * 1024
    old, new = os.urandom(4 * BLOCK), os.urandom(4 * BLOCK)
    bucket.put(key, old)
    assert settle(lambda: (mnt / key).read_bytes() == old, True)
    fd = os.open(mnt / key, os.O_RDONLY)
    try:
        assert os.pread(fd, chunk, 0) == old[:chunk]
        bucket.put(key, new)  # same size: a mix would not show in the length
        assert settle(lambda: (mnt / key).read_bytes() == new, True)  # a new open: new bytes
        errors = 0
        for offset in range(chunk, len(old), chunk):
            try:
                data = os.pread(fd, chunk, offset)
            except OSError as exc:
                assert exc.errno in (errno.ESTALE, errno.EIO), exc
                errors += 1
                continue
            assert data == old[offset : offset + chunk], f"not the old bytes at {offset}"
    finally:
        os.close(fd)
    assert (mnt / key).read_bytes() == new
    print(f"after the overwrite the old handle got {errors} errors, the rest old bytes")


def test_names_past_the_timeout_come_from_the_client_cache(
    bucket: Bucket, following: Following
) -> None:
    """With the kernel's timeouts at 1 s, a name looked up again later is
    answered by the mount's own cache, which the change stream vouches for;
    a change still shows."""
    cluster, key = following.cluster, "vouch/v.txt"
    bucket.put(key, b"one")
    with mounted(cluster, cluster.state_dir / "mnt-short", "--attr-timeout", "1", name="short"):
        f = cluster.state_dir / "mnt-short" / key
        stats = cluster.state_dir / "short" / "stats.json"

        def lookups() -> dict[str, int]:
            counts: dict[str, int] = json.loads(stats.read_text())["lookups"]
            return counts

        assert settle(f.read_bytes, b"one") == b"one"
        time.sleep(2.5)  # past the kernel's timeouts and the cache's own
        assert f.read_bytes() == b"one"
        assert settle(lambda: lookups()["cached"] >= 2, True), lookups()  # "vouch", "v.txt"
        bucket.put(key, b"two, longer")
        assert settle(f.read_bytes, b"two, longer") == b"two, longer"


def test_consistency_open_sees_an_overwrite_at_once(
    bucket: Bucket, tmp_path_factory: pytest.TempPathFactory
) -> None:
    state = tmp_path_factory.mktemp("strict-state")
    bucket.put("strict/f.txt", b"one")
    args = ("--block-size", "1MiB", "--refresh-interval", "0")  # synced once, at start
    with (
        running_cluster(
            state, bucket.url, nodes=0, endpoint_url=bucket.endpoint, metadata_args=args
        ) as cluster,
        mounted(cluster, state / "mnt", "--consistency", "open") as mnt,
    ):
        f = mnt / "strict" / "f.txt"
        assert f.read_bytes() == b"one"
        bucket.put("strict/f.txt", b"two, longer")
        assert f.read_bytes() == b"two, longer"
        assert os.stat(f).st_size == len(b"two, longer")
        bucket.delete("strict/f.txt")
        with pytest.raises(FileNotFoundError):
            f.read_bytes()
        # New names wait for a refresh: the periodic one is off, so ask for it.
        bucket.put("strict/new/g.txt", b"g")
        assert not (mnt / "strict" / "new").exists()
        result = subprocess.run(
            [sys.executable, "-m", "dcfs", "refresh", cluster.metadata_address, "strict/new"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "strict/new: a directory" in result.stdout
        assert (mnt / "strict" / "new" / "g.txt").read_bytes() == b"g"


def _service_inodes(address: str) -> dict[str, int]:
    """Every path's inode, as the metadata service numbers them."""
    stub = dcfs_pb2_grpc.MetadataStub(rpc.channel(address))
    found: dict[str, int] = {}
    pending = [(ROOT_INODE, "")]
    while pending:
        inode, prefix = pending.pop()
        reply = stub.Readdir(dcfs_pb2.ReaddirRequest(inode=inode), timeout=10)
        for entry in reply.entries:
            found[prefix + entry.name] = entry.attr.inode
            if entry.attr.is_dir:
                pending.append((entry.attr.inode, f"{prefix}{entry.name}/"))
    return found


def test_metadata_restart_keeps_inodes_and_the_mount(bucket: Bucket, following: Following) -> None:
    mnt, cluster = following.mountpoint, following.cluster
    assert settle(lambda: snapshot(mnt), bucket.expected()) == bucket.expected()
    before = _service_inodes(cluster.metadata_address)
    kernel_before = {path: os.stat(mnt / path).st_ino for path in before}
    cluster.restart_metadata()
    assert _service_inodes(cluster.metadata_address) == before
    assert {path: os.stat(mnt / path).st_ino for path in before} == kernel_before
    # The mount follows the restarted service: its change stream reconnected.
    bucket.put("keep/a.txt", b"b" * 50)
    bucket.put("restart/after.txt", b"after")
    assert settle(lambda: snapshot(mnt), bucket.expected()) == bucket.expected()


def test_a_directory_of_100k_names(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    big = root / "big"
    big.mkdir(parents=True)
    names = [f"sample-{i:06d}.bin" for i in range(100_000)]
    for name in names:
        os.close(os.open(big / name, os.O_CREAT | os.O_WRONLY, 0o644))
    (root / "small.txt").write_bytes(b"small")
    args = ("--block-size", "1MiB", "--refresh-interval", "0")
    with (
        running_cluster(tmp_path / "state", f"file://{root}", nodes=0, metadata_args=args) as c,
        mounted(c, tmp_path / "mnt") as mnt,
    ):
        assert sorted(os.listdir(mnt / "big")) == names
        assert (mnt / "small.txt").read_bytes() == b"small"
        assert os.stat(mnt / "big" / names[-1]).st_size == 0
        metadata = next(child for child in c.children if child.name == "metadata")
        status = Path(f"/proc/{metadata.process.pid}/status").read_text()
        peak_kib = int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1])
        print(f"metadata service peak RSS after syncing 100,001 objects: {peak_kib // 1024} MiB")
        assert peak_kib < 300 * 1024
