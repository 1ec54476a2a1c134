"""Ranged GETs on plain ``http.client``, straight into an unfilled buffer.

boto3 spends about 0.5 CPU-seconds per GiB on 4 MiB GetObjects beyond
moving the bytes (its request pipeline, event hooks, response parsing): on
a cache node that was the largest part of a cold read. The usual answer, a
206 with the whole range, comes through here on a presigned URL: one request
line, one ``readinto`` per socket read, no copy.

Anything else (an error status, a redirect, a short body, a transport
failure) returns None, and the caller asks again through boto3, whose
retries and error mapping stay the one place that interprets failures.

A key's presigned URL is reused for a few minutes (signing one costs about
150 microseconds of botocore, per 4 MiB block), and forgotten when the
server refuses it: credentials may have changed since.
"""

import http.client
import logging
import threading
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from dcfs import buffers

log = logging.getLogger("dcfs.s3")

_CONNECTION_ERRORS = (OSError, http.client.HTTPException, ValueError)
# Presigned URLs live 900 s (S3Store._presign); one is reused for at most
# this long, for this many keys.
URL_REUSE_S = 300.0
MAX_URLS = 1024


@dataclass(frozen=True, slots=True)
class RangeReply:
    data: bytearray
    etag: str  # as sent, quotes and all
    content_range: str  # "" for a 200


class PresignedRangeGetter:
    """One keep-alive connection per thread and host; thread-safe."""

    def __init__(self, presign: Callable[[str], str], timeout: float) -> None:
        self._presign = presign
        self._timeout = timeout
        self._local = threading.local()
        self._urls_lock = threading.Lock()
        self._urls: OrderedDict[str, tuple[float, SplitResult]] = OrderedDict()

    @staticmethod
    def usable(endpoint: str) -> bool:
        """False behind a proxy: boto3 knows how to use one, this does not."""
        parts = urlsplit(endpoint)
        host = parts.hostname or ""
        proxies = urllib.request.getproxies()
        return parts.scheme not in proxies or bool(urllib.request.proxy_bypass(host))

    def get(self, key: str, offset: int, length: int, if_match: str) -> RangeReply | None:
        """Bytes ``offset .. offset+length-1`` of ``key`` if the server sends
        exactly those; None for anything the caller must retry through boto3."""
        url = self._url(key)
        if url is None:
            return None
        target = f"{url.path}?{url.query}"
        headers = {"Range": f"bytes={offset}-{offset + length - 1}", "If-Match": if_match}
        while True:
            conn, reused = self._connection(url.scheme, url.netloc)
            try:
                conn.request("GET", target, headers=headers)
                resp = conn.getresponse()
                if resp.status not in (200, 206) or resp.length != length:
                    resp.read(64 * 1024)  # an error document: small; the connection lives
                    self._drop(url.netloc, conn, resp.will_close or not resp.isclosed())
                    log.debug("GET %s: HTTP %d, retrying through boto3", key, resp.status)
                    with self._urls_lock:
                        self._urls.pop(key, None)
                    return None
                data = buffers.fill(resp.readinto, length)
                etag = resp.getheader("ETag", "")
                reply = RangeReply(data, etag, resp.getheader("Content-Range", ""))
                self._drop(url.netloc, conn, resp.will_close)
                return reply
            except _CONNECTION_ERRORS as exc:
                self._drop(url.netloc, conn, True)
                if reused:
                    continue  # the server closed an idle connection: once more, on a new one
                log.debug("GET %s: %s, retrying through boto3", key, exc)
                return None

    def _url(self, key: str) -> SplitResult | None:
        """A presigned URL for ``key``: a recent one, or a new one."""
        now = time.monotonic()
        with self._urls_lock:
            made = self._urls.get(key)
            if made is not None and now - made[0] < URL_REUSE_S:
                return made[1]
        try:
            url = urlsplit(self._presign(key))
        except Exception as exc:  # no credentials, say: boto3 reports it properly
            log.debug("cannot presign %s: %s", key, exc)
            return None
        with self._urls_lock:
            self._urls[key] = (now, url)
            self._urls.move_to_end(key)
            while len(self._urls) > MAX_URLS:
                self._urls.popitem(last=False)
        return url

    def _connection(self, scheme: str, netloc: str) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection to ``netloc``, and whether it was used before."""
        conns: dict[str, http.client.HTTPConnection] = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(netloc)
        if conn is not None:
            return conn, True
        cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        conn = conns[netloc] = cls(netloc, timeout=self._timeout)
        return conn, False

    def _drop(self, netloc: str, conn: http.client.HTTPConnection, closing: bool) -> None:
        if closing:
            conn.close()
            self._local.__dict__.get("conns", {}).pop(netloc, None)

    def close(self) -> None:
        """Close this thread's connections (others close when their thread ends)."""
        for conn in self._local.__dict__.pop("conns", {}).values():
            conn.close()
