"""What one hop from a cache node to a mount on the same machine costs: the
block stream with its bytes on the loopback TCP socket, against the same
stream with the bytes in a shared-memory slot (dcfs.blockslot).

    .venv/bin/python bench/slot_transfer.py [--size 1GiB] [--block-size 4MiB] [--rounds 3]

A child process serves one block from memory on a BlockStreamServer; this
process reads it ``size / block-size`` times with a BlockStreamClient, one
request at a time, and the CPU seconds of both (``/proc/PID/stat``) are
printed per GiB moved. Both processes keep freed memory for reuse, as the
daemons do (dcfs.heap). The two ways take turns.
"""

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dcfs import heap  # noqa: E402
from dcfs.blocks import BlockRef, ObjectVersion  # noqa: E402
from dcfs.blockstream import BlockStreamClient, BlockStreamServer  # noqa: E402
from dcfs.checksum import crc32c  # noqa: E402
from dcfs.sizes import parse_size  # noqa: E402
from dcfs.wire import block_to_proto  # noqa: E402
from protos import dcfs_pb2  # noqa: E402

GiB = 1 << 30


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(block_size: int, ports: "multiprocessing.Queue[int]") -> None:
    heap.reuse_freed_memory()  # as a cache node does
    block = os.urandom(block_size)
    crc = crc32c(block)
    server = BlockStreamServer("127.0.0.1", 0, lambda request: (block, crc, "memory"))
    server.start()
    ports.put(server.port)
    while True:
        time.sleep(3600)


def read(port: int, block_size: int, count: int, slots: bool) -> float:
    """MiB/s of ``count`` block reads on one connection."""
    client = BlockStreamClient(f"127.0.0.1:{port}", offer_slots=slots)
    ref = BlockRef(ObjectVersion("bench", "e", block_size), 0, block_size)
    request = dcfs_pb2.ReadBlockRequest(block=block_to_proto(ref))
    client.read_block(request, timeout_s=30)  # the connection (and slot) first
    started = time.perf_counter()
    for _ in range(count):
        client.read_block(request, timeout_s=30)
    seconds = time.perf_counter() - started
    if slots and client.slot_replies != count + 1:
        raise SystemExit("the node did not take the slot")
    client.close()
    return count * block_size / (1 << 20) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=GiB)
    parser.add_argument("--block-size", type=parse_size, default=4 << 20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    heap.reuse_freed_memory()  # as a mount does
    count = args.size // args.block_size
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    node = multiprocessing.Process(target=serve, args=(args.block_size, ports), daemon=True)
    node.start()
    try:
        port = ports.get(timeout=30)
        assert node.pid is not None
        per_gib = GiB / (count * args.block_size)
        print(f"{'':<10} {'MiB/s':>7} {'node CPU-s/GiB':>15} {'client CPU-s/GiB':>17}")
        for _ in range(args.rounds):
            for name, slots in (("socket", False), ("slot", True)):
                node_before, own_before = cpu_seconds(node.pid), cpu_seconds(os.getpid())
                mib_s = read(port, args.block_size, count, slots)
                node_cpu = (cpu_seconds(node.pid) - node_before) * per_gib
                own_cpu = (cpu_seconds(os.getpid()) - own_before) * per_gib
                print(f"{name:<10} {mib_s:>7.0f} {node_cpu:>15.2f} {own_cpu:>17.2f}", flush=True)
    finally:
        node.terminate()
        node.join(timeout=10)


if __name__ == "__main__":
    main()
