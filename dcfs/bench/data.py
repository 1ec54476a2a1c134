"""Which files the jobs read, and how to empty the page cache for them."""

import os
from dataclasses import dataclass
from pathlib import Path

from dcfs.errors import ConfigError

LARGE_FILE = 16 * 1024 * 1024
SMALL_FILE = 1024 * 1024
MAX_SMALL_FILES = 2000


@dataclass(frozen=True)
class DataSet:
    """Paths relative to a root, so the same set maps onto a baseline copy."""

    large: str  # the file of the sequential and random jobs
    large_size: int  # bytes of it the jobs use
    small: tuple[str, ...]

    def at(self, root: Path) -> "RootedData":
        return RootedData(root / self.large, self.large_size, [root / p for p in self.small])


@dataclass(frozen=True)
class RootedData:
    large: Path
    large_size: int
    small: list[Path]


def find_data(root: Path, size_cap: int) -> DataSet:
    """The largest file (its first ``size_cap`` bytes) and up to 2,000 small
    files in walk order; :class:`ConfigError` if there is nothing to read."""
    largest: tuple[int, str] | None = None
    small: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            size = path.stat().st_size
            rel = str(path.relative_to(root))
            if largest is None or size > largest[0]:
                largest = (size, rel)
            if 0 < size <= SMALL_FILE and len(small) < MAX_SMALL_FILES:
                small.append(rel)
    if largest is None or largest[0] == 0:
        raise ConfigError(f"no files to read under {root}")
    if largest[0] < LARGE_FILE:
        raise ConfigError(
            f"the largest file under {root} has {largest[0]} bytes; "
            f"the sequential jobs need one of at least {LARGE_FILE // (1024 * 1024)} MiB"
        )
    return DataSet(largest[1], min(largest[0], size_cap), tuple(small))


def drop_page_cache(paths: list[Path]) -> None:
    """Drop these files' pages from the kernel page cache — not the whole
    machine's — so the next read reaches the filesystem."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_through(paths: list[Path]) -> None:
    """Read files once, buffered, to put them in the page cache."""
    for path in paths:
        with path.open("rb", buffering=0) as f:
            while f.read(1024 * 1024):
                pass
