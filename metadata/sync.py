"""Bring the namespace in line with the bucket: list, mark, sweep.

The listing streams through in chunks of ``batch`` objects. A chunk is
fetched with no transaction open and applied in one write transaction, so
memory stays bounded by the chunk and the writer lock is never held while a
slow bucket page is on its way (membership writes and other writers wait
one chunk at most). The sweep runs only after the listing ended cleanly:
a listing that fails halfway must not delete what it did not reach.

Directories are key prefixes: 'a/b/c.bin' makes directories 'a' and 'a/b'
and the file 'c.bin'; a key ending in '/' is a directory marker. Keys that
cannot be paths are skipped and counted.

The result does not depend on the listing's order (SeaweedFS, for one, lists
a directory's keys at its bare name: 'a/b' before 'a-b'); key order only
spares a file/directory name conflict some churn in the change log.
"""

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from dcfs.errors import DcfsError
from dcfs.objstore.base import ObjectInfo, ObjectStore
from metadata.model import ROOT_INODE
from metadata.store import NamespaceStore
from metadata.sweep import sweep_all
from metadata.writer import Change, NamespaceWriter

log = logging.getLogger("dcfs.metadata")

MAX_NAME_BYTES = 255
# How many skipped keys the warning quotes.
_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What one sync did. ``objects`` and ``dirs`` are totals afterwards;
    ``added``/``changed``/``deleted`` count files; ``skipped`` counts keys."""

    added: int
    changed: int
    deleted: int
    skipped: int
    objects: int
    dirs: int
    generation: int
    duration_s: float


class SyncCancelled(DcfsError):
    """The sync was asked to stop; what it applied stays, nothing was swept."""


class BadKey(ValueError):
    """A key that cannot be a path; the message says why."""


def split_key(key: str) -> tuple[list[str], bool]:
    """Path components of ``key`` and whether it is a directory marker."""
    is_dir = key.endswith("/")
    body = key[:-1] if is_dir else key
    if not body:
        raise BadKey("empty path")
    if "\0" in body:
        raise BadKey("NUL in key")
    parts = body.split("/")
    for part in parts:
        if not part:
            raise BadKey("empty path component")
        if part in (".", ".."):
            raise BadKey(f"{part!r} component")
        try:
            size = len(part.encode())
        except UnicodeEncodeError:
            raise BadKey("not UTF-8") from None
        if size > MAX_NAME_BYTES:
            raise BadKey(f"component longer than {MAX_NAME_BYTES} bytes")
    return parts, is_dir


@dataclass(frozen=True, slots=True)
class _Deferred:
    """A file whose name a directory of an older sync holds: decided once the
    listing is past every key that could bring that directory back."""

    parent: int
    name: str
    info: ObjectInfo


class ListingState:
    """Per-sync state that crosses chunk boundaries, all bounded by key depth.

    ``stack`` is the chain of directories marked for the previous key: sorted
    keys share prefixes, so most keys need no directory work at all.
    ``pending`` holds files of this sync that a directory of the same name may
    still displace or keep hidden: only prefixes of the current key can be,
    so it stays tiny.
    """

    def __init__(self) -> None:
        self.stack: list[tuple[str, int]] = []
        self.pending: dict[str, Change | _Deferred] = {}
        self.counts: Counter[str] = Counter()
        self.examples: list[str] = []

    def skip(self, key: str, reason: str) -> None:
        self.counts["skipped"] += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(f"{key!r} ({reason})")

    def apply(self, writer: NamespaceWriter, info: ObjectInfo) -> None:
        try:
            parts, is_dir = split_key(info.key)
        except BadKey as exc:
            self.skip(info.key, str(exc))
            return
        if self.pending:
            self.settle(writer, info.key)
        parent = self._dirs(writer, parts if is_dir else parts[:-1])
        if is_dir:
            return
        change = writer.put_file(parent, parts[-1], info)
        if change is Change.DEFERRED:
            self.pending[info.key] = _Deferred(parent, parts[-1], info)
        else:
            self._count(info.key, change)

    def settle(self, writer: NamespaceWriter, key: str | None) -> None:
        """Forget pending files no key from ``key`` on can affect (all of them
        at the end of the listing, ``key=None``), deciding deferred ones."""
        keep: dict[str, Change | _Deferred] = {}
        for path, entry in self.pending.items():
            if key is not None and key.startswith(path):
                keep[path] = entry
            elif isinstance(entry, _Deferred):
                change = writer.put_file(entry.parent, entry.name, entry.info, defer=False)
                if change is not Change.HIDDEN:
                    self.counts[change.value] += 1
                else:
                    self.skip(path, "a directory has that name")
        self.pending = keep

    def _count(self, key: str, change: Change) -> None:
        if change is Change.HIDDEN:
            self.skip(key, "a directory has that name")
        elif change is not Change.SEEN:
            self.counts[change.value] += 1
            self.pending[key] = change

    def _dirs(self, writer: NamespaceWriter, names: list[str]) -> int:
        same = 0
        for (have, _), want in zip(self.stack, names, strict=False):
            if have != want:
                break
            same += 1
        del self.stack[same:]
        parent = self.stack[-1][1] if self.stack else ROOT_INODE
        for depth in range(same, len(names)):
            path = "/".join(names[: depth + 1])
            parent, change, displaced = writer.ensure_dir(parent, names[depth], path)
            if change is not Change.SEEN:
                self.counts["dirs"] += 1
            if displaced is not None:
                earlier = self.pending.pop(displaced, None)
                if isinstance(earlier, Change):
                    self.counts[earlier.value] -= 1
                self.skip(displaced, "a directory has that name")
            self.stack.append((names[depth], parent))
        return parent


def apply_listing(
    store: NamespaceStore,
    mark: int,
    listing: Iterable[ObjectInfo],
    batch: int,
    cancel: threading.Event | None = None,
) -> ListingState:
    """Apply ``listing`` with ``mark``, ``batch`` objects per write transaction,
    the listing read with no transaction open. Raises :class:`SyncCancelled`
    when ``cancel`` is set (checked between chunks)."""
    state = ListingState()
    objects = iter(listing)
    while chunk := list(itertools.islice(objects, batch)):
        if cancel is not None and cancel.is_set():
            raise SyncCancelled("sync cancelled")
        with store.writer(mark) as writer:
            for info in chunk:
                state.apply(writer, info)
    if state.pending:
        with store.writer(mark) as writer:
            state.settle(writer, None)
    return state


def sync_from_bucket(
    store: NamespaceStore,
    objstore: ObjectStore,
    batch: int = 5000,
    cancel: threading.Event | None = None,
) -> SyncReport:
    """List the whole bucket into ``store``. A bucket error (or ``cancel``
    being set, checked between chunks: :class:`SyncCancelled`) propagates;
    the chunks applied so far stay committed (and announced: each commit
    that changed something bumps the generation) and nothing is swept."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")
    started = time.monotonic()
    with store.sync_session() as mark:
        listing = objstore.list("", page_size=min(batch, 1000))
        state = apply_listing(store, mark, listing, batch, cancel)
        deleted, _ = sweep_all(store, mark, batch)
        counts = state.counts
        objects = counts["added"] + counts["changed"] + counts["same"]
        skipped_before = store.skipped_count
        store.finish_sync(objects=objects, dirs=counts["dirs"], skipped=counts["skipped"])
    if state.examples:
        # Once, not at every periodic re-sync of the same bucket.
        level = logging.DEBUG if counts["skipped"] == skipped_before else logging.WARNING
        log.log(
            level,
            "skipped %d bucket keys that cannot be paths, e.g. %s",
            counts["skipped"],
            ", ".join(state.examples),
        )
    return SyncReport(
        added=counts["added"],
        changed=counts["changed"],
        deleted=deleted,
        skipped=counts["skipped"],
        objects=objects,
        dirs=counts["dirs"],
        generation=store.generation,
        duration_s=time.monotonic() - started,
    )
