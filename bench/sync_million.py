"""Time and memory of the metadata service's namespace at scale, from a
generated listing (no bucket): the numbers behind the README's "Large
buckets" table.

    .venv/bin/python bench/sync_million.py [--objects 1000000] [--per-dir 10000]

Steps, each timed: the first sync into an empty lmdb; a re-sync of the same
listing (nothing changes); a re-sync with 1% of the objects overwritten; one
lookup and getattr per directory; a paged readdir of one directory; a refresh
of one file. The listing is a generator: it never exists as a whole, like a
paged ListObjectsV2.

Memory: the peak of the process's anonymous memory (Python's heap: what
would grow if the listing were held), sampled every 20 ms, and its resident
lmdb pages (file-backed: the kernel's page cache of the db, mapped; it can
drop them at any time).
"""

import argparse
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from dcfs.blocks import ObjectVersion  # noqa: E402
from dcfs.objstore.base import ObjectInfo, ObjectStore  # noqa: E402
from metadata.model import ROOT_INODE  # noqa: E402
from metadata.refresh import refresh_path  # noqa: E402
from metadata.store import NamespaceStore  # noqa: E402
from metadata.sync import sync_from_bucket  # noqa: E402


class GeneratedBucket(ObjectStore):
    """``objects`` keys 'train/part-DDDD/sample-NNNNNNN.bin', ``per_dir`` per
    directory; every ``changed_every``-th object has a second etag."""

    url = "generated://bucket"

    def __init__(self, objects: int, per_dir: int, changed_every: int = 0) -> None:
        self.objects = objects
        self.per_dir = per_dir
        self.changed_every = changed_every

    def _info(self, i: int) -> ObjectInfo:
        version = 2 if self.changed_every and i % self.changed_every == 0 else 1
        key = f"train/part-{i // self.per_dir:04d}/sample-{i:07d}.bin"
        return ObjectInfo(key, 4096 + i % 1000, f"{i:x}-v{version}", 1_700_000_000 * 10**9 + i)

    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        first, last = 0, self.objects
        if prefix.startswith("train/part-") and len(prefix) >= len("train/part-0000/"):
            # Like a bucket's index: only the keys of that directory are read.
            part = int(prefix[len("train/part-") :][:4])
            first, last = part * self.per_dir, min(self.objects, (part + 1) * self.per_dir)
        for i in range(first, last):
            info = self._info(i)
            if info.key.startswith(prefix):
                yield info

    def head(self, key: str) -> ObjectInfo:
        return self._info(int(key.rsplit("-", 1)[1].removesuffix(".bin")))

    def read_range(self, version: ObjectVersion, offset: int, length: int) -> bytes:
        raise NotImplementedError


class MemorySampler:
    """Peak RssAnon of this process, and its current RssFile, in MiB."""

    def __init__(self) -> None:
        self.peak_anon = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def read() -> dict[str, float]:
        fields = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("RssAnon", "RssFile"):
                fields[name] = int(value.split()[0]) / 1024
        return fields

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_anon = max(self.peak_anon, self.read()["RssAnon"])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--per-dir", type=int, default=10_000)
    parser.add_argument("--db", type=Path, default=None, help="lmdb directory (default: temporary)")
    args = parser.parse_args()
    db = args.db or Path(tempfile.mkdtemp(prefix="dcfs-sync-bench-"))
    print(f"{args.objects:,} objects, {args.per_dir:,} per directory, lmdb in {db}")
    memory = MemorySampler()
    before = memory.read()
    print(f"before: anonymous {before['RssAnon']:.0f} MiB, file-backed {before['RssFile']:.0f} MiB")
    print(f"\n{'step':<34}{'seconds':>9}{'peak anon MiB':>15}{'lmdb+files MiB':>16}  result")

    def step(name: str, started: float, result: str) -> None:
        elapsed = time.monotonic() - started
        now = memory.read()
        peak = max(memory.peak_anon, now["RssAnon"])
        print(f"{name:<34}{elapsed:>9.2f}{peak:>15.0f}{now['RssFile']:>16.0f}  {result}")

    try:
        with NamespaceStore(db) as ns:
            started = time.monotonic()
            report = sync_from_bucket(ns, GeneratedBucket(args.objects, args.per_dir))
            step("first sync", started, f"{report.objects:,} objects, {report.dirs} dirs")
            started = time.monotonic()
            report = sync_from_bucket(ns, GeneratedBucket(args.objects, args.per_dir))
            step("re-sync, nothing changed", started, f"{report.changed} changed")
            started = time.monotonic()
            changed = GeneratedBucket(args.objects, args.per_dir, changed_every=100)
            report = sync_from_bucket(ns, changed)
            step("re-sync, 1% overwritten", started, f"{report.changed:,} changed")

            started = time.monotonic()
            train = ns.lookup(ROOT_INODE, "train")
            assert train is not None
            dirs, more, last = [], True, ""
            while more:
                page, more = ns.readdir(train.inode, last, 1000)
                dirs += [attr for _, attr in page]
                last = page[-1][0] if page else last
            for n, d in enumerate(dirs):
                entry = ns.lookup(d.inode, f"sample-{n * args.per_dir:07d}.bin")
                assert entry is not None and ns.getattr(entry.inode) == entry
            step(f"lookup+getattr in {len(dirs)} dirs", started, "no listing")

            started = time.monotonic()
            names, more, last = 0, True, ""
            while more:
                page, more = ns.readdir(dirs[0].inode, last, 1000)
                names += len(page)
                last = page[-1][0] if page else last
            step("readdir of one directory", started, f"{names:,} names, pages of 1000")

            started = time.monotonic()
            attr = refresh_path(ns, changed, "train/part-0000/sample-0000100.bin")
            step("refresh of one file", started, f"etag {attr.etag if attr else None}")
            sizes = ns.table_sizes()
            print(f"\nrows: {sizes}; generation {ns.generation}")
        used = sum(f.stat().st_blocks * 512 for f in db.iterdir())
        print(f"lmdb on disk: {used / 2**20:.0f} MiB")
    finally:
        memory.stop()
        if args.db is None:
            shutil.rmtree(db, ignore_errors=True)


if __name__ == "__main__":
    main()
