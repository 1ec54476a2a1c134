"""``dcfs warmup``: load files or whole directories into the cluster, each
block on its owner cache node, with a progress bar on stderr and a summary."""

import argparse
import sys
from typing import TextIO

from dcfs import rpc
from dcfs.cli.common import Subparsers, add_command, add_metadata_arg, seconds_arg
from dcfs.cluster import fetch_cluster_info
from dcfs.errors import DcfsError
from dcfs.sizes import format_size
from fsclient.namespace import NamespaceClient
from fsclient.router import Peers
from fsclient.warmup import Warmup, WarmupStats, resolve, walk
from protos import dcfs_pb2_grpc

BAR_WIDTH = 30


def register(commands: Subparsers) -> None:
    p = add_command(
        commands,
        "warmup",
        "load files or directories into the cluster, each block on its owner node",
        run_warmup,
    )
    add_metadata_arg(p)
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="files or directories, as paths inside the mount (e.g. models/llm-7b)",
    )
    p.add_argument("--parallel", type=int, default=16, help="blocks warmed at once")
    p.add_argument(
        "--timeout",
        type=seconds_arg,
        default=120.0,
        help="deadline for one block (a node fetching it from the bucket)",
    )


def run_warmup(args: argparse.Namespace) -> int:
    info = fetch_cluster_info(args.metadata)
    metadata = dcfs_pb2_grpc.MetadataStub(rpc.channel(args.metadata))
    namespace = NamespaceClient(metadata, attr_ttl_s=60)
    files = [f for path in args.paths for f in walk(namespace, resolve(namespace, path))]
    peers = Peers(metadata)
    peers.start()
    try:
        warmup = Warmup(peers, info.block_size, parallel=args.parallel, timeout_s=args.timeout)
        refs, stats = warmup.plan(files)
        bar = ProgressBar(sys.stderr)
        stats = warmup.run(refs, stats, bar.update)
        bar.finish()
    finally:
        peers.stop()
    print(summary(stats))
    if stats.failed_blocks:
        raise DcfsError(
            f"{stats.failed_blocks} of {stats.blocks} blocks could not be warmed "
            f"(first error: {stats.first_error})"
        )
    return 0


def summary(stats: WarmupStats) -> str:
    rate = stats.done_bytes / stats.elapsed_s if stats.elapsed_s else 0.0
    head = (
        f"warmed {stats.files} files, {stats.blocks} blocks, {format_size(stats.bytes)} "
        f"in {stats.elapsed_s:.1f} s ({format_size(rate)}/s)"
    )
    if stats.blocks and stats.cached_blocks == stats.blocks:
        return f"{head}: all {stats.blocks} blocks were already cached"
    return (
        f"{head}: {stats.fetched_blocks} blocks fetched from the bucket "
        f"({format_size(stats.fetched_bytes)}), {stats.cached_blocks} already cached, "
        f"{stats.failed_blocks} failed"
    )


class ProgressBar:
    """One line redrawn in place on a terminal; a line every few seconds
    otherwise (logs), so long runs still show that they move."""

    def __init__(self, stream: TextIO, log_every_s: float = 5.0) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._log_every_s = log_every_s
        self._last_logged = 0.0
        self._drawn = False

    def update(self, stats: WarmupStats) -> None:
        if self._tty:
            self._stream.write("\r" + progress_line(stats) + "\x1b[K")
            self._drawn = True
        elif stats.elapsed_s - self._last_logged >= self._log_every_s:
            self._last_logged = stats.elapsed_s
            self._stream.write(progress_line(stats) + "\n")
        self._stream.flush()

    def finish(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()


def progress_line(stats: WarmupStats) -> str:
    """``[#####.....]  45%  1.2 GiB / 2.6 GiB  210.3 MiB/s  ETA 0:07``."""
    share = stats.done_bytes / stats.bytes if stats.bytes else 1.0
    filled = int(share * BAR_WIDTH)
    rate = stats.done_bytes / stats.elapsed_s if stats.elapsed_s else 0.0
    left = stats.bytes - stats.done_bytes
    eta = _clock(left / rate) if rate else "-:--"
    return (
        f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {100 * share:3.0f}%  "
        f"{format_size(stats.done_bytes)} / {format_size(stats.bytes)}  "
        f"{format_size(rate)}/s  ETA {eta}"
    )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
