"""Test clusters: real daemons as subprocesses on loopback, a real mount.

Everything started here is stopped by PID, and every mount is unmounted,
even when a test fails; the daemons' logs are printed on failure.
"""

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dcfs.launcher import LocalCluster


@dataclass
class Mounted:
    cluster: LocalCluster
    mountpoint: Path
    source: Path  # a local copy of the bucket's content, to compare with


def dump_logs(cluster: LocalCluster) -> None:
    if cluster.log_dir is None:
        return
    for path in sorted(cluster.log_dir.glob("*.log")):
        text = path.read_text(errors="replace").splitlines()
        print(f"----- {path.name} (last 40 lines) -----")
        print("\n".join(text[-40:]))


@contextlib.contextmanager
def running_cluster(
    state_dir: Path,
    bucket_url: str,
    *,
    nodes: int = 2,
    endpoint_url: str | None = None,
    metadata_args: tuple[str, ...] = ("--block-size", "1MiB"),
    node_args: tuple[str, str] = ("64MiB", "256MiB"),
) -> Iterator[LocalCluster]:
    cluster = LocalCluster(state_dir, log_dir=state_dir / "logs", env=dict(os.environ))
    try:
        cluster.start_metadata(bucket_url, *metadata_args, endpoint_url=endpoint_url)
        for _ in range(nodes):
            cluster.start_node(*node_args)
        yield cluster
    except BaseException:
        dump_logs(cluster)
        raise
    finally:
        cluster.stop()


@contextlib.contextmanager
def mounted(
    cluster: LocalCluster, mountpoint: Path, *extra: str, name: str = "mount"
) -> Iterator[Path]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    child = cluster.start_mount(
        mountpoint, "--memory", "64MiB", "--disk", "128MiB", *extra, name=name
    )
    try:
        yield mountpoint
    except BaseException:
        dump_logs(cluster)
        raise
    finally:
        cluster.stop_child(child)
        assert not os.path.ismount(mountpoint), f"{mountpoint} is still mounted"
