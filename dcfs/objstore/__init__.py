"""Bucket adapters, chosen by URL scheme: ``file:///dir`` and ``s3://bucket/prefix``."""

from urllib.parse import urlsplit

from dcfs.errors import ConfigError
from dcfs.objstore.base import ObjectInfo, ObjectStore

__all__ = ["ObjectInfo", "ObjectStore", "open_store"]


def open_store(url: str, endpoint_url: str | None = None) -> ObjectStore:
    """Open the bucket at ``url``; raises :class:`ConfigError` for a bad URL."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        from dcfs.objstore.local import LocalStore

        return LocalStore.from_url(url)
    if parts.scheme == "s3":
        from dcfs.objstore.s3 import S3Store

        return S3Store.from_url(url, endpoint_url=endpoint_url)
    raise ConfigError(
        f"unsupported bucket URL {url!r}: use file:///absolute/dir or s3://bucket[/prefix]"
    )
