"""``dcfs up``: the embedded default — metadata service, cache nodes and a
mount on this machine, in the foreground, torn down on SIGINT/SIGTERM."""

import argparse
import logging
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

from dcfs.cli import tools
from dcfs.cli.common import Subparsers, add_command, interval_arg, size_arg
from dcfs.errors import ConfigError
from dcfs.launcher import LocalCluster
from dcfs.objstore import open_store
from dcfs.sample import SampleSpec, make_sample
from dcfs.sizes import format_size

log = logging.getLogger("dcfs.up")


def register(commands: Subparsers) -> None:
    p = add_command(
        commands,
        "up",
        "run a metadata service, cache nodes and a mount on this machine",
        run_up,
    )
    # argparse would print nargs="+" as "X [X ...]", as if it took many mounts.
    p.usage = "%(prog)s [options] [SOURCE_URL] MOUNTPOINT"
    p.add_argument(
        "paths",
        nargs="+",
        metavar="[SOURCE_URL] MOUNTPOINT",
        help="bucket URL (default: a generated sample bucket) and the mount point",
    )
    p.add_argument("--nodes", type=int, default=2, help="number of cache nodes")
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint for an s3:// source")
    p.add_argument(
        "--refresh-interval",
        type=interval_arg,
        default=30.0,
        help="seconds between the metadata service's syncs with the bucket (0: only at start)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where databases, caches and the sample go (default: a new "
        "temporary directory, removed on exit)",
    )
    p.add_argument(
        "--node-memory", type=size_arg, default="512MiB", help="memory tier of each cache node"
    )
    p.add_argument(
        "--node-disk", type=size_arg, default="2GiB", help="disk tier of each cache node"
    )
    p.add_argument(
        "--client-memory", type=size_arg, default="1GiB", help="memory tier of the mount"
    )
    p.add_argument("--client-disk", type=size_arg, default="2GiB", help="disk tier of the mount")
    p.add_argument(
        "--pretouch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pre-touch the memory tiers of the cache nodes and the mount at start "
        "(see dcfs cachenode --help)",
    )
    p.add_argument(
        "--sample-size",
        type=size_arg,
        default="256MiB",
        help="size of each large file of the generated sample",
    )
    p.add_argument(
        "--bench",
        action="store_true",
        help="run the read test over the mount (and, for a file:// source, the same jobs on "
        "that directory as the baseline), print it, then stop",
    )
    tools.add_bench_flags(p)


def _split_paths(paths: list[str]) -> tuple[str | None, Path]:
    if len(paths) == 1:
        return None, Path(paths[0])
    if len(paths) == 2:
        return paths[0], Path(paths[1])
    raise ConfigError("expected [SOURCE_URL] MOUNTPOINT")


def run_up(args: argparse.Namespace) -> int:
    source, mountpoint = _split_paths(args.paths)
    if args.nodes < 0:
        raise ConfigError("--nodes must be 0 or more")
    mountpoint = mountpoint.resolve()
    if source is not None:
        open_store(source, args.endpoint_url)  # a bad URL fails here, before any child starts
    if not mountpoint.is_dir():
        raise ConfigError(f"mount point {mountpoint} does not exist or is not a directory")
    if args.bench:
        tools.check_bench_flags(args)
    owns_state = args.state_dir is None
    state_dir = Path(tempfile.mkdtemp(prefix="dcfs-up-")) if owns_state else args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    stop = _stop_on_signals()
    try:
        if source is None:
            sample_dir = state_dir / "sample"
            spec = SampleSpec(large_size=args.sample_size)
            log.info(
                "generating a %s sample bucket in %s", format_size(spec.total_bytes), sample_dir
            )
            make_sample(sample_dir, spec)
            source = urlsplit(f"file://{sample_dir}").geturl()
        with LocalCluster(state_dir) as cluster:
            _serve(cluster, source, mountpoint, args, stop)
    except KeyboardInterrupt:
        log.info("stopped by a signal")
    finally:
        if owns_state:
            shutil.rmtree(state_dir, ignore_errors=True)
    return 0


def _serve(
    cluster: LocalCluster,
    source: str,
    mountpoint: Path,
    args: argparse.Namespace,
    stop: threading.Event,
) -> None:
    cluster.start_metadata(
        source, "--refresh-interval", str(args.refresh_interval), endpoint_url=args.endpoint_url
    )
    for _ in range(args.nodes):
        cluster.start_node(
            str(args.node_memory),
            str(args.node_disk),
            *([] if args.pretouch else ["--no-pretouch"]),
        )
    cluster.start_mount(
        mountpoint,
        "--memory",
        str(args.client_memory),
        "--disk",
        str(args.client_disk),
        *(["--pretouch"] if args.pretouch else []),
    )
    log.info(
        "up: %s mounted on %s with %d cache node(s); metadata at %s",
        source,
        mountpoint,
        args.nodes,
        cluster.metadata_address,
    )
    if args.bench:
        baseline = Path(urlsplit(source).path) if source.startswith("file://") else None
        client_stats = cluster.state_dir / "mount" / "stats.json"
        tools.bench_report(mountpoint, args, baseline, cluster.metadata_address, client_stats)
    else:
        print(
            f"dcfs up: {mountpoint} is ready; Ctrl-C or SIGTERM stops it",
            file=sys.stderr,
            flush=True,
        )
        stop.wait()
    log.info("stopping")


def _stop_on_signals() -> threading.Event:
    event = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if event.is_set():
            return
        event.set()
        raise KeyboardInterrupt  # unblock any wait; the teardown still runs

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
    return event
