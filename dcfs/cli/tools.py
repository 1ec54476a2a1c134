"""``dcfs status``, ``dcfs refresh`` and ``dcfs bench``."""

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import grpc

from dcfs import rpc
from dcfs.bench import report, runner
from dcfs.bench.data import LARGE_FILE
from dcfs.bench.tiers import (
    StatsSource,
    client_counters,
    cluster_counters,
    combined,
    empty_client,
    empty_nodes,
)
from dcfs.cli.common import Subparsers, add_command, add_metadata_arg, address_arg, size_arg
from dcfs.cluster import describe_rpc_error, fetch_cluster_info, list_cache_nodes
from dcfs.errors import ConfigError, PeerError
from dcfs.sizes import format_size
from protos import dcfs_pb2, dcfs_pb2_grpc


def register(commands: Subparsers) -> None:
    p = add_command(
        commands, "status", "show the cluster: nodes, capacities, hit ratios", run_status
    )
    add_metadata_arg(p)

    p = add_command(
        commands,
        "refresh",
        "bring a path of the namespace in line with the bucket now",
        run_refresh,
    )
    add_metadata_arg(p)
    p.add_argument(
        "path",
        nargs="?",
        default="/",
        metavar="PATH",
        help="a file, or a directory and everything under it, relative to the bucket "
        "('/': the whole bucket)",
    )

    p = add_command(
        commands, "bench", "fio-style read tests against a mount, with a report", run_bench
    )
    p.epilog = (
        "Jobs read the largest file under MOUNTPOINT (sequential 1 MiB, 1 and 4 jobs; random "
        "4 KiB and 128 KiB) and up to 2,000 files of at most 1 MiB (open, read, close). "
        "cold: the first read of the data, with the kernel's page cache of those files "
        "dropped; dcfs's own tiers are cold only on a fresh cluster (dcfs up --bench) or "
        "with --empty-caches, and the tier hit ratios show where the bytes came from. "
        "warm: the page cache dropped again, so reads reach dcfs's tiers. re-read: buffered "
        "reads of data already in the page cache. The other large-file jobs use direct I/O; "
        "the small-file passes are buffered."
    )
    p.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT", help="the directory to read")
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help="a plain directory with the same files: every job runs there too, and each "
        "result is printed as a ratio to it",
    )
    p.add_argument(
        "--metadata",
        type=address_arg,
        default=None,
        metavar="HOST:PORT",
        help="the metadata service: adds the cache nodes' tier hit ratios per job",
    )
    p.add_argument(
        "--client-stats",
        type=Path,
        default=None,
        metavar="FILE",
        help="the mount's CACHE_DIR/stats.json: adds the client's tier hit ratios per job",
    )
    p.add_argument(
        "--empty-caches",
        action="store_true",
        help="drop every block of the cache nodes and of the mount before the first job, so "
        "the cold jobs read from the bucket (needs --metadata and --client-stats; every "
        "user of the cluster loses its cached data)",
    )
    add_bench_flags(p)


def run_status(args: argparse.Namespace) -> int:
    info = fetch_cluster_info(args.metadata, timeout=5)
    print(
        f"bucket      {info.bucket_url}" + (f" at {info.endpoint_url}" if info.endpoint_url else "")
    )
    print(f"block size  {format_size(info.block_size)}")
    print(f"objects     {info.objects} (generation {info.generation})")
    nodes = list_cache_nodes(args.metadata)
    print(f"cache nodes {len(nodes)}")
    for node in nodes:
        print(f"\n  {node.node_id} at {node.address}, capacity {format_size(node.capacity)}")
        node_stub = dcfs_pb2_grpc.CacheNodeStub(rpc.channel(node.address))
        try:
            stats = node_stub.Stats(dcfs_pb2.StatsRequest(), timeout=5)
        except grpc.RpcError as exc:
            print(f"    unreachable: {describe_rpc_error(exc)}")
            continue
        for tier in stats.tiers:
            lookups = tier.hits + tier.misses
            ratio = f"{100 * tier.hits / lookups:.1f}%" if lookups else "-"
            print(
                f"    {tier.name:<7} {format_size(tier.used_bytes):>10} of "
                f"{format_size(tier.capacity_bytes):>10}  {tier.blocks:>6} blocks  "
                f"hit ratio {ratio:>6} ({tier.hits} of {lookups}), "
                f"{format_size(tier.bytes_served)} served  evictions {tier.evictions}  "
                f"checksum failures {tier.checksum_failures}"
            )
        print(f"    bucket  {stats.bucket_fetches} fetches, {format_size(stats.bucket_bytes)}")
    return 0


