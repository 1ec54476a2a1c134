"""Block files written around the page cache (``O_DIRECT``), for cache nodes.

A node's memory tier holds the hot copy of every block it has on disk, so a
copy in the page cache as well buys nothing and costs CPU: a buffered write
copies the block into the page cache and writes it back later, about
0.5 CPU-seconds per GiB here; ``O_DIRECT`` from the received buffer itself,
about 0.1 (256 files of 4 MiB written each way, CPU of the whole system).

``O_DIRECT`` wants the file offset, the length and the address of every
piece aligned to the device's logical block; a page covers every device.
So in these files the data starts at the header's length rounded up to a
page (:func:`data_offset`; zeros in between), and a write sends the header
page, the data's whole pages straight from its buffer (page-aligned by
:func:`dcfs.buffers.unfilled`) and its last partial page from scratch
memory, then truncates the file to its true length. Data not page-aligned
(from boto3, say) is first copied to a new aligned buffer, or when small to
the scratch memory, which so stays small in every thread that writes.

There is no ``fdatasync``: after a crash a renamed file may lack its size or
its bytes, and a read rejects it (size and CRC-32C checks) and deletes it.
"""

import errno
import mmap
import os
import threading

from dcfs import buffers

PAGE = buffers.PAGE
FLAGS = os.O_DIRECT


def data_offset(header_length: int) -> int:
    """Where a direct-written file's data starts."""
    return -(-header_length // PAGE) * PAGE


_scratch = threading.local()


def _scratch_view(size: int) -> memoryview:
    """This thread's page-aligned scratch memory, at least ``size`` bytes."""
    area: mmap.mmap | None = getattr(_scratch, "area", None)
    if area is None or len(area) < size:
        area = _scratch.area = mmap.mmap(-1, data_offset(size))
    return memoryview(area)[:size]


def write(fd: int, header: bytes, data: bytes | bytearray) -> None:
    """Write ``header`` and ``data`` to ``fd`` (opened with :data:`FLAGS`)
    in the layout above. OSError if the write falls short."""
    head = data_offset(len(header))
    whole = len(data) - len(data) % PAGE
    if whole >= buffers.ALIGN_FROM and not buffers.page_aligned(data):
        aligned = buffers.unfilled(len(data))
        aligned[:] = data
        data = aligned
    source = memoryview(data)
    in_place = buffers.page_aligned(data)
    rest = source[whole:] if in_place else source  # what goes through the scratch memory
    scratch = _scratch_view(head + data_offset(len(rest)))
    _put_padded(scratch[:head], header)
    _put_padded(scratch[head:], rest)
    pieces = [scratch[:head], source[:whole], scratch[head:]] if in_place else [scratch]
    want = head + data_offset(len(data))
    done = os.pwritev(fd, pieces, 0)
    if done != want:
        raise OSError(errno.EIO, f"direct write of a block file stopped at {done} of {want} bytes")
    if want != head + len(data):
        os.ftruncate(fd, head + len(data))


def _put_padded(target: memoryview, content: bytes | memoryview) -> None:
    """``content`` at the start of ``target``, zeros after it."""
    target[: len(content)] = content
    target[len(content) :] = bytes(len(target) - len(content))


def supported(directory: str) -> bool:
    """Whether the filesystem under ``directory`` takes page-aligned
    ``O_DIRECT`` writes (tmpfs before Linux 6.6 and some FUSE filesystems do
    not). Never raises: a probe that fails for any reason says no. The probe
    is an unnamed file (``O_TMPFILE``), so a crash leaves nothing behind."""
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC | FLAGS, 0o600)
    except OSError:
        return False
    try:
        write(fd, b"", bytes(PAGE))
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
