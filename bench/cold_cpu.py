"""Where the CPU goes in a cold read: a 1 GiB object on SeaweedFS read once
through a dcfs mount (two cache nodes, 1 MiB ``direct=1`` reads; every
daemon pre-touches its memory tier, as under ``dcfs up``), then the
same object with 16 parallel ranged GETs; the CPU seconds of every process,
from /proc/PID/stat. On a machine with few cores the ratio of the two totals
bounds what a cold read through the cluster can reach.

    .venv/bin/python bench/cold_cpu.py [NODE_DISK] [BLOCK]

``NODE_DISK`` is the size of the cache nodes' disk tiers (default 0: none;
``bench/compare.py`` gives them 4GiB), to see what writing blocks there costs;
``BLOCK`` the bucket's block size (default 4MiB), used for the GETs' ranges too.
"""

import os
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from rigs import COLD, cold_cluster, s3_parallel_get, seq  # noqa: E402

from dcfs.blocks import DEFAULT_BLOCK_SIZE  # noqa: E402
from dcfs.sizes import parse_size  # noqa: E402

MiB = 1024 * 1024
SIZE = 1024 * MiB
NODE_DISK = sys.argv[1] if len(sys.argv) > 1 else "0"  # the nodes' disk tiers
BLOCK = parse_size(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_BLOCK_SIZE


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    with cold_cluster(
        SIZE, NODE_DISK, "--pretouch", metadata_args=("--block-size", str(BLOCK))
    ) as cold:
        assert cold.server.proc is not None
        weed = cold.server.proc.pid
        pids = {child.name: child.process.pid for child in cold.cluster.children}
        pids["seaweedfs"] = weed
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        result = seq(COLD, cold.path, SIZE)
        spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        print(f"cold read through dcfs: {result.mib_s:.0f} MiB/s")
        for name, seconds in spent.items():
            print(f"  {name:<10} {seconds:5.2f} CPU-s")
        print(f"  {'total':<10} {sum(spent.values()):5.2f} CPU-s")

        weed_before, own_before = cpu_seconds(weed), own_cpu_seconds()
        mib_s = s3_parallel_get(cold.server, "", "cold", "big.bin", SIZE, 16, BLOCK)
        weed_spent, own_spent = cpu_seconds(weed) - weed_before, own_cpu_seconds() - own_before
        print(f"16 parallel GETs: {mib_s:.0f} MiB/s")
        print(f"  seaweedfs  {weed_spent:5.2f} CPU-s")
        print(f"  boto3      {own_spent:5.2f} CPU-s")
        print(f"  total      {weed_spent + own_spent:5.2f} CPU-s")


if __name__ == "__main__":
    main()
