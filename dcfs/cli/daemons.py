"""``dcfs metadata``, ``dcfs cachenode`` and ``dcfs mount``."""

import argparse
import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

from cachenode.server import CacheNodeConfig, CacheNodeServer
from dcfs import rpc
from dcfs.blocks import DEFAULT_BLOCK_SIZE
from dcfs.cli.common import (
    Subparsers,
    add_command,
    add_free_space_arg,
    add_metadata_arg,
    address_arg,
    interval_arg,
    seconds_arg,
    size_arg,
    wait_for_signal,
)
from dcfs.errors import ConfigError, DcfsError
from dcfs.objstore import open_store
from dcfs.wire import MAX_BLOCK_SIZE, MIN_BLOCK_SIZE
from fsclient.mount import MountConfig, check_mountpoint, run_mount
from metadata.service import MetadataServer

log = logging.getLogger("dcfs")


PRETOUCH_HELP = (
    "fault in the memory tier's pages at start, so that filling it costs no page faults on "
    "the read path (about 0.6 s per GiB here, more than receiving the bytes); resident memory "
    "is then --memory from the start"
)


def register(commands: Subparsers) -> None:
    p = add_command(commands, "metadata", "run the metadata service for a bucket", run_metadata)
    p.add_argument(
        "--bucket", required=True, metavar="URL", help="file:///abs/dir or s3://bucket[/prefix]"
    )
    p.add_argument(
        "--endpoint-url",
        default=None,
        help="S3 endpoint of an S3-compatible service (default: AWS)",
    )
    p.add_argument(
        "--db",
        type=Path,
        default=Path("/var/lib/dcfs/metadata"),
        help="lmdb directory for the namespace and the member list",
    )
    p.add_argument("--listen", type=address_arg, default="127.0.0.1:7070", help="HOST:PORT")
    p.add_argument(
        "--block-size",
        type=size_arg,
        default=DEFAULT_BLOCK_SIZE,
        help="block size of the cluster, 64KiB to 64MiB",
    )
    p.add_argument(
        "--node-timeout",
        type=seconds_arg,
        default=6.0,
        help="seconds without a heartbeat before a cache node is dropped",
    )
    p.add_argument(
        "--refresh-interval",
        type=interval_arg,
        default=30.0,
        metavar="SECONDS",
        help="seconds between syncs of the namespace with the bucket (0: only at start)",
    )

    p = add_command(commands, "cachenode", "run a cache node daemon", run_cachenode)
    p.add_argument(
        "--metadata", type=address_arg, required=True, help="HOST:PORT of the metadata service"
    )
    p.add_argument("--listen", type=address_arg, default="127.0.0.1:7071", help="HOST:PORT")
    p.add_argument(
        "--advertise",
        type=address_arg,
        default=None,
        help="HOST:PORT clients should use (default: --listen)",
    )
    p.add_argument(
        "--block-listen",
        default="auto",
        metavar="HOST:PORT|auto|off",
        help="the block stream, a plain TCP fast path for block reads beside gRPC: auto picks "
        "a free port on the --listen host; off serves blocks over gRPC only",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path("/var/cache/dcfs/node"),
        help="directory of the disk tier",
    )
    p.add_argument("--memory", type=size_arg, default="1GiB", help="memory tier size")
    p.add_argument("--disk", type=size_arg, default="10GiB", help="disk tier size (0: none)")
    add_free_space_arg(p)
    p.add_argument(
        "--pretouch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=PRETOUCH_HELP,
    )

    p = add_command(commands, "mount", "mount a bucket through the cluster", run_mount_command)
    add_metadata_arg(p)
    p.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="client disk tier (default: /var/cache/dcfs/mount-<hash of mountpoint>)",
    )
    p.add_argument("--memory", type=size_arg, default="1GiB", help="client memory tier size")
    p.add_argument("--disk", type=size_arg, default="10GiB", help="client disk tier (0: none)")
    add_free_space_arg(p)
    p.add_argument(
        "--pretouch",
        action="store_true",
        help=PRETOUCH_HELP,
    )
    p.add_argument(
        "--prefetch",
        type=size_arg,
        default="256MiB",
        help="most bytes fetched ahead of sequential readers",
    )
    p.add_argument(
        "--attr-timeout",
        type=seconds_arg,
        default=30.0,
        help="seconds the kernel may cache names and attributes; the mount's own cache "
        "keeps them longer while its change stream vouches for them (see the README's "
        "consistency contract)",
    )
    p.add_argument(
        "--peer-timeout",
        type=seconds_arg,
        default=10.0,
        help="deadline of a block request to a cache node before the next source",
    )
    p.add_argument(
        "--hedge-after",
        type=seconds_arg,
        default=1.0,
        help="seconds a cache node may stay silent before the next owner is asked too "
        "(a stopped node then costs this pause, once)",
    )
    p.add_argument(
        "--read-ahead",
        type=size_arg,
        default="4MiB",
        help="kernel readahead of the mount (larger means larger reads)",
    )
    p.add_argument(
        "--consistency",
        choices=["interval", "open"],
        default="interval",
        help="interval: changes to the bucket show after the metadata service's next "
        "refresh; open: every open also checks the object's version with the bucket "
        "(one HEAD request)",
    )
    p.add_argument("--allow-other", action="store_true", help="let other users read the mount")
    p.add_argument(
        "--foreground",
        "-f",
        action="store_true",
        help="stay attached (default: go to the background once mounted)",
    )
    p.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help="log of a background mount (default: CACHE_DIR/mount.log)",
    )
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)


