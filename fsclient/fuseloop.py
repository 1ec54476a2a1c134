"""pyfuse3's request loop without scheduler round trips per queued request.

Before every request pyfuse3 takes a ``trio.Lock`` (one reader of
``/dev/fuse`` at a time) and waits with ``trio.lowlevel.wait_readable``,
even when the next request is already queued (a small file's RELEASE is
followed at once by the next file's OPEN). Both go through trio's
scheduler: trio's lock checkpoints even when free, and each wait registers
the fd with epoll. ``install`` hands pyfuse3 a view of trio with

- a ``wait_readable`` that first asks ``poll`` with no timeout and returns
  at once when a request is waiting, at most ``MAX_STREAK`` times in a row,
  so the loop still yields to trio's other tasks (threads finishing cold
  reads, signals) between bursts; anything but a plain "readable" (an
  unmounted or aborted connection) takes trio's own wait;
- a ``Lock`` that is taken without a checkpoint when free and, released,
  wakes a waiter but stays free: pyfuse3's reader that just took a request
  takes it again for the next one instead of parking behind the reader it
  woke.

pyfuse3 looks the trio module up through its module attribute ``trio`` at
each use; ``pyfuse3.asyncio`` replaces it the same way. pyfuse3's version is
pinned (``constraints.txt``); the tests mount through this loop.
"""

import select
import types
from typing import Any

import pyfuse3
import trio

MAX_STREAK = 8
_BAD = select.POLLERR | select.POLLHUP | select.POLLNVAL


class _Delegate(types.ModuleType):
    """A module that answers with its own attributes first, then the target's."""

    def __init__(self, name: str, target: types.ModuleType, **own: Any) -> None:
        super().__init__(name)
        self._target = target
        self.__dict__.update(own)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


class QueuedFirst:
    """``wait_readable`` for pyfuse3's one reader of ``/dev/fuse`` at a time
    (its loop holds a lock around the wait): trio thread only."""

    def __init__(self, max_streak: int = MAX_STREAK) -> None:
        self._max_streak = max_streak
        self._streak = 0
        self._poll = select.poll()
        self._registered: set[int] = set()
        self.found_queued = self.waited_for = 0  # how requests were found (stats file)

    def _queued(self, fd: int) -> bool:
        if fd not in self._registered:
            self._poll.register(fd, select.POLLIN)
            self._registered.add(fd)
        ready = self._poll.poll(0)
        events = ready[0][1] if ready else 0
        return events & select.POLLIN != 0 and events & _BAD == 0

    async def wait_readable(self, fd: int) -> None:
        if self._streak < self._max_streak and self._queued(fd):
            self._streak += 1
            self.found_queued += 1
            return
        self._streak = 0
        self.waited_for += 1
        await trio.lowlevel.wait_readable(fd)


class BargingLock:
    """The lock of pyfuse3's readers (``async with`` only), taken at once
    when free. Released, it wakes its longest waiter but stays free: the
    task that released it, done with its request, may take it again at once
    and go on with the next queued request, instead of handing over and
    parking (a scheduler round per request); the woken waiter takes it if
    free when it runs, or waits again."""

    def __init__(self) -> None:
        self._held = False
        self._waiters = trio.lowlevel.ParkingLot()

    async def __aenter__(self) -> None:
        while self._held:
            await self._waiters.park()
        self._held = True

    async def __aexit__(self, *exc: object) -> None:
        self._held = False
        if self._waiters:
            self._waiters.unpark()


def install(waiter: QueuedFirst | None = None) -> QueuedFirst:
    """Make pyfuse3 wait with ``waiter`` (a new one by default) and lock with
    ``BargingLock``; call before ``pyfuse3.main``."""
    waiter = waiter or QueuedFirst()
    lowlevel = _Delegate("trio.lowlevel", trio.lowlevel, wait_readable=waiter.wait_readable)
    pyfuse3.trio = _Delegate("trio", trio, lowlevel=lowlevel, Lock=BargingLock)  # type: ignore[attr-defined]
    return waiter


def uninstall() -> None:
    pyfuse3.trio = trio  # type: ignore[attr-defined]
