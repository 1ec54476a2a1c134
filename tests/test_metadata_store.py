"""NamespaceStore: encodings, reads, paging, persistence across reopening."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dcfs.blocks import ObjectVersion
from dcfs.errors import ConfigError
from dcfs.objstore.base import ObjectInfo, ObjectStore
from metadata.model import ROOT_INODE, Node, Record
from metadata.store import NamespaceStore, NoSuchInode, NotADirectory
from metadata.sync import sync_from_bucket


class FakeStore(ObjectStore):
    """A bucket held in a dict; lists in key order like S3."""

    url = "fake://bucket"

    def __init__(self, keys: dict[str, tuple[int, str]] | None = None) -> None:
        self.objects = dict(keys or {})

    def put(self, key: str, size: int = 1, etag: str = "e1") -> None:
        self.objects[key] = (size, etag)

    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        for key in sorted(self.objects):
            if key.startswith(prefix):
                size, etag = self.objects[key]
                yield ObjectInfo(key, size, etag, 1_000_000_000)

    def head(self, key: str) -> ObjectInfo:
        raise NotImplementedError

    def read_range(self, version: ObjectVersion, offset: int, length: int) -> bytes:
        raise NotImplementedError


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NamespaceStore]:
    with NamespaceStore(tmp_path / "db", map_size=1 << 30) as ns:
        yield ns


def test_record_roundtrip() -> None:
    rec = Record(7, False, 1 << 40, -5, 3, '"abc-1"', "dir/ünïcode file.bin")
    back = Record.unpack(rec.pack())
    assert back == rec
    assert back.name == "ünïcode file.bin"
    assert back.attr(9).key == "dir/ünïcode file.bin"
    assert Record(1, True, 0, 0, 0, "", "a/b").attr(4).key == ""


def test_fresh_store_has_only_root(store: NamespaceStore) -> None:
    root = store.getattr(ROOT_INODE)
    assert root is not None and root.is_dir and root.inode == ROOT_INODE
    assert store.readdir(ROOT_INODE) == ([], False)
    assert store.generation == 0 and store.object_count == 0
    assert store.getattr(2) is None


def test_lookup_getattr_readdir(store: NamespaceStore) -> None:
    sync_from_bucket(store, FakeStore({"a/b.txt": (5, "x"), "top": (3, "y")}))
    a = store.lookup(ROOT_INODE, "a")
    assert a is not None and a.is_dir and a.key == "" and a.etag == ""
    b = store.lookup(a.inode, "b.txt")
    assert b is not None and not b.is_dir
    assert (b.size, b.etag, b.key) == (5, "x", "a/b.txt")
    assert store.getattr(b.inode) == b
    names = [name for name, _ in store.readdir(ROOT_INODE)[0]]
    assert names == ["a", "top"]
    assert store.lookup(ROOT_INODE, "missing") is None
    assert store.lookup(ROOT_INODE, "a/b.txt") is None
    assert store.lookup(ROOT_INODE, "") is None
    assert store.lookup(b.inode, "x") is None  # a file has no entries
    assert store.lookup(12345, "a") is None


def test_readdir_pages_of_two(store: NamespaceStore) -> None:
    sync_from_bucket(store, FakeStore({f"d/{n}": (1, "e") for n in "ecabd"}))
    d = store.lookup(ROOT_INODE, "d")
    assert d is not None
    seen: list[str] = []
    start, more, pages = "", True, 0
    while more:
        entries, more = store.readdir(d.inode, start, limit=2)
        pages += 1
        assert len(entries) <= 2
        seen += [name for name, _ in entries]
        start = entries[-1][0] if entries else start
    assert seen == ["a", "b", "c", "d", "e"]
    assert pages == 3
    assert store.readdir(d.inode, "e", 2) == ([], False)
    assert [n for n, _ in store.readdir(d.inode, "b1", 10)[0]] == ["c", "d", "e"]
    # Exactly `limit` entries left: no phantom extra page.
    assert store.readdir(d.inode, "c", 2)[1] is False


def test_readdir_sorts_bytewise(store: NamespaceStore) -> None:
    sync_from_bucket(store, FakeStore({k: (1, "e") for k in ["b", "B", "a-b", "a", "é", "z"]}))
    names = [n for n, _ in store.readdir(ROOT_INODE)[0]]
    assert names == sorted(names, key=str.encode) == ["B", "a", "a-b", "b", "z", "é"]


def test_readdir_errors(store: NamespaceStore) -> None:
    sync_from_bucket(store, FakeStore({"f": (1, "e")}))
    f = store.lookup(ROOT_INODE, "f")
    assert f is not None
    with pytest.raises(NotADirectory):
        store.readdir(f.inode)
    with pytest.raises(NoSuchInode):
        store.readdir(999)
    with pytest.raises(ValueError):
        store.readdir(ROOT_INODE, limit=0)


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    bucket = FakeStore({"x/y/z": (1, "e"), "w": (2, "f")})
    with NamespaceStore(tmp_path / "db", map_size=1 << 30) as ns:
        sync_from_bucket(ns, bucket)
        before = {n: a for n, a in ns.readdir(ROOT_INODE)[0]}
        generation = ns.generation
        ns.save_members([Node("n1", "127.0.0.1:1", 10)], 4)
    with NamespaceStore(tmp_path / "db", map_size=1 << 30) as ns:
        assert {n: a for n, a in ns.readdir(ROOT_INODE)[0]} == before
        assert ns.generation == generation and ns.object_count == 2 and ns.dir_count == 2
        assert ns.load_members() == ([Node("n1", "127.0.0.1:1", 10)], 4)


def test_members_rows_replace(store: NamespaceStore) -> None:
    assert store.load_members() == ([], 0)
    store.save_members([Node("b", "h:2", 2), Node("a", "h:1", 1)], 1)
    assert store.load_members() == ([Node("a", "h:1", 1), Node("b", "h:2", 2)], 1)
    store.save_members([Node("b", "h:3", 3)], 2)
    assert store.load_members() == ([Node("b", "h:3", 3)], 2)


def test_unopenable_dir_is_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="metadata db"):
        NamespaceStore(blocker / "db")
