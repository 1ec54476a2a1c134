"""Receive buffers for block data: unfilled, and page-aligned.

``bytearray(n)`` writes n zero bytes that a ``recv_into`` overwrites at
once: for every block received, a pass over 4 MiB of memory for nothing.
CPython's own constructor, called with no source, leaves them unwritten.

A large buffer also starts on a page boundary, so a cache node can write it
to disk with ``O_DIRECT`` as it is (:mod:`dcfs.blockcache.directio`):
CPython drops bytes from a bytearray's front by moving its start, not the
bytes, so a buffer allocated one page short of a page larger is trimmed to
the boundary without a copy.
"""

import ctypes
import mmap
from collections.abc import Callable

PAGE = mmap.PAGESIZE
# Below this the page of slack costs too much, and CPython moves small
# buffers when it trims them anyway.
ALIGN_FROM = 64 * 1024

_from_string_and_size = ctypes.pythonapi.PyByteArray_FromStringAndSize
_from_string_and_size.restype = ctypes.py_object
_from_string_and_size.argtypes = [ctypes.c_char_p, ctypes.c_ssize_t]
_as_string = ctypes.pythonapi.PyByteArray_AsString
_as_string.restype = ctypes.c_void_p
_as_string.argtypes = [ctypes.py_object]


def unfilled(n: int) -> bytearray:
    """A bytearray of ``n`` bytes whose contents are undefined: the caller
    overwrites all of them before anyone reads it. From ``ALIGN_FROM``
    bytes on it starts on a page boundary (when CPython plays along; see
    :func:`page_aligned`)."""
    if n < 0:
        raise ValueError(f"negative buffer size {n}")
    if n < ALIGN_FROM:
        small: bytearray = _from_string_and_size(None, n)
        return small
    buf: bytearray = _from_string_and_size(None, n + PAGE - 1)
    del buf[: -_address(buf) % PAGE]
    del buf[n:]
    return buf


def _address(buf: bytearray) -> int:
    return int(_as_string(buf) or 0)


def page_aligned(data: object) -> bool:
    """Whether ``data`` is a bytearray whose bytes start on a page boundary."""
    return isinstance(data, bytearray) and len(data) > 0 and _address(data) % PAGE == 0


def fill(read_into: Callable[[memoryview], int], n: int) -> bytearray:
    """``n`` bytes from repeated ``read_into`` calls (a socket's ``recv_into``,
    a response's ``readinto``); ConnectionError if the source ends first."""
    buf = unfilled(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = read_into(view[got:])
        if not k:
            raise ConnectionError(f"connection closed after {got} of {n} bytes")
        got += k
    return buf
