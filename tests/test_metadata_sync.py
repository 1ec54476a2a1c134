"""sync_from_bucket: tree shape, bad keys, conflicts, mark-and-sweep, stable
inodes, bounded memory, and no write transaction held across page fetches."""

from __future__ import annotations

import logging
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_metadata_store import FakeStore

from dcfs.errors import BucketError
from dcfs.objstore import open_store
from dcfs.objstore.base import ObjectInfo
from metadata.model import ROOT_INODE, Attr, Node
from metadata.store import NamespaceStore
from metadata.sync import BadKey, SyncCancelled, split_key, sync_from_bucket


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NamespaceStore]:
    with NamespaceStore(tmp_path / "db", map_size=1 << 30) as ns:
        yield ns


def tree(store: NamespaceStore, inode: int = ROOT_INODE, prefix: str = "") -> dict[str, Attr]:
    """Every path in the namespace ('dir/' for directories) and its attributes."""
    out: dict[str, Attr] = {}
    for name, attr in store.readdir(inode, "", 10_000)[0]:
        path = prefix + name
        if attr.is_dir:
            out[path + "/"] = attr
            out.update(tree(store, attr.inode, path + "/"))
        else:
            out[path] = attr
    return out


def test_split_key() -> None:
    assert split_key("a/b/c.bin") == (["a", "b", "c.bin"], False)
    assert split_key("a/b/") == (["a", "b"], True)
    for bad in ["", "/", "a//b", "/a", "a/./b", "../a", "a/..", "x\0y", "a" * 256, "a//"]:
        with pytest.raises(BadKey):
            split_key(bad)
    assert split_key("é" * 127) == (["é" * 127], False)  # 254 bytes
    with pytest.raises(BadKey):
        split_key("é" * 128)  # 256 bytes


def test_tree_from_prefixes_and_markers(store: NamespaceStore) -> None:
    bucket = FakeStore()
    for key in ["a/b/c.bin", "a/b/d.bin", "a/e", "empty/", "m/n/", "top"]:
        bucket.put(key, size=len(key), etag=f"etag-{key}")
    report = sync_from_bucket(store, bucket)
    paths = tree(store)
    assert sorted(paths) == [
        "a/",
        "a/b/",
        "a/b/c.bin",
        "a/b/d.bin",
        "a/e",
        "empty/",
        "m/",
        "m/n/",
        "top",
    ]
    c = paths["a/b/c.bin"]
    assert (c.size, c.etag, c.key, c.mtime_ns) == (9, "etag-a/b/c.bin", "a/b/c.bin", 1_000_000_000)
    assert all(attr.key == "" and attr.size == 0 for p, attr in paths.items() if p.endswith("/"))
    assert len({a.inode for a in paths.values()} | {ROOT_INODE}) == len(paths) + 1
    assert (report.added, report.changed, report.deleted, report.skipped) == (4, 0, 0, 0)
    assert (report.objects, report.dirs, report.generation) == (4, 5, 1)
    assert (store.object_count, store.dir_count, store.generation) == (4, 5, 1)


def test_bad_keys_skipped_and_logged_once(
    store: NamespaceStore, caplog: pytest.LogCaptureFixture
) -> None:
    bad = ["a//b", "./x", "x/../y", "n" * 300, "nul\0", "/lead", "dots/..", "ok/../no"]
    bucket = FakeStore({k: (1, "e") for k in [*bad, "good/file"]})
    with caplog.at_level(logging.WARNING, logger="dcfs.metadata"):
        report = sync_from_bucket(store, bucket)
    assert report.skipped == len(bad) and report.objects == 1
    assert sorted(tree(store)) == ["good/", "good/file"]
    warnings = [r for r in caplog.records if r.name == "dcfs.metadata"]
    assert len(warnings) == 1
    assert f"skipped {len(bad)}" in warnings[0].getMessage()
    assert warnings[0].getMessage().count("(") <= 5
    assert store.skipped_count == len(bad)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dcfs.metadata"):
        sync_from_bucket(store, bucket)  # the same again: not repeated
    assert not caplog.records


