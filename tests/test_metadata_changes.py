"""The change log, the change stream's logic and the refresh of one path:
what each sync records, how a client catches up (or is told to reset), and
that a refresh touches only its path, even beside a running full sync."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_metadata_store import FakeStore
from test_metadata_sync import tree

from dcfs.errors import ObjectNotFound
from dcfs.objstore.base import ObjectInfo
from metadata import changelog
from metadata.changelog import Change, Kind
from metadata.model import ROOT_INODE
from metadata.refresh import refresh_path
from metadata.store import NamespaceStore
from metadata.sweep import sweep_subtree
from metadata.sync import sync_from_bucket
from metadata.watch import Batch, follow


class HeadStore(FakeStore):
    """A FakeStore that answers HEAD, and lists a snapshot taken when the
    listing starts (as a real listing reflects the bucket when it was read)."""

    def __init__(self, keys: dict[str, tuple[int, str]] | None = None) -> None:
        super().__init__(keys)
        self.listed = threading.Event()
        self.pause: threading.Event | None = None

    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        snapshot = sorted((k, v) for k, v in self.objects.items() if k.startswith(prefix))
        for n, (key, (size, etag)) in enumerate(snapshot):
            if self.pause is not None and n == len(snapshot) // 2:
                self.listed.set()
                self.pause.wait(10)
            yield ObjectInfo(key, size, etag, 1_000_000_000)

    def head(self, key: str) -> ObjectInfo:
        if key not in self.objects:
            raise ObjectNotFound(f"no such object: {key}")
        size, etag = self.objects[key]
        return ObjectInfo(key, size, etag, 1_000_000_000)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NamespaceStore]:
    with NamespaceStore(tmp_path / "db", map_size=1 << 30) as ns:
        yield ns


def logged(store: NamespaceStore, since: int) -> list[tuple[int, Change]]:
    return store.changes(changelog.first_key(since + 1), 10_000).rows


def test_each_change_is_logged_with_its_generation(store: NamespaceStore) -> None:
    bucket = HeadStore({"d/one": (1, "e1"), "d/two": (2, "e2"), "gone/deep/x": (3, "e3")})
    sync_from_bucket(store, bucket)
    before = tree(store)
    generation = store.generation
    sync_from_bucket(store, bucket)
    assert store.generation == generation and logged(store, generation) == []
    bucket.put("d/one", size=10, etag="e1-new")
    del bucket.objects["gone/deep/x"]
    bucket.put("d/three", etag="e4")
    sync_from_bucket(store, bucket)
    rows = logged(store, generation)
    assert all(generation < g <= store.generation for g, _ in rows)
    assert [g for g, _ in rows] == sorted(g for g, _ in rows)
    d = before["d/"].inode
    three = tree(store)["d/three"].inode
    assert {c for _, c in rows} == {
        Change(Kind.CHANGED, before["d/one"].inode, d, "one"),
        Change(Kind.ADDED, three, d, "three"),
        Change(Kind.DELETED, before["gone/"].inode, ROOT_INODE, "gone"),
        Change(Kind.DELETED, before["gone/deep/"].inode, before["gone/"].inode, "deep"),
        Change(Kind.DELETED, before["gone/deep/x"].inode, before["gone/deep/"].inode, "x"),
    }


def test_the_log_is_bounded_and_its_floor_rises(tmp_path: Path) -> None:
    with NamespaceStore(tmp_path / "db", map_size=1 << 30, max_log_rows=10) as ns:
        bucket = HeadStore()
        for i in range(8):
            bucket.put(f"f{i}", etag=f"e{i}")
            bucket.put(f"g{i}", etag=f"e{i}")
            sync_from_bucket(ns, bucket)
        page = ns.changes(changelog.first_key(0), 100)
        assert len(page.rows) == ns.table_sizes()["changes"] == 10
        assert page.floor > 0 and page.generation == ns.generation == 8
        assert all(g >= page.floor for g, _ in page.rows)
        # A client from before the floor is told to reset; one after it catches up.
        behind = next(follow(ns, page.floor - 1, ns.namespace_id, lambda: True))
        assert behind == Batch(ns.generation, reset=True)
        current = follow(ns, page.floor, ns.namespace_id, lambda: False, keepalive_s=0.01)
        assert next(current) == Batch(page.floor)
        caught_up = next(current)
        assert caught_up.generation == ns.generation and not caught_up.reset
        assert {c.name for c in caught_up.changes} >= {"f7", "g7"}


def test_follow_announces_a_generation_only_when_complete(store: NamespaceStore) -> None:
    sync_from_bucket(store, HeadStore({f"k{i}": (1, "e") for i in range(5)}))  # generation 1
    assert store.generation == 1
    stream = follow(store, 0, "", lambda: False, keepalive_s=0.01, limit=2)
    batches = [next(stream) for _ in range(5)]
    assert batches[0] == Batch(0)
    # Five rows of generation 1, two per batch: only the last batch completes it.
    assert [b.generation for b in batches[1:4]] == [0, 0, 1]
    assert sorted(c.name for b in batches[1:4] for c in b.changes) == [f"k{i}" for i in range(5)]
    assert batches[4] == Batch(1)  # a keepalive on the idle stream


def test_follow_resets_for_another_database_or_a_future_generation(
    store: NamespaceStore,
) -> None:
    sync_from_bucket(store, HeadStore({"a": (1, "e")}))
    stop = lambda: True  # noqa: E731 - one batch each
    assert next(follow(store, 1, "other-db", stop)).reset
    assert next(follow(store, 99, "", stop)).reset
    assert next(follow(store, 1, store.namespace_id, stop)) == Batch(1)


def test_follow_wakes_on_a_commit(store: NamespaceStore) -> None:
    bucket = HeadStore({"a": (1, "e")})
    sync_from_bucket(store, bucket)
    stream = follow(store, store.generation, "", lambda: False, keepalive_s=30)
    assert next(stream) == Batch(1)
    bucket.put("b")
    syncer = threading.Timer(0.2, sync_from_bucket, (store, bucket))
    syncer.start()
    batch = next(stream)  # long before the 30 s keepalive
    syncer.join()
    assert [c.name for c in batch.changes] == ["b"] and batch.generation == store.generation


def test_refresh_of_a_file_touches_only_it(store: NamespaceStore) -> None:
    bucket = HeadStore({"d/a": (1, "ea"), "d/b": (1, "eb"), "other": (1, "eo")})
    sync_from_bucket(store, bucket)
    before = tree(store)
    bucket.put("d/a", size=7, etag="ea2")
    bucket.put("d/b", size=7, etag="eb2")  # not refreshed: stays as synced
    del bucket.objects["other"]
    attr = refresh_path(store, bucket, "d/a")
    assert attr is not None
    assert (attr.etag, attr.size, attr.inode) == ("ea2", 7, before["d/a"].inode)
    after = tree(store)
    assert after["d/b"] == before["d/b"] and after["other"] == before["other"]
    # Gone from the bucket: the entry goes.
    del bucket.objects["d/a"]
    assert refresh_path(store, bucket, "d/a") is None
    assert "d/a" not in tree(store)
    # A new file in a new directory.
    bucket.put("n/e/w", etag="ew")
    attr = refresh_path(store, bucket, "n/e/w")
    assert attr is not None and attr.etag == "ew" and "n/e/" in tree(store)


def test_refresh_of_a_directory_and_a_file_becoming_one(store: NamespaceStore) -> None:
    bucket = HeadStore({"d/a": (1, "ea"), "d/s/x": (1, "ex"), "d/f": (1, "ef"), "e/y": (1, "ey")})
    sync_from_bucket(store, bucket)
    before = tree(store)
    del bucket.objects["d/s/x"]
    bucket.put("d/new")
    bucket.put("e/z")  # another directory: not refreshed
    d = refresh_path(store, bucket, "d")
    assert d is not None and d.inode == before["d/"].inode
    assert sorted(p for p in tree(store) if p.startswith(("d/", "e/"))) == [
        "d/",
        "d/a",
        "d/f",
        "d/new",
        "e/",
        "e/y",
    ]
    # The file d/f becomes a directory.
    del bucket.objects["d/f"]
    bucket.put("d/f/inner")
    attr = refresh_path(store, bucket, "d/f")
    assert attr is not None and attr.is_dir
    assert store.getattr(before["d/f"].inode) is None
    assert "d/f/inner" in tree(store)
    sizes = store.table_sizes()
    assert sizes["inodes"] == sizes["paths"] == sizes["dirents"] + 1


def test_a_refresh_during_a_full_sync_is_not_undone(store: NamespaceStore) -> None:
    bucket = HeadStore({f"k{i:02d}": (1, "old") for i in range(20)})
    sync_from_bucket(store, bucket)
    bucket.pause = threading.Event()
    syncer = threading.Thread(target=sync_from_bucket, args=(store, bucket), kwargs={"batch": 5})
    syncer.start()
    try:
        assert bucket.listed.wait(10)
        bucket.put("k15", size=2, etag="new")  # after the full sync's listing started
        attr = refresh_path(store, bucket, "k15")
        assert attr is not None and attr.etag == "new"
    finally:
        bucket.pause.set()
        syncer.join(10)
    # The full sync listed the old version before the refresh: it keeps the new one.
    k15 = store.lookup(ROOT_INODE, "k15")
    assert k15 is not None and k15.etag == "new"
    assert len(tree(store)) == 20


def test_sweep_of_a_subtree_in_small_batches(store: NamespaceStore) -> None:
    keys = {f"t/{a}/{b}/f{c}": (1, "e") for a in range(3) for b in range(3) for c in range(4)}
    bucket = HeadStore({**keys, "u/keep": (1, "e")})
    sync_from_bucket(store, bucket)
    t = store.resolve("t")
    assert t is not None
    with store.refresh_session() as mark:
        files, dirs = sweep_subtree(store, t.inode, mark, batch=3)
    assert (files, dirs) == (36, 13)
    assert sorted(tree(store)) == ["u/", "u/keep"]
    with store.refresh_session() as mark:
        assert sweep_subtree(store, ROOT_INODE, mark, batch=2) == (1, 1)
    assert store.getattr(ROOT_INODE) is not None and tree(store) == {}
