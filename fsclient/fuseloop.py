"""pyfuse3's request loop without a scheduler round trip per queued request.

pyfuse3 waits for ``/dev/fuse`` with ``trio.lowlevel.wait_readable`` before
every request, even when the next one is already queued (a small file's
RELEASE is followed at once by the next file's OPEN): each wait registers
the fd with epoll and goes through trio's scheduler. ``install`` hands
pyfuse3 a view of trio whose ``wait_readable`` first asks ``poll`` with no
timeout and returns at once when a request is waiting, at most
``MAX_STREAK`` times in a row, so the loop still yields to trio's other
tasks (threads finishing cold reads, signals) between bursts. Anything but a
plain "readable" (an unmounted or aborted connection) takes trio's own wait.

pyfuse3 reads the trio module through its module attribute ``trio``, which
it documents as replaceable (``pyfuse3.asyncio`` swaps it the same way).
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
        self.immediate = self.waited = 0  # how requests were found (tests, tuning)

    def _queued(self, fd: int) -> bool:
        if fd not in self._registered:
            self._poll.register(fd, select.POLLIN)
            self._registered.add(fd)
        ready = self._poll.poll(0)
        return bool(ready) and ready[0][1] & _BAD == 0 and ready[0][1] & select.POLLIN != 0

    async def wait_readable(self, fd: int) -> None:
        if self._streak < self._max_streak and self._queued(fd):
            self._streak += 1
            self.immediate += 1
            return
        self._streak = 0
        self.waited += 1
        await trio.lowlevel.wait_readable(fd)


def install(waiter: QueuedFirst | None = None) -> QueuedFirst:
    """Make pyfuse3 wait with ``waiter`` (a new one by default); call before
    ``pyfuse3.main``."""
    waiter = waiter or QueuedFirst()
    lowlevel = _Delegate("trio.lowlevel", trio.lowlevel, wait_readable=waiter.wait_readable)
    pyfuse3.trio = _Delegate("trio", trio, lowlevel=lowlevel)  # type: ignore[attr-defined]
    return waiter


def uninstall() -> None:
    pyfuse3.trio = trio  # type: ignore[attr-defined]