def run_refresh(args: argparse.Namespace) -> int:
    path = args.path.strip("/")
    stub = dcfs_pb2_grpc.MetadataStub(rpc.channel(args.metadata))
    try:
        reply = stub.Refresh(dcfs_pb2.RefreshRequest(path=path), timeout=3600)
    except grpc.RpcError as exc:
        raise PeerError(f"refresh of {path or 'the bucket'!r}: {describe_rpc_error(exc)}") from None
    if not reply.HasField("attr"):
        what = "not in the bucket"
    elif reply.attr.is_dir:
        what = "a directory"
    else:
        what = f"{reply.attr.size} bytes, etag {reply.attr.etag}"
    print(f"{path or '/'}: {what} (generation {reply.generation})")
    return 0


def add_bench_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON"
    )
    parser.add_argument(
        "--engine",
        choices=["auto", "fio", "python"],
        default="auto",
        help="fio (with the job files in bench/fio), the built-in Python reader, or fio "
        "when installed",
    )
    parser.add_argument(
        "--size", type=size_arg, default="1GiB", help="most bytes of the large file to read"
    )


def check_bench_flags(args: argparse.Namespace) -> None:
    """The flags of :func:`add_bench_flags`, checked before any job runs: a
    report that could not be written at the end, or a size too small for the
    sequential jobs, fails now."""
    if args.size < LARGE_FILE:
        raise ConfigError(f"--size must be at least {format_size(LARGE_FILE)}")
    path: Path | None = args.json
    if path is None:
        return
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(f"--json {path}: {parent} is not a directory")
    if path.is_dir() or not os.access(parent, os.W_OK):
        raise ConfigError(f"--json {path}: cannot write a file there")


def bench_report(
    root: Path,
    args: argparse.Namespace,
    baseline: Path | None,
    metadata: str | None,
    client_stats: Path | None,
    empty_caches: Callable[[], None] | None = None,
) -> None:
    """Run the jobs and print the table as results arrive (and JSON if asked)."""
    with_baseline = baseline is not None
    notes = ([f"baseline {baseline}"] if baseline else []) + (
        ["dcfs's caches emptied first"] if empty_caches else []
    )
    print(f"read test over {root}" + (f" ({'; '.join(notes)})" if notes else ""))
    print(report.header(with_baseline), flush=True)
    results = runner.run_jobs(
        root,
        runner.BenchOptions(engine=args.engine, size_cap=args.size),
        baseline=baseline,
        stats=_stats_source(metadata, client_stats),
        empty_caches=empty_caches,
        progress=lambda r, b: print(report.row(r, b, with_baseline), flush=True),
    )
    if args.json:
        report.write_json(results, args.json)


def _stats_source(metadata: str | None, client_stats: Path | None) -> StatsSource | None:
    sources = [client_counters(client_stats)] if client_stats else []
    if metadata:
        sources.append(cluster_counters(metadata))
    return combined(*sources) if sources else None


def run_bench(args: argparse.Namespace) -> int:
    if not args.mountpoint.is_dir():
        raise ConfigError(f"{args.mountpoint} is not a directory")
    if args.baseline is not None and not args.baseline.is_dir():
        raise ConfigError(f"--baseline {args.baseline} is not a directory")
    if args.client_stats is not None and not args.client_stats.is_file():
        raise ConfigError(
            f"--client-stats {args.client_stats}: no such file (the mount's CACHE_DIR/stats.json)"
        )
    check_bench_flags(args)
    if args.empty_caches and (args.metadata is None or args.client_stats is None):
        raise ConfigError(
            "--empty-caches needs --metadata (to empty the cache nodes) and --client-stats "
            "(to empty the mount's tiers)"
        )
    if args.metadata is not None:
        fetch_cluster_info(args.metadata, timeout=5)  # unreachable: say so before any job
    empty = None
    if args.empty_caches:
        metadata, client_stats = args.metadata, args.client_stats

        def empty() -> None:
            empty_nodes(metadata)
            empty_client(client_stats)

    bench_report(args.mountpoint, args, args.baseline, args.metadata, args.client_stats, empty)
    return 0