def run_metadata(args: argparse.Namespace) -> int:
    if not MIN_BLOCK_SIZE <= args.block_size <= MAX_BLOCK_SIZE:
        raise ConfigError("--block-size must be between 64KiB and 64MiB")
    store = open_store(args.bucket, args.endpoint_url)
    server = MetadataServer(
        bucket_url=args.bucket,
        endpoint_url=args.endpoint_url,
        db_dir=args.db,
        listen=args.listen,
        block_size=args.block_size,
        node_timeout_s=args.node_timeout,
        store=store,
        sync_interval_s=args.refresh_interval,
    )
    server.start()
    signum = wait_for_signal()
    log.info("signal %d: stopping", signum)
    server.stop()
    return 0


def _block_listen(text: str) -> str:
    if text == "off":
        return ""
    if text != "auto":
        rpc.parse_address(text)  # ConfigError: a one-line message
    return text


def run_cachenode(args: argparse.Namespace) -> int:
    config = CacheNodeConfig(
        metadata=args.metadata,
        listen=args.listen,
        cache_dir=args.cache_dir,
        memory=args.memory,
        disk=args.disk,
        free_space_ratio=args.free_space_ratio,
        advertise=args.advertise or "",
        block_listen=_block_listen(args.block_listen),
        pretouch=args.pretouch,
    )
    node = CacheNodeServer(config)
    node.start()
    try:
        signum = wait_for_signal()
        log.info("signal %d: leaving the cluster", signum)
    finally:
        node.stop()
    return 0


def run_mount_command(args: argparse.Namespace) -> int:
    mountpoint = args.mountpoint.resolve()
    cache_dir = args.cache_dir or default_client_cache_dir(mountpoint)
    if not args.foreground:
        return _mount_in_background(args, mountpoint, cache_dir)
    config = MountConfig(
        metadata=args.metadata,
        mountpoint=mountpoint,
        cache_dir=cache_dir,
        memory=args.memory,
        disk=args.disk,
        free_space_ratio=args.free_space_ratio,
        prefetch=args.prefetch,
        attr_timeout_s=args.attr_timeout,
        peer_timeout_s=args.peer_timeout,
        hedge_after_s=args.hedge_after,
        read_ahead_kb=args.read_ahead // 1024,
        allow_other=args.allow_other,
        consistency=args.consistency,
        pretouch=args.pretouch,
    )
    ready_fd: int | None = args.ready_fd

    def on_ready() -> None:
        nonlocal ready_fd
        if ready_fd is not None:
            os.write(ready_fd, b"READY\n")
            os.close(ready_fd)
            ready_fd = None

    try:
        run_mount(config, on_ready)
    except DcfsError as exc:
        if ready_fd is not None:
            os.write(ready_fd, f"ERROR {exc}\n".encode())
        raise
    return 0


def default_client_cache_dir(mountpoint: Path) -> Path:
    digest = hashlib.sha256(str(mountpoint).encode()).hexdigest()[:12]
    return Path("/var/cache/dcfs") / f"mount-{digest}"


def _mount_in_background(args: argparse.Namespace, mountpoint: Path, cache_dir: Path) -> int:
    """Start ``dcfs mount --foreground`` detached and wait for it to report
    the mount ready (or its error), as ``mount`` commands do."""
    check_mountpoint(mountpoint)
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = args.log_file or cache_dir / "mount.log"
    argv = [a for a in sys.argv[1:] if a not in ("--foreground", "-f")]
    read_end, write_end = os.pipe()
    with open(log_path, "ab") as log_file:
        subprocess.Popen(
            [sys.executable, "-m", "dcfs", *argv, "--foreground", "--ready-fd", str(write_end)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            pass_fds=(write_end,),
            start_new_session=True,
        )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as ready:
        message = ready.read().decode(errors="replace").strip()
    if message == "READY":
        print(f"dcfs: mounted on {mountpoint} (log: {log_path})")
        return 0
    if message.startswith("ERROR "):
        raise ConfigError(message.removeprefix("ERROR "))
    raise ConfigError(f"the mount process exited before mounting; see {log_path}")
