"""The ``dcfs`` command line: argument parsing and one-line errors.

This package is the only code that imports the services (metadata,
cachenode, fsclient); the rest of ``dcfs`` imports none of them.
"""

import argparse
import logging
import sys
from collections.abc import Sequence

from dcfs import __version__
from dcfs.cli import daemons, tools, up, warmup
from dcfs.errors import DcfsError

EPILOG = """\
examples:
  dcfs up /mnt/dcfs                                  a sample bucket, 2 cache nodes, mounted
  dcfs up file:///srv/data /mnt/data --nodes 3       a local directory as the bucket
  dcfs up s3://models/v1 /mnt/models --endpoint-url http://127.0.0.1:8333
  dcfs metadata --bucket s3://models --db /var/lib/dcfs --listen 0.0.0.0:7070
  dcfs cachenode --metadata meta:7070 --listen 0.0.0.0:7071 --memory 8GiB --disk 500GiB
  dcfs mount meta:7070 /mnt/models
  dcfs warmup meta:7070 models/llm-7b datasets/train  load them into the cache nodes
  dcfs status meta:7070
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcfs",
        description="A distributed read cache for object storage, mounted as a filesystem.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dcfs {__version__}")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="how much to log to stderr (default: info)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (up, daemons, tools, warmup):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("botocore").setLevel(logging.WARNING)
    try:
        result: int = args.run(args)
        return result
    except DcfsError as exc:
        print(f"dcfs {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
