"""--pretouch: memory faulted in at start serves the blocks received later,
in any thread, without new page faults (dcfs.heap)."""

import subprocess
import sys
import textwrap

import pytest

PAGE = 4096
MiB = 1024 * 1024

# Receives 48 MiB of "blocks" in a new thread, as a cache node or a mount
# does, and prints how many page faults that took.
_RECEIVE = textwrap.dedent(
    """
    import resource, sys, threading
    from dcfs import buffers, heap
    heap.pretouch(int(sys.argv[1]))
    kept = []

    def receive():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(12):
            block = buffers.unfilled(4 << 20)
            block[:] = bytes(4 << 20)  # every page written, as recv_into does
            kept.append(block)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

    thread = threading.Thread(target=receive)
    thread.start()
    thread.join()
    """
)


def faults_receiving(pretouch_bytes: int) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _RECEIVE, str(pretouch_bytes)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_pretouched_memory_serves_later_blocks() -> None:
    pages = 48 * MiB // PAGE
    cold = faults_receiving(0)
    warm = faults_receiving(64 * MiB)
    assert cold > pages // 2  # without it, every page of every block faults
    assert warm < pages // 20  # with it, almost none does


def test_pretouch_of_nothing_is_a_no_op() -> None:
    from dcfs import heap

    assert heap.pretouch(0) == 0.0


def test_pretouch_more_than_the_machine_has_is_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from dcfs import heap

    available = heap.available_memory()
    assert available is not None and available > 0
    assert heap.pretouch(available * 4) == 0.0
    assert "not pre-touching" in caplog.text
