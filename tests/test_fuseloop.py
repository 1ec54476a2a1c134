"""fsclient.fuseloop: a queued request is taken without trio's wait, at most
MAX_STREAK times in a row; anything but a plain "readable" takes trio's wait;
the readers' lock is taken without a checkpoint and may be taken again by
the task that released it."""

import os

import pyfuse3
import trio
import trio.testing

from fsclient import fuseloop


def test_a_queued_request_skips_the_wait_up_to_the_streak() -> None:
    read_end, write_end = os.pipe()
    try:
        waiter = fuseloop.QueuedFirst(max_streak=3)

        async def main() -> None:
            os.write(write_end, b"x")  # "a request is queued", and stays so
            for _ in range(7):
                await waiter.wait_readable(read_end)

        trio.run(main)
        # 3 at once, then one real wait (a checkpoint), then 3 more, then one.
        assert (waiter.found_queued, waiter.waited_for) == (6, 1)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_an_empty_queue_waits_until_a_request_arrives() -> None:
    read_end, write_end = os.pipe()
    try:
        waiter = fuseloop.QueuedFirst()
        woke: list[bytes] = []

        async def main() -> None:
            async def arrive() -> None:
                await trio.sleep(0.05)
                os.write(write_end, b"x")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(arrive)
                await waiter.wait_readable(read_end)
                woke.append(os.read(read_end, 1))

        trio.run(main)
        assert woke == [b"x"]
        assert (waiter.found_queued, waiter.waited_for) == (0, 1)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_hung_up_fd_takes_trios_wait() -> None:
    """A closed writer (POLLHUP; an unmounted /dev/fuse reports POLLERR) is
    not a queued request: trio's own wait reports it."""
    read_end, write_end = os.pipe()
    os.close(write_end)
    try:
        waiter = fuseloop.QueuedFirst()
        trio.run(waiter.wait_readable, read_end)
        assert (waiter.found_queued, waiter.waited_for) == (0, 1)
    finally:
        os.close(read_end)


def test_a_free_lock_is_taken_without_a_checkpoint() -> None:
    """Even in a cancelled scope (trio's own lock would raise Cancelled)."""
    entered: list[bool] = []

    async def main() -> None:
        lock = fuseloop.BargingLock()
        with trio.CancelScope() as scope:
            scope.cancel()
            async with lock:
                entered.append(True)

    trio.run(main)
    assert entered == [True]


def test_the_lock_passes_to_its_waiters_in_turn_and_skips_a_cancelled_one() -> None:
    order: list[str] = []

    async def main() -> None:
        lock = fuseloop.BargingLock()
        inside = 0

        async def use(name: str) -> None:
            nonlocal inside
            async with lock:
                inside += 1
                assert inside == 1, "two holders at once"
                order.append(name)
                await trio.sleep(0.01)
                inside -= 1

        async with trio.open_nursery() as nursery:
            await lock.__aenter__()  # held: the others queue up
            for name in ("a", "b", "c"):
                nursery.start_soon(use, name)
                await trio.testing.wait_all_tasks_blocked()
            cancelled = trio.CancelScope()

            async def give_up() -> None:
                with cancelled:
                    await use("gave up")

            nursery.start_soon(give_up)
            nursery.start_soon(use, "d")
            await trio.testing.wait_all_tasks_blocked()
            cancelled.cancel()
            await trio.testing.wait_all_tasks_blocked()
            await lock.__aexit__(None, None, None)

    trio.run(main)
    assert order == ["a", "b", "c", "d"]


def test_a_releaser_takes_the_lock_again_before_the_waiter_it_woke() -> None:
    events: list[str] = []

    async def main() -> None:
        lock = fuseloop.BargingLock()

        async def waiter() -> None:
            async with lock:
                events.append("waiter")

        async with trio.open_nursery() as nursery:
            await lock.__aenter__()
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            await lock.__aexit__(None, None, None)  # wakes the waiter, stays free
            await lock.__aenter__()  # taken again at once
            events.append("releaser again")
            await trio.testing.wait_all_tasks_blocked()  # the waiter found it held
            assert events == ["releaser again"]
            await lock.__aexit__(None, None, None)

    trio.run(main)
    assert events == ["releaser again", "waiter"]


def test_install_hands_pyfuse3_the_waiter_and_the_rest_of_trio() -> None:
    waiter = fuseloop.install()
    try:
        assert pyfuse3.trio.lowlevel.wait_readable == waiter.wait_readable  # type: ignore[attr-defined]
        assert pyfuse3.trio.Lock is fuseloop.BargingLock  # type: ignore[attr-defined]
        assert pyfuse3.trio.open_nursery is trio.open_nursery  # type: ignore[attr-defined]
        assert pyfuse3.trio.lowlevel.notify_closing is trio.lowlevel.notify_closing  # type: ignore[attr-defined]
    finally:
        fuseloop.uninstall()
    assert pyfuse3.trio is trio  # type: ignore[attr-defined]
