"""The bucket interface every adapter implements.

Every call is idempotent and may be retried. Reads are pinned to a version:
``read_range`` raises :class:`ObjectChanged` rather than return bytes of
another version, and :class:`ObjectNotFound` when the object is gone.
"""

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from dcfs.blocks import ObjectVersion


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed or headed object; ``key`` is relative to the store's prefix."""

    key: str
    size: int
    etag: str
    mtime_ns: int

    @property
    def version(self) -> ObjectVersion:
        return ObjectVersion(self.key, self.etag, self.size)


class ObjectStore(ABC):
    """A bucket (or a prefix of one) as a flat namespace of keys."""

    url: str

    @abstractmethod
    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, in key order, fetched page by page
        (never the whole listing in memory)."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """The object's current version; :class:`ObjectNotFound` if absent."""

    @abstractmethod
    def read_range(self, version: ObjectVersion, offset: int, length: int) -> bytes:
        """Exactly ``min(length, size - offset)`` bytes of that version."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
