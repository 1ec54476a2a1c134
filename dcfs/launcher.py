"""Starts and stops dcfs daemons as child processes on loopback: the engine
of ``dcfs up`` and of the tests' clusters.

Every child is ours and is stopped by its PID: SIGTERM, a grace period,
then SIGKILL. A mount is always taken down (``fusermount3 -u``, then
``-z``) even when its daemon died.
"""

import contextlib
import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc

from dcfs import rpc
from dcfs.errors import DcfsError
from protos import dcfs_pb2, dcfs_pb2_grpc

log = logging.getLogger("dcfs.up")


class LaunchError(DcfsError):
    """A child process failed to start or to become ready."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path | None
    mountpoint: Path | None = None
    address: str = ""  # a cache node's

    def log_tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def dcfs_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dcfs", *args]


def unmount(mountpoint: Path) -> None:
    """Unmount if mounted: politely first, lazily if busy or dead."""
    for flags in (["-u"], ["-u", "-z"]):
        if not os.path.ismount(mountpoint):
            return
        subprocess.run(
            ["fusermount3", *flags, str(mountpoint)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )


@dataclass
class LocalCluster:
    """A metadata service, cache nodes and mounts on this machine."""

    state_dir: Path
    log_dir: Path | None = None  # None: children write to our stderr
    host: str = "127.0.0.1"
    env: dict[str, str] | None = None
    children: list[Child] = field(default_factory=list)
    metadata_address: str = ""
    metadata_args: list[str] = field(default_factory=list)
    # Flags every cache node and mount gets, before its own (which win).
    cache_args: tuple[str, ...] = ()

    def _spawn(self, name: str, args: Sequence[str], mountpoint: Path | None = None) -> Child:
        log_file: IO[bytes] | None = None
        log_path = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{name}.log"
            log_file = log_path.open("ab")
        try:
            process = subprocess.Popen(
                dcfs_command(*args),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env=self.env,
                start_new_session=True,  # our signals reach them in our order
            )
        finally:
            if log_file is not None:
                log_file.close()
        child = Child(name, process, log_path, mountpoint)
        self.children.append(child)
        return child

    def _wait(self, child: Child, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                tail = child.log_tail()
                raise LaunchError(
                    f"{child.name} exited with status {child.process.returncode} before "
                    f"{what}" + (f":\n{tail}" if tail else "")
                )
            if ready():
                return
            time.sleep(0.05)
        raise LaunchError(f"{child.name} did not become ready ({what}) in {timeout_s:.0f} s")

    def start_metadata(
        self, bucket_url: str, *extra: str, endpoint_url: str | None = None, timeout_s: float = 120
    ) -> str:
        port = rpc.free_port(self.host)
        self.metadata_address = f"{self.host}:{port}"
        args = ["metadata", "--bucket", bucket_url, "--listen", self.metadata_address]
        args += ["--db", str(self.state_dir / "metadata")]
        if endpoint_url:
            args += ["--endpoint-url", endpoint_url]
        self.metadata_args = [*args, *extra]
        self._run_metadata(timeout_s)
        return self.metadata_address

    def restart_metadata(self, timeout_s: float = 120) -> None:
        """Stop the metadata service and start it again: same address, same
        database, as after a crash or an upgrade."""
        for child in [c for c in self.children if c.name == "metadata"]:
            self.stop_child(child)
        self._run_metadata(timeout_s)

    def _run_metadata(self, timeout_s: float) -> None:
        child = self._spawn("metadata", self.metadata_args)
        stub = dcfs_pb2_grpc.MetadataStub(rpc.channel(self.metadata_address))
        self._wait(child, lambda: _answers(stub), timeout_s, "serving")

    def start_node(
        self,
        memory: str,
        disk: str,
        *extra: str,
        index: int | None = None,
        address: str = "",
        timeout_s: float = 30,
    ) -> str:
        """Start cache node ``index`` (default: a new one); its cache dir, and
        so its node id, belong to the index: ``index`` and ``address`` of a
        stopped node start it again as the same node."""
        if index is None:  # the lowest index not running
            running = {c.name for c in self.children}
            index = next(i for i in itertools.count() if f"cachenode{i}" not in running)
        address = address or f"{self.host}:{rpc.free_port(self.host)}"
        args = ["cachenode", "--metadata", self.metadata_address, "--listen", address]
        args += ["--cache-dir", str(self.state_dir / f"node{index}"), "--memory", memory]
        args += ["--disk", disk, *self.cache_args]
        child = self._spawn(f"cachenode{index}", [*args, *extra])
        child.address = address
        self._wait(child, lambda: address in self.member_addresses(), timeout_s, "joining")
        return address

    def node(self, address: str) -> Child:
        """The running cache node serving ``address``."""
        for child in self.children:
            if child.address == address:
                return child
        raise LookupError(f"no cache node of ours at {address}")

    def start_mount(
        self, mountpoint: Path, *extra: str, name: str = "mount", timeout_s: float = 30
    ) -> Child:
        if os.path.ismount(mountpoint):
            raise LaunchError(f"{mountpoint} is already a mount point")
        args = ["mount", self.metadata_address, str(mountpoint), "--foreground"]
        args += ["--cache-dir", str(self.state_dir / name), *self.cache_args]
        child = self._spawn(name, [*args, *extra], mountpoint=mountpoint)
        self._wait(child, lambda: os.path.ismount(mountpoint), timeout_s, "mounting")
        return child

    def member_addresses(self) -> list[str]:
        stub = dcfs_pb2_grpc.MetadataStub(rpc.channel(self.metadata_address))
        try:
            reply = stub.Members(dcfs_pb2.MembersRequest(), timeout=2)
        except grpc.RpcError:
            return []
        return [n.address for n in reply.nodes]

    def stop_child(self, child: Child, grace_s: float = 10) -> None:
        """SIGTERM, wait, SIGKILL — by PID; then make sure its mount is gone."""
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s: killing it", child.name, grace_s)
                child.process.kill()
                child.process.wait()
        if child.mountpoint is not None:
            unmount(child.mountpoint)
        if child in self.children:
            self.children.remove(child)

    def stop(self) -> None:
        """Mounts first (they use the others), then nodes, then metadata."""
        order = {"mount": 0, "cachenode": 1, "metadata": 2}
        for child in sorted(
            self.children,
            key=lambda c: next((v for k, v in order.items() if c.name.startswith(k)), 0),
        ):
            with contextlib.suppress(Exception):
                self.stop_child(child)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers(stub: dcfs_pb2_grpc.MetadataStub) -> bool:
    try:
        stub.Info(dcfs_pb2.InfoRequest(), timeout=1)
    except grpc.RpcError:
        return False
    return True
