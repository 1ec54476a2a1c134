"""Argument types and helpers shared by the subcommands."""

import argparse
import signal
import threading
from collections.abc import Callable
from typing import Any

from dcfs import rpc
from dcfs.errors import DcfsError
from dcfs.sizes import parse_size

Subparsers = Any  # argparse's _SubParsersAction is private


def size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except DcfsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def address_arg(text: str) -> str:
    try:
        rpc.parse_address(text)
    except DcfsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_metadata_arg(parser: argparse.ArgumentParser) -> None:
    """The positional HOST:PORT of the metadata service, as every client command takes it."""
    parser.add_argument(
        "metadata", type=address_arg, metavar="HOST:PORT", help="the metadata service"
    )


def fraction_arg(text: str) -> float:
    """A fraction below 1: ``0.1`` or ``10%``."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a fraction: {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1 (100%): {text!r}")
    return value


def add_free_space_arg(parser: argparse.ArgumentParser) -> None:
    """``--free-space-ratio``, as every command with a disk tier takes it."""
    parser.add_argument(
        "--free-space-ratio",
        type=fraction_arg,
        default=0.1,
        metavar="FRACTION",
        help="part of the disk tier's filesystem left free for everyone else (0.1 or 10%%): "
        "the tier evicts its own blocks to keep it, and stores none while others fill it",
    )


def seconds_arg(text: str) -> float:
    value = interval_arg(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def interval_arg(text: str) -> float:
    """Seconds, where 0 means "never"."""
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds: {text!r}")
    return value


def add_command(
    commands: Subparsers, name: str, help_text: str, run: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help_text,
        description=help_text,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.set_defaults(run=run)
    return parser


def wait_for_signal() -> int:
    """Block until SIGINT or SIGTERM; return the signal number."""
    received: list[int] = []
    event = threading.Event()

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        event.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
    while not event.wait(3600):
        pass
    return received[0]