def test_directory_wins_over_file(store: NamespaceStore) -> None:
    # 'a' (file) sorts before 'a!x' and 'a/x': the directory must still win.
    bucket = FakeStore({"a": (1, "f"), "a!x": (1, "g"), "a/x": (1, "h"), "b": (1, "i")})
    report = sync_from_bucket(store, bucket)
    paths = tree(store)
    assert sorted(paths) == ["a!x", "a/", "a/x", "b"]
    assert (report.added, report.skipped, report.objects) == (3, 1, 3)
    assert store.object_count == 3
    # An unchanged bucket changes nothing, the hidden file included.
    report = sync_from_bucket(store, bucket)
    assert tree(store) == paths
    assert (report.added, report.changed, report.deleted, report.skipped) == (0, 0, 0, 1)
    assert report.generation == 1
    # The file disappears from the bucket: the directory stays, nothing else moves.
    del bucket.objects["a"]
    report = sync_from_bucket(store, bucket)
    assert tree(store) == paths
    assert (report.added, report.changed, report.deleted, report.skipped) == (0, 0, 0, 0)
    assert report.generation == 1


def test_file_replaces_vanished_directory_and_back(store: NamespaceStore) -> None:
    bucket = FakeStore({"a/x": (1, "e")})
    sync_from_bucket(store, bucket)
    dir_inode = tree(store)["a/"].inode
    bucket.objects = {"a": (5, "f")}
    report = sync_from_bucket(store, bucket)
    assert sorted(tree(store)) == ["a"] and not tree(store)["a"].is_dir
    assert (report.added, report.deleted) == (1, 1)
    assert store.getattr(dir_inode) is None
    bucket.objects = {"a": (5, "f"), "a/y": (1, "e")}  # now both: the directory wins
    generation = store.generation
    report = sync_from_bucket(store, bucket)
    assert sorted(tree(store)) == ["a/", "a/y"]
    # The file is hidden (skipped), not deleted: it is still in the bucket.
    assert (report.added, report.deleted, report.skipped, report.objects) == (1, 0, 1, 1)
    assert report.generation > generation


def test_changes_keep_inodes_and_deletions_are_swept(store: NamespaceStore) -> None:
    bucket = FakeStore({"d/one": (1, "e1"), "d/two": (2, "e2"), "gone/deep/x": (3, "e3")})
    sync_from_bucket(store, bucket)
    first = tree(store)
    generation = store.generation
    # Nothing changed: no generation bump, same inodes.
    report = sync_from_bucket(store, bucket)
    assert (report.added, report.changed, report.deleted, report.generation) == (
        0,
        0,
        0,
        generation,
    )
    assert tree(store) == first
    bucket.put("d/one", size=10, etag="e1-new")
    del bucket.objects["gone/deep/x"]
    bucket.put("d/three", etag="e4")
    report = sync_from_bucket(store, bucket)
    assert (report.added, report.changed, report.deleted) == (1, 1, 1)
    assert report.generation > generation
    after = tree(store)
    assert sorted(after) == ["d/", "d/one", "d/three", "d/two"]
    assert after["d/one"].inode == first["d/one"].inode
    assert (after["d/one"].size, after["d/one"].etag) == (10, "e1-new")
    assert after["d/two"] == first["d/two"]
    for path in ["gone/", "gone/deep/", "gone/deep/x"]:
        assert store.getattr(first[path].inode) is None
    assert store.dir_count == 1


def test_inodes_stable_across_restart_and_resync(tmp_path: Path) -> None:
    keys = {f"p{i % 7}/q{i % 3}/f{i}": (i, f"e{i}") for i in range(200)}
    bucket = FakeStore(keys)
    with NamespaceStore(tmp_path / "db", map_size=1 << 30) as ns:
        sync_from_bucket(ns, bucket, batch=17)
        before = {p: a.inode for p, a in tree(ns).items()}
    with NamespaceStore(tmp_path / "db", map_size=1 << 30) as ns:
        report = sync_from_bucket(ns, bucket, batch=33)
        assert (report.added, report.changed, report.deleted) == (0, 0, 0)
        assert {p: a.inode for p, a in tree(ns).items()} == before
    # A path that vanishes and comes back is a new file: a new inode, never a reused one.
    del bucket.objects["p0/q0/f0"]
    with NamespaceStore(tmp_path / "db", map_size=1 << 30) as ns:
        sync_from_bucket(ns, bucket)
        bucket.put("p0/q0/f0")
        sync_from_bucket(ns, bucket)
        back = tree(ns)["p0/q0/f0"].inode
        assert back not in before.values()


