"""Real mounts over a file:// bucket and an s3:// bucket on SeaweedFS: the
tree, every byte, random reads across block boundaries, read-only errors."""

import errno
import hashlib
import json
import mmap
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from clusters import Mounted, mounted, running_cluster, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seaweed import SeaweedServer

from dcfs.bench.data import drop_page_cache
from dcfs.bench.tiers import client_counters
from dcfs.sample import SampleSpec, make_sample

BLOCK = 1024 * 1024
SPEC = SampleSpec(
    large_files=2, large_size=5 * BLOCK + 12345, small_files=120, small_size=40 * 1024, seed=11
)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_sample(tmp_path_factory.mktemp("bucket"), SPEC)
    (root / "empty.bin").write_bytes(b"")
    (root / "deep" / "a" / "b" / "c").mkdir(parents=True)
    (root / "deep" / "a" / "b" / "c" / "leaf.txt").write_text("leaf\n")
    (root / "exact-block.bin").write_bytes(os.urandom(2 * BLOCK))
    return root


def _upload(server: SeaweedServer, root: Path, bucket: str) -> None:
    client = server.client()
    server.create_bucket(bucket)
    for path in sorted(root.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"data/{path.relative_to(root)}")


@pytest.fixture(scope="module", params=["file", "s3"])
def mount(
    request: pytest.FixtureRequest, source: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mounted]:
    state = tmp_path_factory.mktemp(f"state-{request.param}")
    endpoint = None
    if request.param == "file":
        url = f"file://{source}"
    else:
        server: SeaweedServer = request.getfixturevalue("seaweed")
        _upload(server, source, "e2e-mount")
        url, endpoint = "s3://e2e-mount/data", server.endpoint_url
    with (
        running_cluster(state, url, endpoint_url=endpoint) as cluster,
        mounted(cluster, state / "mnt") as mnt,
    ):
        yield Mounted(cluster, mnt, source)


def _tree(root: Path) -> dict[str, tuple[bool, int]]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st_ = os.stat(path)
            is_dir = os.path.isdir(path)
            found[str(path.relative_to(root))] = (is_dir, 0 if is_dir else st_.st_size)
    return found


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def test_tree_matches_source(mount: Mounted) -> None:
    expected = _tree(mount.source)
    assert _tree(mount.mountpoint) == expected
    assert len(expected) > 130


def test_every_file_has_the_source_bytes(mount: Mounted) -> None:
    files = [p for p in mount.source.rglob("*") if p.is_file()]
    for path in files:
        rel = path.relative_to(mount.source)
        assert _sha256(mount.mountpoint / rel) == _sha256(path), rel


def test_queued_requests_are_taken_without_a_wait(mount: Mounted) -> None:
    """Eight readers at once keep requests queued on /dev/fuse: the mount
    takes those without going through trio's wait (fsclient.fuseloop), and
    every byte still matches."""
    files = sorted(p.relative_to(mount.source) for p in mount.source.rglob("*.bin"))
    drop_page_cache([mount.mountpoint / rel for rel in files])
    with ThreadPoolExecutor(8) as pool:
        digests = list(pool.map(lambda rel: _sha256(mount.mountpoint / rel), files))
    assert digests == [_sha256(mount.source / rel) for rel in files]
    stats = mount.cluster.state_dir / "mount" / "stats.json"

    def found_queued() -> int:
        found: int = json.loads(stats.read_text())["requests"]["found_queued"]
        return found

    # The file is rewritten every 2 s.
    assert wait_until(lambda: found_queued() > 0, 30), "no request was found queued"


def test_rereads_are_answered_by_the_page_cache(mount: Mounted) -> None:
    """A file opened again unchanged keeps its pages (``keep_cache``): a
    buffered re-read reaches none of the mount's tiers."""
    rel = Path("exact-block.bin")
    path = mount.mountpoint / rel
    expected = _sha256(mount.source / rel)
    tiers = client_counters(mount.cluster.state_dir / "mount" / "stats.json")
    drop_page_cache([path])
    assert _sha256(path) == expected
    after_first_read = tiers()
    assert sum(hits + misses for hits, misses in after_first_read.values()) > 0
    assert _sha256(path) == expected
    assert tiers() == after_first_read


def test_stat_of_files_and_directories(mount: Mounted) -> None:
    st_file = os.stat(mount.mountpoint / "README.txt")
    assert st_file.st_size == (mount.source / "README.txt").stat().st_size
    assert oct(st_file.st_mode & 0o777) == oct(0o444)
    assert os.path.isdir(mount.mountpoint / "datasets" / "train")
    assert sorted(os.listdir(mount.mountpoint)) == sorted(os.listdir(mount.source))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_reads_across_blocks(mount: Mounted, data: st.DataObject) -> None:
    name = data.draw(
        st.sampled_from(
            [
                "models/llm-7b/model-00001-of-00002.safetensors",
                "exact-block.bin",
                "datasets/train/shard-000/sample-00003.bin",
            ]
        )
    )
    size = (mount.source / name).stat().st_size
    offset = data.draw(st.integers(0, size + 10))
    length = data.draw(st.integers(0, 3 * BLOCK))
    with open(mount.mountpoint / name, "rb") as got, open(mount.source / name, "rb") as want:
        assert os.pread(got.fileno(), length, offset) == os.pread(want.fileno(), length, offset)


def test_seek_and_mmap(mount: Mounted) -> None:
    name = "models/llm-7b/model-00002-of-00002.safetensors"
    want = (mount.source / name).read_bytes()
    with open(mount.mountpoint / name, "rb") as f:
        f.seek(BLOCK - 100)
        assert f.read(200) == want[BLOCK - 100 : BLOCK + 100]
        f.seek(-50, os.SEEK_END)
        assert f.read() == want[-50:]
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            assert m[3 * BLOCK - 7 : 3 * BLOCK + 7] == want[3 * BLOCK - 7 : 3 * BLOCK + 7]
            assert hashlib.sha256(m).digest() == hashlib.sha256(want).digest()


def test_cp_copies_a_directory(mount: Mounted, tmp_path: Path) -> None:
    shutil.copytree(mount.mountpoint / "deep", tmp_path / "deep")
    assert (tmp_path / "deep" / "a" / "b" / "c" / "leaf.txt").read_text() == "leaf\n"


def test_writes_are_refused_read_only(mount: Mounted) -> None:
    mnt = mount.mountpoint
    attempts = [
        lambda: os.open(mnt / "README.txt", os.O_WRONLY),
        lambda: os.open(mnt / "new-file", os.O_WRONLY | os.O_CREAT),
        lambda: os.mkdir(mnt / "new-dir"),
        lambda: os.unlink(mnt / "README.txt"),
        lambda: os.rename(mnt / "README.txt", mnt / "x"),
        lambda: os.rmdir(mnt / "deep"),
        lambda: os.symlink("README.txt", mnt / "link"),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS


def test_unknown_names_are_enoent(mount: Mounted) -> None:
    with pytest.raises(FileNotFoundError):
        os.stat(mount.mountpoint / "no-such-file")
    with pytest.raises(FileNotFoundError):
        os.open(mount.mountpoint / "deep" / "nope" / "x", os.O_RDONLY)
    with pytest.raises(NotADirectoryError):
        os.listdir(mount.mountpoint / "README.txt")
