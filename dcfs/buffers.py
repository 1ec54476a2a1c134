"""Receive buffers for block data, without the zero fill.

``bytearray(n)`` writes n zero bytes that a ``recv_into`` overwrites at
once: for every block received, a pass over 4 MiB of memory for nothing.
CPython's own constructor, called with no source, leaves them unwritten.
"""

import ctypes
from collections.abc import Callable

_from_string_and_size = ctypes.pythonapi.PyByteArray_FromStringAndSize
_from_string_and_size.restype = ctypes.py_object
_from_string_and_size.argtypes = [ctypes.c_char_p, ctypes.c_ssize_t]


def unfilled(n: int) -> bytearray:
    """A bytearray of ``n`` bytes whose contents are undefined: the caller
    overwrites all of them before anyone reads it."""
    if n < 0:
        raise ValueError(f"negative buffer size {n}")
    buf: bytearray = _from_string_and_size(None, n)
    return buf


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