class FailingStore(FakeStore):
    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        for n, info in enumerate(super().list(prefix, page_size)):
            if n == 3:
                raise BucketError("connection reset")
            yield info


def test_failed_listing_sweeps_nothing(store: NamespaceStore) -> None:
    keys = {f"k{i:02d}": (1, "e") for i in range(10)}
    sync_from_bucket(store, FakeStore(keys))
    generation = store.generation
    keys["k00"] = (2, "changed")
    with pytest.raises(BucketError):
        sync_from_bucket(store, FailingStore(keys), batch=2)
    assert len(tree(store)) == 10
    assert store.generation == generation + 1  # the committed change is announced
    sync_from_bucket(store, FakeStore(keys))  # the next sync still works
    assert len(tree(store)) == 10


def test_cancel_between_chunks(store: NamespaceStore) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(SyncCancelled):
        sync_from_bucket(store, FakeStore({"a": (1, "e")}), cancel=cancel)
    assert tree(store) == {}


class GeneratedStore(FakeStore):
    """``count`` objects made up on the fly: the listing never exists as a whole.
    Every ``check_every`` objects it checks that no write transaction is open,
    by writing from another thread (lmdb has one writer at a time)."""

    def __init__(self, count: int, ns: NamespaceStore | None = None, check_every: int = 0) -> None:
        super().__init__()
        self.count = count
        self.ns = ns
        self.check_every = check_every
        self.checks = 0

    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        for i in range(self.count):
            if self.ns is not None and self.check_every and i % self.check_every == 0:
                self._check_writer_free(self.ns)
            yield ObjectInfo(f"dir{i // 1000:04d}/file{i % 1000:04d}.bin", i, f"etag{i}", i)

    def _check_writer_free(self, ns: NamespaceStore) -> None:
        writer = threading.Thread(target=ns.save_members, args=([Node("n", "h:1", 1)], 1))
        writer.start()
        writer.join(timeout=10)
        assert not writer.is_alive(), "a write transaction is open while the listing runs"
        self.checks += 1


def test_listing_is_not_read_inside_a_write_transaction(store: NamespaceStore) -> None:
    bucket = GeneratedStore(2_000, store, check_every=250)
    report = sync_from_bucket(store, bucket, batch=500)
    assert report.objects == 2_000 and bucket.checks == 8


def test_hundred_thousand_objects_in_bounded_memory(tmp_path: Path) -> None:
    count = 100_000
    with NamespaceStore(tmp_path / "db", map_size=4 << 30) as ns:
        tracemalloc.start()
        try:
            report = sync_from_bucket(ns, GeneratedStore(count))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (report.added, report.objects, report.dirs) == (count, count, 100)
        # Holding the listing would take ~25 MB; a chunk of 5000 takes ~2 MB.
        assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"
        d = ns.lookup(ROOT_INODE, "dir0099")
        assert d is not None
        last = ns.lookup(d.inode, "file0999.bin")
        assert last is not None and last.size == count - 1
        # A re-sync of the same listing changes nothing.
        again = sync_from_bucket(ns, GeneratedStore(count))
        assert (again.added, again.changed, again.deleted, again.objects) == (0, 0, 0, count)
        assert again.generation == report.generation


def test_local_directory_bucket(tmp_path: Path, store: NamespaceStore) -> None:
    root = tmp_path / "bucket"
    (root / "models" / "v1").mkdir(parents=True)
    (root / "models" / "v1" / "weights.bin").write_bytes(b"x" * 100)
    (root / "readme.txt").write_text("hi")
    (root / "empty").mkdir()
    report = sync_from_bucket(store, open_store(f"file://{root}"))
    paths = tree(store)
    assert sorted(paths) == ["models/", "models/v1/", "models/v1/weights.bin", "readme.txt"]
    assert paths["models/v1/weights.bin"].size == 100
    assert report.objects == 2
    (root / "readme.txt").write_text("changed!")
    report = sync_from_bucket(store, open_store(f"file://{root}"))
    assert report.changed == 1
    assert tree(store)["readme.txt"].inode == paths["readme.txt"].inode


