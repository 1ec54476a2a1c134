"""What a ranged GET costs the bucket: SeaweedFS's CPU seconds per GiB for
16 threads of 4 MiB ranged GETs of one object: through boto3 without and
with ``If-Match`` (the 16-GET baseline of bench/compare.py is the first),
and as a cache node asks, on dcfs's presigned fast path with ``If-Match``
(dcfs.objstore.s3get). Shows whether the way dcfs asks costs the server
more than the baseline does.

    .venv/bin/python bench/get_cost.py [--rounds 3]
"""

import argparse
import statistics
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from cold_cpu import cpu_seconds  # noqa: E402
from rigs import seaweed_object  # noqa: E402

from dcfs.objstore.s3get import PresignedRangeGetter  # noqa: E402

MiB = 1 << 20
SIZE = 1024 * MiB
RANGE = 4 * MiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with seaweed_object(SIZE, "cost", "dcfs-get-cost-") as (server, _):
        s3 = boto3.client(
            "s3", endpoint_url=server.endpoint_url, config=Config(max_pool_connections=16)
        )
        etag = s3.head_object(Bucket="cost", Key="big.bin")["ETag"]

        def presign(key: str) -> str:
            return s3.generate_presigned_url(
                "get_object", Params={"Bucket": "cost", "Key": key}, ExpiresIn=900
            )

        fast = PresignedRangeGetter(presign, 30)

        def via_boto3(offset: int, if_match: bool) -> int:
            extra = {"IfMatch": etag} if if_match else {}
            rng = f"bytes={offset}-{offset + RANGE - 1}"
            body = s3.get_object(Bucket="cost", Key="big.bin", Range=rng, **extra)["Body"]
            return len(body.read())

        def via_fast_path(offset: int) -> int:
            reply = fast.get("big.bin", offset, RANGE, etag)
            if reply is None:
                raise SystemExit("the fast path was refused")
            return len(reply.data)

        ways: dict[str, Callable[[int], int]] = {
            "boto3": lambda o: via_boto3(o, False),
            "boto3, If-Match": lambda o: via_boto3(o, True),
            "fast path, If-Match": via_fast_path,
        }
        spent: dict[str, list[float]] = {name: [] for name in ways}
        assert server.proc is not None
        for _ in range(args.rounds):
            for name, get in ways.items():
                before = cpu_seconds(server.proc.pid)
                with ThreadPoolExecutor(16) as pool:
                    moved = sum(pool.map(get, range(0, SIZE, RANGE)))
                spent[name].append((cpu_seconds(server.proc.pid) - before) * SIZE / moved)
        for name, seconds in spent.items():
            runs = ", ".join(f"{s:.2f}" for s in seconds)
            print(f"{name:<24} SeaweedFS {statistics.median(seconds):.2f} CPU-s/GiB ({runs})")


if __name__ == "__main__":
    main()
