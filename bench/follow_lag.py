"""Lag from an overwrite in the bucket to its new bytes through a mount.

    .venv/bin/python bench/follow_lag.py [--refresh-interval 2] [--rounds 20]

Starts a metadata service over a local-directory bucket (syncing every
--refresh-interval seconds) and two mounts: one in the default
``--consistency interval`` mode, one with ``--consistency open``. Each round
overwrites two files at a random moment of the sync cycle, then opens and
reads one through each mount every 10 ms until the new bytes come back. (Two
files: an open in the ``open`` mode refreshes its file on the metadata
service, which tells every client at once.) Every
process it starts is stopped by PID; every mount unmounted.
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from dcfs.launcher import LocalCluster  # noqa: E402


def lag_until(path: Path, want: bytes, since: float, timeout_s: float) -> float:
    while time.monotonic() - since < timeout_s:
        try:
            if path.read_bytes() == want:
                return time.monotonic() - since
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{path} did not show the new bytes in {timeout_s} s")


def summary(name: str, lags: list[float]) -> str:
    lags = sorted(lags)
    p90 = lags[max(0, round(0.9 * len(lags)) - 1)]
    return f"{name:<22}{min(lags):>8.3f}{statistics.median(lags):>8.3f}{p90:>8.3f}{max(lags):>8.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refresh-interval", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="dcfs-lag-"))
    bucket = state / "bucket"
    (bucket / "d").mkdir(parents=True)
    for mode in ("open", "interval"):
        (bucket / "d" / f"{mode}.bin").write_bytes(b"0" * 100_000)
    interval = args.refresh_interval
    # "open" first: its lag is measured from the write, before the other's wait.
    lags: dict[str, list[float]] = {"open": [], "interval": []}
    with LocalCluster(state, log_dir=state / "logs") as cluster:
        cluster.start_metadata(f"file://{bucket}", "--refresh-interval", str(interval))
        mounts = {}
        for mode in lags:
            mnt = state / f"mnt-{mode}"
            mnt.mkdir()
            cluster.start_mount(mnt, "--consistency", mode, name=f"mount-{mode}")
            mounts[mode] = mnt / "d" / f"{mode}.bin"
            mounts[mode].read_bytes()
        for n in range(args.rounds):
            time.sleep(random.uniform(0, interval))
            data = os.urandom(100_000)
            for mode in mounts:
                tmp = state / "tmp"
                tmp.write_bytes(data)
                os.replace(tmp, bucket / "d" / f"{mode}.bin")
            written = time.monotonic()
            for mode, path in mounts.items():
                lags[mode].append(lag_until(path, data, written, 10 * interval + 10))
            print(
                f"round {n + 1}: interval {lags['interval'][-1]:.3f} s, "
                f"open {lags['open'][-1]:.3f} s",
                flush=True,
            )
    print(f"\n--refresh-interval {interval:g} s, {args.rounds} overwrites; lag in seconds")
    print(f"{'mode':<22}{'min':>8}{'median':>8}{'p90':>8}{'max':>8}")
    print(summary("--consistency open", lags["open"]))
    print(summary("--consistency interval", lags["interval"]))


if __name__ == "__main__":
    main()
