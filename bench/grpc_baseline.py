"""A bare grpcio client/server pair moving N-byte unary replies on loopback:
the ceiling a cache node's ReadBlock is compared with.

    python bench/grpc_baseline.py --size 4MiB --count 128
"""

import argparse
import subprocess
import sys
import time
from concurrent import futures

import grpc

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from dcfs import rpc
from dcfs.sizes import parse_size


def serve(port: int, size: int) -> None:
    payload = bytes(size)
    server = grpc.server(futures.ThreadPoolExecutor(16), options=rpc.CHANNEL_OPTIONS)
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: payload)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("bare.Bare", {"Get": handler})]
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def measure(port: int, size: int, count: int, streams: int = 1) -> float:
    """MiB/s of ``count`` replies fetched by ``streams`` threads."""
    call = rpc.channel(f"127.0.0.1:{port}").unary_unary("/bare.Bare/Get")
    call(b"", wait_for_ready=True, timeout=30)
    started = time.perf_counter()
    with futures.ThreadPoolExecutor(streams) as pool:
        list(pool.map(lambda _: call(b"", timeout=30), range(count)))
    return count * size / (1024 * 1024) / (time.perf_counter() - started)


def run(size: int, count: int, streams: int = 1) -> float:
    """Start the server as a separate process, measure, stop it (by PID)."""
    port = rpc.free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--size", str(size)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()
        return measure(port, size, count, streams)
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=4 * 1024 * 1024)
    parser.add_argument("--count", type=int, default=128)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.size)
    else:
        print(f"{run(args.size, args.count, args.streams):.0f} MiB/s")


if __name__ == "__main__":
    main()
