"""An S3 bucket (or any S3-compatible service) as a bucket: ``s3://bucket/prefix``.

Reads are ranged GETs with ``If-Match: "etag"``, so a changed object fails
with :class:`ObjectChanged` instead of returning bytes of another version.
No botocore exception leaves this module: callers see only dcfs errors.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import boto3
import botocore.exceptions
import urllib3.exceptions
from botocore.config import Config

from dcfs.blocks import ObjectVersion
from dcfs.errors import BucketError, ConfigError, ObjectChanged, ObjectNotFound
from dcfs.objstore.base import ObjectInfo, ObjectStore
from dcfs.objstore.s3get import PresignedRangeGetter

log = logging.getLogger("dcfs.s3")

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

DEFAULT_REGION = "us-east-1"
FAST_MISSES_BEFORE_OFF = 3
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
_CHANGED = {"412", "PreconditionFailed"}
# Everything the HTTP stack can raise, from the request or from reading a body.
_TRANSPORT_ERRORS = (
    botocore.exceptions.BotoCoreError,
    urllib3.exceptions.HTTPError,
    OSError,
)


def _ns(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


def _etag(raw: str) -> str:
    return raw.strip('"')


class S3Store(ObjectStore):
    """Keys are relative to ``prefix`` (empty, or ending in '/')."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 3,
        fast_gets: bool = True,
    ) -> None:
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise ConfigError(
                f"invalid bucket name {bucket!r}: 3-63 lowercase letters, digits, '.' or '-'"
            )
        if endpoint_url is not None:
            ep = urlsplit(endpoint_url)
            if ep.scheme not in ("http", "https") or not ep.netloc:
                raise ConfigError(f"invalid endpoint URL {endpoint_url!r}: use http(s)://host:port")
        prefix = prefix.lstrip("/")
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.endpoint_url = endpoint_url
        self.url = f"s3://{bucket}/{self.prefix}"
        config = Config(
            max_pool_connections=64,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            # Only checksum when the API demands it: many S3-compatible
            # services reject or mangle the newer default checksum headers.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"} if endpoint_url else None,
            signature_version="s3v4",  # for presigned URLs too (they default to SigV2)
        )
        try:
            session = boto3.session.Session()
            self._client: S3Client = session.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=session.region_name or DEFAULT_REGION,
                config=config,
            )
        except (botocore.exceptions.BotoCoreError, ValueError) as e:
            raise ConfigError(
                f"cannot set up S3 client for {bucket} at {self._endpoint()}: {e}"
            ) from e
        endpoint = self._client.meta.endpoint_url
        self._fast_lock = threading.Lock()
        self._fast_misses = 0
        self._fast = (
            PresignedRangeGetter(self._presign, read_timeout)
            if fast_gets and PresignedRangeGetter.usable(endpoint)
            else None
        )

    @classmethod
    def from_url(cls, url: str, endpoint_url: str | None = None, **options: Any) -> S3Store:
        """Open ``s3://bucket[/prefix]``; :class:`ConfigError` for a bad URL.
        ``options`` go to the constructor (timeouts, attempts)."""
        parts = urlsplit(url)
        if parts.scheme != "s3":
            raise ConfigError(f"not an s3:// URL: {url!r}")
        if parts.query or parts.fragment:
            raise ConfigError(f"s3 URL must not have a query or fragment: {url!r}")
        if not parts.netloc:
            raise ConfigError(f"s3 URL has no bucket: {url!r}")
        return cls(parts.netloc, parts.path, endpoint_url=endpoint_url, **options)

    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        """ListObjectsV2, one page at a time. Directory markers (keys ending
        in '/') are yielded like any object: the caller decides."""
        if page_size < 1:
            raise ValueError(f"page_size must be positive, not {page_size}")
        strip = len(self.prefix)
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.prefix + prefix,
            "MaxKeys": page_size,
        }
        while True:
            try:
                page = self._client.list_objects_v2(**kwargs)
            except Exception as e:
                self._raise(e, "ListObjectsV2", self.prefix + prefix)
            for obj in page.get("Contents", []):
                yield ObjectInfo(
                    obj["Key"][strip:], obj["Size"], _etag(obj["ETag"]), _ns(obj["LastModified"])
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            kwargs["ContinuationToken"] = token

    def head(self, key: str) -> ObjectInfo:
        try:
            resp = self._client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except Exception as e:
            self._raise(e, "HeadObject", self.prefix + key)
        return ObjectInfo(
            key, resp["ContentLength"], _etag(resp["ETag"]), _ns(resp["LastModified"])
        )

    def read_range(self, version: ObjectVersion, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"bad range: offset={offset} length={length}")
        want = max(0, min(length, version.size - offset))
        if want == 0:
            return b""
        key = self.prefix + version.key
        if_match = f'"{version.etag}"'
        fast = self._fast
        reply = fast.get(key, offset, want, if_match) if fast is not None else None
        data: bytes | bytearray
        if reply is not None:
            data, etag, content_range = reply.data, reply.etag, reply.content_range
            self._fast_misses = 0
        else:
            data, etag, content_range = self._get_object(key, offset, want, if_match)
            if fast is not None:
                self._fast_missed()
        # Some S3-compatible services ignore If-Match: check the version too.
        got = _etag(etag or if_match)
        total = content_range.rpartition("/")[2]
        if got != version.etag or (total.isdigit() and int(total) != version.size):
            raise ObjectChanged(
                f"{self._name(key)} changed: pinned etag {version.etag} size {version.size},"
                f" bucket has etag {got} size {total or '?'}"
            )
        if len(data) != want:
            raise BucketError(
                f"{self._name(key)}: asked for {want} bytes at {offset}, got {len(data)}"
            )
        # A fast GET's bytearray is never written again: callers hold it as bytes.
        return data  # type: ignore[return-value]

    def _get_object(
        self, key: str, offset: int, want: int, if_match: str
    ) -> tuple[bytes, str, str]:
        """GetObject through boto3: (body, ETag, Content-Range)."""
        try:
            resp = self._client.get_object(
                Bucket=self.bucket,
                Key=key,
                Range=f"bytes={offset}-{offset + want - 1}",
                IfMatch=if_match,
            )
            body = resp["Body"]
            try:
                data = body.read()
            finally:
                body.close()  # back to the pool, or dropped if not fully read
        except Exception as e:
            self._raise(e, "GetObject", key)
        return data, resp.get("ETag", ""), resp.get("ContentRange", "")

    def _fast_missed(self) -> None:
        """The fast path declined a GET that boto3 then answered. Several in a
        row mean it does not fit this endpoint (a CA bundle only boto3 knows,
        a redirect): it stands aside for good rather than double every GET."""
        with self._fast_lock:
            self._fast_misses += 1
            if self._fast is None or self._fast_misses < FAST_MISSES_BEFORE_OFF:
                return
            self._fast = None
        log.warning(
            "%s: plain-HTTP ranged GETs failed %d times in a row where boto3 succeeded; "
            "every GET goes through boto3 from now on",
            self._endpoint(),
            FAST_MISSES_BEFORE_OFF,
        )

    def _presign(self, key: str) -> str:
        return self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=900
        )

    def close(self) -> None:
        if self._fast is not None:
            self._fast.close()
        self._client.close()

    # -- errors ----------------------------------------------------------------

    def _name(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _raise(self, e: Exception, op: str, key: str) -> NoReturn:
        """Translate any failure of a request into a one-line dcfs error."""
        if isinstance(e, botocore.exceptions.ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in _NOT_FOUND or status == "404":
                what = "bucket" if code == "NoSuchBucket" else "object"
                raise ObjectNotFound(f"{op} {self._name(key)}: no such {what}") from e
            if code in _CHANGED or status == "412":
                raise ObjectChanged(
                    f"{op} {self._name(key)}: object changed (etag mismatch)"
                ) from e
            message = err.get("Message") or code or f"HTTP {status}"
            raise BucketError(f"{op} {self._name(key)} at {self._endpoint()}: {message}") from e
        if isinstance(e, _TRANSPORT_ERRORS):
            raise BucketError(f"{op} {self._name(key)} at {self._endpoint()}: {e}") from e
        raise e

    def _endpoint(self) -> str:
        return self.endpoint_url or "AWS S3"
