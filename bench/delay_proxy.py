"""A TCP proxy that delays every request by a fixed time, to give a bucket on
loopback the latency of a real one (this kernel has no netem).

Each burst of bytes from the client (an HTTP request) waits ``--delay-ms``
before it is forwarded; responses flow back at once. Order is kept.

    python bench/delay_proxy.py --listen 127.0.0.1:9000 --upstream 127.0.0.1:8333 --delay-ms 20
"""

import argparse
import asyncio
import contextlib
import signal


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    try:
        while data := await reader.read(256 * 1024):
            if delay_s:
                await asyncio.sleep(delay_s)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(listen: str, upstream: str, delay_s: float) -> None:
    up_host, up_port = upstream.rsplit(":", 1)

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            u_reader, u_writer = await asyncio.open_connection(up_host, int(up_port))
        except OSError:
            c_writer.close()
            return
        await asyncio.gather(_pump(c_reader, u_writer, delay_s), _pump(u_reader, c_writer, 0.0))

    host, port = listen.rsplit(":", 1)
    server = await asyncio.start_server(handle, host, int(port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        print("ready", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT (loopback)")
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the bucket")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="delay per request")
    args = parser.parse_args()
    asyncio.run(_serve(args.listen, args.upstream, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
