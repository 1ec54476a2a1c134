"""A local directory as a bucket: ``file:///abs/dir``, the embedded default.

Keys are '/'-separated paths relative to the root, listed in the same
bytewise key order S3 uses, so the metadata service cannot tell the two
adapters apart. The etag is derived from ``stat`` (size, mtime, inode), so
an overwritten or replaced file gets a new version and never mixes with
cached blocks of the old one.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

from dcfs.blocks import ObjectVersion
from dcfs.errors import BucketError, ConfigError, ObjectChanged, ObjectNotFound
from dcfs.objstore.base import ObjectInfo, ObjectStore

log = logging.getLogger(__name__)


def etag_of(st: os.stat_result) -> str:
    """A version tag from stat: changes when the content can have changed
    (size, mtime) or the file was replaced by a rename (inode)."""
    return f"{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ino:x}"


def _valid_parts(parts: list[str]) -> bool:
    return all(p not in ("", ".", "..") and "\0" not in p for p in parts)


class LocalStore(ObjectStore):
    """Regular files under ``root``; symlinks are followed only inside it."""

    def __init__(self, root: str, url: str | None = None) -> None:
        self.root = os.path.realpath(root)
        self.url = url or f"file://{self.root}"

    @classmethod
    def from_url(cls, url: str) -> LocalStore:
        """Open ``file:///abs/dir``; :class:`ConfigError` for anything else."""
        parts = urlsplit(url)
        if parts.scheme != "file":
            raise ConfigError(f"not a file:// URL: {url!r}")
        if parts.netloc:
            raise ConfigError(f"file URL must not name a host ({parts.netloc!r}): use file:///dir")
        if parts.query or parts.fragment:
            raise ConfigError(f"file URL must not have a query or fragment: {url!r}")
        path = unquote(parts.path)
        if not path:
            raise ConfigError(f"file URL has no path: {url!r}")
        if not os.path.isabs(path):
            raise ConfigError(f"file URL path must be absolute: {url!r}")
        if not os.path.exists(path):
            raise ConfigError(f"bucket directory does not exist: {path}")
        if not os.path.isdir(path):
            raise ConfigError(f"bucket path is not a directory: {path}")
        if not os.access(path, os.R_OK | os.X_OK):
            raise ConfigError(f"bucket directory is not readable: {path}")
        return cls(path, url)

    # -- listing ---------------------------------------------------------------

    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        """Walk lazily, one sorted directory at a time (``page_size`` has no
        meaning for a local directory). A directory ``d`` sorts as ``d/``,
        which puts its keys exactly where S3 would list them."""
        if page_size < 1:
            raise ValueError(f"page_size must be positive, not {page_size}")
        dir_key, _, _ = prefix.rpartition("/")
        if dir_key and not _valid_parts(dir_key.split("/")):
            return
        start = os.path.join(self.root, dir_key) if dir_key else self.root
        real = os.path.realpath(start)
        if not self._inside(real) or not os.path.isdir(real):
            return
        base = dir_key + "/" if dir_key else ""
        try:
            st = os.stat(real)
        except FileNotFoundError:
            return
        except OSError as e:
            raise BucketError(f"cannot list {real}: {e.strerror or e}") from e
        yield from self._walk(real, base, prefix, {(st.st_dev, st.st_ino)})

    def _walk(
        self, path: str, base: str, prefix: str, ancestors: set[tuple[int, int]]
    ) -> Iterator[ObjectInfo]:
        entries: list[tuple[str, str, os.stat_result | None]] = []
        try:
            with os.scandir(path) as it:
                for entry in it:
                    item = self._classify(entry, base, prefix)
                    if item is not None:
                        entries.append(item)
        except FileNotFoundError:
            return  # removed while we walked: it has no keys any more
        except OSError as e:
            raise BucketError(f"cannot list {path}: {e.strerror or e}") from e
        entries.sort(key=lambda item: item[0])
        for sort_key, full, st in entries:
            if st is not None:
                yield ObjectInfo(sort_key, st.st_size, etag_of(st), st.st_mtime_ns)
                continue
            try:
                dst = os.stat(full)
            except OSError:
                continue
            ident = (dst.st_dev, dst.st_ino)
            if ident in ancestors:
                continue  # a symlink loop back to an ancestor
            ancestors.add(ident)
            yield from self._walk(full, sort_key, prefix, ancestors)
            ancestors.discard(ident)

    def _classify(
        self, entry: os.DirEntry[str], base: str, prefix: str
    ) -> tuple[str, str, os.stat_result | None] | None:
        """``(sort key, path, stat)`` for a file, ``(key + '/', path, None)``
        for a directory, None for anything to skip."""
        name = entry.name
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            log.warning("skipping %r: name is not valid UTF-8", entry.path)
            return None
        key = base + name
        if not (key + "/").startswith(prefix):
            return None
        try:
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if not self._inside(target):
                    return None
                st = os.stat(target)
            else:
                st = entry.stat(follow_symlinks=False)
        except OSError:
            return None  # vanished or dangling
        if stat.S_ISDIR(st.st_mode):
            return (key + "/", entry.path, None)
        if stat.S_ISREG(st.st_mode) and key.startswith(prefix):
            return (key, entry.path, st)
        return None

    # -- single objects --------------------------------------------------------

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = os.stat(path)
        except FileNotFoundError as e:
            raise ObjectNotFound(f"no such object: {key}") from e
        except OSError as e:
            raise BucketError(f"cannot stat {path}: {e.strerror or e}") from e
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(f"not a regular file: {key}")
        return ObjectInfo(key, st.st_size, etag_of(st), st.st_mtime_ns)

    def read_range(self, version: ObjectVersion, offset: int, length: int) -> bytes:
        """pread between two fstat checks: bytes are returned only if the file
        had ``version.etag`` both before and after they were read."""
        if offset < 0 or length < 0:
            raise ValueError(f"bad range: offset={offset} length={length}")
        path = self._path(version.key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError as e:
            raise ObjectNotFound(f"no such object: {version.key}") from e
        except OSError as e:
            raise BucketError(f"cannot open {path}: {e.strerror or e}") from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ObjectNotFound(f"not a regular file: {version.key}")
            self._check(version, st)
            want = max(0, min(length, st.st_size - offset))
            data = self._pread(fd, want, offset)
            self._check(version, os.fstat(fd))
        except OSError as e:
            raise BucketError(f"cannot read {path}: {e.strerror or e}") from e
        finally:
            os.close(fd)
        if len(data) != want:
            raise ObjectChanged(f"{version.key} shrank while being read")
        return data

    @staticmethod
    def _pread(fd: int, want: int, offset: int) -> bytes:
        data = os.pread(fd, want, offset) if want else b""
        if len(data) == want or not data:
            return data  # the usual case: one call, no copy
        chunks = [data]
        got = len(data)
        while got < want:
            chunk = os.pread(fd, want - got, offset + got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    @staticmethod
    def _check(version: ObjectVersion, st: os.stat_result) -> None:
        etag = etag_of(st)
        if etag != version.etag:
            raise ObjectChanged(f"{version.key} changed: etag {version.etag} is now {etag}")

    # -- paths -----------------------------------------------------------------

    def _inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root.rstrip("/") + "/")

    def _path(self, key: str) -> str:
        """The real path of ``key``; :class:`ObjectNotFound` for keys that
        cannot name a file under the root ('..', leading '/', symlink out)."""
        if not key or not _valid_parts(key.split("/")):
            raise ObjectNotFound(f"invalid key: {key!r}")
        real = os.path.realpath(os.path.join(self.root, key))
        if not self._inside(real) or real == self.root:
            raise ObjectNotFound(f"key leaves the bucket directory: {key!r}")
        return real
