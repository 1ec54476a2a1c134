"""LocalStore over real files in a temporary directory."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from dcfs.errors import BucketError, ConfigError, ObjectChanged, ObjectNotFound
from dcfs.objstore import open_store
from dcfs.objstore.local import LocalStore

# Chosen so that a naive directory walk ('a' before 'a-b') differs from key
# order ('a-b' < 'a.txt' < 'a/...' < 'a0'), plus upper case, dot files and UTF-8.
TRICKY = ["a/b", "a/c/d", "a-b", "a.txt", "a0", "ab/c", "b", "Z", ".hidden", "é", "z/ü/x"]


def write(root: Path, key: str, data: bytes) -> Path:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    d = tmp_path / "bucket"
    d.mkdir()
    return d


@pytest.fixture
def store(root: Path) -> LocalStore:
    return LocalStore.from_url(f"file://{root}")


def keys(store: LocalStore, prefix: str = "", page_size: int = 1000) -> list[str]:
    return [o.key for o in store.list(prefix, page_size)]


# -- URLs ------------------------------------------------------------------------


def test_open_store_dispatches_file_urls(root: Path) -> None:
    store = open_store(f"file://{root}")
    assert isinstance(store, LocalStore)
    assert store.root == os.path.realpath(root)


def test_percent_encoded_path(tmp_path: Path) -> None:
    d = tmp_path / "my dir"
    d.mkdir()
    assert LocalStore.from_url(f"file://{tmp_path}/my%20dir").root == str(d)


@pytest.mark.parametrize(
    "url",
    [
        "file://",
        "file:relative/dir",
        "file:///definitely/not/there",
        "file://host/srv/data",
        "file:///tmp?x=1",
        "file:///tmp#frag",
        "http:///tmp",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError) as e:
        LocalStore.from_url(url)
    assert "\n" not in str(e.value)


def test_url_to_a_file_is_not_a_bucket(root: Path) -> None:
    f = write(root, "f", b"x")
    with pytest.raises(ConfigError, match="not a directory"):
        LocalStore.from_url(f"file://{f}")


# -- listing ---------------------------------------------------------------------


def test_list_is_in_bytewise_key_order(root: Path, store: LocalStore) -> None:
    for k in TRICKY:
        write(root, k, k.encode())
    listed = keys(store)
    assert listed == sorted(TRICKY, key=lambda k: k.encode("utf-8"))
    assert listed.index("a.txt") < listed.index("a/b") < listed.index("a0")


def test_list_reports_size_etag_mtime(root: Path, store: LocalStore) -> None:
    p = write(root, "d/f", b"12345")
    [info] = store.list()
    st = p.stat()
    assert (info.key, info.size, info.mtime_ns) == ("d/f", 5, st.st_mtime_ns)
    assert info == store.head("d/f")
    assert info.version.size == 5


def test_page_size_does_not_change_the_listing(root: Path, store: LocalStore) -> None:
    names = [f"k{i}" for i in range(5)]
    for k in names:
        write(root, k, b"x")
    assert keys(store, page_size=2) == names


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("a", ["a-b", "a.txt", "a/b", "a/c/d", "a0", "ab/c"]),
        ("a/", ["a/b", "a/c/d"]),
        ("a/c", ["a/c/d"]),
        ("a/c/d", ["a/c/d"]),
        ("a.t", ["a.txt"]),
        ("z/ü/", ["z/ü/x"]),
        ("nope/", []),
        ("a.txt/", []),
        ("../", []),
        ("/a", []),
    ],
)
def test_list_prefix(root: Path, store: LocalStore, prefix: str, expected: list[str]) -> None:
    for k in TRICKY:
        write(root, k, b"x")
    assert keys(store, prefix) == expected


def test_list_walks_lazily(root: Path, store: LocalStore) -> None:
    """A directory is read only when the walk reaches it, so a file created
    there after the listing started still shows up."""
    write(root, "a/1", b"x")
    (root / "z").mkdir()
    it = store.list()
    assert next(it).key == "a/1"
    write(root, "z/late", b"x")
    assert [o.key for o in it] == ["z/late"]


def test_list_skips_special_files_and_outside_symlinks(
    root: Path, store: LocalStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    write(outside, "secret", b"s")
    write(root, "real/f", b"data")
    (root / "empty").mkdir()
    (root / "out-file").symlink_to(outside / "secret")
    (root / "out-dir").symlink_to(outside)
    (root / "dangling").symlink_to(root / "missing")
    (root / "in-file").symlink_to(root / "real" / "f")
    (root / "in-dir").symlink_to(root / "real")
    (root / "real" / "loop").symlink_to(root)
    os.mkfifo(root / "fifo")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "sock"))
        assert keys(store) == ["in-dir/f", "in-file", "real/f"]
    for bad in ("out-file", "out-dir/secret", "dangling", "fifo", "empty", "real"):
        with pytest.raises(ObjectNotFound):
            store.head(bad)
    assert store.read_range(store.head("in-file").version, 0, 10) == b"data"


def test_undecodable_names_are_skipped(root: Path, store: LocalStore) -> None:
    write(root, "ok", b"x")
    with open(os.fsencode(root) + b"/bad-\xff", "wb") as f:
        f.write(b"x")
    assert keys(store) == ["ok"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any directory")
def test_unreadable_directory_is_a_bucket_error(root: Path, store: LocalStore) -> None:
    write(root, "locked/f", b"x")
    (root / "locked").chmod(0)
    try:
        with pytest.raises(BucketError, match="locked"):
            keys(store)
    finally:
        (root / "locked").chmod(0o755)


# -- head and read_range ---------------------------------------------------------


@pytest.mark.parametrize("key", ["../x", "a/../b", "/etc/passwd", "a//b", "./a", "", "a/"])
def test_invalid_keys_are_not_found(root: Path, store: LocalStore, key: str) -> None:
    write(root, "a/b", b"x")
    write(root, "b", b"x")
    with pytest.raises(ObjectNotFound):
        store.head(key)


def test_head_missing(store: LocalStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.head("nope")


def test_ranged_reads_at_the_edges(root: Path, store: LocalStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    write(root, "big", data)
    v = store.head("big").version
    size = len(data)
    assert store.read_range(v, 0, 1) == data[:1]
    assert store.read_range(v, 0, size) == data
    assert store.read_range(v, size - 1, 1) == data[-1:]
    assert store.read_range(v, size - 1, 100) == data[-1:]
    assert store.read_range(v, 1000, size) == data[1000:]
    assert store.read_range(v, 12345, 4096) == data[12345 : 12345 + 4096]
    assert store.read_range(v, size, 10) == b""
    assert store.read_range(v, size + 10, 10) == b""
    assert store.read_range(v, 5, 0) == b""
    with pytest.raises(ValueError):
        store.read_range(v, -1, 10)


def test_overwrite_between_head_and_read(root: Path, store: LocalStore) -> None:
    p = write(root, "f", b"old data")
    v = store.head("f").version
    p.write_bytes(b"new data, longer")
    with pytest.raises(ObjectChanged):
        store.read_range(v, 0, 4)
    assert store.read_range(store.head("f").version, 0, 3) == b"new"


def test_same_size_rewrite_with_new_mtime(root: Path, store: LocalStore) -> None:
    p = write(root, "f", b"aaaa")
    v = store.head("f").version
    st = p.stat()
    p.write_bytes(b"bbbb")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(ObjectChanged):
        store.read_range(v, 0, 4)


def test_replaced_by_rename_with_same_size_and_mtime(root: Path, store: LocalStore) -> None:
    p = write(root, "f", b"aaaa")
    v = store.head("f").version
    st = p.stat()
    tmp = write(root, "f.tmp", b"bbbb")
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, p)
    with pytest.raises(ObjectChanged):
        store.read_range(v, 0, 4)


def test_change_during_the_read_is_caught(
    root: Path, store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second fstat catches a write that lands while bytes are read."""
    p = write(root, "f", b"0123456789")
    v = store.head("f").version
    real_pread = os.pread

    def pread_then_write(fd: int, n: int, off: int) -> bytes:
        data = real_pread(fd, n, off)
        with open(p, "ab") as f:
            f.write(b"more")
        return data

    monkeypatch.setattr(os, "pread", pread_then_write)
    with pytest.raises(ObjectChanged):
        store.read_range(v, 0, 5)


def test_deleted_between_head_and_read(root: Path, store: LocalStore) -> None:
    p = write(root, "f", b"data")
    v = store.head("f").version
    p.unlink()
    with pytest.raises(ObjectNotFound):
        store.read_range(v, 0, 4)