def expected_tree(keys: set[str]) -> set[str]:
    """The namespace a bucket should give, from first principles."""
    dirs: set[str] = set()
    files: set[str] = set()
    for key in keys:
        try:
            parts, is_dir = split_key(key)
        except BadKey:
            continue
        dirs.update("/".join(parts[:i]) + "/" for i in range(1, len(parts)))
        if is_dir:
            dirs.add(key)
        else:
            files.add(key)
    return dirs | {f for f in files if f + "/" not in dirs}


_component = st.sampled_from(["a", "b", "a!", "ab", "a.b"])
_key = st.builds(
    lambda parts, marker: "/".join(parts) + ("/" if marker else ""),
    st.lists(_component, min_size=1, max_size=3),
    st.booleans(),
) | st.sampled_from(["a//b", "a/../b", "./a"])


@settings(max_examples=60, deadline=None)
@given(
    buckets=st.lists(st.sets(_key, max_size=12), min_size=1, max_size=4),
    batch=st.integers(1, 5),
)
def test_matches_model_over_sync_sequences(
    tmp_path_factory: pytest.TempPathFactory, buckets: list[set[str]], batch: int
) -> None:
    with NamespaceStore(tmp_path_factory.mktemp("db"), map_size=1 << 30) as ns:
        previous: dict[str, int] = {}
        previous_keys: set[str] | None = None
        for keys in buckets:
            generation = ns.generation
            report = sync_from_bucket(ns, FakeStore({k: (1, "e") for k in keys}), batch=batch)
            paths = tree(ns)
            assert set(paths) == expected_tree(keys)
            files = [p for p in paths if not p.endswith("/")]
            assert report.objects == len(files) == ns.object_count
            assert report.dirs == len(paths) - len(files) == ns.dir_count
            sizes = ns.table_sizes()
            assert sizes["inodes"] == sizes["paths"] == sizes["dirents"] + 1 == len(paths) + 1
            # A path present before and now keeps its inode, unless it was hidden between.
            for path, attr in paths.items():
                if path in previous:
                    assert attr.inode == previous[path], path
            if keys == previous_keys:
                assert (report.added, report.changed, report.deleted) == (0, 0, 0)
                assert ns.generation == generation
            previous = {p: a.inode for p, a in paths.items()}
            previous_keys = keys


class ListedInOrder(FakeStore):
    """Lists the keys in the order given, as a store that does not sort might."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__({k: (1, "e") for k in keys})
        self.order = keys

    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        for key in self.order:
            yield ObjectInfo(key, 1, "e", 1_000_000_000)


@settings(max_examples=60, deadline=None)
@given(
    buckets=st.lists(st.sets(_key, max_size=12), min_size=1, max_size=4),
    batch=st.integers(1, 5),
    data=st.data(),
)
def test_listing_order_does_not_matter(
    tmp_path_factory: pytest.TempPathFactory,
    buckets: list[set[str]],
    batch: int,
    data: st.DataObject,
) -> None:
    """SeaweedFS lists a directory's keys at its bare name ('a/b' before
    'a-b'); other stores may not sort at all. The namespace is the same."""
    with NamespaceStore(tmp_path_factory.mktemp("db"), map_size=1 << 30) as ns:
        previous: dict[str, int] = {}
        for keys in buckets:
            if data.draw(st.booleans()):
                order = sorted(keys, key=lambda k: k.split("/"))
            else:
                order = data.draw(st.permutations(sorted(keys)))
            sync_from_bucket(ns, ListedInOrder(list(order)), batch=batch)
            paths = tree(ns)
            assert set(paths) == expected_tree(keys)
            sizes = ns.table_sizes()
            assert sizes["inodes"] == sizes["paths"] == sizes["dirents"] + 1 == len(paths) + 1
            for path, attr in paths.items():
                if path in previous:
                    assert attr.inode == previous[path], path
            previous = {p: a.inode for p, a in paths.items()}
